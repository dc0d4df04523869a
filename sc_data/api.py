"""The Python API: one function per CLI verb, same names, same options.

Example:
    >>> from sc_data import api
    >>> api.ingest(["examples/pairs.jsonl"], "pairs.parquet")          # doctest: +SKIP
    >>> api.score("pairs.parquet", "scored.parquet", scorers=["ref_margin"])  # doctest: +SKIP
    >>> api.stage("scored.parquet", "staged/")                          # doctest: +SKIP

The verbs live in modules named after them (``sc_data.ingest``, ``sc_data.stage.pipeline``, ...), so on the
package itself a verb's name is its module once imported; this module holds the functions. They
are imported on first use, so a user who only ingests never imports torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # type checkers and IDEs see the real signatures; at run time __getattr__ imports lazily
    from sc_data.decontam.pipeline import decontaminate
    from sc_data.hub import publish, pull
    from sc_data.ingest.pipeline import ingest
    from sc_data.inspect import inspect
    from sc_data.scorers.probe import judge_fit
    from sc_data.scorers.runner import score
    from sc_data.stage.export import export
    from sc_data.stage.folder import verify
    from sc_data.stage.pipeline import stage
    from sc_data.stage.report import report
    from sc_data.train.evaluate import evaluate
    from sc_data.train.trainer import train
    from sc_data.train.trl_engine import curriculum_dpo

_VERBS = {
    "ingest": "sc_data.ingest.pipeline",
    "inspect": "sc_data.inspect",
    "decontaminate": "sc_data.decontam.pipeline",
    "score": "sc_data.scorers.runner",
    "stage": "sc_data.stage.pipeline",
    "export": "sc_data.stage.export",
    "verify": "sc_data.stage.folder",
    "report": "sc_data.stage.report",
    "publish": "sc_data.hub",
    "pull": "sc_data.hub",
    "train": "sc_data.train.trainer",
    "evaluate": "sc_data.train.evaluate",
    "judge_fit": "sc_data.scorers.probe",
    "curriculum_dpo": "sc_data.train.trl_engine",
}

__all__ = [  # the verbs, spelled out so type checkers read them (a test checks it equals sorted(_VERBS))
    "curriculum_dpo", "decontaminate", "evaluate", "export", "ingest", "inspect", "judge_fit", "publish", "pull", "report", "score", "stage",
    "train", "verify",
]


def __getattr__(name: str) -> Any:
    if name in _VERBS:
        return getattr(importlib.import_module(_VERBS[name]), name)
    raise AttributeError(f"module 'sc_data.api' has no attribute {name!r}; verbs: {__all__}")


def __dir__() -> list[str]:
    return __all__
