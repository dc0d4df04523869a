"""The dataset card of a staged folder: YAML front matter that ``datasets`` reads, and a summary a person reads.

The front matter is built with ``huggingface_hub.DatasetCardData`` (the Hub's own metadata model,
so keys and layout are what the Hub validates): one config per tier plus ``all`` (the default,
every tier), each with the held-out ``test`` split, exact ``dataset_info`` per config (see
:func:`dataset_info` for why), the sources' licences as Hub licence ids, ``size_categories`` from
the row count, ``language: en`` (sc-data's rubrics, refusal detector and taxonomy are English),
``pretty_name``, task categories and tags. The body says what the data is, how it was made, how
the tiers and categories are distributed, what decontamination checked, and which licences it
inherits.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from sc_data.stage.folder import tier_index


def licenses_of(upstream: Mapping[str, Any]) -> list[str]:
    """Every ``license`` / ``licenses`` value found anywhere in the upstream manifest."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("license", "licenses"):
                    values = value if isinstance(value, list) else [value]
                    found.extend(str(v) for v in values if v and isinstance(v, str))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(upstream)
    return sorted({v.lower() for v in found})


def configs(parts: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """The card's ``configs:``: ``all`` (default: every tier) and one per tier, each with the test split.

    Parts without rows are left out (``datasets`` can't load a config or split with no rows): a
    tier with no pairs has no config, no eval split means no ``test`` split.
    """
    tiers = sorted((p for p in parts if tier_index(p) is not None and len(parts[p])), key=tier_index)
    test = [{"split": "test", "path": "data/eval/*.parquet"}] if len(parts.get("eval", ())) else []
    dev = [{"split": "dev", "path": "data/dev/*.parquet"}] if len(parts.get("dev", ())) else []
    configs = [
        {
            "config_name": "all",
            "default": True,
            "data_files": [{"split": "train", "path": "data/tier_*/*.parquet"}, *test, *dev],
        }
    ]
    for tier in tiers:
        configs.append(
            {
                "config_name": tier,
                "data_files": [{"split": "train", "path": f"data/{tier}/*.parquet"}, *test],
            }
        )
    return configs


def _arrow_bytes(path: Path) -> int:
    """The Arrow size ``datasets`` records for a shard (``SplitInfo.num_bytes``).

    Its Parquet builder reads one first-row-group's worth of rows per batch and sums the batches'
    ``nbytes``; reading the same batches gives the same number.
    """
    parquet = pq.ParquetFile(path)
    if parquet.metadata.num_rows == 0:
        return 0
    batches = parquet.iter_batches(batch_size=parquet.metadata.row_group(0).num_rows)
    return sum(batch.nbytes for batch in batches)


def dataset_info(root: Path, configs: list[dict[str, Any]], files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The card's ``dataset_info:``: per config, rows and Arrow bytes per split, shard and Arrow totals.

    WHY: for a local folder ``datasets`` keys its cache on a hash of the card's configs and
    ``dataset_info`` only. The configs are the same glob patterns for every staged folder, so
    without these numbers a second folder of the same name, or a folder re-staged in place,
    would be served the first one's cached rows. ``datasets`` verifies ``num_examples`` against
    the rows it reads (so they must be exact, and are: counted from the written shards); the
    byte counts are informational and computed the way ``datasets`` computes them.

    Args:
        root: the folder the shards were written to.
        configs: the card's ``configs:`` (``config_name``, ``data_files`` of ``split`` and ``path`` glob).
        files: the manifest's file entries (``path``, ``rows``, ``bytes``, ``kind``).
    """
    data = [f for f in files if f.get("kind") == "data"]
    arrow: dict[str, int] = {}
    infos = []
    for config in configs:
        splits, download = [], 0
        for spec in config["data_files"]:
            matched = [f for f in data if PurePosixPath(f["path"]).match(spec["path"])]
            for f in matched:
                if f["path"] not in arrow:
                    arrow[f["path"]] = _arrow_bytes(root / f["path"])
            download += sum(f["bytes"] for f in matched)
            splits.append(
                {
                    "name": spec["split"],
                    "num_bytes": sum(arrow[f["path"]] for f in matched),
                    "num_examples": sum(f["rows"] for f in matched),
                }
            )
        infos.append(
            {
                "config_name": config["config_name"],
                "splits": splits,
                "download_size": download,
                "dataset_size": sum(s["num_bytes"] for s in splits),
            }
        )
    return infos


#: The Hub's ``size_categories`` buckets: (upper bound, label), the first bound above the row count wins.
_SIZE_CATEGORIES = (
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
)
PRETTY_NAME = "Curriculum safety preference pairs (sc-data)"


def size_category(rows: int) -> str:
    """The Hub's ``size_categories`` label of a dataset of ``rows`` rows (``1K<n<10K`` for 3,969)."""
    return next((label for bound, label in _SIZE_CATEGORIES if rows < bound), "n>1B")


def card_data(parts: Mapping[str, np.ndarray], licenses: list[str], info: list[dict[str, Any]] | None,
              rows: int) -> DatasetCardData:
    """The front matter as the Hub's metadata model; ``other`` licence when the sources recorded none."""
    return DatasetCardData(
        pretty_name=PRETTY_NAME,
        license=(licenses[0] if len(licenses) == 1 else licenses) if licenses else "other",
        language=["en"],
        size_categories=[size_category(rows)],
        task_categories=["text-generation"],
        tags=["dpo", "preference", "safety", "curriculum-learning", "sc-data"],
        configs=configs(parts),
        **({"dataset_info": info} if info else {}),
    )


def _decontamination(manifest: Mapping[str, Any]) -> str:
    """The card's account of the decontamination its input went through, or that there was none."""
    record = manifest.get("decontamination")
    if not record:
        return "Not checked against eval sets (run `sc-data decontaminate` before staging to remove eval prompts)."
    sets = "\n".join(f"- `{s['path']}` ({s['items']} prompts, sha256 `{s['sha256'][:12]}…`): "
                     f"{record['removed_by_eval_set'].get(s['path'], 0)} pairs removed" for s in record["eval_sets"])
    options = record["options"]
    return (f"Pairs whose prompt matched an eval prompt were removed before staging ({', '.join(record['methods'])}; "
            f"word {options['ngram']}-gram overlap >= {options['threshold']}"
            + (f", embedding cosine >= {options['embedding_threshold']}" if "embedding" in record["methods"] else "")
            + f"). Removed per method: {', '.join(f'{m} {n}' for m, n in record['removed_by_method'].items())}.\n\n{sets}")


def _markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_card(
    manifest: Mapping[str, Any],
    table: pa.Table,
    parts: Mapping[str, np.ndarray],
    plots: list[str],
    *,
    dataset_info: list[dict[str, Any]] | None = None,
) -> str:
    """The dataset card: YAML front matter (configs, dataset_info, licence, tags) and a readable summary.

    ``dataset_info`` (from :func:`dataset_info`) is left out of the front matter when None; a card
    without it makes ``datasets`` reuse a stale cache for folders of the same name.
    """
    difficulty = table.column("difficulty").to_numpy(zero_copy_only=False)
    counts = manifest["counts"]
    tiers = sorted((p for p in parts if tier_index(p) is not None), key=tier_index)
    tier_rows = [
        [t, len(parts[t]), f"{np.mean(difficulty[parts[t]]):.3f}" if len(parts[t]) else "-"] for t in tiers
    ]
    nested = counts["by_tier_category_split"]
    categories = sorted({c for split in nested.values() for cats in split.values() for c in cats})
    cat_rows = [
        [c, *(nested.get("train", {}).get(t, {}).get(c, 0) for t in tiers), nested.get("test", {}).get("none", {}).get(c, 0)]
        for c in categories
    ]
    licenses = manifest["licenses"]
    front = card_data(parts, licenses, dataset_info, counts["rows_out"]).to_yaml()
    recipe = yaml.safe_dump(manifest["recipe"].get("stage", {}), sort_keys=True)
    sources = "\n".join(f"- `{i['path']}` (sha256 `{i['sha256'][:12]}…`)" for i in manifest["inputs"]) or "- in-memory table"
    plot_md = "\n\n".join(f"![{Path(p).stem}]({p})" for p in plots)
    return str(DatasetCard(f"""---
{front}
---

# Curriculum safety preference dataset

> **Content warning.** This dataset contains harmful text (violence, self-harm, hate, crime and
> more) in the `rejected` answers and in many prompts. It exists to train models to refuse such
> content. Do not use it to train a model to produce it.

Made with sc-data {manifest['sc_data_version']} (Staged-Competence,
arXiv 2605.26315): pairs ordered by difficulty (0 = easiest) and split into {len(tiers)} tiers.
Each tier is a config (`tier_0` = easiest) in TRL's conversational format (`prompt`, `chosen`,
`rejected` message lists), ready for `DPOTrainer`; `all` (default) holds every tier. The held-out
`test` split comes with every config.

```python
from datasets import load_dataset
tier0 = load_dataset("<this repo or folder>", "tier_0")
```

## Summary

Rows in {counts['rows_in']}, out {counts['rows_out']}, rejected {counts['rows_rejected']} (see `rejects.parquet`).
Splits: {", ".join(f"{k} {v}" for k, v in counts['by_split'].items())}.

{_markdown_table(["tier", "rows", "mean difficulty"], tier_rows)}

### Categories × tiers

{_markdown_table(["category", *tiers, "test"], cat_rows)}

## Plots

{plot_md or "(plots disabled)"}

## Recipe

```yaml
{recipe}```

Difficulty columns: {", ".join(f"`{c['column']}` ({c['direction']}, weight {c['weight']})" for c in manifest['recipe'].get('difficulty_columns', []))}.

## Decontamination

{_decontamination(manifest)}

## Sources and licences

{sources}

Licences of the sources: {", ".join(licenses) if licenses else "not recorded (check the sources)"}.
This dataset is a derivative of them and inherits their terms.
"""))
