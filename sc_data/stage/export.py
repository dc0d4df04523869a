"""Write a staged dataset folder (Parquet shards, manifest, dataset card) and verify one.

The layout (DESIGN.md, "Staged dataset on disk") is also the Hub repo layout, so
``datasets.load_dataset(folder, "tier_0")`` and ``pd.read_parquet`` work on it unchanged::

    README.md                                 card; YAML ``configs:`` one per tier + ``all`` (default),
                                              ``dataset_info:`` rows and bytes per config and split
    sc_manifest.json                          versions, inputs, recipe, counts, every file's sha256
    data/tier_{k}/train-{i:05d}-of-{n:05d}.parquet
    data/eval/test-00000-of-00001.parquet
    data/dev/dev-00000-of-00001.parquet       only with a dev split
    rejects.parquet                           rows left out, with the reason
    plots/*.png                               from :mod:`sc_data.stage.report`

Everything is written into a temporary folder beside the target and renamed into place at the
end, so an interrupted export never leaves half a dataset under the target's name.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from pydantic import BaseModel, ConfigDict, Field

import sc_data
from sc_data.errors import ConfigError, VerifyError
from sc_data.io import sha256_file, write_json, write_parquet, write_text
from sc_data.schema import SCHEMA_VERSION
from sc_data.stage.difficulty import category_codes

MANIFEST = "sc_manifest.json"
CARD = "README.md"
REJECTS = "rejects.parquet"
#: Files a Hub client may add to a downloaded copy; verify ignores them.
_CLIENT_FILES = (".gitattributes",)
_CLIENT_DIRS = (".cache",)
_SPLIT_OF_PART = {"eval": ("test", "all"), "dev": ("dev", "all")}


class ExportConfig(BaseModel):
    """How the staged dataset is written.

    Attributes:
        max_shard_rows: at most this many rows per Parquet shard (default 100,000; the Hub
            prefers files under a few hundred MB).
        row_group_rows: rows per Parquet row group (default 10,000: small enough for the Hub's
            viewer and for streaming, large enough for zstd).
        plots: render the report plots into ``plots/`` and embed them in the card (default True).
    """

    model_config = ConfigDict(extra="forbid")

    max_shard_rows: int = Field(default=100_000, ge=1)
    row_group_rows: int = Field(default=10_000, ge=1)
    plots: bool = True


@dataclass
class ExportResult:
    """What :func:`export` wrote: the folder, rows written and the manifest's file entries."""

    output: Path
    rows_out: int
    files: list[dict[str, Any]] = field(default_factory=list)


def _part_location(part: str) -> tuple[str, str, str]:
    """(folder, file prefix = split name, config) of an output part."""
    if part.startswith("tier_"):
        return f"data/{part}", "train", part
    split, config = _SPLIT_OF_PART[part]
    return f"data/{part}", split, config


def _file_entry(root: Path, rel: str, rows: int, **extra: Any) -> dict[str, Any]:
    path = root / rel
    return {"path": rel, "rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def _write_parts(
    table: pa.Table, root: Path, parts: Mapping[str, np.ndarray], config: ExportConfig
) -> list[dict[str, Any]]:
    entries = []
    for part, rows in parts.items():
        folder, prefix, cfg = _part_location(part)
        n_shards = max(1, math.ceil(len(rows) / config.max_shard_rows))
        for i, chunk in enumerate(np.array_split(rows, n_shards)):
            rel = f"{folder}/{prefix}-{i:05d}-of-{n_shards:05d}.parquet"
            shard = table.take(pa.array(chunk, pa.int64()))
            write_parquet(shard, root / rel, row_group_size=config.row_group_rows)
            entries.append(_file_entry(root, rel, len(chunk), kind="data", config=cfg, split=prefix))
    return entries


def _licenses(upstream: Mapping[str, Any]) -> list[str]:
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


def _counts(table: pa.Table, parts: Mapping[str, np.ndarray], rows_rejected: int, rows_in: int) -> dict[str, Any]:
    codes, names = category_codes(table)
    by_split: dict[str, int] = {}
    by_tier: dict[str, int] = {}
    nested: dict[str, dict[str, dict[str, int]]] = {}
    for part, rows in parts.items():
        _, split, _ = _part_location(part)
        label = part if part.startswith("tier_") else "none"
        by_split[split] = by_split.get(split, 0) + len(rows)
        if part.startswith("tier_"):
            by_tier[part] = len(rows)
        hist = np.bincount(codes[rows], minlength=len(names))
        nested.setdefault(split, {})[label] = {names[c]: int(hist[c]) for c in np.flatnonzero(hist)}
    return {
        "rows_in": rows_in,
        "rows_out": sum(by_split.values()),
        "rows_rejected": rows_rejected,
        "by_split": by_split,
        "by_tier": by_tier,
        "by_tier_category_split": nested,
    }


def export(
    table: pa.Table,
    output: Path | str,
    *,
    parts: Mapping[str, np.ndarray],
    rejects: pa.Table,
    recipe: dict[str, Any],
    inputs: list[dict[str, Any]],
    upstream: Mapping[str, Any] | None = None,
    warnings: list[str] | None = None,
    config: ExportConfig | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the staged dataset folder atomically.

    Args:
        table: every input row with ``difficulty``, ``tier`` and ``split`` (from :func:`sc_data.stage.plan`).
        output: target folder.
        parts: part (``tier_k``, ``eval``, ``dev``) -> row indices of ``table`` in file order.
        rejects: rows left out (rejects schema).
        recipe: resolved configuration, written into the manifest and the card.
        inputs: input files with sha256.
        upstream: the scored file's manifest (scorers, models, licences are copied from it).
        warnings: staging degradations, recorded in the manifest.
        config: sharding options.
        overwrite: replace an existing ``output``.

    Returns:
        An :class:`ExportResult`.

    Raises:
        ConfigError: ``output`` exists and ``overwrite`` is False.
    """
    config = config or ExportConfig()
    upstream = dict(upstream or {})
    output = Path(output)
    if output.exists() and not overwrite:
        raise ConfigError(f"output {str(output)!r} already exists; pass overwrite=True (--overwrite) to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.parent / f".{output.name}.staging-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        files = _write_parts(table, tmp, parts, config)
        write_parquet(rejects, tmp / REJECTS)
        files.append(_file_entry(tmp, REJECTS, rejects.num_rows, kind="rejects"))
        plots: list[str] = []
        if config.plots:
            from sc_data.stage.report import plot_table

            kept = np.concatenate([np.asarray(v, dtype=np.int64) for v in parts.values()])
            cols = [c for c in table.column_names if "__" in c or c in ("difficulty", "tier", "split", "category")]
            for png in plot_table(table.select(cols).take(pa.array(kept, pa.int64())), tmp / "plots"):
                rel = png.relative_to(tmp).as_posix()
                plots.append(rel)
                files.append(_file_entry(tmp, rel, 0, kind="plot"))
        counts = _counts(table, parts, rejects.num_rows, table.num_rows)
        if rejects.num_rows:
            reasons = rejects.column("reason").value_counts().to_pylist()
            counts["rejected_by_reason"] = {r["values"]: r["counts"] for r in reasons}
        manifest = {
            "sc_data_version": sc_data.__version__,
            "schema_version": SCHEMA_VERSION,
            "kind": "staged",
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "inputs": inputs,
            "upstream": {k: upstream[k] for k in ("kind", "inputs", "counts", "sc_data_version") if k in upstream},
            "scorers": upstream.get("scorers", {}),
            "models": upstream.get("models", {}),
            "recipe": recipe,
            "licenses": _licenses(upstream),
            "counts": counts,
            "warnings": list(warnings or []),
            "files": files,
        }
        write_json(manifest, tmp / MANIFEST)
        info = _dataset_info(tmp, _configs(parts), files)
        write_text(render_card(manifest, table, parts, plots, dataset_info=info), tmp / CARD)
        _swap_into_place(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(output=output, rows_out=counts["rows_out"], files=files)


def _swap_into_place(tmp: Path, output: Path) -> None:
    """Rename ``tmp`` to ``output``; an existing ``output`` is moved aside first, then deleted."""
    old = None
    if output.exists():
        old = output.parent / f".{output.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(output, old)
    os.replace(tmp, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ----------------------------------------------------------------------------- card


def _configs(parts: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """The card's ``configs:``: ``all`` (default: every tier) and one per tier, each with the test split."""
    tiers = sorted((p for p in parts if p.startswith("tier_")), key=lambda p: int(p.split("_")[1]))
    extra = [{"split": "test", "path": "data/eval/*.parquet"}]
    if "dev" in parts:
        extra.append({"split": "dev", "path": "data/dev/*.parquet"})
    configs = [
        {
            "config_name": "all",
            "default": True,
            "data_files": [{"split": "train", "path": "data/tier_*/*.parquet"}, *extra],
        }
    ]
    for tier in tiers:
        configs.append(
            {
                "config_name": tier,
                "data_files": [
                    {"split": "train", "path": f"data/{tier}/*.parquet"},
                    {"split": "test", "path": "data/eval/*.parquet"},
                ],
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


def _dataset_info(root: Path, configs: list[dict[str, Any]], files: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _card_yaml(
    parts: Mapping[str, np.ndarray], licenses: list[str], info: list[dict[str, Any]] | None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "configs": _configs(parts),
        **({"dataset_info": info} if info else {}),
        "license": (licenses[0] if len(licenses) == 1 else licenses) if licenses else "other",
        "tags": ["dpo", "preference", "safety", "curriculum-learning", "sc-data"],
        "task_categories": ["text-generation"],
    }
    return meta


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

    ``dataset_info`` (from :func:`_dataset_info`) is left out of the front matter when None; a card
    without it makes ``datasets`` reuse a stale cache for folders of the same name.
    """
    difficulty = table.column("difficulty").to_numpy(zero_copy_only=False)
    counts = manifest["counts"]
    tiers = sorted((p for p in parts if p.startswith("tier_")), key=lambda p: int(p.split("_")[1]))
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
    front = yaml.safe_dump(_card_yaml(parts, licenses, dataset_info), sort_keys=False)
    recipe = yaml.safe_dump(manifest["recipe"].get("stage", {}), sort_keys=True)
    sources = "\n".join(f"- `{i['path']}` (sha256 `{i['sha256'][:12]}…`)" for i in manifest["inputs"]) or "- in-memory table"
    plot_md = "\n\n".join(f"![{Path(p).stem}]({p})" for p in plots)
    return f"""---
{front}---

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

## Sources and licences

{sources}

Licences of the sources: {", ".join(licenses) if licenses else "not recorded (check the sources)"}.
This dataset is a derivative of them and inherits their terms.
"""


# ----------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    """What :func:`verify` checked.

    Attributes:
        path: the staged folder.
        files: number of files checked against the manifest.
        rows_in, rows_out, rows_rejected: the manifest's counts, re-derived from the files.
        by_split: split -> rows counted in the shards.
    """

    path: Path
    files: int
    rows_in: int
    rows_out: int
    rows_rejected: int
    by_split: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's ``--json``)."""
        return {**self.__dict__, "path": str(self.path)}


def verify(path: Path | str) -> VerifyReport:
    """Check a staged folder against its manifest: every file's bytes, sha256 and rows, no extras.

    Raises:
        VerifyError: naming the file: a missing or modified file, a row count that differs, an
            unlisted file, or counts that don't add up.
    """
    root = Path(path)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise VerifyError(f"{str(root)!r} has no {MANIFEST}; is it a folder written by `sc-data stage`?")
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise VerifyError(f"{manifest_path} is not valid JSON ({e}); re-run `sc-data stage`") from e
    if manifest.get("kind") != "staged":
        raise VerifyError(f"{manifest_path}: kind is {manifest.get('kind')!r}, expected 'staged'")
    listed = {}
    for entry in manifest.get("files", []):
        rel = entry["path"]
        listed[rel] = entry
        file = root / rel
        if not file.is_file():
            raise VerifyError(f"{rel}: listed in {MANIFEST} but missing; re-download or re-stage the dataset")
        size = file.stat().st_size
        if size != entry["bytes"]:
            raise VerifyError(f"{rel}: {size} bytes, the manifest says {entry['bytes']}; the file was modified or truncated")
        digest = sha256_file(file)
        if digest != entry["sha256"]:
            raise VerifyError(f"{rel}: sha256 {digest} differs from the manifest's {entry['sha256']}; the file was modified")
        if rel.endswith(".parquet"):
            rows = pq.ParquetFile(file).metadata.num_rows
            if rows != entry["rows"]:
                raise VerifyError(f"{rel}: {rows} rows, the manifest says {entry['rows']}")
    allowed = set(listed) | {MANIFEST, CARD, *_CLIENT_FILES}
    for file in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = file.relative_to(root).as_posix()
        if rel.split("/", 1)[0] in _CLIENT_DIRS:
            continue
        if rel not in allowed:
            raise VerifyError(f"{rel}: not listed in {MANIFEST}; remove it or re-stage the dataset")
    if not (root / CARD).is_file():
        raise VerifyError(f"{CARD}: missing; the dataset card holds the configs `load_dataset` needs")
    by_split: dict[str, int] = {}
    for entry in listed.values():
        if entry.get("kind") == "data":
            by_split[entry["split"]] = by_split.get(entry["split"], 0) + entry["rows"]
    rows_out = sum(by_split.values())
    rows_rejected = sum(e["rows"] for e in listed.values() if e.get("kind") == "rejects")
    counts = manifest.get("counts", {})
    expected = {
        "rows_out": rows_out,
        "rows_rejected": rows_rejected,
        "rows_in": rows_out + rows_rejected,
        "by_split": by_split,
    }
    for key, value in expected.items():
        if counts.get(key) != value:
            raise VerifyError(f"{MANIFEST}: counts.{key} is {counts.get(key)!r} but the files add up to {value!r}")
    return VerifyReport(
        path=root,
        files=len(listed),
        rows_in=rows_out + rows_rejected,
        rows_out=rows_out,
        rows_rejected=rows_rejected,
        by_split=by_split,
    )
