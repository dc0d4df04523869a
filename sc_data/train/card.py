"""The model card (``README.md`` in ``final/`` and ``merged/``), built with ``huggingface_hub.ModelCard``.

Written by ``train`` when it saves ``final/`` and rewritten by ``eval``, so it always shows the
latest figures of ``evals/summary.json``; ``--push-to-hub`` uploads the card as it is then. It
names the base model, the staged dataset (its Hub id and commit, or the local folder's name and
manifest hash, from ``run_info.json``), the schedule and the resolved config; a local model path
appears by its folder name only, and no token is ever read here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sc_data.io import write_text
from sc_data.train.outputs import hub_base_id

TAGS = ["dpo", "curriculum-learning", "safety", "sc-data"]


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text("utf-8")) if path.is_file() else {}


def _public_config(config: dict[str, Any]) -> dict[str, Any]:
    """The resolved config with a local model path shortened to its folder name (no home paths in a card)."""
    name = config["model"]["name"]
    if Path(name).expanduser().is_absolute() or Path(name).expanduser().exists():
        config = {**config, "model": {**config["model"], "name": Path(name).name}}
    return config


def _dataset_line(dataset: dict[str, str]) -> str:
    if "id" in dataset:
        return f"[`{dataset['id']}`](https://huggingface.co/datasets/{dataset['id']}) at revision `{dataset['revision']}`"
    if "name" in dataset:
        return f"the local staged folder `{dataset['name']}` (sc_manifest.json sha256 `{dataset['manifest_sha256'][:16]}…`)"
    return "not recorded"


def _eval_table(summary: dict[str, Any]) -> str:
    """One row per evaluation in ``evals/summary.json``: its overall figures, before → after."""
    if not summary:
        return "No evaluation yet: `sc-data eval RUN --data DATA` adds the figures here."
    keys = ("accuracy", "margin_separation", "reference_free_margin", "reference_free_accuracy")
    lines = ["| evaluation | n | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for name, entry in sorted(summary.items()):
        overall = entry.get("overall", {})
        before = overall.get("before", {})
        cells = [f"{before.get(k, float('nan')):.3f} → {overall[k]:.3f}" if overall.get(k) is not None else "–" for k in keys]
        lines.append(f"| {name} | {overall.get('n', '–')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _body(config: dict[str, Any], info: dict[str, Any], metrics: list[dict[str, Any]], summary: dict[str, Any], adapter: bool) -> str:
    cur = config["curriculum"]
    last = metrics[-1] if metrics else {}
    stages = 1 + max((m["stage"] for m in metrics), default=0)
    what = f"a LoRA adapter (r={config['lora']['r']}, α={config['lora']['alpha']})" if adapter else "a fully fine-tuned model"
    load = ("from peft import AutoPeftModelForCausalLM\nmodel = AutoPeftModelForCausalLM.from_pretrained(REPO)" if adapter
            else "from transformers import AutoModelForCausalLM\nmodel = AutoModelForCausalLM.from_pretrained(REPO)")
    final = ", ".join(f"{k} {last[k]:.4f}" for k in ("loss", "margin", "accuracy") if isinstance(last.get(k), (int, float)))
    base = _public_config(config)["model"]["name"]
    return f"""# {base}, curriculum DPO for safety (sc-data)

This is {what} on `{base}`, trained with preference optimisation (loss `{config['loss']['type']}`,
β = {config['loss']['beta']}) on a curriculum by sc-data (engine `{config['engine']}`).

## Training data

{_dataset_line(info.get('dataset', {}))}

## Schedule

`{cur['schedule']}`: {stages} stage(s), {last.get('step', 0)} optimizer steps, reference update `{cur['ref_update']}`,
effective batch {config['optim']['effective_batch']}, lr {config['optim']['lr']} ({config['optim']['lr_schedule']}).
Last step: {final or 'no metrics'}.

## Evaluation (held-out pairs, against the starting model)

{_eval_table(summary)}

## Use

```python
{load}
```

## Configuration

```yaml
{yaml.safe_dump(_public_config(config), sort_keys=True).strip()}
```
"""


def model_card(run: Path, *, adapter: bool) -> Any:
    """The card of ``run`` from its files: ``train_config.json``, ``run_info.json``, ``metrics.jsonl``, ``evals/summary.json``."""
    from huggingface_hub import ModelCard, ModelCardData

    config = _read_json(run / "train_config.json")
    info = _read_json(run / "run_info.json")
    metrics_path = run / "metrics.jsonl"
    metrics = [json.loads(line) for line in metrics_path.read_text("utf-8").splitlines() if line.strip()] if metrics_path.is_file() else []
    dataset = info.get("dataset", {})
    data = ModelCardData(
        base_model=hub_base_id(config["model"]["name"]), library_name="peft" if adapter else "transformers", tags=TAGS,
        datasets=[dataset["id"]] if "id" in dataset else None, pipeline_tag="text-generation",
    )
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n{_body(config, info, metrics, _read_json(run / 'evals' / 'summary.json'), adapter)}")


def write_card(run: Path) -> list[Path]:
    """(Re)write ``README.md`` in ``run/final`` and ``run/merged`` (those that exist); returns the files written."""
    written = []
    for folder in (run / "final", run / "merged"):
        if folder.is_dir():
            card = model_card(run, adapter=(folder / "adapter_config.json").is_file())
            write_text(str(card), folder / "README.md")
            written.append(folder / "README.md")
    return written
