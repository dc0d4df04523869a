"""The staged dataset folder: its layout, how to read it, and how to check it against its manifest.

Every reader and writer of a staged folder goes through this module (the writer is
:mod:`sc_data.stage.export`; readers are training, evaluation, ``inspect``, ``report``, the Hub
client). The layout is also the Hub repo layout, so ``datasets.load_dataset(folder, "tier_0")``
and ``pd.read_parquet`` work on it unchanged::

    README.md                                 card; YAML ``configs:`` one per tier + ``all`` (default)
    sc_manifest.json                          versions, inputs, recipe, counts, every file's sha256
    data/tier_{k}/train-{i:05d}-of-{n:05d}.parquet
    data/eval/test-00000-of-00001.parquet
    data/dev/dev-00000-of-00001.parquet       only with a dev split
    rejects.parquet                           rows left out, with the reason
    plots/*.png

A *part* is one of ``tier_{k}``, ``eval`` or ``dev``; it lives in ``data/<part>/`` and is the
split ``train``, ``test`` or ``dev`` of the card's configs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sc_data.errors import ConfigError, InputError, VerifyError
from sc_data.io import sha256_file
from sc_data.manifest import STAGED_MANIFEST, listed_paths, read_manifest

CARD = "README.md"
REJECTS = "rejects.parquet"
DATA = "data"
#: Files a Hub client may add to a downloaded copy; verify ignores them.
CLIENT_FILES = (".gitattributes",)
CLIENT_DIRS = (".cache",)
_TIER_RE = re.compile(r"^tier_(\d+)$")
#: Non-tier part -> (file prefix = split name in the card, the card config it belongs to).
_SPLIT_OF_PART = {"eval": ("test", "all"), "dev": ("dev", "all")}


def part_location(part: str) -> tuple[str, str, str]:
    """(folder, file prefix = split name, card config) of a part: ``tier_0`` -> data/tier_0, train, tier_0."""
    if _TIER_RE.match(part):
        return f"{DATA}/{part}", "train", part
    split, config = _SPLIT_OF_PART[part]
    return f"{DATA}/{part}", split, config


def tier_index(part: str) -> int | None:
    """``tier_3`` -> 3; None for a part that is not a tier."""
    match = _TIER_RE.match(part)
    return int(match.group(1)) if match else None


def is_staged(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a staged manifest."""
    return (Path(path) / STAGED_MANIFEST).is_file()


def shard_files(root: str | Path) -> list[Path]:
    """Every data shard of a staged folder (tiers, eval, dev), in a stable order."""
    return sorted((Path(root) / DATA).glob("*/*.parquet"))


def read_part(root: str | Path, part: str) -> pa.Table | None:
    """The rows of one part (``tier_0``, ``eval``, ``dev``), or None when it has no shard."""
    files = sorted((Path(root) / DATA / part).glob("*.parquet"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


@dataclass
class StagedData:
    """A staged dataset in memory.

    Attributes:
        root: local folder.
        manifest: ``sc_manifest.json`` as a dict.
        train: every training row (all tiers), with an int ``tier`` column.
        eval: the held-out ``eval`` split, or None.
        dev: the dev split carved from training pairs (Cat-DPO), or None.
    """

    root: Path
    manifest: dict[str, Any]
    train: pa.Table
    eval: pa.Table | None
    dev: pa.Table | None


def read_staged(root: str | Path, *, verify_files: bool = True) -> StagedData:
    """Read a staged folder: every tier (easiest first) as ``train``, plus ``eval`` and ``dev``.

    Args:
        root: a folder written by ``sc-data stage`` (or pulled from the Hub).
        verify_files: check every file against the manifest first (:func:`verify`).

    Raises:
        InputError: not a staged folder, or no training tiers.
        VerifyError: the folder does not match its manifest.
    """
    root = Path(root)
    if not is_staged(root):
        raise InputError(
            f"{str(root)!r} is not a staged dataset: {STAGED_MANIFEST} is missing; run `sc-data stage` first "
            "or pass the folder it wrote"
        )
    if verify_files:
        verify(root)
    manifest = read_manifest(root / STAGED_MANIFEST)
    tiers = sorted(
        (k, p.name) for p in (root / DATA).glob("tier_*") if (k := tier_index(p.name)) is not None
    )
    tables = []
    for k, part in tiers:
        table = read_part(root, part)
        if table is None:
            continue
        if "tier" not in table.column_names:
            table = table.append_column("tier", pa.array([k] * len(table), pa.int64()))
        tables.append(table)
    if not tables:
        raise InputError(f"{str(root)!r} has no training tiers (data/tier_*/*.parquet); was it staged with an eval split only?")
    train = pa.concat_tables(tables, promote_options="default")
    return StagedData(root=root, manifest=manifest, train=train, eval=read_part(root, "eval"), dev=read_part(root, "dev"))


@dataclass
class VerifyReport:
    """What :func:`verify` checked.

    Attributes:
        path: the staged folder.
        files: number of files checked against the manifest.
        rows_in, rows_out, rows_rejected: the manifest's counts, re-derived from the files.
        by_split: split -> rows counted in the shards.
    """

    path: Path
    files: int
    rows_in: int
    rows_out: int
    rows_rejected: int
    by_split: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the CLI's ``--json``)."""
        return {**self.__dict__, "path": str(self.path)}


def _check_file(root: Path, entry: dict[str, Any]) -> None:
    """One listed file against its manifest entry: present, same bytes, same sha256, same rows."""
    rel = entry["path"]
    file = root / rel
    if not file.is_file():
        raise VerifyError(f"{rel}: listed in {STAGED_MANIFEST} but missing; re-download or re-stage the dataset")
    size = file.stat().st_size
    if size != entry["bytes"]:
        raise VerifyError(f"{rel}: {size} bytes, the manifest says {entry['bytes']}; the file was modified or truncated")
    digest = sha256_file(file)
    if digest != entry["sha256"]:
        raise VerifyError(f"{rel}: sha256 {digest} differs from the manifest's {entry['sha256']}; the file was modified")
    if rel.endswith(".parquet"):
        rows = pq.ParquetFile(file).metadata.num_rows
        if rows != entry["rows"]:
            raise VerifyError(f"{rel}: {rows} rows, the manifest says {entry['rows']}")


def unlisted_files(root: Path, listed: set[str], *, hub_client: bool = True) -> list[str]:
    """Files under ``root`` that the manifest does not list (beside itself and the card).

    ``hub_client``: also pass what a Hub client adds to a downloaded copy (:data:`CLIENT_FILES`,
    :data:`CLIENT_DIRS`), as ``verify`` does; replacing the folder must not (they may be the user's).
    """
    allowed = listed | {STAGED_MANIFEST, CARD, *(CLIENT_FILES if hub_client else ())}
    skipped = CLIENT_DIRS if hub_client else ()
    out = []
    for file in sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink()):
        rel = file.relative_to(root).as_posix()
        if rel.split("/", 1)[0] not in skipped and rel not in allowed:
            out.append(rel)
    return out


def _listed(root: Path) -> set[str]:
    return listed_paths(read_manifest(root / STAGED_MANIFEST), root / STAGED_MANIFEST)


def claim_output(output: Path, *, overwrite: bool) -> None:
    """Check that a staged folder may be written at ``output``.

    A missing path is free. An existing folder is replaced only with ``overwrite`` and only when
    sc-data wrote it: a staged manifest lists every file in it. Anything else is refused, naming
    what is there, and left untouched.

    Raises:
        ConfigError: ``output`` is a file, exists without ``overwrite``, or holds what sc-data did not write.
    """
    if not output.exists() and not output.is_symlink():
        return
    if not output.is_dir():
        raise ConfigError(f"output {str(output)!r} is a file; a staged dataset is a folder: pass a new folder path")
    if not overwrite:
        raise ConfigError(
            f"output {str(output)!r} already exists; pass overwrite=True (--overwrite) to replace it "
            "(only a staged folder sc-data wrote is ever replaced)"
        )
    if not is_staged(output):
        present = sorted(p.name for p in output.iterdir())
        raise ConfigError(
            f"refusing to replace {str(output)!r}: it is not a staged dataset sc-data wrote (no {STAGED_MANIFEST}); "
            f"it holds {present[:5]}{' and more' if len(present) > 5 else ''}. Choose another output folder"
        )
    try:
        foreign = unlisted_files(output, _listed(output), hub_client=False)
    except InputError as e:
        raise ConfigError(f"refusing to replace {str(output)!r}: its {STAGED_MANIFEST} can't be read ({e})") from e
    if foreign:
        raise ConfigError(
            f"refusing to replace {str(output)!r}: it holds files sc-data did not write: {foreign[:5]}"
            f"{' and more' if len(foreign) > 5 else ''}. Move them away or choose another output folder"
        )


def _check_no_extras(root: Path, listed: set[str]) -> None:
    extras = unlisted_files(root, listed)
    if extras:
        raise VerifyError(f"{extras[0]}: not listed in {STAGED_MANIFEST}; remove it or re-stage the dataset")


def read_card_metadata(root: Path) -> dict[str, Any]:
    """The YAML front matter of the dataset card (``configs``, ``dataset_info``, licence, ...).

    Raises:
        VerifyError: no card, or no readable front matter.
    """
    import yaml

    card = root / CARD
    if not card.is_file():
        raise VerifyError(f"{CARD}: missing; the dataset card holds the configs `load_dataset` needs")
    try:
        text = card.read_text("utf-8")
    except UnicodeDecodeError as e:
        raise VerifyError(f"{CARD}: not UTF-8 text ({e.reason}); re-stage the dataset") from e
    head, sep, _ = text.removeprefix("---\n").partition("\n---")
    try:
        meta = yaml.safe_load(head) if text.startswith("---\n") and sep else None
    except yaml.YAMLError as e:
        raise VerifyError(f"{CARD}: its YAML front matter is not valid ({e}); re-stage the dataset") from e
    if not isinstance(meta, dict):
        raise VerifyError(f"{CARD}: no YAML front matter (--- ... ---) with the configs; re-stage the dataset")
    return meta


def _config_files(name: str, split: str, data: list[dict[str, Any]]) -> list[str]:
    """The shards config ``name``'s ``split`` must read: its tier's (``all``: every tier's) for train, the split's otherwise."""
    return sorted(e["path"] for e in data if e["split"] == split and (split != "train" or name == "all" or e["config"] == name))


def _check_card(root: Path, data: list[dict[str, Any]]) -> None:
    """Every card config loads: it exists for each tier with shards, reads exactly its own shards,
    reads no split without rows, and its ``dataset_info`` row counts match them."""
    from pathlib import PurePosixPath

    meta = read_card_metadata(root)
    configs = meta.get("configs")
    if not isinstance(configs, list) or not configs:
        raise VerifyError(f"{CARD}: no `configs:` in its front matter; `load_dataset` could not find the tiers")
    if not all(isinstance(c, dict) and isinstance(c.get("config_name"), str) for c in configs):
        raise VerifyError(f"{CARD}: a config without a config_name; re-stage the dataset")
    names = [c["config_name"] for c in configs]
    expected = sorted({"all", *(e["config"] for e in data if e["split"] == "train")})
    if sorted(names) != expected:
        raise VerifyError(f"{CARD}: its configs are {sorted(map(str, names))} but the shards make {expected}; re-stage the dataset")
    infos = {i.get("config_name"): i for i in meta.get("dataset_info") or [] if isinstance(i, dict)}
    rows = {e["path"]: e["rows"] for e in data}
    for config in configs:
        name = config["config_name"]
        if name not in infos:
            raise VerifyError(f"{CARD}: config {name!r} has no dataset_info; `datasets` could serve a stale cache for it")
        splits, specs = infos[name].get("splits", []), config.get("data_files", [])
        if not all(isinstance(v, list) and all(isinstance(d, dict) for d in v) for v in (splits, specs)):
            raise VerifyError(f"{CARD}: config {name!r}'s data_files or dataset_info splits are not the lists of objects "
                              "sc-data writes (split, path; name, num_examples); re-stage the dataset")
        examples = {s.get("name"): s.get("num_examples") for s in splits}
        for spec in specs:
            split = spec.get("split")
            matched = sorted(e["path"] for e in data if PurePosixPath(e["path"]).match(str(spec.get("path"))))
            own = _config_files(name, split, data)
            if not matched or matched != own:
                raise VerifyError(
                    f"{CARD}: config {name!r} split {split!r} reads {matched or 'no file'} but its shards are "
                    f"{own or 'none'}; re-stage the dataset"
                )
            if examples.get(split) != sum(rows[p] for p in own):
                raise VerifyError(
                    f"{CARD}: dataset_info of config {name!r} says {examples.get(split)!r} {split} rows, the shards hold "
                    f"{sum(rows[p] for p in own)}"
                )


def _recount(root: Path, data: list[dict[str, Any]]) -> dict[str, Any]:
    """``by_tier`` and ``by_tier_category_split`` counted from the shards themselves."""
    by_tier: dict[str, int] = {}
    nested: dict[str, dict[str, dict[str, int]]] = {}
    for entry in data:
        label = entry["config"] if tier_index(entry["config"]) is not None else "none"
        if label != "none":
            by_tier[label] = by_tier.get(label, 0) + entry["rows"]
        table = pq.read_table(root / entry["path"], columns=["category"])
        cats = nested.setdefault(entry["split"], {}).setdefault(label, {})
        for category in table.column("category").to_pylist():
            key = category if category is not None else "unknown"
            cats[key] = cats.get(key, 0) + 1
    return {"by_tier": by_tier, "by_tier_category_split": nested}


#: What each ``files`` entry of a staged manifest holds (data shards: also ``split`` and ``config``).
_ENTRY_TYPES: dict[str, type] = {"path": str, "rows": int, "bytes": int, "sha256": str}


def _entries(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The manifest's ``files`` by path, each checked to be one ``verify`` can read: a path inside the folder.

    Raises:
        VerifyError: naming the first malformed entry (a manifest edited by hand, or damaged).
    """
    files = manifest.get("files")
    if not isinstance(files, list) or not isinstance(manifest.get("counts"), dict):
        raise VerifyError(f"{STAGED_MANIFEST}: 'files' must be a list and 'counts' an object; re-stage the dataset")
    entries: dict[str, dict[str, Any]] = {}
    for i, entry in enumerate(files):
        wanted = {**_ENTRY_TYPES, **({"split": str, "config": str} if isinstance(entry, dict) and entry.get("kind") == "data" else {})}
        bad = [k for k, kind in wanted.items() if not isinstance(entry, dict) or not isinstance(entry.get(k), kind)]
        if not bad and (Path(entry["path"]).is_absolute() or ".." in Path(entry["path"]).parts):
            bad = ["path"]
        if bad:
            raise VerifyError(f"{STAGED_MANIFEST}: files[{i}] has no valid {bad[0]!r} (a relative path inside the folder, "
                              f"rows, bytes, sha256; split and config for data); re-stage the dataset")
        entries[entry["path"]] = entry
    return entries


def verify(path: str | Path) -> VerifyReport:
    """Check a staged folder against its manifest and its card.

    Every file's bytes, sha256 and rows; no unlisted file; every card config reads exactly its own
    shards and none without rows, with ``dataset_info`` counts that match; the manifest's counts
    per split, per tier and per tier × category × split equal what the shards hold.

    Raises:
        VerifyError: naming the file or the count: a missing or modified file, an unlisted file, a
            config pointing at another part's shards or at none, missing ``dataset_info``, or
            counts that don't add up.
    """
    root = Path(path)
    manifest_file = root / STAGED_MANIFEST
    if not manifest_file.is_file():
        raise VerifyError(f"{str(root)!r} has no {STAGED_MANIFEST}; is it a folder written by `sc-data stage`?")
    try:
        manifest = read_manifest(manifest_file)
    except InputError as e:
        raise VerifyError(f"{e}; re-run `sc-data stage`") from e
    if manifest.get("kind") != "staged":
        raise VerifyError(f"{manifest_file}: kind is {manifest.get('kind')!r}, expected 'staged'")
    listed = _entries(manifest)
    for entry in listed.values():
        _check_file(root, entry)
    _check_no_extras(root, set(listed))
    data = [e for e in listed.values() if e.get("kind") == "data"]
    _check_card(root, data)
    by_split: dict[str, int] = {}
    for entry in listed.values():
        if entry.get("kind") == "data":
            by_split[entry["split"]] = by_split.get(entry["split"], 0) + entry["rows"]
    rows_out = sum(by_split.values())
    rows_rejected = sum(e["rows"] for e in listed.values() if e.get("kind") == "rejects")
    counts = manifest.get("counts", {})
    expected = {
        "rows_out": rows_out,
        "rows_rejected": rows_rejected,
        "rows_in": rows_out + rows_rejected,
        "by_split": by_split,
        **_recount(root, data),
    }
    for key, value in expected.items():
        if counts.get(key) != value:
            raise VerifyError(f"{STAGED_MANIFEST}: counts.{key} is {counts.get(key)!r} but the files add up to {value!r}")
    return VerifyReport(
        path=root,
        files=len(listed),
        rows_in=rows_out + rows_rejected,
        rows_out=rows_out,
        rows_rejected=rows_rejected,
        by_split=by_split,
    )
