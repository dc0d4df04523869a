"""``score``: run scorers over a canonical pairs table, resumably and data-parallel.

The runner reads the pairs Parquet, checks the wiring (scorer names, options, output-column
clashes) before any model loads, then scores fixed row ranges and writes each range's score
columns as its own part file in ``<output>.parts/`` the moment it is done (atomic rename). A
crash, Ctrl-C or SIGKILL loses at most the batch in flight: ``resume=True`` skips the parts that
exist and gives the same table as an uninterrupted run; ``state.json`` there holds the config hash,
and resuming with another configuration is refused. When all parts exist they are merged, in
order, into ``output`` together with a ``<output stem>.manifest.json``.

A scorer that raises on a batch is retried row by row, so one bad row gets nulls and a message
in ``<scorer>__error`` and never aborts the run or disappears.

Under ``torchrun`` / ``accelerate launch`` (``RANK``, ``WORLD_SIZE`` set) rank r scores the
contiguous slice ``[r*n//W, (r+1)*n//W)``; ranks meet at a gloo barrier and rank 0 merges.

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

import pyarrow as pa
import pyarrow.parquet as pq

import sc_data
from sc_data.errors import ConfigError, InputError, ScDataError
from sc_data.io import sha256_file, write_json, write_parquet
from sc_data.schema import SCHEMA_VERSION, pair_schema, validate_table
from sc_data.scorers.base import Batch, Scorer, available_scorers, get_scorer_class

#: ``progress(rows_done, rows_total)`` for this process's slice.
Progress = Callable[[int, int], None]

STATE_FILE = "state.json"
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
    """

    output: Path
    manifest: Path
    rows: int
    errors: dict[str, int] = field(default_factory=dict)
    resumed_rows: int = 0
    rank: int = 0
    world_size: int = 1


def manifest_path(output: Path) -> Path:
    """``scored.parquet`` -> ``scored.manifest.json`` beside it."""
    return output.with_name(f"{output.stem}.manifest.json")


def parts_dir(output: Path) -> Path:
    """Folder of the part files of ``output`` (``scored.parquet.parts``)."""
    return output.with_name(f"{output.name}.parts")


def _public_options(scorer: Scorer) -> dict[str, Any]:
    return {k: v for k, v in vars(scorer).items() if not k.startswith("_")}


def _load_config_file(path: Path | None) -> dict[str, dict[str, Any]]:
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"can't read config file {str(path)!r}: {e}") from e
    if not isinstance(data, dict) or set(data) - {"scorers"}:
        raise ConfigError(
            f"config file {str(path)!r} must be a mapping with the one key 'scorers' "
            "({scorers: {ref_margin: {model: ..., max_length: ...}}}); got keys "
            f"{sorted(data) if isinstance(data, dict) else type(data).__name__}"
        )
    scorers = data.get("scorers") or {}
    if not isinstance(scorers, dict) or not all(isinstance(v, dict | type(None)) for v in scorers.values()):
        raise ConfigError(f"config file {str(path)!r}: 'scorers' must map scorer names to option mappings")
    return {k: dict(v or {}) for k, v in scorers.items()}


def _init_options(cls: type[Scorer]) -> dict[str, Any]:
    """Keyword options of a scorer class's ``__init__`` -> default."""
    params = inspect.signature(cls.__init__).parameters
    return {
        n: p.default
        for n, p in params.items()
        if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build_scorers(
    scorers: Sequence[str | Scorer], options: dict[str, dict[str, Any]] | None = None
) -> list[Scorer]:
    """Instantiate scorers by name with their options; check wiring before any model loads.

    Raises:
        ConfigError: no scorer, an unknown name (the valid ones are listed), an unknown option
            (the valid ones are listed), options for a scorer not asked for, a duplicate, or two
            scorers writing the same column.
    """
    options = dict(options or {})
    if not scorers:
        raise ConfigError(f"no scorer given; pass one or more of {available_scorers()} (--scorer NAME)")
    built: list[Scorer] = []
    for item in scorers:
        if isinstance(item, Scorer):
            built.append(item)
            continue
        cls = get_scorer_class(item)
        opts = options.get(item, {})
        valid = _init_options(cls)
        unknown = sorted(set(opts) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown option(s) {unknown} for scorer {item!r}; valid options: {sorted(valid)}"
            )
        built.append(cls(**opts))
    names = [s.name for s in built]
    extra = sorted(set(options) - set(names))
    if extra:
        raise ConfigError(f"options given for scorer(s) {extra} that are not being run; scorers: {names}")
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
        validate = getattr(s, "validate", None)
        if callable(validate):
            validate()
    return built


def _config_hash(input_sha: str, scorers: list[Scorer], batch_size: int, world_size: int) -> str:
    payload = {
        "input_sha256": input_sha,
        "batch_size": batch_size,
        "world_size": world_size,
        "scorers": [
            {"name": s.name, "class": f"{type(s).__module__}.{type(s).__qualname__}", "options": _public_options(s)}
            for s in scorers
        ],
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode("utf-8")
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


class _Dist:
    """Rank / world size from torchrun's env, and a gloo barrier when there is more than one rank."""

    def __init__(self) -> None:
        self.rank = int(os.environ.get("RANK", "0"))
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self._pg = None
        if self.world_size > 1:
            import torch.distributed as torch_dist

            if not torch_dist.is_initialized():
                torch_dist.init_process_group("gloo", timeout=dt.timedelta(hours=24))
            self._pg = torch_dist.new_group(backend="gloo", timeout=dt.timedelta(hours=24))

    def barrier(self) -> None:
        if self._pg is not None:
            import torch.distributed as torch_dist

            torch_dist.barrier(group=self._pg)

    def close(self) -> None:
        if self._pg is not None:
            import torch.distributed as torch_dist

            torch_dist.destroy_process_group()
            self._pg = None

    def slice(self, n: int) -> tuple[int, int]:
        return self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size


def _part_name(start: int, end: int) -> str:
    return f"part-{start:012d}-{end:012d}.parquet"


def _prepare_parts(folder: Path, state: dict[str, Any], resume: bool, dist: _Dist) -> None:
    """Rank 0 checks or resets the parts folder; everyone waits for it."""
    if dist.rank == 0:
        state_file = folder / STATE_FILE
        if resume and state_file.is_file():
            old = json.loads(state_file.read_text("utf-8"))
            if old.get("config_hash") != state["config_hash"]:
                raise ConfigError(
                    f"can't resume: the parts in {str(folder)!r} were written with a different configuration "
                    f"(config hash {old.get('config_hash', '?')[:12]} vs {state['config_hash'][:12]}: input, "
                    "scorers, options, batch size or number of processes changed). Rerun with the original "
                    "settings, or without --resume to start over."
                )
        elif folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        write_json(state, state_file)
    dist.barrier()


def _merge(table: pa.Table, folder: Path, scorers: list[Scorer]) -> pa.Table:
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


def _input_manifest(input_path: Path) -> dict[str, Any] | None:
    path = manifest_path(input_path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _write_manifest(
    output: Path,
    input_path: Path,
    input_sha: str,
    merged: pa.Table,
    scorers: list[Scorer],
    recipe: dict[str, Any],
    errors: dict[str, int],
) -> Path:
    upstream = _input_manifest(input_path) or {}
    counts: dict[str, Any] = {
        "rows_in": merged.num_rows,
        "rows_out": merged.num_rows,
        "rows_rejected": 0,
        "errors_by_scorer": errors,
    }
    if "counts" in upstream:
        counts["input"] = upstream["counts"]
    manifest = {
        "sc_data_version": sc_data.__version__,
        "schema_version": SCHEMA_VERSION,
        "kind": "scored",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": [{"path": str(input_path), "sha256": input_sha, "format": "parquet"}],
        "scorers": {
            s.name: {
                **s.config(),
                "columns": list(s.output_columns()),
                "difficulty_column": s.difficulty_column(),
                "direction": s.direction,
            }
            for s in scorers
        },
        "recipe": recipe,
        "licenses": list(upstream.get("licenses", [])),
        "counts": counts,
        "files": [
            {"path": output.name, "rows": merged.num_rows, "sha256": sha256_file(output), "bytes": output.stat().st_size}
        ],
    }
    path = manifest_path(output)
    write_json(json.loads(json.dumps(manifest, default=str)), path)
    return path


def score(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    scorers: Sequence[str | Scorer],
    options: dict[str, dict[str, Any]] | None = None,
    batch_size: int = 64,
    resume: bool = False,
    config_file: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> ScoreResult:
    """Score every pair of ``input`` and write ``output`` (input columns + score columns) and its manifest.

    Args:
        input: canonical pairs Parquet (from ``sc-data ingest``).
        output: scored Parquet to write; parts go to ``<output>.parts/`` meanwhile.
        scorers: scorer names (see ``sc-data scorers``) or ready :class:`Scorer` instances.
        options: scorer name -> options; they win over ``config_file``'s.
        batch_size: rows per part file (and per ``Scorer.score`` call), >= 1.
        resume: continue from the parts of an interrupted run with the same configuration.
        config_file: YAML ``{scorers: {name: {option: value}}}``; its scorers run when
            ``scorers`` is empty.
        progress: called as ``progress(rows_done, rows_total)`` for this process's slice.

    Returns:
        :class:`ScoreResult`.

    Raises:
        InputError: the input is missing or not a canonical pairs table.
        ConfigError: bad scorer names / options, or a resume with a different configuration.
    """
    input_path, output_path = Path(input), Path(output)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1; got {batch_size!r}")
    file_options = _load_config_file(Path(config_file) if config_file is not None else None)
    options = dict(options or {})
    wanted = list(scorers) or list(file_options)
    names = [w if isinstance(w, str) else w.name for w in wanted]
    # The file may configure more scorers than are run; explicit options for others are an error.
    for name in names:
        if name in file_options:
            options[name] = {**file_options[name], **options.get(name, {})}
    built = build_scorers(wanted, options)
    if not input_path.is_file():
        raise InputError(f"input {str(input_path)!r} does not exist; pass a pairs Parquet written by `sc-data ingest`")
    try:
        table = _canonical_fields(validate_table(pq.read_table(input_path), where=str(input_path)))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(f"can't read {str(input_path)!r} as Parquet: {e}") from e
    clash = sorted(c for s in built for c in s.output_columns() if c in table.column_names)
    if clash:
        raise ConfigError(
            f"input {str(input_path)!r} already has column(s) {clash}; drop them first or score a table without them"
        )

    dist = _Dist()
    input_sha = sha256_file(input_path)
    config_hash = _config_hash(input_sha, built, batch_size, dist.world_size)
    folder = parts_dir(output_path)
    state = {"config_hash": config_hash, "input_sha256": input_sha, "rows": table.num_rows, "world_size": dist.world_size}
    _prepare_parts(folder, state, resume, dist)

    start, end = dist.slice(table.num_rows)
    todo, resumed = [], 0
    for s in range(start, end, batch_size):
        e = min(s + batch_size, end)
        if (folder / _part_name(s, e)).is_file():
            resumed += e - s
        else:
            todo.append((s, e))
    done = resumed
    if progress:
        progress(done, end - start)
    if todo:
        for scorer in built:
            scorer.load()
        try:
            for s, e in todo:
                batch = table.slice(s, e - s).to_pydict()
                columns: dict[str, pa.Array] = {}
                for scorer in built:
                    columns.update(_score_isolated(scorer, batch, e - s))
                write_parquet(pa.table(columns), folder / _part_name(s, e))
                done += e - s
                if progress:
                    progress(done, end - start)
        finally:
            if dist.rank != 0:
                for scorer in built:
                    scorer.unload()
    dist.barrier()

    result = ScoreResult(output_path, manifest_path(output_path), table.num_rows, resumed_rows=resumed, rank=dist.rank, world_size=dist.world_size)
    if dist.rank == 0:
        if not todo:
            # config() may describe the loaded model (hash, template): load once for the manifest.
            for scorer in built:
                scorer.load()
        merged = _merge(table, folder, built)
        result.errors = {s.name: merged.column(f"{s.name}__error").length() - merged.column(f"{s.name}__error").null_count for s in built}
        write_parquet(merged, output_path)
        recipe = {
            "step": "score",
            "scorers": [s.name for s in built],
            "options": {s.name: _public_options(s) for s in built},
            "batch_size": batch_size,
            "world_size": dist.world_size,
            "config_hash": config_hash,
        }
        _write_manifest(output_path, input_path, input_sha, merged, built, recipe, result.errors)
        for scorer in built:
            scorer.unload()
        shutil.rmtree(folder, ignore_errors=True)
    dist.barrier()
    dist.close()
    return result


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
        out.append(
            {
                "name": name,
                "summary": doc.splitlines()[0] if doc else "",
                "columns": {c: str(t) for c, t in cls.output_columns().items()},
                "difficulty_column": cls.difficulty_column(),
                "direction": cls.direction,
                "needs_model": cls.needs_model,
                "options": {k: (None if v is inspect.Parameter.empty else v) for k, v in _init_options(cls).items()},
            }
        )
    return out
