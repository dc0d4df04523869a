"""End to end: the real `sc-data publish` / `sc-data pull` and `datasets.load_dataset` in fresh
processes, pointed at the loopback Hub through HF_ENDPOINT, with the token only in HF_TOKEN."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.hub.fake_hub import VALID_TOKEN, FakeHub

SC_DATA = str(Path(sys.executable).with_name("sc-data"))
REPO = "sc-org/curriculum"
TIER_1 = "data/tier_1/train-00000-of-00001.parquet"
EVAL = "data/eval/test-00000-of-00001.parquet"
LOAD_TIER_1 = (
    "import json, sys, datasets\n"
    "datasets.config.USE_PARQUET_EXPORT = False\n"
    "ds = datasets.load_dataset(sys.argv[1], 'tier_1')\n"
    "print(json.dumps({split: list(ds[split]['id']) for split in ds}))\n"
)


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)


def flat(text: str) -> str:
    """Rich wraps long lines; compare messages with whitespace collapsed."""
    return " ".join(text.split())


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class TestPublishPullCli:
    def test_publish_load_pull_and_no_token_anywhere(self, fake_hub: FakeHub, hub_env: dict[str, str], staged: Path, tmp_path: Path) -> None:
        published = run([SC_DATA, "publish", str(staged), "--repo", REPO, "--json"], hub_env)
        assert published.returncode == 0, published.stderr
        result = json.loads(published.stdout)
        assert result["private"] is True and fake_hub.repo(REPO).private is True
        assert result["commit_oid"] == fake_hub.repo(REPO).refs["main"]
        assert result["url"] == f"{fake_hub.endpoint}/datasets/{REPO}"

        loaded = run([sys.executable, "-c", LOAD_TIER_1, REPO], hub_env)
        assert loaded.returncode == 0, loaded.stderr
        ids = json.loads(loaded.stdout.strip().splitlines()[-1])
        assert ids == {
            "train": pq.read_table(staged / TIER_1).column("id").to_pylist(),
            "test": pq.read_table(staged / EVAL).column("id").to_pylist(),
        }

        out = tmp_path / "pulled"
        pulled = run([SC_DATA, "pull", REPO, "-o", str(out), "--json"], hub_env)
        assert pulled.returncode == 0, pulled.stderr
        assert json.loads(pulled.stdout) == {"ref": REPO, "path": str(out), "verified": True}
        assert files_of(out) == files_of(staged)

        for proc in (published, loaded, pulled):
            assert VALID_TOKEN not in proc.stdout + proc.stderr
        leaks = [p for p in tmp_path.rglob("*") if p.is_file() and VALID_TOKEN.encode() in p.read_bytes()]
        assert leaks == []  # staged folder, manifest, card, pulled copy, HF_HOME, datasets cache
        assert len(list((tmp_path / "hf_home").rglob("*.parquet"))) > 0  # the scan did cover the cache

    def test_table_output_flags_and_up_to_date(self, fake_hub: FakeHub, hub_env: dict[str, str], staged: Path) -> None:
        first = run([SC_DATA, "publish", str(staged), "--repo", REPO, "--public", "--revision", "v1", "-m", "first cut"], hub_env)
        assert first.returncode == 0, first.stderr
        assert "Published sc-org/curriculum (public)" in first.stdout
        assert f"{fake_hub.endpoint}/datasets/{REPO}/tree/v1" in first.stdout
        repo = fake_hub.repo(REPO)
        assert repo.private is False and repo.commit_at("v1").message == "first cut"
        again = run([SC_DATA, "publish", str(staged), "--repo", REPO, "--revision", "v1"], hub_env)
        assert again.returncode == 0, again.stderr
        assert flat(again.stdout) == f"Already up to date: {fake_hub.endpoint}/datasets/{REPO}/tree/v1"
        assert "Warning: sc-org/curriculum already exists and is PUBLIC; publish never changes" in flat(again.stderr)

    def test_wrong_token_is_refused_without_echoing_it(self, fake_hub: FakeHub, hub_env: dict[str, str], staged: Path) -> None:
        wrong = "hf_thisTokenIsWrong42"
        proc = run([SC_DATA, "publish", str(staged), "--repo", REPO], hub_env | {"HF_TOKEN": wrong})
        assert proc.returncode == 1
        assert re.search(r"^Error: The Hub at http://127\.0\.0\.1:\d+ refused the token \(401 Unauthorized\)", flat(proc.stderr))
        assert wrong not in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
        assert fake_hub.repos == {}

    def test_bad_repo_name(self, fake_hub: FakeHub, hub_env: dict[str, str], staged: Path) -> None:
        proc = run([SC_DATA, "publish", str(staged), "--repo", "no-slash"], hub_env)
        assert proc.returncode == 1
        assert flat(proc.stderr).startswith("Error: Invalid repository name 'no-slash': a Hub dataset name must be ORG/NAME")
        assert fake_hub.requests == []

    @pytest.mark.parametrize(("command", "expected"), [("publish", "--create-pr"), ("pull", "ORG/NAME@REVISION")])
    def test_help(self, command: str, expected: str, hub_env: dict[str, str]) -> None:
        proc = run([SC_DATA, command, "--help"], hub_env)
        assert proc.returncode == 0 and expected in proc.stdout and "Examples" in proc.stdout
        assert "--token" not in proc.stdout
