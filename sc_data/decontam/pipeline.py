"""The ``decontaminate`` verb: a pairs or scored Parquet minus the pairs whose prompt is in an eval set.

Runs between ingest (or score) and stage. Every input row is kept or goes to the rejects file with
the method that caught it and the eval item it matched (set, line, id, score), so
``rows_in == rows_out + rows_rejected``. The methods run in order (exact, n-gram, embedding) and a
row caught by one is not checked by the next, so the per-method counts add up. Kept rows are
written unchanged, in order, with every column, so the output feeds ``score`` or ``stage`` like its
input. The manifest keeps the input's kind, licences, scorers and models and adds a
``decontamination`` record (eval sets with sha256 and item counts, methods, thresholds, removals
per method and per eval set), which ``score`` and ``stage`` carry forward into the dataset card.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sc_data.decontam.evalsets import EvalItem, EvalSet, read_eval_set
from sc_data.decontam.match import EmbeddingIndex, ExactIndex, Match, NgramIndex
from sc_data.decontam.text import DEFAULT_NGRAM, Turns, prompt_turns
from sc_data.errors import InputError, config_error
from sc_data.ingest.arrow import raw_excerpt, rejects_to_table
from sc_data.io import PARQUET_COMPRESSION, atomic_path, sha256_file
from sc_data.manifest import (
    checked,
    claim_output_files,
    file_entry,
    listed_path,
    manifest_path,
    new_manifest,
    upstream_of,
    write_manifest,
)
from sc_data.schema import REJECT_SCHEMA

#: The reject reason of a removed pair: ``contaminated:<method>``.
REASON_PREFIX = "contaminated:"
#: Input rows matched and written at a time (one row group of the output each).
BATCH_ROWS = 65_536
#: Characters of each prompt kept in a reject's ``raw`` JSON (two prompts stay within the rejects' raw limit, so it parses).
_PROMPT_CHARS = 600


class DecontamOptions(BaseModel):
    """How close a training prompt may come to an eval prompt; each field documents itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ngram: int = Field(
        DEFAULT_NGRAM, ge=1,
        description="Word n-gram length of the n-gram method (8: long enough that a shared gram is rarely a stock "
        "phrase, short enough for one-sentence safety prompts). Prompts shorter than this are left to exact/embedding.",
    )
    threshold: float = Field(
        0.6, gt=0, le=1,
        description="Remove a pair when this share of the shorter prompt's n-grams is in the other "
        "(overlap coefficient). 0.6 keeps templated prompts that differ in one name (0.5) and catches containment (1.0).",
    )
    embedding: bool = Field(False, description="Also compare sentence embeddings (needs the score extra: torch, sentence-transformers).")
    embedding_threshold: float = Field(
        0.92, gt=0, le=1, description="Remove a pair when the cosine of its prompt's and an eval prompt's embeddings reaches this.",
    )
    encoder: str = Field("all-minilm-l6-v2", description="Sentence encoder of the embedding method.")
    device: str = Field("auto", description="Device of the embedding encoder: auto, cpu, cuda, cuda:N, mps.")


def make_decontam_options(**kwargs: Any) -> DecontamOptions:
    """Build :class:`DecontamOptions`, turning pydantic's error into a :class:`ConfigError`."""
    try:
        return DecontamOptions(**kwargs)
    except ValidationError as e:
        raise config_error("decontaminate option(s)", e) from None


@dataclass
class DecontamResult:
    """Counts and paths of one run; ``rows_in == rows_out + rows_rejected``."""

    output: Path
    rejects: Path
    manifest: Path
    rows_in: int
    rows_out: int
    rows_rejected: int
    by_method: dict[str, int] = field(default_factory=dict)
    by_eval_set: dict[str, int] = field(default_factory=dict)
    eval_sets: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``sc-data decontaminate --json`` prints)."""
        return {**self.__dict__, "output": str(self.output), "rejects": str(self.rejects),
                "manifest": str(self.manifest), "seconds": round(self.seconds, 3)}


def _open_input(path: Path) -> pq.ParquetFile:
    try:
        source = pq.ParquetFile(path)
    except FileNotFoundError as e:
        raise InputError(f"input {str(path)!r} does not exist; pass the Parquet file `sc-data ingest` or `score` wrote") from e
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"cannot read {str(path)!r} as Parquet ({e}); run `sc-data ingest` on raw files first") from e
    if "prompt" not in source.schema_arrow.names:
        raise InputError(f"{str(path)!r} has no 'prompt' column (columns: {source.schema_arrow.names}); is it an sc-data pairs file?")
    return source


def _batches(source: pq.ParquetFile, path: Path) -> Iterator[pa.RecordBatch]:
    """The input's rows, :data:`BATCH_ROWS` at a time; a part that can't be read is an :class:`InputError` saying how far reading got."""
    rows = 0
    try:
        for batch in source.iter_batches(batch_size=BATCH_ROWS):
            yield batch
            rows += batch.num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"cannot read {str(path)!r} past row {rows} ({e})") from e


class _Finder:
    """The eval prompts' indexes, built once for the whole input."""

    def __init__(self, items: list[Turns], options: DecontamOptions) -> None:
        self._options = options
        self._exact, self._ngram = ExactIndex(items), NgramIndex(items, options.ngram)
        self._embedding = EmbeddingIndex(items, options.encoder, options.device) if options.embedding else None

    def find(self, prompts: list[Turns]) -> dict[int, tuple[str, Match]]:
        """Row -> (method, (eval item, score)) of every row of ``prompts`` that matches, by the first method that catches it."""
        found: dict[int, tuple[str, Match]] = {}
        for row, turns in enumerate(prompts):
            if (hit := self._exact.best(turns)) is not None:
                found[row] = ("exact", hit)
            elif (hit := self._ngram.best(turns)) is not None and hit[1] >= self._options.threshold:
                found[row] = ("ngram", hit)
        if self._embedding is not None:
            rest = [row for row in range(len(prompts)) if row not in found and prompts[row]]
            for row, hit in zip(rest, self._embedding.best_many([prompts[r] for r in rest]), strict=True):
                if hit[1] >= self._options.embedding_threshold:
                    found[row] = ("embedding", hit)
        return found


@dataclass
class _Tally:
    """What :func:`_sift` saw: rows in, and the removed rows by method and by eval set."""

    rows_in: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    by_eval_set: Counter[str] = field(default_factory=Counter)


def _sift(source: pq.ParquetFile, path: Path, finder: _Finder, where: list[tuple[EvalSet, EvalItem]],
          kept_path: Path, rejects_path: Path, progress: Callable[[int], None] | None) -> _Tally:
    """Write the input's rows that match no eval prompt to ``kept_path`` and the others to ``rejects_path``, a batch at a time.

    WHY batches: memory stays flat in the input's size (the eval sets' indexes are built once).
    """
    tally = _Tally()
    with pq.ParquetWriter(kept_path, source.schema_arrow, compression=PARQUET_COMPRESSION) as kept, \
            pq.ParquetWriter(rejects_path, REJECT_SCHEMA, compression=PARQUET_COMPRESSION) as rejected:
        for batch in _batches(source, path):
            prompts = [prompt_turns(p) for p in batch.column("prompt").to_pylist()]
            found = finder.find(prompts)
            ids = batch.column("id").to_pylist() if "id" in batch.schema.names else [None] * batch.num_rows
            if found:
                rejected.write_table(rejects_to_table(
                    [_reject(str(path), tally.rows_in + r, ids[r], prompts[r], *found[r], where) for r in sorted(found)]))
            keep = np.ones(batch.num_rows, dtype=bool)
            keep[list(found)] = False
            kept.write_batch(batch.filter(pa.array(keep)))
            tally.rows_in += batch.num_rows
            tally.by_method.update(method for method, _ in found.values())
            tally.by_eval_set.update(where[hit[0]][0].spec for _, hit in found.values())
            if progress is not None:
                progress(batch.num_rows)
    return tally


def _reject(source: str, row: int, pair_id: Any, turns: Turns, method: str, hit: Match,
            where: list[tuple[EvalSet, EvalItem]]) -> tuple[str, int, str, str, str | None]:
    """One rejects row: the pair's row (1-based) and prompt, the method, and the eval item it matched."""
    eval_set, item = where[hit[0]]
    raw = {"id": pair_id, "prompt": "\n".join(turns)[:_PROMPT_CHARS], "method": method, "score": round(hit[1], 4),
           "eval": {"path": eval_set.spec, "line": item.line, "id": item.id, "prompt": "\n".join(item.turns)[:_PROMPT_CHARS]}}
    return source, row + 1, "prompt", REASON_PREFIX + method, raw_excerpt(json.dumps(raw, ensure_ascii=False))


def decontaminate(
    input: str | Path,  # noqa: A002
    against: Sequence[str | Path],
    output: str | Path,
    *,
    rejects: str | Path | None = None,
    options: DecontamOptions | None = None,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
    **kwargs: Any,
) -> DecontamResult:
    """Remove the pairs whose prompt matches a prompt of an eval set; write the rest, the rejects and a manifest.

    Args:
        input: a pairs or scored Parquet (what ``ingest`` or ``score`` wrote).
        against: eval sets: pair files in any layout ``ingest`` reads, CSV / JSONL / Parquet with a
            ``prompt`` column, ``.txt`` files (one prompt per line) or ``datasets`` names.
        output: the Parquet to write (atomically): the input's rows that match no eval prompt.
        rejects: the removed pairs (rejects schema); default ``<output stem>.rejects.parquet``.
        options: a :class:`DecontamOptions`, or its fields as keywords (``ngram``, ``threshold``, ``embedding``, ...).
        overwrite: replace outputs that exist (only files an sc-data manifest lists).
        progress: called with the number of input rows done after each batch of :data:`BATCH_ROWS`.

    Returns:
        A :class:`DecontamResult`.

    Raises:
        InputError: the input or an eval set can't be read, or an eval set holds no prompt.
        ConfigError: an option is invalid, or an output exists (see ``overwrite``).

    Example:
        >>> decontaminate("pairs.parquet", ["xstest_prompts.csv"], "clean.parquet").rows_rejected  # doctest: +SKIP
        0
    """
    if options is not None and kwargs:
        raise TypeError("pass either options= or keyword options, not both")
    options = options or make_decontam_options(**kwargs)
    if not against:
        raise InputError("no eval set given; pass one or more with --against (a file or a dataset name)")
    started = time.perf_counter()
    input_path, output = Path(input), Path(output)
    rejects_path = Path(rejects) if rejects else output.with_name(f"{output.stem}.rejects.parquet")
    claim_output_files([output, rejects_path], manifest_path(output), overwrite=overwrite)
    source = _open_input(input_path)
    eval_sets = [read_eval_set(spec) for spec in against]
    where = [(s, item) for s in eval_sets for item in s.items]
    finder = _Finder([item.turns for _, item in where], options)
    with atomic_path(rejects_path) as tmp_rej, atomic_path(output) as tmp_out:
        tally = _sift(source, input_path, finder, where, tmp_out, tmp_rej, progress)
        removed = sum(tally.by_method.values())
        result = DecontamResult(
            output, rejects_path, manifest_path(output), tally.rows_in, tally.rows_in - removed, removed,
            by_method=dict(tally.by_method), by_eval_set=dict(tally.by_eval_set),
            eval_sets=[s.to_dict() for s in eval_sets], seconds=time.perf_counter() - started,
        )
        record = checked(_manifest(result, input_path, options, written=(tmp_out, tmp_rej)))
    write_manifest(record, result.manifest)
    return result


def _manifest(result: DecontamResult, input_path: Path, options: DecontamOptions, written: tuple[Path, Path]) -> dict[str, Any]:
    """The output's manifest: the input's kind, licences, scorers and models, plus the ``decontamination`` record.

    ``written``: where the output and rejects are until they take their names.
    """
    digest = sha256_file(input_path)
    upstream = upstream_of(input_path, sha256=digest)
    methods = ["exact", "ngram", *(["embedding"] if options.embedding else [])]
    record = {
        "eval_sets": result.eval_sets,
        "methods": methods,
        "options": options.model_dump(),
        "removed_by_method": {m: result.by_method.get(m, 0) for m in methods},
        "removed_by_eval_set": {s["path"]: result.by_eval_set.get(s["path"], 0) for s in result.eval_sets},
    }
    counts: dict[str, Any] = {
        "rows_in": result.rows_in, "rows_out": result.rows_out, "rows_rejected": result.rows_rejected,
        "by_reason": {REASON_PREFIX + m: n for m, n in sorted(result.by_method.items())},
    }
    if "counts" in upstream:
        counts["input"] = upstream["counts"]
    return new_manifest(
        upstream.get("kind", "pairs"),
        inputs=[{"path": str(input_path), "sha256": digest, "format": "parquet"}],
        recipe={"step": "decontaminate", **options.model_dump()},
        counts=counts,
        files=[file_entry(result.manifest.parent, listed_path(result.output, result.manifest), result.rows_out, written=written[0]),
               file_entry(result.manifest.parent, listed_path(result.rejects, result.manifest), result.rows_rejected, written=written[1])],
        licenses=list(upstream.get("licenses", [])),
        decontamination=record,
        **{k: upstream[k] for k in ("scorers", "models") if k in upstream},
    )
