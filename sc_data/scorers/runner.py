"""``score``: run scorers over a canonical pairs table, resumably and data-parallel.

The runner reads the pairs Parquet, checks the wiring (scorer names, options, output-column
clashes) before any model loads, then orders the rows by length (characters of prompt and
answers) and scores consecutive runs of ``part_rows`` rows of that order: a scorer that batches
by length then pads little, as if the whole input were sorted, while a part stays a small unit of
work. Each part's score columns (and the row numbers it covers) are written as its own file in
``<output>.parts/`` the moment it is done (atomic rename). A
crash, Ctrl-C or SIGKILL loses at most the range in flight: ``resume=True`` skips the parts that
exist and gives the same table as an uninterrupted run; ``state.json`` there holds the config hash,
and resuming with another configuration is refused. The scorers' resolved configuration (model
hashes, templates) is kept there too, so a resume with nothing left to score writes the same
manifest without loading a model. When all parts exist they are merged back into input order into
``output`` together with a ``<output stem>.manifest.json``.

A scorer that raises on a batch is retried row by row, so one bad row gets nulls and a message
in ``<scorer>__error`` and never aborts the run or disappears.

Under ``accelerate launch`` / ``torchrun`` (``WORLD_SIZE`` > 1) rank r scores parts r, r+W, r+2W,
... so every rank gets short and long rows alike; the parts do not depend on W, so a resume may
use another number of processes. accelerate's process group makes ranks wait for each other and
rank 0 merges.

Example:
    >>> score("pairs.parquet", "scored.parquet", scorers=["ref_margin"],
    ...       options={"ref_margin": {"max_length": 512}})  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sc_data.config import load_config
from sc_data.errors import ConfigError, InputError, ScDataError, ScorerFailure
from sc_data.io import atomic_path, sha256_file, write_json, write_parquet
from sc_data.manifest import (
    checked,
    claim_output_files,
    file_entry,
    manifest_path,
    new_manifest,
    upstream_of,
    write_manifest,
)
from sc_data.schema import pair_schema, validate_table
from sc_data.scorers.base import Batch, Scorer, available_scorers, get_scorer_class

#: ``progress(rows_done, rows_total)`` over this process's parts.
Progress = Callable[[int, int], None]

STATE_FILE = "state.json"
#: The loaded scorers' ``config()`` (model hashes, templates), for a manifest written without loading.
SCORERS_FILE = "scorers.json"
DEFAULT_PART_ROWS = 64
#: The part files' column of input row numbers (scorer columns are ``<scorer>__<field>``, never this).
ROW_COLUMN = "__row"
_PART_RE = re.compile(r"^part-(\d{12})-(\d{12})\.parquet$")


@dataclass
class ScoreResult:
    """What :func:`score` did.

    Attributes:
        output: the merged scored table (written by rank 0).
        manifest: its manifest path.
        rows: rows in = rows out.
        errors: scorer name -> rows that got an error message.
        resumed_rows: rows this process took from existing parts instead of scoring.
        rank / world_size: this process's place in a data-parallel run.
        pairs: the canonical pairs that were scored (the input, or what raw inputs were ingested into).
    """

    output: Path
    manifest: Path
    rows: int
    errors: dict[str, int] = field(default_factory=dict)
    resumed_rows: int = 0
    rank: int = 0
    world_size: int = 1
    pairs: Path | None = None


def parts_dir(output: Path) -> Path:
    """Folder of the part files of ``output`` (``scored.parquet.parts``)."""
    return output.with_name(f"{output.name}.parts")


def scorer_options(
    scorers: Sequence[str | Scorer], options: dict[str, dict[str, Any]] | None, config_file: str | os.PathLike[str] | None
) -> tuple[list[str | Scorer], dict[str, dict[str, Any]]]:
    """Which scorers run and with which options: ``config_file``'s ``scorers:``, then ``options`` on top.

    The file's scorers run when ``scorers`` is empty; it may configure more scorers than run.

    Raises:
        ConfigError: the file is not ``{scorers: {name: {option: value}}}``.
    """
    overrides = {f"scorers.{name}.{key}": value for name, opts in (options or {}).items() for key, value in opts.items()}
    data = load_config(config_file, overrides)
    if set(data) - {"scorers"}:
        raise ConfigError(
            f"config file {str(config_file)!r} must be a mapping with the one key 'scorers' "
            f"({{scorers: {{ref_margin: {{model: ..., max_length: ...}}}}}}); got keys {sorted(data)}"
        )
    configured = data.get("scorers") or {}
    if not isinstance(configured, dict) or not all(isinstance(v, dict | type(None)) for v in configured.values()):
        raise ConfigError(f"config file {str(config_file)!r}: 'scorers' must map scorer names to option mappings")
    wanted = list(scorers) or list(configured)
    names = {w if isinstance(w, str) else w.name for w in wanted}
    extra = sorted(set(options or {}) - names)
    if extra:
        raise ConfigError(f"options given for scorer(s) {extra} that are not being run; scorers: {sorted(names)}")
    return wanted, {name: dict(configured.get(name) or {}) for name in names if isinstance(name, str)}


def build_scorers(scorers: Sequence[str | Scorer], options: dict[str, dict[str, Any]] | None = None) -> list[Scorer]:
    """Instantiate scorers by name with their options; check wiring and options before any model loads.

    Raises:
        ConfigError: no scorer, an unknown name (the valid ones are listed), an unknown option
            (the valid ones are listed), an invalid option value, a duplicate, or two scorers
            writing the same column.
    """
    options = dict(options or {})
    if not scorers:
        raise ConfigError(f"no scorer given; pass one or more of {available_scorers()} (--scorer NAME)")
    built = [item if isinstance(item, Scorer) else get_scorer_class(item)(**options.get(item, {})) for item in scorers]
    names = [s.name for s in built]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"scorer(s) {dupes} given more than once; each scorer runs once per table")
    seen: dict[str, str] = {}
    for s in built:
        for col in s.output_columns():
            if col in seen:
                raise ConfigError(f"scorers {seen[col]!r} and {s.name!r} both write column {col!r}")
            seen[col] = s.name
    for s in built:
        s.validate()
    return built


def _config_hash(input_sha: str, scorers: list[Scorer], part_rows: int) -> str:
    payload = {
        "input_sha256": input_sha,
        "part_rows": part_rows,
        "order": "length",
        "scorers": [
            {"name": s.name, "class": f"{type(s).__module__}.{type(s).__qualname__}", "options": s.options()}
            for s in scorers
        ],
    }
    try:
        blob = json.dumps(checked(payload), sort_keys=True).encode("utf-8")
    except TypeError as e:  # refused before anything is scored, not when the manifest is written
        raise ConfigError(f"scorer options must be JSON values (the manifest and the resume key record them): {e}") from None
    return hashlib.sha256(blob).hexdigest()


def _error_message(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:2000]


def _to_arrays(scorer: Scorer, values: dict[str, list[Any]], n: int) -> dict[str, pa.Array]:
    """Check a scorer's result has every column with ``n`` values, and type it."""
    arrays = {}
    error_col = f"{scorer.name}__error"
    for col, typ in scorer.output_columns().items():
        if col not in values:
            if col == error_col:
                values = {**values, col: [None] * n}
            else:
                raise ValueError(f"scorer {scorer.name!r} returned no column {col!r}")
        if len(values[col]) != n:
            raise ValueError(f"scorer {scorer.name!r} returned {len(values[col])} values for {col!r}, expected {n}")
        arrays[col] = pa.array(values[col], type=typ)
    return arrays


def _failed(scorer: Scorer, n: int, message: str) -> dict[str, pa.Array]:
    cols = scorer.output_columns()
    out = {c: pa.nulls(n, type=t) for c, t in cols.items()}
    out[f"{scorer.name}__error"] = pa.array([message] * n, type=pa.string())
    return out


def _score_isolated(scorer: Scorer, batch: Batch, n: int) -> dict[str, pa.Array]:
    """Score a batch; on failure retry row by row so only the failing rows get the error."""
    try:
        return _to_arrays(scorer, scorer.score(batch), n)
    except ScDataError:
        raise  # a configuration or input problem: every row would fail the same way
    except Exception as e:  # noqa: BLE001 - isolate, never abort the run
        if n == 1:
            return _failed(scorer, 1, _error_message(e))
    rows = [
        _score_isolated(scorer, {k: v[i : i + 1] for k, v in batch.items()}, 1) for i in range(n)
    ]
    return {c: pa.concat_arrays([r[c] for r in rows]) for c in rows[0]}


class _Ranks:
    """This process's rank and the world size; accelerate's process group when there is more than one.

    A single process imports nothing distributed (nor torch), so a model-free scorer runs on the core install.
    """

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._state: Any = None
        if self.world_size > 1:
            import torch
            from accelerate import PartialState
            from accelerate.utils import parse_flag_from_env

            # Scoring a rank's parts can take hours; the default 30-minute collective timeout would kill it.
            # Without a GPU accelerate needs cpu=True to form a (gloo) group under torchrun.
            cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
            self._state = PartialState(cpu=cpu, timeout=dt.timedelta(hours=24))
            self.world_size = self._state.num_processes
        self.rank = self._state.process_index if self._state is not None else 0

    def wait(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()

    def parts(self, ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """This rank's parts: every W-th, so short and long rows are shared alike."""
        return ranges[self.rank :: self.world_size]


def length_order(table: pa.Table) -> np.ndarray:
    """Row numbers sorted by the characters of prompt + chosen + rejected (stable: ties keep input order).

    Characters stand in for tokens because the runner knows no tokenizer; runs of neighbours in this
    order have similar token lengths, so a scorer's own length batching pads little.
    """
    n = table.num_rows
    total = np.zeros(n, dtype=np.int64)
    for name in ("prompt", "chosen", "rejected"):
        column = table.column(name).combine_chunks()
        chars = pc.utf8_length(pc.struct_field(pc.list_flatten(column), "content")).fill_null(0)
        total += np.bincount(pc.list_parent_indices(column).to_numpy(), weights=chars.to_numpy(), minlength=n).astype(np.int64)
    return np.argsort(total, kind="stable")


def _part_name(start: int, end: int) -> str:
    return f"part-{start:012d}-{end:012d}.parquet"


def _claim_parts(folder: Path) -> None:
    """Check that the parts folder is free or sc-data's: absent, empty, or holding its :data:`STATE_FILE`.

    WHY: a run removes an earlier run's parts folder; anything else at that path may be the user's.

    Raises:
        ConfigError: something else is at that path; it is left alone.
    """
    if not folder.exists() or folder.is_dir() and ((folder / STATE_FILE).is_file() or not any(folder.iterdir())):
        return
    raise ConfigError(
        f"refusing to remove {str(folder)!r}: sc-data keeps a run's parts there, and this is not a parts folder "
        f"(it has no {STATE_FILE}). Move it away or choose another output"
    )


def _prepare_parts(folder: Path, state: dict[str, Any], resume: bool, ranks: _Ranks) -> None:
    """Rank 0 checks or resets the parts folder; everyone waits for it."""
    if ranks.rank == 0:
        state_file = folder / STATE_FILE
        if resume and state_file.is_file():
            old = json.loads(state_file.read_text("utf-8"))
            if old.get("config_hash") != state["config_hash"]:
                raise ConfigError(
                    f"can't resume: the parts in {str(folder)!r} were written with a different configuration "
                    f"(config hash {old.get('config_hash', '?')[:12]} vs {state['config_hash'][:12]}: input, "
                    "scorers, options or part rows changed). Rerun with the original "
                    "settings, or without --resume to start over."
                )
        elif folder.exists():
            shutil.rmtree(folder)  # sc-data's (_claim_parts)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(state, state_file)
    ranks.wait()


def _merge(table: pa.Table, folder: Path, scorers: list[Scorer], order: np.ndarray) -> pa.Table:
    """The parts, checked to tile the length order, put back in input order beside the input columns."""
    n = table.num_rows
    parts = sorted(
        (int(m.group(1)), int(m.group(2)), p)
        for p in folder.iterdir()
        if (m := _PART_RE.match(p.name))
    )
    expected = 0
    pieces = []
    for start, end, path in parts:
        if start != expected:
            raise InputError(f"parts in {str(folder)!r} do not tile rows 0..{n}: gap or overlap at row {expected}")
        pieces.append(pq.read_table(path))
        expected = end
    if expected != n:
        raise InputError(f"parts in {str(folder)!r} cover rows 0..{expected} of {n}; rerun with --resume")
    scores = pa.concat_tables(pieces) if pieces else None
    if scores is not None:
        rows = scores.column(ROW_COLUMN).to_numpy()
        if not np.array_equal(rows, order):
            raise InputError(f"parts in {str(folder)!r} do not hold the rows their names say; rerun without --resume")
        scores = scores.drop_columns([ROW_COLUMN]).take(pa.array(np.argsort(rows)))
    for s in scorers:
        for col, typ in s.output_columns().items():
            values = scores.column(col) if scores is not None else pa.nulls(0, type=typ)
            table = table.append_column(pa.field(col, typ), values)
    return table


def _canonical_fields(table: pa.Table) -> pa.Table:
    """Restore the canonical fields' nullability, which a Parquet round trip may not keep."""
    canonical = pair_schema()
    fields = [canonical.field(f.name) if f.name in canonical.names else f for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def _read_pairs(input_path: Path, scorers: list[Scorer]) -> pa.Table:
    """The canonical pairs to score (a file :func:`pairs_to_score` chose), checked to have none of the scorers' output columns.

    Raises:
        InputError: unreadable or not canonical. ConfigError: an output column exists.
    """
    try:
        table = _canonical_fields(validate_table(pq.read_table(input_path), where=str(input_path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"can't read {str(input_path)!r} as Parquet: {e}") from e
    clash = sorted(c for s in scorers for c in s.output_columns() if c in table.column_names)
    if clash:
        raise ConfigError(
            f"input {str(input_path)!r} already has column(s) {clash}; drop them first or score a table without them"
        )
    return table


def pairs_path(output: Path) -> Path:
    """Where ``score`` writes the pairs it ingested from raw inputs: ``scored.parquet`` -> ``scored.pairs.parquet``."""
    return output.with_name(f"{output.stem}.pairs.parquet")


def _is_canonical(path: Path) -> bool:
    """A Parquet file with the canonical pair columns (what `sc-data ingest` writes), judged from its schema."""
    if not path.is_file():
        return False
    with open(path, "rb") as fh:
        if fh.read(4) != b"PAR1":
            return False
    try:
        names = set(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError):
        return False
    return set(pair_schema().names) <= names


def _ingested_already(pairs: Path, inputs: list[str], options: Any) -> bool:
    """Whether ``pairs`` is this very ingest's output (same input hashes and options): a resume keeps it."""
    from sc_data.ingest.pipeline import resolve_inputs
    from sc_data.manifest import read_manifest

    if not (pairs.is_file() and manifest_path(pairs).is_file()):
        return False
    manifest = read_manifest(manifest_path(pairs))
    inputs_done = manifest.get("inputs")
    done = [i.get("sha256") for i in inputs_done if isinstance(i, dict)] if isinstance(inputs_done, list) else None
    return done == [source.sha256() for source in resolve_inputs(inputs, options)] and manifest.get("recipe") == {"step": "ingest", **options.model_dump()}


def pairs_to_score(
    inputs: list[str], output: Path, ingest_options: Any, *, resume: bool, overwrite: bool, ranks: _Ranks,
) -> Path:
    """The canonical pairs Parquet to score: the input itself, or raw inputs ingested on the way in.

    Raw inputs (anything but one canonical pairs Parquet) go through ``sc-data ingest`` with
    ``ingest_options`` into :func:`pairs_path` (its rejects and manifest beside it), on rank 0;
    a resume keeps that file when it came from the same inputs and options.
    """
    from sc_data.ingest import ingest, make_options

    if len(inputs) == 1 and ingest_options is None and _is_canonical(Path(inputs[0])):
        return Path(inputs[0])
    options = ingest_options if ingest_options is not None else make_options()
    pairs = pairs_path(output)
    if ranks.rank == 0 and not (resume and _ingested_already(pairs, inputs, options)):
        ingest(inputs, pairs, options=options, overwrite=overwrite or resume)
    ranks.wait()
    return pairs


def _saved_configs(scorers: list[Scorer], folder: Path) -> dict[str, dict[str, Any]]:
    """The scorers' ``config()`` as saved by the process that loaded them (unloaded configs if none did)."""
    saved = json.loads((folder / SCORERS_FILE).read_text("utf-8")) if (folder / SCORERS_FILE).is_file() else {}
    return {s.name: saved.get(s.name, s.config()) for s in scorers}


def _score_parts(
    table: pa.Table, order: np.ndarray, scorers: list[Scorer], todo: list[tuple[int, int]], folder: Path,
    report: Callable[[int], None],
) -> dict[str, dict[str, Any]]:
    """Load the scorers and score rows ``order[s:e]`` of each part of ``todo`` into its file; return the loaded configs.

    The configs are saved beside the parts, so a resume with nothing left to score (or a rank that
    had nothing to score) writes the same manifest without loading a model.
    """
    for scorer in scorers:
        scorer.load()
    configs = json.loads(json.dumps({s.name: s.config() for s in scorers}, default=str))
    write_json(configs, folder / SCORERS_FILE)
    for s, e in todo:
        rows = order[s:e]
        batch = table.take(pa.array(rows)).to_pydict()
        columns: dict[str, pa.Array] = {ROW_COLUMN: pa.array(rows, pa.int64())}
        for scorer in scorers:
            columns.update(_score_isolated(scorer, batch, e - s))
        write_parquet(pa.table(columns), folder / _part_name(s, e))
        report(e - s)
    return configs


def _manifest(
    output: Path, input_path: Path, input_sha: str, merged: pa.Table, configs: dict[str, dict[str, Any]],
    scorers: list[Scorer], recipe: dict[str, Any], errors: dict[str, int], written: Path,
) -> dict[str, Any]:
    """The scored output's manifest; ``written``: where the output is until it takes its name."""
    upstream = upstream_of(input_path, sha256=input_sha)
    counts: dict[str, Any] = {
        "rows_in": merged.num_rows,
        "rows_out": merged.num_rows,
        "rows_rejected": 0,
        "errors_by_scorer": errors,
    }
    if "counts" in upstream:
        counts["input"] = upstream["counts"]
    return new_manifest(
        "scored",
        inputs=[{"path": str(input_path), "sha256": input_sha, "format": "parquet"}],
        recipe=recipe,
        counts=counts,
        files=[file_entry(output.parent, output.name, merged.num_rows, written=written)],
        licenses=list(upstream.get("licenses", [])),
        scorers={
            s.name: {
                **configs[s.name],
                "columns": list(s.output_columns()),
                "difficulty_column": s.difficulty_column(),
                "direction": s.direction,
            }
            for s in scorers
        },
        **{k: upstream[k] for k in ("decontamination",) if k in upstream},  # carried to the staged card
    )


def score(
    input: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    scorers: Sequence[str | Scorer],
    options: dict[str, dict[str, Any]] | None = None,
    part_rows: int = DEFAULT_PART_ROWS,
    resume: bool = False,
    overwrite: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    ingest: Any = None,
    max_error_rate: float | None = None,
    progress: Progress | None = None,
) -> ScoreResult:
    """Score every pair of ``input`` and write ``output`` (input columns + score columns) and its manifest.

    Args:
        input: a canonical pairs Parquet (from ``sc-data ingest``), or raw preference files in any
            layout ingest reads: those are ingested on the way in into ``<output stem>.pairs.parquet``
            (rejects and manifest beside it), and the scored manifest chains their counts
            (``counts.input.rows_in`` raw rows = scored rows + ``counts.input.rows_rejected``).
        output: scored Parquet to write; parts go to ``<output>.parts/`` meanwhile.
        scorers: scorer names (see ``sc-data scorers``) or ready :class:`Scorer` instances.
        options: scorer name -> options; they win over ``config_file``'s.
        part_rows: rows per part file (the resume granularity, and rows per ``Scorer.score``
            call), >= 1.
        resume: continue from the parts of an interrupted run with the same configuration.
        overwrite: replace an existing ``output`` (only one an sc-data manifest lists).
        ingest: :class:`sc_data.ingest.IngestOptions` for raw inputs (format, column map, prefer,
            safety pairs); given, even a canonical Parquet input is ingested again with them.
        config_file: YAML ``{scorers: {name: {option: value}}}``; its scorers run when
            ``scorers`` is empty.
        max_error_rate: the largest share of rows a scorer may err on; above it the run still
            writes everything, then raises :class:`ScorerFailure`. Default: fail only when a
            scorer erred on every row (a dead endpoint, a missing model), never on partial errors.
        progress: called as ``progress(rows_done, rows_total)`` over this process's parts.

    Returns:
        :class:`ScoreResult`.

    Raises:
        InputError: the input is missing or not a canonical pairs table.
        ConfigError: bad scorer names / options, a resume with a different configuration, or an
            existing output without ``overwrite``.
        ScorerFailure: a scorer erred on more rows than ``max_error_rate`` allows (outputs written).
    """
    output_path = Path(output)
    inputs = [str(input)] if isinstance(input, (str, os.PathLike)) else [str(i) for i in input]
    if isinstance(part_rows, bool) or not isinstance(part_rows, int) or part_rows < 1:
        raise ConfigError(f"part_rows must be an integer >= 1; got {part_rows!r}")
    if max_error_rate is not None and not 0 <= max_error_rate < 1:
        raise ConfigError(f"max_error_rate must be in [0, 1); got {max_error_rate!r} (leave it unset to fail only when every row erred)")
    built = build_scorers(*scorer_options(scorers, options, config_file))
    claim_output_files([output_path], manifest_path(output_path), overwrite=overwrite)
    _claim_parts(parts_dir(output_path))
    ranks = _Ranks()
    input_path = pairs_to_score(inputs, output_path, ingest, resume=resume, overwrite=overwrite, ranks=ranks)
    table = _read_pairs(input_path, built)

    input_sha = sha256_file(input_path)
    config_hash = _config_hash(input_sha, built, part_rows)
    folder = parts_dir(output_path)
    state = {"config_hash": config_hash, "input_sha256": input_sha, "rows": table.num_rows, "world_size": ranks.world_size}
    _prepare_parts(folder, state, resume, ranks)

    n = table.num_rows
    order = length_order(table)
    mine = ranks.parts([(s, min(s + part_rows, n)) for s in range(0, n, part_rows)])
    todo = [(s, e) for s, e in mine if not (folder / _part_name(s, e)).is_file()]
    total = sum(e - s for s, e in mine)
    resumed = total - sum(e - s for s, e in todo)
    done = [resumed]

    def report(rows: int) -> None:
        done[0] += rows
        if progress:
            progress(done[0], total)

    report(0)
    failure = None
    try:
        configs = _score_parts(table, order, built, todo, folder, report) if todo else None
        ranks.wait()
        result = ScoreResult(output_path, manifest_path(output_path), table.num_rows, resumed_rows=resumed,
                             rank=ranks.rank, world_size=ranks.world_size, pairs=input_path)
        if ranks.rank == 0:
            merged = _merge(table, folder, built, order)
            result.errors = {s.name: merged.column(f"{s.name}__error").length() - merged.column(f"{s.name}__error").null_count
                             for s in built}
            recipe = {"step": "score", "scorers": [s.name for s in built], "options": {s.name: s.options() for s in built},
                      "part_rows": part_rows, "world_size": ranks.world_size, "config_hash": config_hash}
            with atomic_path(output_path) as tmp:
                write_parquet(merged, tmp)
                record = checked(_manifest(output_path, input_path, input_sha, merged, configs or _saved_configs(built, folder), built,
                                           recipe, result.errors, written=tmp))
            write_manifest(record, manifest_path(output_path))
            shutil.rmtree(folder, ignore_errors=True)
            failure = _failure(merged, built, max_error_rate, output_path)
        ranks.wait()
        if ranks.rank == 0 and failure:
            raise ScorerFailure(failure)
    finally:
        for scorer in built:
            scorer.unload()
    return result


def _failure(merged: pa.Table, scorers: list[Scorer], max_error_rate: float | None, output: Path) -> str | None:
    """Why the run failed (the first scorer over its error budget, with its first error), or None."""
    rows = merged.num_rows
    for scorer in scorers:
        errors = merged.column(f"{scorer.name}__error")
        count = len(errors) - errors.null_count
        over = count == rows if max_error_rate is None else count > max_error_rate * rows
        if rows and count and over:
            first = next(e for e in errors.to_pylist() if e is not None)
            allowed = "any" if max_error_rate is None else f"{max_error_rate:g}"
            return (f"scorer {scorer.name!r} erred on {count} of {rows} rows (allowed share: {allowed}); first error: {first}. "
                    f"Everything was written to {output} with the errors in {scorer.name}__error; fix the cause and score again "
                    f"(--overwrite), or allow partial errors with --max-error-rate")
    return None


def describe_scorers() -> list[dict[str, Any]]:
    """Every registered scorer with its columns, difficulty column, direction and options.

    A scorer whose module can't be imported (a missing optional dependency) is listed with an
    ``error`` instead of hiding it.
    """
    out = []
    for name in available_scorers():
        try:
            cls = get_scorer_class(name)
        except Exception as e:  # noqa: BLE001 - list it with the reason rather than fail the listing
            out.append({"name": name, "error": _error_message(e)})
            continue
        doc = inspect.getdoc(cls) or ""
        fields = cls.Options.model_fields
        out.append(
            {
                "name": name,
                "summary": doc.splitlines()[0] if doc else "",
                "columns": {c: str(t) for c, t in cls.output_columns().items()},
                "difficulty_column": cls.difficulty_column(),
                "direction": cls.direction,
                "needs_model": cls.needs_model,
                "options": {k: f.get_default(call_default_factory=True) for k, f in fields.items()},
                "option_help": {k: f.description or "" for k, f in fields.items()},
            }
        )
    return out
