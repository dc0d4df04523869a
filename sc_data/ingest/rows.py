"""The in-flight pair record and the helpers every source format shares.

Formats turn one raw row (a dict) into a :class:`Pair` or raise :class:`RowError`; the pipeline
turns the error into a reject with its file, line, field and reason. Messages are tuples of
``(role, content)`` tuples while in flight: cheap to build, and flattened into Arrow in one pass
(see ``arrow.py``), which keeps the million-row path fast.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from sc_data.errors import ScDataError
from sc_data.schema import category_names, map_categories, primary_category

Messages = tuple[tuple[str, str], ...]

#: Message roles the canonical schema allows (``sc_data/schemas/pair.schema.json``).
ROLES = frozenset({"system", "user", "assistant"})


class Pair(NamedTuple):
    """One canonical pair before validation; ``id`` is None when the source gives none."""

    id: str | None
    prompt: Messages
    chosen: Messages
    rejected: Messages
    categories: list[str]
    category: str | None
    source: str
    chosen_safe: bool | None
    rejected_safe: bool | None
    #: ``<chosen>/<rejected>`` safety labels of a pair that is not safe-chosen / unsafe-rejected,
    #: written only with ``--safety-pairs flag`` (PKU-SafeRLHF).
    safety_pair: str | None = None


class RowError(Exception):
    """A row can't become a valid pair; ``reason`` is a stable code counted in the manifest."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


Converter = Callable[[dict[str, Any]], Pair]


def require(row: dict[str, Any], name: str, field: str | None = None) -> Any:
    """``row[name]``, or a ``missing_field`` error (a JSON null counts as missing)."""
    value = row.get(name)
    if value is None:
        raise RowError(field or name, "missing_field")
    return value


def as_messages(value: Any, field: str, default_role: str) -> Messages:
    """A string becomes one ``default_role`` turn; a list of ``{role, content}`` dicts is kept.

    Raises:
        RowError: ``wrong_type`` for anything else (numbers, dicts, messages without string
            role/content), ``bad_role`` for a role outside system/user/assistant.
    """
    if isinstance(value, str):
        return ((default_role, value),)
    if not isinstance(value, list) or not value:
        raise RowError(field, "wrong_type")
    out = []
    for message in value:
        if not isinstance(message, dict):
            raise RowError(field, "wrong_type")
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise RowError(field, "wrong_type")
        if role not in ROLES:
            raise RowError(field, "bad_role")
        out.append((role, content))
    return tuple(out)


def as_bool(value: Any, field: str) -> bool | None:
    """A nullable bool; ``wrong_type`` for anything else (``"true"``, 1)."""
    if value is None or isinstance(value, bool):
        return value
    raise RowError(field, "wrong_type")


@functools.cache
def _resolve_label(label: str) -> str | None:
    if label in category_names():
        return label
    for vocabulary in ("pku-saferlhf", "beavertails"):
        try:
            return map_categories([label], vocabulary)[0]
        except ScDataError:
            continue
    return None


def resolve_categories(categories: Any, category: Any) -> tuple[list[str], str | None]:
    """Categories given by a source in any known vocabulary, mapped to the toolkit taxonomy.

    Labels may be toolkit names or PKU-SafeRLHF / BeaverTails labels. A lone ``category`` becomes
    ``categories=[category]``; a missing ``category`` is the primary one of ``categories``.

    Raises:
        RowError: ``wrong_type`` for non-strings, ``unknown_category`` for an unmapped label.
    """
    field = "categories"
    if categories is None:
        field, categories = "category", [] if category is None else [category]
    if isinstance(categories, str):
        categories = [categories]
    if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
        raise RowError(field, "wrong_type")
    mapped = []
    for label in categories:
        name = _resolve_label(label)
        if name is None:
            raise RowError(field, "unknown_category")
        if name not in mapped:
            mapped.append(name)
    order = {name: i for i, name in enumerate(category_names())}
    mapped.sort(key=order.__getitem__)
    if category is None:
        return mapped, primary_category(mapped)
    if not isinstance(category, str):
        raise RowError("category", "wrong_type")
    primary = _resolve_label(category)
    if primary is None:
        raise RowError("category", "unknown_category")
    return mapped, primary


def source_id(row: dict[str, Any]) -> str | None:
    """The source's own ``id`` as a string, or None (then the content id is used)."""
    value = row.get("id")
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        text = str(value)
        return text if text.strip() else None
    raise RowError("id", "wrong_type")
