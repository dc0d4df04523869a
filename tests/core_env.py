"""Real virtual environments holding what ``pip install sc-data`` (or one extra) installs, for the CLI tests.

A venv is made with the dev interpreter's base Python and ``pip install -e <repo>[extra]`` from
PyPI: exactly a user's dependencies, and (editable) this tree's code. It is cached under
``~/.cache/sc-data-tests/venvs`` keyed on the repo path, the Python version and pyproject.toml's
bytes, so a rerun reuses it and a change of dependencies rebuilds it. A file lock keeps two
pytest runs from building the same one at once. If pip can't install (PyPI unreachable), the
test fails with pip's own words: these tests prove what a user gets and have no offline substitute.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
READY = ".sc-data-ready"


@dataclass(frozen=True)
class Venv:
    """A built venv: its folder, and how long building it took (0 when reused from the cache)."""

    path: Path
    build_s: float

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def sc_data(self) -> Path:
        return self.path / "bin" / "sc-data"

    def env(self, **extra: str) -> dict[str, str]:
        """The environment of a user who activated this venv: no dev-tree PYTHONPATH, offline Hub, no colour."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "SC_DATA_DEBUG")}
        env.update(PATH=f"{self.path / 'bin'}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.path),
                   HF_HUB_OFFLINE="1", NO_COLOR="1", COLUMNS="200", TOKENIZERS_PARALLELISM="false")
        return env | extra

    def run(self, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
        """Run ``args`` (a program of this venv first) in ``cwd``, which keeps the repo's ``*.egg-info`` off ``sys.path``."""
        return subprocess.run(args, cwd=cwd, env=self.env(**env), capture_output=True, text=True, timeout=300)


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sc-data-tests" / "venvs"


def build_venv(extra: str | None = None) -> Venv:
    """The venv of ``pip install sc-data`` (``extra`` None) or ``pip install "sc-data[extra]"``, built once per key."""
    repo_key = hashlib.sha256(str(REPO).encode()).hexdigest()[:8]
    deps_key = hashlib.sha256(sys.version.encode() + (REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    prefix = f"{extra or 'core'}-{repo_key}-"
    root = _cache_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / (prefix + deps_key)
    with open(root / f"{prefix}lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (path / READY).is_file():
            return Venv(path, 0.0)
        for stale in root.glob(prefix + "*"):  # this repo's earlier dependencies, or a build cut short
            if stale.is_dir():
                shutil.rmtree(stale)
        start = time.perf_counter()
        spec = f"{REPO}[{extra}]" if extra else str(REPO)
        steps = [[sys._base_executable, "-m", "venv", str(path)],  # type: ignore[attr-defined]
                 [str(path / "bin" / "python"), "-m", "pip", "install", "--quiet", "--prefer-binary", "--no-compile", "-e", spec]]
        for step in steps:
            done = subprocess.run(step, cwd=root, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                pytest.fail(f"could not build the venv of `pip install {spec}` (is PyPI reachable? these tests need it):\n"
                            f"$ {' '.join(step)}\n{done.stderr[-3000:]}", pytrace=False)
        (path / READY).write_text(spec + "\n")
        return Venv(path, time.perf_counter() - start)
