"""sc-data: curriculum preference datasets for safety alignment.

The Python API has the same verbs as the CLI (``ingest``, ``score``, ``stage``, ``verify``,
``publish``, ``pull``, ``train``, ``evaluate``, ``report``). Each lives in its own module and is
imported lazily so that ``import sc_data`` stays cheap and a user who only ingests never imports
torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "ingest": "sc_data.ingest",
    "inspect": "sc_data.inspect",
    "score": "sc_data.score",
    "stage": "sc_data.stage",
    "export": "sc_data.export",
    "verify": "sc_data.export",
    "report": "sc_data.report",
    "publish": "sc_data.hub",
    "pull": "sc_data.hub",
    "train": "sc_data.train.trainer",
    "evaluate": "sc_data.evaluate",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sc_data' has no attribute {name!r}")
