"""Reading eval sets: pair files in any layout ``ingest`` reads, prompt lists, text files, Hub ids.

An eval set is read with ingest's readers (files of every kind and compression, ``save_to_disk``
folders, ``datasets`` names) and its layout decided from its first rows: a pair layout ``ingest``
detects (HH-RLHF transcripts, the paper's release, PKU-SafeRLHF, TRL) gives each record's prompt
through that layout's converter; otherwise a ``prompt`` column (a string, a transcript or a
message list) is the prompt list. A ``.txt`` file holds one prompt per line.

A Hub dataset or ``save_to_disk`` folder names its split in the spec, because each ``--against``
may be a different set: ``ORG/NAME[@REV][:[CONFIG/]SPLIT]`` (``PKU-Alignment/PKU-SafeRLHF@v1:test``,
``lmsys/toxic-chat:toxicchat0124/test``, ``saved_dict:test``); git revisions, repo ids and split
names hold no ``:``. The manifest records the repo, config, split, revision and commit read.

Records are not validated as pairs: a record ingest would reject for its answers (an empty
chosen answer) still holds a prompt an evaluator may use, so it is kept. A record whose prompt
can't be read at all is counted as ``unreadable`` in the manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sc_data.decontam.text import Turns, prompt_turns
from sc_data.errors import InputError
from sc_data.ingest.config import make_options
from sc_data.ingest.formats import columns_of, detect_format, make_converter
from sc_data.ingest.readers import Source, resolve
from sc_data.ingest.rows import Converter, RowError
from sc_data.io import sha256_file

#: The layout name recorded for a prompt list (a ``prompt`` column, or a text file's lines).
PROMPT_LIST = "prompts"


@dataclass(frozen=True)
class EvalItem:
    """One eval prompt: where it is (1-based line or row, the record's ``id`` if it has one) and its turns."""

    line: int
    id: str | None
    turns: Turns


@dataclass
class EvalSet:
    """An eval set as read: its spec, sha256, layout, items, and records whose prompt could not be read."""

    spec: str
    sha256: str
    layout: str
    items: list[EvalItem] = field(default_factory=list)
    unreadable: int = 0

    split: str | None = None
    hub: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """The manifest entry (path, sha256, layout, item count, unreadable records; split and Hub commit read)."""
        entry = {"path": self.spec, "sha256": self.sha256, "layout": self.layout, "items": len(self.items),
                 "unreadable": self.unreadable}
        return entry | {k: v for k, v in (("split", self.split), ("hub", self.hub)) if v is not None}


def _layout(rows: list[dict[str, Any]], spec: str) -> str:
    """A pair layout ingest detects, else :data:`PROMPT_LIST` when there is a ``prompt`` column.

    Raises:
        InputError: neither; names the columns seen.
    """
    try:
        return detect_format(rows, where=spec, column_map=None)
    except InputError:
        if "prompt" in columns_of(rows):
            return PROMPT_LIST
        raise InputError(
            f"eval set {spec} is neither a pair file ingest reads nor a prompt list: its columns are "
            f"{columns_of(rows)}. Give it a 'prompt' column (CSV / JSONL), or pass a .txt file with one prompt per line"
        ) from None


def _prompt_of(row: dict[str, Any], convert: Converter | None) -> Any:
    """The row's prompt: through the pair layout's converter, else its ``prompt`` value (None if unreadable)."""
    if convert is None:
        value = row.get("prompt")
        messages = isinstance(value, list) and all(isinstance(m, dict) for m in value)
        return value if isinstance(value, str) or messages else None
    try:
        pair = convert(row)
    except RowError:
        return None
    return [{"role": role, "content": content} for role, content in pair.prompt]


def _read_text_lines(path: Path) -> EvalSet:
    """A ``.txt`` prompt list: one prompt per non-blank line."""
    try:
        lines = path.read_text("utf-8").splitlines()
    except FileNotFoundError as e:
        raise InputError(f"eval set {str(path)!r} does not exist; check the path") from e
    except UnicodeDecodeError as e:
        line = path.read_bytes()[:e.start].count(b"\n") + 1
        raise InputError(f"eval set {str(path)!r} is not UTF-8 text: line {line} ({e.reason}); save it as UTF-8") from e
    items = [EvalItem(n, None, turns) for n, line in enumerate(lines, 1) if (turns := prompt_turns(line))]
    return EvalSet(str(path), sha256_file(path), PROMPT_LIST, items)


def dataset_source(spec: str) -> Source:
    """Resolve an eval set spec with ingest's reader, its ``:[CONFIG/]SPLIT`` selector applied.

    Raises:
        InputError: a config given for something other than a Hub dataset, or a spec ingest can't resolve.
    """
    base, sep, selector = spec.rpartition(":")
    if not sep or Path(spec).expanduser().exists() or not base:
        return resolve(spec)
    config, _, split = selector.rpartition("/")
    source = resolve(base)
    if source.kind not in ("hub", "disk"):
        raise InputError(f"eval set {spec!r}: ':{selector}' names a split, which only a Hub dataset or a save_to_disk "
                         f"folder has, and {base!r} is neither; check the path")
    if config and source.kind != "hub":
        raise InputError(f"eval set {spec!r}: {config!r} names a config, which only a Hub dataset has; write {base}:{split}")
    source.choose(split=split or None, subset=config or None)
    return source


def _read_rows(spec: str) -> EvalSet:
    """Any eval set but a ``.txt`` file, through ingest's readers and its layout's converter."""
    source = dataset_source(spec)
    found = EvalSet(spec, source.sha256(), "")
    convert: Converter | None = None
    for batch in source.batches():
        found.unreadable += len(batch.rejects)
        if batch.rows and not found.layout:
            found.layout = _layout(batch.rows, found.spec)
            if found.layout != PROMPT_LIST:
                options = make_options(format=found.layout, safety_pairs="keep")
                convert = make_converter(found.layout, source.name, options)
        for row, line in zip(batch.rows, batch.lines, strict=True):
            turns = prompt_turns(_prompt_of(row, convert))
            if not turns:
                found.unreadable += 1
                continue
            found.items.append(EvalItem(line, None if row.get("id") is None else str(row["id"]), turns))
    found.split, found.hub = source.split_read, source.hub_record()
    return found


def read_eval_set(spec: str | Path) -> EvalSet:
    """Read one eval set (see the module docstring for the forms it may take).

    Raises:
        InputError: it can't be read, its layout is neither a pair file nor a prompt list, or it
            holds no readable prompt.
    """
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".txt":
        found = _read_text_lines(path)
    else:
        try:
            found = _read_rows(str(spec))
        except InputError as e:
            if "pass --split NAME" not in str(e):
                raise
            raise InputError(f"{e}. For an eval set, name the split in the spec: {spec}:SPLIT") from e
    if not found.items:
        raise InputError(
            f"eval set {found.spec} holds no readable prompt ({found.unreadable} unreadable record(s)); "
            "pass a pair file, a file with a 'prompt' column, or a .txt file with one prompt per line"
        )
    return found
