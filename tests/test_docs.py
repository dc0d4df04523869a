"""Every pointer in code and docs leads somewhere: repository paths exist, cited sections exist."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

#: Repository paths as code and docs write them: a top-level folder, then a path (globs allowed).
PATH_RE = re.compile(r"(?<![\w./-])((?:docs|sc_data|tests|bench|experiments|examples|scripts|notebooks)/[\w./*-]*[\w*/])")
SECTION_RE = re.compile(r'docs/ARCHITECTURE\.md, "([^"<][^"]*)"')  # "<section>" is the form, not a citation
SCANNED = ("*.py", "*.md", "*.sh", "*.yaml", "*.toml", "*.ipynb", "*.txt", ".ci/run")


def _tracked_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", *SCANNED], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    skip = ("experiments/reproduce/results/", "tests/test_docs.py")  # per-run records are data; this file holds patterns
    return [REPO_ROOT / f for f in listed.stdout.split() if not f.startswith(skip)]


def _exists(reference: str) -> bool:
    if "*" in reference:
        return any(REPO_ROOT.glob(reference))
    return (REPO_ROOT / reference.rstrip("/")).exists()


def test_no_file_cites_a_design_doc_outside_the_repository() -> None:
    outside = "DESIGN.md"
    offenders = [str(f.relative_to(REPO_ROOT)) for f in _tracked_files() if outside in f.read_text("utf-8")]
    assert offenders == []


def test_every_repository_path_mentioned_exists() -> None:
    missing = []
    for file in _tracked_files():
        for lineno, line in enumerate(file.read_text("utf-8").splitlines(), 1):
            for reference in PATH_RE.findall(line):
                if not _exists(reference):
                    missing.append(f"{file.relative_to(REPO_ROOT)}:{lineno}: {reference}")
    assert missing == []


def test_every_cited_architecture_section_exists() -> None:
    headings = {line.lstrip("#").strip() for line in (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text("utf-8").splitlines()
                if line.startswith("#")}
    cited = {
        (str(f.relative_to(REPO_ROOT)), section)
        for f in _tracked_files()
        for section in SECTION_RE.findall(f.read_text("utf-8"))
    }
    assert cited, "the code cites no section of docs/ARCHITECTURE.md: the pattern is wrong"
    assert sorted((f, s) for f, s in cited if s not in headings) == []


@pytest.mark.parametrize("module", ["sc_data.cli.main"])
def test_the_cli_starts_without_the_deep_learning_stack(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers', 'datasets', 'matplotlib') if m in sys.modules))"
    out = subprocess.run(["python", "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_library_never_imports_the_cli() -> None:
    offenders = [
        str(f.relative_to(REPO_ROOT))
        for f in (REPO_ROOT / "sc_data").rglob("*.py")
        if "cli" not in f.relative_to(REPO_ROOT / "sc_data").parts and re.search(r"^\s*(from|import) sc_data\.cli", f.read_text("utf-8"), re.M)
    ]
    assert offenders == []
