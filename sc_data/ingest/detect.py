"""Which source layout an input has, from the columns (and a few values) of its first rows.

Rules, first match wins:
1. a column map was given -> ``mapped``;
2. ``response_0``, ``response_1`` and their ``is_response_k_safe`` flags -> ``pku-saferlhf``;
3. ``chosen``/``rejected`` with a string ``prompt`` starting with ``Human:`` -> ``paper``;
4. ``chosen``/``rejected`` with ``prompt`` -> ``trl``;
5. ``chosen``/``rejected`` strings holding ``\\n\\nHuman:`` markers, no ``prompt`` -> ``hh-rlhf``;
6. ``chosen``/``rejected`` otherwise -> ``trl`` (implicit prompt).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sc_data.errors import InputError
from sc_data.ingest import pku

#: Columns each layout needs in at least one of the first rows; a row lacking one is a reject.
REQUIRED = {
    "hh-rlhf": ("chosen", "rejected"),
    "paper": ("prompt", "chosen", "rejected"),
    "pku-saferlhf": (*pku.SIGNATURE, "prompt"),
    "trl": ("chosen", "rejected"),
}


def columns_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Union of the keys of ``rows``, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _strings(rows: Sequence[dict[str, Any]], column: str) -> list[str]:
    return [r[column] for r in rows if isinstance(r.get(column), str)]


def detect_format(rows: Sequence[dict[str, Any]], *, where: str, column_map: dict[str, str] | None) -> str:
    """Guess the layout of ``rows`` (see the module docstring).

    Raises:
        InputError: no layout fits; the message lists the columns seen and how to map them.
    """
    if column_map:
        return "mapped"
    columns = set(columns_of(rows))
    if set(pku.SIGNATURE) <= columns:
        return "pku-saferlhf"
    if {"chosen", "rejected"} <= columns:
        if "prompt" in columns:
            prompts = _strings(rows, "prompt")
            if prompts and all(p.lstrip().startswith("Human:") for p in prompts):
                return "paper"
            return "trl"
        chosen = _strings(rows, "chosen")
        if chosen and all("\n\nHuman:" in c or c.startswith("Human:") for c in chosen):
            return "hh-rlhf"
        return "trl"
    raise InputError(
        f"can't detect the format of {where}: its columns are {columns_of(rows)}. Known layouts: "
        "hh-rlhf (chosen, rejected), paper / trl (prompt, chosen, rejected), pku-saferlhf "
        "(prompt, response_0, response_1, ...). Map yours with e.g. --map prompt=question "
        "--map chosen=good --map rejected=bad"
    )


def check_columns(
    rows: Sequence[dict[str, Any]], fmt: str, *, where: str, column_map: dict[str, str] | None
) -> None:
    """Fail early when no row has a column the layout (or the column map) needs.

    Raises:
        InputError: a needed or mapped column is absent from every row; names the columns seen.
    """
    columns = columns_of(rows)
    if fmt == "mapped":
        if not column_map:
            raise InputError(f"format 'mapped' needs a column map (--map prompt=question ...) for {where}")
        absent = {k: v for k, v in column_map.items() if v not in columns}
        if absent:
            wrong = ", ".join(f"{k}={v}" for k, v in absent.items())
            raise InputError(
                f"column map {wrong}: no such column in {where}; columns seen: {columns}"
            )
        return
    missing = [c for c in REQUIRED[fmt] if c not in columns]
    if missing:
        raise InputError(
            f"{where} has no column(s) {missing} needed by format {fmt!r}; columns seen: {columns}. "
            "Pick another --format, or map the columns with --format mapped --map chosen=COLUMN ..."
        )
