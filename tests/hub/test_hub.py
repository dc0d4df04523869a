"""sc_data.hub against the loopback Hub, through the real huggingface_hub client (in-process)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sc_data import hub
from sc_data.errors import HubError, InputError, VerifyError
from sc_data.io import sha256_file
from tests.hub.conftest import build_staged
from tests.hub.fake_hub import VALID_TOKEN, FakeHub

REPO = "sc-org/curriculum"
TIER = "data/tier_{}/train-00000-of-00001.parquet"


def files_of(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def commit_ops(fake: FakeHub, ref: str = "main") -> list[tuple[str, str]]:
    repo = fake.repo(REPO)
    return sorted((op["key"], op["value"]["path"]) for op in repo.commit_at(ref).operations)


class TestNames:
    @pytest.mark.parametrize("name", ["sc-org/curriculum", "a/b", "Org_1/name.v2-x"])
    def test_valid(self, name: str) -> None:
        assert hub.validate_repo_id(name) == name

    @pytest.mark.parametrize("name", ["curriculum", "a/b/c", "org/", "-org/x", "org/na me", "org/a--b", "org/a..b", "o/" + "x" * 97])
    def test_invalid(self, name: str) -> None:
        with pytest.raises(HubError, match=r"Invalid repository name .*: a Hub dataset name must be ORG/NAME"):
            hub.validate_repo_id(name)

    def test_ref_with_revision(self) -> None:
        assert hub.parse_repo_ref("sc-org/c@refs/pr/1") == hub.RepoRef("sc-org/c", "refs/pr/1")
        assert hub.parse_repo_ref("sc-org/c") == hub.RepoRef("sc-org/c", None)

    def test_bad_ref(self) -> None:
        with pytest.raises(HubError, match=r"Invalid dataset reference 'sc-org/c@': expected ORG/NAME or ORG/NAME@REVISION"):
            hub.parse_repo_ref("sc-org/c@")


class TestPublish:
    def test_first_publish_is_one_private_commit(self, hub_client: FakeHub, staged: Path) -> None:
        result = hub.publish(staged, REPO)
        repo = hub_client.repo(REPO)
        assert repo.private and result.private
        assert len(repo.history) == 2  # the Hub's initial commit + ours
        assert result.commit_oid == repo.refs["main"]
        assert result.added == sorted(files_of(staged)) and not (result.changed or result.deleted)
        # Parquet and PNG go through LFS, the card and manifest as regular files.
        assert commit_ops(hub_client) == sorted(
            [("file", "README.md"), ("file", "sc_manifest.json")]
            + [("lfsFile", p) for p in files_of(staged) if p.endswith((".parquet", ".png"))]
        )
        served = repo.commit_at("main").files
        assert {p: hashlib.sha256(f.data).hexdigest() for p, f in served.items() if p != ".gitattributes"} == files_of(staged)
        assert result.url == f"{hub_client.endpoint}/datasets/{REPO}"

    def test_public_flag_reaches_the_server(self, hub_client: FakeHub, staged: Path) -> None:
        assert hub.publish(staged, REPO, private=False).private is False
        assert hub_client.repo(REPO).private is False

    def test_second_publish_uploads_only_changes_and_deletes_unlisted(
        self, hub_client: FakeHub, staged: Path, tmp_path: Path, paper_rows: list[dict[str, str]]
    ) -> None:
        hub.publish(staged, REPO)
        v2 = build_staged(tmp_path / "v2", paper_rows, tiers=3)  # tier_2 added, the rest byte-identical
        result = hub.publish(v2, REPO, message="v2: three tiers")
        assert result.added == [TIER.format(2)]
        assert result.changed == ["README.md", "sc_manifest.json"] and result.deleted == []
        assert commit_ops(hub_client) == [("file", "README.md"), ("file", "sc_manifest.json"), ("lfsFile", TIER.format(2))]
        assert hub_client.repo(REPO).commit_at("main").message == "v2: three tiers"

        back = hub.publish(staged, REPO)  # back to two tiers: tier_2 must go, in the same commit
        assert back.deleted == [TIER.format(2)] and back.added == []
        assert commit_ops(hub_client) == [("deletedFile", TIER.format(2)), ("file", "README.md"), ("file", "sc_manifest.json")]
        assert set(hub_client.repo(REPO).commit_at("main").files) == set(files_of(staged)) | {".gitattributes"}
        assert len(hub_client.repo(REPO).history) == 4

    def test_changed_shard_is_reuploaded(
        self, hub_client: FakeHub, staged: Path, tmp_path: Path, paper_rows: list[dict[str, str]]
    ) -> None:
        hub.publish(staged, REPO)
        smaller = build_staged(tmp_path / "smaller", paper_rows, drop=1)  # tier_0 loses its first pair
        result = hub.publish(smaller, REPO)
        assert result.changed == ["README.md", TIER.format(0), "sc_manifest.json"]
        assert not (result.added or result.deleted)
        assert commit_ops(hub_client) == [("file", "README.md"), ("file", "sc_manifest.json"), ("lfsFile", TIER.format(0))]

    def test_unchanged_dataset_makes_no_commit(self, hub_client: FakeHub, staged: Path) -> None:
        first = hub.publish(staged, REPO)
        again = hub.publish(staged, REPO)
        assert again.commit_oid is None and again.unchanged == first.added
        assert len(hub_client.repo(REPO).history) == 2

    def test_revision_branch_is_created_and_main_untouched(self, hub_client: FakeHub, staged: Path) -> None:
        result = hub.publish(staged, REPO, revision="v1")
        repo = hub_client.repo(REPO)
        assert repo.refs["v1"] == result.commit_oid
        assert set(repo.commit_at("main").files) == {".gitattributes"}
        assert result.url.endswith("/tree/v1")

    def test_create_pr(self, hub_client: FakeHub, staged: Path) -> None:
        result = hub.publish(staged, REPO, create_pr=True)
        repo = hub_client.repo(REPO)
        assert repo.refs["refs/pr/1"] == result.commit_oid
        assert result.pr_url == f"{hub_client.endpoint}/datasets/{REPO}/discussions/1"
        assert set(repo.commit_at("main").files) == {".gitattributes"}

    def test_tampered_folder_is_refused_before_any_request(self, hub_client: FakeHub, staged: Path) -> None:
        (staged / "rejects.parquet").write_bytes(b"not the file the manifest hashed")
        with pytest.raises(VerifyError, match="rejects.parquet"):
            hub.publish(staged, REPO)
        assert hub_client.requests == []

    def test_wrong_token(self, hub_client: FakeHub, staged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenValue")
        with pytest.raises(HubError, match=r"refused the token \(401 Unauthorized\) for 'sc-org/curriculum'") as info:
            hub.publish(staged, REPO)
        assert "hf_wrongTokenValue" not in str(info.value) and REPO not in [k[1] for k in hub_client.repos]

    def test_no_token(self, hub_client: FakeHub, staged: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.delenv("HF_TOKEN")
        with pytest.raises(HubError, match=r"No Hugging Face token found: .*Set the HF_TOKEN environment variable or run `hf auth login`"):
            hub.publish(staged, REPO)

    def test_forbidden_namespace(self, hub_client: FakeHub, staged: Path) -> None:
        with pytest.raises(HubError, match=r"no write access to 'someone-else/curriculum' \(403 Forbidden\)"):
            hub.publish(staged, "someone-else/curriculum")

    def test_bad_name(self, hub_client: FakeHub, staged: Path) -> None:
        with pytest.raises(HubError, match=r"Invalid repository name 'curriculum'"):
            hub.publish(staged, "curriculum")
        assert hub_client.requests == []

    def test_commit_sha_is_not_a_publish_target(self, hub_client: FakeHub, staged: Path) -> None:
        with pytest.raises(HubError, match=r"Cannot publish to commit '0{40}': a commit is immutable"):
            hub.publish(staged, REPO, revision="0" * 40)

    def test_transient_upload_failures_are_retried_by_huggingface_hub(self, hub_client: FakeHub, staged: Path) -> None:
        hub_client.fail_next(f"/api/datasets/{REPO}/preupload/", 503, times=1)
        hub_client.fail_next("/lfs-upload/", 502, times=1)
        result = hub.publish(staged, REPO)
        assert hub_client.repo(REPO).refs["main"] == result.commit_oid
        preuploads = [r for r in hub_client.requests if r[1].startswith(f"/api/datasets/{REPO}/preupload/")]
        assert len(preuploads) == 2

    def test_a_failing_commit_is_one_clear_error_and_commits_nothing(self, hub_client: FakeHub, staged: Path) -> None:
        hub_client.fail_next(f"/api/datasets/{REPO}/commit/", 503, times=1)
        with pytest.raises(HubError, match=r"failed \(HTTP 503\) for 'sc-org/curriculum'.*try again later"):
            hub.publish(staged, REPO)
        assert set(hub_client.repo(REPO).commit_at("main").files) == {".gitattributes"}

    def test_unreachable_hub(self, staged: Path, hub_client: FakeHub) -> None:
        hub_client.stop()
        with pytest.raises(HubError, match=r"Could not reach the Hub at http://127\.0\.0\.1:\d+ \(ConnectError\)"):
            hub.publish(staged, REPO, endpoint=hub_client.endpoint)


class TestPull:
    def test_round_trip(self, hub_client: FakeHub, staged: Path, tmp_path: Path) -> None:
        hub.publish(staged, REPO)
        out = hub.pull(REPO, tmp_path / "pulled")
        assert files_of(out) == files_of(staged)  # byte-identical, no .gitattributes, no .cache
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pulled")] == []

    def test_revision(self, hub_client: FakeHub, staged: Path, tmp_path: Path, paper_rows: list[dict[str, str]]) -> None:
        hub.publish(staged, REPO, revision="v1")
        hub.publish(build_staged(tmp_path / "v2", paper_rows, tiers=3), REPO)
        out = hub.pull(f"{REPO}@v1", tmp_path / "pulled")
        assert files_of(out) == files_of(staged)

    def test_extra_remote_file_fails_verification(self, hub_client: FakeHub, staged: Path, tmp_path: Path) -> None:
        hub.publish(staged, REPO)
        from huggingface_hub import CommitOperationAdd, HfApi

        HfApi(token=VALID_TOKEN).create_commit(
            REPO, [CommitOperationAdd("data/tier_0/smuggled.parquet", b"PAR1")], commit_message="x", repo_type="dataset"
        )
        with pytest.raises(VerifyError, match="smuggled.parquet"):
            hub.pull(REPO, tmp_path / "pulled")
        assert not (tmp_path / "pulled").exists()
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".pulled")] == []

    def test_missing_repo(self, hub_client: FakeHub, tmp_path: Path) -> None:
        with pytest.raises(HubError, match=r"Dataset repo 'sc-org/nothing' not found on http://127\.0\.0\.1:\d+"):
            hub.pull("sc-org/nothing", tmp_path / "pulled")

    def test_missing_revision(self, hub_client: FakeHub, staged: Path, tmp_path: Path) -> None:
        hub.publish(staged, REPO)
        with pytest.raises(HubError, match=r"Revision 'nope' not found in dataset 'sc-org/curriculum'"):
            hub.pull(f"{REPO}@nope", tmp_path / "pulled")

    def test_private_repo_needs_the_token(self, hub_client: FakeHub, staged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        hub.publish(staged, REPO)
        monkeypatch.delenv("HF_TOKEN")
        with pytest.raises(HubError, match=r"not found on .*or your token cannot access it"):
            hub.pull(REPO, tmp_path / "pulled")

    def test_wrong_token(self, hub_client: FakeHub, staged: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        hub.publish(staged, REPO)
        monkeypatch.setenv("HF_TOKEN", "hf_wrongTokenValue")
        with pytest.raises(HubError, match=r"refused the token \(401 Unauthorized\) for 'sc-org/curriculum'"):
            hub.pull(REPO, tmp_path / "pulled")
        assert not (tmp_path / "pulled").exists()

    def test_non_empty_output_is_refused(self, hub_client: FakeHub, staged: Path) -> None:
        with pytest.raises(HubError, match=r"already exists and is not an empty folder"):
            hub.pull(REPO, staged)
        assert hub_client.requests == []


class TestResolveDataset:
    def test_local_folder_is_returned_as_is(self, staged: Path) -> None:
        assert hub.resolve_dataset(staged) == staged

    def test_hub_ref_is_fetched_once_into_the_hf_cache(self, hub_client: FakeHub, staged: Path, tmp_path: Path) -> None:
        oid = hub.publish(staged, REPO).commit_oid
        first = hub.resolve_dataset(REPO)
        assert first == tmp_path / "hf_cache" / "datasets--sc-org--curriculum" / "snapshots" / str(oid)
        assert files_of(first) == files_of(staged)
        downloads = sum(1 for r in hub_client.requests if "/resolve/" in r[1])
        assert hub.resolve_dataset(f"{REPO}@main") == first
        assert sum(1 for r in hub_client.requests if "/resolve/" in r[1]) == downloads

    def test_neither_folder_nor_ref(self, tmp_path: Path) -> None:
        with pytest.raises(InputError, match=r"is neither an existing folder nor a Hub dataset reference ORG/NAME\[@REV\]"):
            hub.resolve_dataset(tmp_path / "missing" / "deep" / "path")


class TestHardening:
    def test_a_server_error_is_not_called_unreachable(self, hub_client: FakeHub, staged: Path, tmp_path: Path) -> None:
        hub.publish(staged, REPO)
        hub_client.fail_next(f"/api/datasets/{REPO}/revision/", 500, times=1000)
        with pytest.raises(HubError, match=r"500") as caught:
            hub.pull(REPO, tmp_path / "pulled")
        assert "Could not reach" not in str(caught.value) and "sc-org/curriculum" in str(caught.value)
        assert not (tmp_path / "pulled").exists()

    def test_inspect_accepts_a_hub_dataset(self, hub_client: FakeHub, staged: Path) -> None:
        from sc_data.inspect import inspect

        hub.publish(staged, REPO)
        summary = inspect(REPO)
        assert summary["path"] == REPO and summary["rows"] == inspect(staged)["rows"]
