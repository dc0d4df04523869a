"""`sc-data inspect ORG/NAME[@REV]` and `sc-data pull` through the Hugging Face cache, in fresh
processes against the loopback Hub: online once, then offline from that cache; offline with an
empty cache, one `Error:` line."""

from __future__ import annotations

import json
from pathlib import Path

from sc_data.inspect import inspect
from tests.hub.fake_hub import FakeHub
from tests.hub.test_cli import REPO, SC_DATA, files_of, flat, run


def test_inspect_a_revision_then_pull_it_offline_from_the_hf_cache(fake_hub: FakeHub, hub_env: dict[str, str], staged: Path,
                                                                   tmp_path: Path) -> None:
    assert run([SC_DATA, "publish", str(staged), "--repo", REPO, "--revision", "v1"], hub_env).returncode == 0
    shown = run([SC_DATA, "inspect", f"{REPO}@v1", "--json"], hub_env)
    assert shown.returncode == 0, shown.stderr
    summary = json.loads(shown.stdout)
    assert summary["path"] == f"{REPO}@v1" and summary["rows"] == inspect(staged)["rows"]
    snapshots = tmp_path / "hf_home" / "hub" / "datasets--sc-org--curriculum" / "snapshots"
    assert [p.name for p in snapshots.iterdir()] == [fake_hub.repo(REPO).refs["v1"]]  # the HF cache, no second one
    assert not (tmp_path / "sc-cache").exists()

    fake_hub.stop()
    offline = hub_env | {"HF_HUB_OFFLINE": "1"}
    out = tmp_path / "pulled"
    pulled = run([SC_DATA, "pull", f"{REPO}@v1", "-o", str(out), "--json"], offline)
    assert pulled.returncode == 0, pulled.stderr
    assert files_of(out) == files_of(staged)


def test_pull_offline_and_not_cached_is_one_error_line(hub_env: dict[str, str], tmp_path: Path) -> None:
    offline = hub_env | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "empty_home")}
    for command in (["pull", REPO, "-o", str(tmp_path / "pulled")], ["inspect", f"{REPO}@v1"]):
        proc = run([SC_DATA, *command], offline)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.count("Error:") == 1 and proc.stderr.startswith("Error: ")
        assert "HF_HUB_OFFLINE is set and dataset 'sc-org/curriculum" in flat(proc.stderr)
        assert "is not in the Hugging Face cache: unset HF_HUB_OFFLINE" in flat(proc.stderr)
    assert not (tmp_path / "pulled").exists()
