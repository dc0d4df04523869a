"""Manifests: the JSON record every step writes beside what it wrote, built and read in one place.

A file output (``pairs.parquet``, ``scored.parquet``) gets ``<stem>.manifest.json`` beside it; a
staged folder holds :data:`STAGED_MANIFEST` inside. Every manifest has the same header
(``sc_data_version``, ``schema_version``, ``kind``, ``created``) and the fields of
``sc_data/schemas/manifest.schema.json``: ``inputs`` (paths and sha256s), ``recipe`` (the resolved
options), ``counts`` (``rows_in = rows_out + rows_rejected``), ``files`` (each written file's rows,
bytes and sha256) and ``licenses``. A later step reads its input's manifest through
:func:`upstream_of` to carry scorer settings, counts and licences forward.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

import sc_data
from sc_data.errors import InputError
from sc_data.io import sha256_file, write_json
from sc_data.schema import SCHEMA_VERSION

#: The manifest inside a staged dataset folder (also the Hub repo layout).
STAGED_MANIFEST = "sc_manifest.json"

Kind = Literal["pairs", "scored", "staged", "report"]


def manifest_path(output: str | Path) -> Path:
    """The manifest of a file output: ``scored.parquet`` -> ``scored.manifest.json`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}.manifest.json")


def listed_path(path: Path, manifest: Path) -> str:
    """How a step's manifest lists one of its output files: the path from the manifest's folder
    (the file's name when it sits beside the manifest, as it does by default).

    WHY not the name alone: a rejects file written to another folder (``--rejects other/r.parquet``)
    was listed as ``r.parquet``, and ``--overwrite`` then took any file of that name, in any
    folder, for one sc-data wrote.
    """
    target, folder = Path(path).resolve(), Path(manifest).parent.resolve()
    try:
        return Path(os.path.relpath(target, folder)).as_posix()
    except ValueError:  # Windows: another drive has no relative path
        return target.as_posix()


def file_entry(root: Path, rel: str, rows: int, *, written: Path | None = None, **extra: Any) -> dict[str, Any]:
    """The manifest entry of one written file: its path relative to ``root``, rows, bytes, sha256.

    ``written``: where the file is until it takes its name (see :func:`checked`).
    """
    path = written or root / rel
    return {"path": rel, "rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def new_manifest(
    kind: Kind,
    *,
    inputs: list[dict[str, Any]],
    recipe: dict[str, Any],
    counts: dict[str, Any],
    files: list[dict[str, Any]],
    licenses: list[str],
    **fields: Any,
) -> dict[str, Any]:
    """A manifest of ``kind`` with the common header; ``fields`` adds kind-specific keys."""
    return {
        "sc_data_version": sc_data.__version__,
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "inputs": inputs,
        "recipe": recipe,
        "licenses": licenses,
        "counts": counts,
        "files": files,
        **fields,
    }


def _as_json(value: Any) -> Any:
    """What JSON holds for a value it has no type for: a path as its text, a numpy scalar as its number.

    WHY not ``default=str``: it writes whatever else comes (a numpy array, an object) as a string,
    so a count built with numpy read ``"rows_in": "1000000"`` and no check noticed; here it is an error.
    """
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic) and isinstance(item := value.item(), (bool, int, float, str)):
        return item
    raise TypeError(f"a manifest can't hold {type(value).__name__} {value!r}")


def checked(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` as JSON holds it: a path as its text, a numpy scalar as its number.

    WHY a step calls it before its outputs take their names: a manifest that fails here after
    them would leave outputs no manifest lists, which ``--overwrite`` then refuses to replace.

    Raises:
        TypeError: a value JSON has no place for (a bug in the step that built the manifest).
    """
    return json.loads(json.dumps(manifest, default=_as_json))


def write_manifest(manifest: dict[str, Any], path: str | Path) -> Path:
    """Write ``manifest`` atomically (:func:`checked` first).

    Raises:
        TypeError: a value JSON has no place for.
    """
    write_json(checked(manifest), path)
    return Path(path)


def read_manifest(path: str | Path) -> dict[str, Any]:
    """A manifest as a dict.

    Raises:
        InputError: the file is missing, unreadable or not a JSON object.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError as e:
        raise InputError(f"manifest {str(path)!r} does not exist") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"manifest {str(path)!r} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise InputError(f"manifest {str(path)!r} holds a JSON {type(data).__name__}, not an object")
    return data


def listed_paths(manifest: dict[str, Any], where: str | Path) -> set[str]:
    """The paths a manifest's ``files`` lists.

    Raises:
        InputError: ``files`` is not a list of objects, each with a string ``path`` (a manifest
            edited by hand, or another tool's).
    """
    files = manifest.get("files", [])
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("path"), str) for f in files):
        raise InputError(f"manifest {str(where)!r} has a malformed 'files' list (each entry is an object with a string 'path')")
    return {f["path"] for f in files}


def upstream_path(path: str | Path) -> Path | None:
    """Where the manifest of a step's output is: beside a file, or inside a staged folder."""
    path = Path(path)
    candidate = path / STAGED_MANIFEST if path.is_dir() else manifest_path(path)
    return candidate if candidate.is_file() else None


def upstream_of(path: str | Path, *, sha256: str | None = None) -> dict[str, Any]:
    """The manifest of ``path`` (a file output or a staged folder); ``{}`` when it has none, and
    ``{}`` with a :class:`ManifestWarning` when a field later steps read has the wrong type or,
    for a file, when it lists the file with another sha256.

    WHY check a file against its entry: a file rewritten by another tool, or a run killed between
    renaming its outputs and writing their manifest, leaves a manifest of other rows; carrying its
    counts, scorers and licences forward would record a provenance the data doesn't have.
    ``sha256``: the file's, when the caller has hashed it already (each step records its input's).

    Raises:
        InputError: a manifest exists but is not valid JSON.
    """
    found = upstream_path(path)
    if found is None:
        return {}
    record = read_manifest(found)
    if bad := _malformed(record):
        warnings.warn(f"{str(found)!r} has a malformed {bad!r} (edited by hand?): nothing is carried forward from it",
                      ManifestWarning, stacklevel=2)
        return {}
    path = Path(path)
    if path.is_file():
        files = record.get("files")
        name = listed_path(path, found)
        entry = next((f for f in files if isinstance(f, dict) and f.get("path") == name), None) if isinstance(files, list) else None
        if entry is not None and entry.get("sha256") != (sha256 or sha256_file(path)):
            warnings.warn(
                f"{str(found)!r} lists {str(path)!r} with another sha256: the file changed after sc-data wrote it, "
                "or that run was interrupted. Its counts, scorers and licences are not carried forward",
                ManifestWarning, stacklevel=2,
            )
            return {}
    return record


#: What later steps read from an upstream manifest, and the type each must have.
_CARRIED = {"licenses": list, "inputs": list, "counts": dict, "scorers": dict, "models": dict, "decontamination": dict}


def _malformed(record: dict[str, Any]) -> str | None:
    """The first field later steps read that has the wrong type (licences must be strings, inputs objects), or None."""
    for key, kind in _CARRIED.items():
        value = record.get(key, kind())
        if not isinstance(value, kind):
            return key
    if not all(isinstance(v, str) for v in record.get("licenses", [])):
        return "licenses"
    if not all(isinstance(v, dict) for v in record.get("inputs", [])):
        return "inputs"
    return None


class ManifestWarning(UserWarning):
    """A manifest beside an input does not describe it, so nothing is carried forward from it."""


def claim_output_files(outputs: list[Path], manifest: Path, *, overwrite: bool) -> None:
    """Check that the files a step is about to write may be written.

    A path that does not exist is free. An existing one is replaced only with ``overwrite`` and
    only when sc-data wrote it: the step's manifest is an sc-data manifest that lists it, by its
    :func:`listed_path` (the manifest itself counts as sc-data's when it is one).

    Raises:
        ConfigError: two outputs (or an output and the manifest) are one file; an output is a
            folder, exists without ``overwrite``, or was not written by sc-data.
    """
    from sc_data.errors import ConfigError

    paths = [*outputs, manifest]
    if len({p.resolve() for p in paths}) < len(paths):
        raise ConfigError(
            f"the outputs and their manifest must be different files; got {', '.join(repr(str(p)) for p in paths)} "
            "(is --rejects the output or its manifest?)"
        )
    existing = [p for p in paths if p.exists()]
    for path in existing:
        if path.is_dir():
            raise ConfigError(f"output {str(path)!r} is a folder; pass a file path such as {str(path / 'pairs.parquet')!r}")
    if not existing:
        return
    if not overwrite:
        raise ConfigError(
            f"output {str(existing[0])!r} already exists; pass --overwrite (overwrite=True) to replace it "
            "(only files sc-data wrote are ever replaced)"
        )
    try:
        record = read_manifest(manifest) if manifest.is_file() else {}
        listed, ours = listed_paths(record, manifest), "sc_data_version" in record
    except InputError:
        listed, ours = set(), False
    foreign = [p for p in existing if p != manifest and (not ours or listed_path(p, manifest) not in listed)]
    if (manifest in existing and not ours) or foreign:
        what = str(foreign[0]) if foreign else str(manifest)
        raise ConfigError(
            f"refusing to overwrite {what!r}: sc-data did not write it (no sc-data manifest at {str(manifest)!r} lists it). "
            "Move it away or choose another output"
        )
