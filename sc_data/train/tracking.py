"""Experiment tracking through accelerate's trackers; ``metrics.jsonl`` stays the run's record.

The native engine hands ``output.report_to`` to ``Accelerator(log_with=...)`` and logs each
``metrics.jsonl`` record with ``accelerator.log`` (the TRL engine passes the same name to
``DPOConfig.report_to``, i.e. transformers' callbacks). Trackers take flat scalars, so the nested
config and Cat-DPO's per-category dicts are flattened here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The project name trackers file the run under (tensorboard: ``run/logs/sc-data/``; wandb / trackio: the project).
PROJECT = "sc-data"


def logging_dir(output: Path) -> Path:
    """Where file-based trackers (tensorboard) write: ``run/logs/``."""
    return output / "logs"


def flat_config(values: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str | None]:
    """The resolved config as dotted keys with scalar values (lists become strings), as hparams need."""
    out: dict[str, bool | int | float | str | None] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flat_config(value, prefix=f"{name}."))
        else:
            out[name] = value if value is None or isinstance(value, (bool, int, float, str)) else str(value)
    return out


def tracker_metrics(record: dict[str, Any]) -> dict[str, float]:
    """A ``metrics.jsonl`` record's numbers under the same names (``gamma/<category>`` for dicts); the step is the x-axis."""
    out: dict[str, float] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update({f"{key}/{k}": float(v) for k, v in value.items() if isinstance(v, (int, float))})
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step":
            out[key] = float(value)
    return out
