"""Scored fixtures for the staging tests: canonical rows (sc_data.schema) + synthetic score columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sc_data.schema import MESSAGES_TYPE, category_names, pair_schema

CATEGORIES = ("violence_physical_harm", "privacy", "cybercrime", None)


def make_scored(
    n: int,
    *,
    seed: int = 0,
    n_prompts: int | None = None,
    categories: tuple[str | None, ...] = CATEGORIES,
    scores: tuple[str, ...] = ("ref_margin__margin_mean", "judge__severity"),
) -> pa.Table:
    """A scored table of ``n`` pairs; ``n_prompts`` < n makes prompts repeat (grouping tests)."""
    rng = np.random.default_rng(seed)
    n_prompts = n_prompts or n
    prompt_of = rng.integers(0, n_prompts, n) if n_prompts < n else np.arange(n)
    cats = [categories[i % len(categories)] for i in range(n)]
    cols = {
        "id": [f"id{i:06d}" for i in range(n)],
        # Case and spacing variants of one prompt must group together.
        "prompt": [
            [{"role": "user", "content": (f"How do I  do thing {p}?" if i % 2 else f"how do i do THING {p}? ")}]
            for i, p in enumerate(prompt_of)
        ],
        "chosen": [[{"role": "assistant", "content": f"I can't help with that ({i})."}] for i in range(n)],
        "rejected": [[{"role": "assistant", "content": f"Sure, here is how ({i})."}] for i in range(n)],
        "categories": [[c] if c else [] for c in cats],
        "category": cats,
        "source": ["synthetic"] * n,
        "chosen_safe": [True] * n,
        "rejected_safe": [False] * n,
    }
    table = pa.table(cols, schema=pair_schema())
    for name in scores:
        if name == "judge__severity":
            table = table.append_column(name, pa.array(rng.integers(0, 4, n), pa.int64()))
        else:
            table = table.append_column(name, pa.array(rng.normal(size=n), pa.float64()))
    return table


assert MESSAGES_TYPE is not None and "unknown" in category_names()


@pytest.fixture
def scored_small() -> pa.Table:
    return make_scored(60, seed=1, n_prompts=45)
