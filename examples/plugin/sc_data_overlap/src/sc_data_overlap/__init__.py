"""An example sc-data scorer plugin: how alike the chosen and rejected answers are.

Pairs whose two answers share most of their words are hard to tell apart, so a high Jaccard
overlap marks a hard pair (``direction = "larger_is_harder"``). No model is needed, which keeps
the example small; a model-based scorer would load it in :meth:`load` and free it in
:meth:`unload`.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from sc_data.scorers.base import Batch, Scorer, ScorerOptions

_WORD = re.compile(r"\w+", re.UNICODE)


def _words(messages: list[dict[str, str]]) -> set[str]:
    return {w.lower() for m in messages for w in _WORD.findall(m["content"])}


class OverlapScorer(Scorer):
    """Jaccard overlap of the word sets of the chosen and rejected answers.

    Input columns: ``chosen``, ``rejected``. Output columns: ``overlap__jaccard`` (float64 in
    [0, 1]), ``overlap__shared_words`` (int64), ``overlap__error``.

    Options: ``min_words`` (see :class:`OverlapScorer.Options`).
    """

    class Options(ScorerOptions):
        min_words: int = Field(1, ge=1, description="Rows whose two answers have fewer words get an error, not a score.")

    name = "overlap"
    fields = {"jaccard": "float64", "shared_words": "int64"}
    difficulty_field = "jaccard"
    direction = "larger_is_harder"
    needs_model = False

    def score(self, batch: Batch) -> dict[str, list[Any]]:
        jaccard: list[float | None] = []
        shared: list[int | None] = []
        errors: list[str | None] = []
        for chosen, rejected in zip(batch["chosen"], batch["rejected"], strict=True):
            a, b = _words(chosen), _words(rejected)
            if len(a | b) < self.min_words:
                jaccard.append(None)
                shared.append(None)
                errors.append(f"fewer than {self.min_words} words in the two answers")
                continue
            jaccard.append(len(a & b) / len(a | b))
            shared.append(len(a & b))
            errors.append(None)
        return {"overlap__jaccard": jaccard, "overlap__shared_words": shared, "overlap__error": errors}
