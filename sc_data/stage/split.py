"""Which rows go where: the eval and dev hold-outs, and the training-data budget.

Hold-outs take whole prompt groups (rows whose normalised prompt agrees, and with
``near_duplicates`` also prompts that ``sc-data decontaminate`` would match), so no prompt sits on both
sides of a split, and spread evenly over strata of difficulty quartile x category, so the eval set
has the training set's mix (the paper: 80/20 by difficulty quartile). The budget then keeps a
fraction of the training rows: from the easiest or hardest end, or uniformly within each tier.

Functions take arrays over the candidate rows and return masks or positions into those arrays;
:func:`sc_data.stage.plan` maps them back to table rows.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sc_data.decontam.match import near_duplicate_components
from sc_data.decontam.text import prompt_turns
from sc_data.stage.order import order_by, then_by_codes

SPLIT_NAMES = ("train", "eval", "dev")
TRAIN, EVAL, DEV = 0, 1, 2  # split codes: indices into SPLIT_NAMES

# Python's str.split() whitespace, which normalised_prompt_key collapses; RE2 has no such class.
_PY_WHITESPACE = r"[\s\x0b\x1c-\x1f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]+"
#: Texts the collapse changes: a whitespace character other than the plain space, or two spaces.
_NEEDS_COLLAPSE = r"[\t\n\f\r\x0b\x1c-\x1f\x85\xa0\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}]|  "


def prompt_group_codes(prompt: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Int group per row: rows share a code iff their :func:`normalised_prompt_key` agrees.

    The key (NFC, lower case, whitespace runs collapsed, ``role:content`` per message) is built
    with pyarrow compute instead of a Python loop; tests check it against the reference function.
    """
    arr = prompt.combine_chunks() if isinstance(prompt, pa.ChunkedArray) else prompt
    messages = arr.values  # unsliced child; the offsets below index into it
    content = pc.utf8_normalize(messages.field("content"), "NFC")
    content = pc.utf8_lower(content)
    # The replacement is the slowest kernel here (seconds per million rows); most texts need
    # none (single plain spaces only), and a match-only scan finds the ones that do.
    needs = pc.fill_null(pc.match_substring_regex(content, _NEEDS_COLLAPSE), False)
    if pc.any(needs).as_py():
        content = pc.replace_with_mask(content, needs, pc.replace_substring_regex(pc.filter(content, needs), _PY_WHITESPACE, " "))
    content = pc.utf8_trim(content, " ")
    text = pc.binary_join_element_wise(messages.field("role"), content, ":")
    joined = pc.binary_join(pa.ListArray.from_arrays(arr.offsets, text), "\n")
    return pc.dictionary_encode(joined).indices.to_numpy(zero_copy_only=False).astype(np.int64)


def merge_near_duplicates(
    prompt: pa.ChunkedArray | pa.Array, rows: np.ndarray, groups: np.ndarray, *, n: int, threshold: float
) -> tuple[np.ndarray, int]:
    """Merge prompt groups whose prompts decontaminate's exact or n-gram method would match.

    One prompt per group (its first row) is compared, through
    :func:`sc_data.decontam.match.near_duplicate_components`, so a held-out split ends up
    decontaminated from the training split by the same measure ``sc-data decontaminate`` applies.

    Args:
        prompt: the table's whole ``prompt`` column.
        rows: (m,) the table rows ``groups`` belong to.
        groups: (m,) prompt group per row (:func:`prompt_group_codes`).
        n, threshold: word n-gram length and overlap coefficient (decontaminate's ``ngram`` / ``threshold``).

    Returns:
        ((m,) merged group per row, the number of groups merged away).
    """
    uniq, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
    firsts = prompt.take(pa.array(rows[first], pa.int64())).to_pylist()
    labels = near_duplicate_components([prompt_turns(p) for p in firsts], n, threshold)
    return labels[inverse.reshape(-1)], len(uniq) - len(np.unique(labels))


def grouped_holdout(
    groups: np.ndarray, strata: np.ndarray, fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Pick ~``fraction`` of the rows, whole groups at a time, evenly across strata.

    Groups are shuffled, ordered by stratum, and taken by systematic sampling (every
    1/fraction-th group from a random start), so each group is taken with probability
    ``fraction`` whatever its size, every stratum gets its share within one group, and the total
    stays close to fraction x N even with many small strata (where rounding per stratum would
    take nothing). A group's stratum is that of its first row.

    Returns:
        bool mask (n,) of rows held out.
    """
    n = len(groups)
    if n == 0 or fraction <= 0:
        return np.zeros(n, dtype=bool)
    inverse, first = _dense_groups(groups)
    shuffle = rng.permutation(len(first))
    # Groups by stratum, then by shuffled position: np.lexsort((shuffle, strata[first])), linear.
    by_shuffle = np.empty_like(shuffle)
    by_shuffle[shuffle] = np.arange(len(shuffle))
    order = then_by_codes(by_shuffle, strata[first])
    position = np.arange(len(first))
    start = rng.random()
    taken_sorted = np.floor(fraction * (position + 1) + start) > np.floor(fraction * position + start)
    taken = np.empty(len(first), dtype=bool)
    taken[order] = taken_sorted
    return taken[inverse]


def _dense_groups(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(groups, return_index=True, return_inverse=True)`` without its sort, for codes >= 0.

    Group codes are below the table's row count, so a mark per code replaces the n log n sort.

    Returns:
        ((n,) index of each row's group among the distinct codes in ascending order,
        (g,) first row of each group).
    """
    seen = np.zeros(int(groups.max()) + 1, dtype=bool)
    seen[groups] = True
    inverse = (np.cumsum(seen) - 1)[groups]
    first = np.full(int(seen.sum()), len(groups), dtype=np.int64)
    np.minimum.at(first, inverse, np.arange(len(groups)))
    return inverse, first


def assign_splits(
    groups: np.ndarray,
    difficulty: np.ndarray,
    categories: np.ndarray,
    *,
    eval_fraction: float,
    dev_fraction: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Split code (:data:`TRAIN`, :data:`EVAL`, :data:`DEV`) of each row.

    The eval split is held out first; the dev split (``dev_fraction`` of all rows, so
    ``dev_fraction / (1 - eval_fraction)`` of the rest) only from what remains, so Cat-DPO's
    controller never sees an eval prompt.

    Args:
        groups: (n,) prompt group per row (:func:`prompt_group_codes`).
        difficulty: (n,) in [0, 1], no NaN.
        categories: (n,) int category code per row.
        eval_fraction, dev_fraction: shares of all n rows; their sum < 1.
        rng: consumed in a fixed order, so a seed fixes the result.

    Returns:
        int64 (n,) split codes.
    """
    quartile = np.minimum(np.floor(difficulty * 4), 3).astype(np.int64)
    strata = categories * 4 + quartile
    split = np.where(grouped_holdout(groups, strata, eval_fraction, rng), EVAL, TRAIN)
    if dev_fraction > 0:
        rest = np.flatnonzero(split == TRAIN)
        share = dev_fraction / (1.0 - eval_fraction)
        split[rest[grouped_holdout(groups[rest], strata[rest], share, rng)]] = DEV
    return split


def budget_from_end(
    difficulty: np.ndarray, tie_break: np.ndarray, budget: float, end: Literal["easiest", "hardest"]
) -> np.ndarray:
    """Positions dropped so that round(budget x n) rows are kept from the ``end`` of difficulty.

    Ties in difficulty are broken by ``tie_break`` so the cut is deterministic.
    """
    n_keep = int(round(budget * len(difficulty)))
    order = order_by(difficulty, tie_break)  # easiest first
    return order[n_keep:] if end == "easiest" else order[: len(order) - n_keep]


def budget_within_tiers(tier: np.ndarray, budget: float, rng: np.random.Generator) -> np.ndarray:
    """Positions dropped so that each tier keeps round(budget x its size) rows, chosen at random.

    Keeping the same share of every tier preserves the curriculum's shape (the paper: 0.75).
    """
    order = then_by_codes(order_by(rng.random(len(tier))), tier)  # by tier, random within a tier
    sizes = np.bincount(tier)
    quota = np.round(budget * sizes).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    tier_sorted = tier[order]
    position_in_tier = np.arange(len(tier)) - starts[tier_sorted]
    return order[position_in_tier >= quota[tier_sorted]]
