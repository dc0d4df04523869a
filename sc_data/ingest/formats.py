"""The source layouts ingest knows: one registry entry each, with everything that decides the layout.

An entry names the columns the layout needs, the rule that recognises it from the first rows, the
converter factory (one raw row -> :class:`~sc_data.ingest.rows.Pair`) and the licence of the known
source. ``--format auto`` tries the rules in registry order, first match wins:

1. a column map was given -> ``mapped``;
2. ``response_0``, ``response_1`` and their ``is_response_k_safe`` flags -> ``pku-saferlhf``;
3. ``chosen``/``rejected`` with a string ``prompt`` starting with ``Human:`` -> ``paper``;
4. ``chosen``/``rejected`` strings holding ``\\n\\nHuman:`` markers, no ``prompt`` -> ``hh-rlhf``;
5. ``chosen``/``rejected`` otherwise (explicit or implicit prompt) -> ``trl``.

Adding a layout is one converter module and one entry here; ``--format`` and the README's
table of formats are derived from :data:`FORMATS`. A name that is not registered is an error,
never a silent fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sc_data.errors import ConfigError, InputError
from sc_data.ingest import hh_rlhf, mapped, pku, trl
from sc_data.ingest.rows import Converter

if TYPE_CHECKING:
    from sc_data.ingest.config import IngestOptions

Rows = Sequence[dict[str, Any]]


def columns_of(rows: Rows) -> list[str]:
    """Union of the keys of ``rows``, in first-seen order."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def _strings(rows: Rows, column: str) -> list[str]:
    return [r[column] for r in rows if isinstance(r.get(column), str)]


def _is_pku(rows: Rows, columns: set[str]) -> bool:
    return set(pku.SIGNATURE) <= columns


def _is_paper(rows: Rows, columns: set[str]) -> bool:
    prompts = _strings(rows, "prompt")
    return {"chosen", "rejected", "prompt"} <= columns and bool(prompts) and all(p.lstrip().startswith("Human:") for p in prompts)


def _is_hh(rows: Rows, columns: set[str]) -> bool:
    chosen = _strings(rows, "chosen")
    return (
        {"chosen", "rejected"} <= columns and "prompt" not in columns and bool(chosen)
        and all("\n\nHuman:" in c or c.startswith("Human:") for c in chosen)
    )


def _is_trl(rows: Rows, columns: set[str]) -> bool:
    return {"chosen", "rejected"} <= columns


@dataclass(frozen=True)
class Format:
    """One source layout.

    Attributes:
        name: what ``--format`` takes.
        shape: the layout in one line (for help texts and the README).
        required: columns at least one of the first rows must have (a row lacking one is a reject).
        converter: ``converter(source_name, options)`` -> the row converter.
        detect: whether the first rows look like this layout (None: only chosen explicitly).
        license: the known source's licence, carried into manifests and the dataset card.
    """

    name: str
    shape: str
    required: tuple[str, ...]
    converter: Callable[[str, IngestOptions], Converter]
    detect: Callable[[Rows, set[str]], bool] | None = None
    license: str | None = None


#: Every layout, in detection order (``mapped`` is chosen by a column map, not detected).
FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format(
            "mapped", "anything, with --map canonical=yours", (),
            lambda source, o: mapped.make_converter(source, o.column_map or {}),
        ),
        Format(
            "pku-saferlhf", "prompt, response_0/1, is_response_k_safe, safer_response_id, ...harm_category, ...",
            (*pku.SIGNATURE, "prompt"),
            lambda source, o: pku.make_converter(source, prefer=o.prefer, safety_pairs=o.safety_pairs),
            _is_pku, pku.LICENSE,
        ),
        Format(
            "paper", '{"prompt": "Human: ...", "chosen", "rejected"} (the Staged-Competence release)',
            ("prompt", "chosen", "rejected"), lambda source, o: hh_rlhf.make_paper_converter(source), _is_paper, hh_rlhf.LICENSE,
        ),
        Format(
            "hh-rlhf", '{"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...", "rejected": ...}',
            ("chosen", "rejected"), lambda source, o: hh_rlhf.make_hh_converter(source), _is_hh, hh_rlhf.LICENSE,
        ),
        Format(
            "trl", "prompt/chosen/rejected strings or message lists, implicit prompt too",
            ("chosen", "rejected"), lambda source, o: trl.make_converter(source), _is_trl,
        ),
    )
}

#: What ``--format`` accepts.
FORMAT_NAMES: tuple[str, ...] = ("auto", *FORMATS)


def get_format(name: str) -> Format:
    """The registered layout ``name``.

    Raises:
        ConfigError: no such layout (the valid names are listed).
    """
    if name not in FORMATS:
        raise ConfigError(f"unknown format {name!r}; valid formats: {list(FORMAT_NAMES)}")
    return FORMATS[name]


def detect_format(rows: Rows, *, where: str, column_map: dict[str, str] | None) -> str:
    """Guess the layout of ``rows`` (see the module docstring).

    Raises:
        InputError: no layout fits; the message lists the columns seen and how to map them.
    """
    if column_map:
        return "mapped"
    columns = set(columns_of(rows))
    for fmt in FORMATS.values():
        if fmt.detect is not None and fmt.detect(rows, columns):
            return fmt.name
    raise InputError(
        f"can't detect the format of {where}: its columns are {columns_of(rows)}. Known layouts: "
        "hh-rlhf (chosen, rejected), paper / trl (prompt, chosen, rejected), pku-saferlhf "
        "(prompt, response_0, response_1, ...). Map yours with e.g. --map prompt=question "
        "--map chosen=good --map rejected=bad"
    )


def check_columns(rows: Rows, fmt: str, *, where: str, column_map: dict[str, str] | None) -> None:
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
    missing = [c for c in get_format(fmt).required if c not in columns]
    if missing:
        raise InputError(
            f"{where} has no column(s) {missing} needed by format {fmt!r}; columns seen: {columns}. "
            "Pick another --format, or map the columns with --format mapped --map chosen=COLUMN ..."
        )


def make_converter(fmt: str, source: str, options: IngestOptions) -> Converter:
    """The row converter of layout ``fmt``, bound to the input's name and the options."""
    return get_format(fmt).converter(source, options)
