"""Publish a staged dataset to the Hugging Face Hub and pull it back.

A staged folder (docs/ARCHITECTURE.md, "The data contract between steps") is also the Hub repo layout, so publishing
is a verified copy: check the folder against its manifest before anything is sent, create the
dataset repo (private by default: the data is harmful text on purpose), then let
``HfApi.upload_folder`` make ONE commit: it skips unchanged files, deletes remote files the folder
no longer holds (``delete_patterns``) and retries transient upload failures itself. Pulling goes
through ``snapshot_download`` into the Hugging Face cache (so it works offline once cached and
shares that cache with ``datasets``), verifies the snapshot the same way and only then copies it
out, so a half-finished or tampered download never appears under the final name.

Credentials come only from ``token=`` (the CLI passes nothing: huggingface_hub then reads
``HF_TOKEN`` or the ``hf auth login`` cache). The token is never printed, logged, or written to
any file: error messages are built from status codes and repo names only.

Example:
    >>> result = publish("staged/", "my-org/safety-curriculum")  # doctest: +SKIP
    >>> folder = pull("my-org/safety-curriculum@v1", "local/")    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sc_data.errors import HubError, InputError
from sc_data.io import atomic_dir, finish_swap

#: Files the Hub itself manages in every repo; publish leaves them alone, pull skips them.
HUB_MANAGED = (".gitattributes",)
#: Local files publish never uploads: the Hub's own, and client caches inside the folder.
_NOT_UPLOADED = [*HUB_MANAGED, ".cache/**"]

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID_RE = re.compile(rf"^{_PART}/{_PART}$")
_REF_RE = re.compile(rf"^(?P<repo>{_PART}/{_PART})(?:@(?P<rev>[^\s@]+))?$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_NAME_HELP = (
    "a Hub dataset name must be ORG/NAME: two parts of letters, digits, '-', '_' or '.', each "
    "starting and ending with a letter or digit, at most 96 characters, no '--' or '..' "
    "(e.g. my-org/safety-curriculum)"
)

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class RepoRef:
    """A parsed ``ORG/NAME[@REV]`` reference; ``revision`` None means the default branch."""

    repo_id: str
    revision: str | None = None


@dataclass(frozen=True)
class PublishResult:
    """What a publish did. ``commit_oid`` is None when the remote already held this exact dataset."""

    repo_id: str
    url: str
    revision: str
    private: bool
    commit_oid: str | None
    commit_url: str | None
    pr_url: str | None
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_repo_id(repo_id: str) -> str:
    """Return ``repo_id`` if it is a valid ``ORG/NAME``; raise HubError naming the rule otherwise."""
    if not isinstance(repo_id, str) or not _REPO_ID_RE.match(repo_id) or "--" in repo_id or ".." in repo_id:
        raise HubError(f"Invalid repository name {repo_id!r}: {_NAME_HELP}.")
    return repo_id


def parse_repo_ref(ref: str) -> RepoRef:
    """Parse ``ORG/NAME[@REV]`` (REV: a branch, tag, ``refs/pr/N`` or commit sha)."""
    match = _REF_RE.match(ref or "")
    if match is None or "--" in match["repo"] or ".." in match["repo"]:
        raise HubError(f"Invalid dataset reference {ref!r}: expected ORG/NAME or ORG/NAME@REVISION; {_NAME_HELP}.")
    return RepoRef(match["repo"], match["rev"])


def publish(
    path: str | os.PathLike[str],
    repo_id: str,
    *,
    private: bool = True,
    revision: str | None = None,
    create_pr: bool = False,
    message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    progress: Progress | None = None,
) -> PublishResult:
    """Upload a verified staged folder to a Hub dataset repo in one commit.

    The folder is verified against its manifest before any request. ``HfApi.upload_folder`` then
    uploads only what differs from the remote revision, deletes remote files the folder no longer
    holds in the same commit (``delete_patterns``; ``.gitattributes`` is kept), and retries
    transient failures of its uploads. The result lists what changed, read from the remote tree
    before and after the commit.

    Args:
        path: The staged folder (README.md, sc_manifest.json, data/, rejects.parquet, ...).
        repo_id: ``ORG/NAME`` of the dataset repo; created if missing.
        private: Create the repo private (default True: safety data holds harmful text). An
            existing repo's visibility is never changed.
        revision: Branch to commit to; created from ``main`` if missing. Default ``main``.
        create_pr: Open a pull request with the commit instead of committing to the branch.
        message: Commit summary; default "Publish sc-data staged dataset".
        token: A Hub token; default ``HF_TOKEN`` or the ``hf auth login`` cache.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
        progress: Called as ``progress(step, done, total)`` between steps (the CLI draws a bar).

    Returns:
        PublishResult with the URL, the commit id and the files added, changed and deleted.

    Raises:
        VerifyError: The folder does not match its manifest (nothing is uploaded).
        HubError: Bad name, no or rejected token, repo or revision not found, network failure.
    """
    from huggingface_hub import HfApi

    from sc_data.stage.folder import verify

    validate_repo_id(repo_id)
    if revision is not None and _COMMIT_RE.match(revision):
        raise HubError(f"Cannot publish to commit {revision!r}: a commit is immutable. Pass a branch name as --revision.")
    step = progress or (lambda *_: None)
    folder = Path(path)
    step("verify", 0, 3)
    verify(folder)
    token = _require_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or _default_endpoint()
    branch = revision or "main"

    step("create repo", 1, 3)
    with _hub_errors(repo_id, revision, where):
        api.whoami()  # a wrong token fails here, with the clearest answer the Hub gives
        repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch != "main" and not branch.startswith("refs/pr/"):
            api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
        info = api.repo_info(repo_id, repo_type="dataset", revision=branch)
        before = _remote_files(api, repo_id, str(info.sha))
        step("upload", 2, 3)
        commit = api.upload_folder(
            repo_id=repo_id, folder_path=folder, repo_type="dataset", revision=revision, create_pr=create_pr,
            commit_message=message or "Publish sc-data staged dataset", delete_patterns="*", ignore_patterns=_NOT_UPLOADED,
        )
        made = commit.oid != info.sha  # upload_folder makes no empty commit: it returns the current head
        after = _remote_files(api, repo_id, commit.oid) if made else before
    step("done", 3, 3)
    url = str(repo_url) if branch == "main" else f"{repo_url}/tree/{branch}"
    return PublishResult(
        repo_id, url, branch, bool(info.private), commit.oid if made else None, commit.commit_url if made else None,
        commit.pr_url if made else None, **_changes(before, after),
    )


def pull(
    repo_ref: str,
    output: str | os.PathLike[str],
    *,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Copy the verified ``ORG/NAME[@REV]`` out of the Hugging Face cache into ``output``.

    The revision is fetched into the HF cache (:func:`snapshot`, offline from the cache alone) and
    verified there; the copy goes to a temporary sibling of ``output`` renamed into place, so
    ``output`` either holds a complete verified dataset or does not exist. Hub-managed files
    (``.gitattributes``) are left out; any other file the manifest does not list fails verification.

    Args:
        repo_ref: ``ORG/NAME`` or ``ORG/NAME@REV`` (branch, tag, ``refs/pr/N`` or commit sha).
        output: Folder to create; must not exist or be empty.
        token: A Hub token for private repos; default ``HF_TOKEN`` or the login cache.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.

    Returns:
        The output folder.

    Raises:
        HubError: Bad reference, repo or revision not found, token refused, offline and not
            cached, network failure.
        VerifyError: The downloaded files do not match the manifest.
    """
    ref = parse_repo_ref(repo_ref)
    out = Path(output)
    finish_swap(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(f"Output {str(out)!r} already exists and is not an empty folder: pass a new folder to --output.")
    source = snapshot(ref, token=token, endpoint=endpoint)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out, suffix=".pull") as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*HUB_MANAGED, ".cache"))
    return out


def snapshot(ref: RepoRef, *, token: str | None = None, endpoint: str | None = None) -> Path:
    """The verified snapshot of a Hub dataset revision in the Hugging Face cache (``HF_HOME``).

    ``huggingface_hub.snapshot_download`` fetches what the cache lacks (nothing for a commit
    already there) and, with ``HF_HUB_OFFLINE=1``, serves the cache alone.

    Raises:
        HubError: As :func:`pull`.
        VerifyError: The snapshot does not match its manifest.
    """
    from huggingface_hub import snapshot_download

    from sc_data.stage.folder import verify

    with _hub_errors(ref.repo_id, ref.revision, endpoint or _default_endpoint()):
        folder = Path(snapshot_download(
            ref.repo_id, repo_type="dataset", revision=ref.revision, token=token, endpoint=endpoint,
            ignore_patterns=list(HUB_MANAGED),
        ))
    verify(folder)
    return folder


def resolve_dataset(
    ref: str | os.PathLike[str],
    *,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Turn "a folder or a Hub dataset" into a local verified folder.

    An existing local path is returned as is (the caller verifies it as it would any folder).
    Anything else shaped like ``ORG/NAME[@REV]`` is its verified :func:`snapshot` in the Hugging
    Face cache, fetched once per commit. This lets ``train``, ``eval`` and ``inspect`` accept
    ``ORG/NAME`` wherever they accept a folder.

    Raises:
        InputError: ``ref`` is neither an existing folder nor an ``ORG/NAME[@REV]`` reference.
        HubError, VerifyError: As :func:`pull`.
    """
    local = Path(ref).expanduser()
    if local.exists():
        if not local.is_dir():
            raise InputError(f"{str(ref)!r} is a file; pass a staged dataset folder or a Hub dataset ORG/NAME[@REV].")
        return local
    try:
        parsed = parse_repo_ref(str(ref))
    except HubError:
        raise InputError(
            f"{str(ref)!r} is neither an existing folder nor a Hub dataset reference ORG/NAME[@REV]; "
            "check the path, or name a Hub dataset like my-org/safety-curriculum@main."
        ) from None
    return snapshot(parsed, token=token, endpoint=endpoint)


# ---- helpers -----------------------------------------------------------------------------------


def _default_endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _require_token(token: str | None) -> str:
    from huggingface_hub import get_token

    token = token or get_token()
    if not token:
        raise HubError(
            "No Hugging Face token found: publishing needs a token with write access. "
            "Set the HF_TOKEN environment variable or run `hf auth login`, then retry."
        )
    return token


def _remote_files(api: Any, repo_id: str, revision: str) -> dict[str, str]:
    """Repo path -> the Hub's id of its content (LFS sha256, else git blob id), Hub-managed files left out."""
    from huggingface_hub.hf_api import RepoFile

    tree = api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset")
    return {
        e.path: e.lfs.sha256 if e.lfs else e.blob_id
        for e in tree if isinstance(e, RepoFile) and e.path not in HUB_MANAGED
    }


def _changes(before: dict[str, str], after: dict[str, str]) -> dict[str, list[str]]:
    """What a commit did, from the remote trees around it: added, changed, deleted, unchanged paths."""
    common = [p for p in sorted(after) if p in before]
    return {
        "added": sorted(set(after) - set(before)),
        "changed": [p for p in common if after[p] != before[p]],
        "deleted": sorted(set(before) - set(after)),
        "unchanged": [p for p in common if after[p] == before[p]],
    }


def _status(err: BaseException) -> int | None:
    """The first HTTP status found along the cause chain, if any."""
    node: BaseException | None = err
    for _ in range(8):
        if node is None:
            return None
        status = getattr(getattr(node, "response", None), "status_code", None)
        if status is not None:
            return int(status)
        node = node.__cause__ or node.__context__
    return None


def _offline_error(repo_id: str, revision: str | None) -> HubError:
    name = f"{repo_id}@{revision}" if revision else repo_id
    return HubError(
        f"HF_HUB_OFFLINE is set and dataset {name!r} is not in the Hugging Face cache: unset HF_HUB_OFFLINE "
        "(or set it to 0) to download it, or fetch it once while online (the cache lives under HF_HOME)."
    )


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, endpoint: str) -> Iterator[None]:  # noqa: C901 - one flat branch per failure kind
    """Turn huggingface_hub/httpx failures into HubErrors that say what to do (never the token)."""
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except RevisionNotFoundError as e:
        raise HubError(
            f"Revision {revision!r} not found in dataset {repo_id!r} on {endpoint}: check the branch, tag or commit."
        ) from e
    except RepositoryNotFoundError as e:
        raise HubError(
            f"Dataset repo {repo_id!r} not found on {endpoint}, or your token cannot access it (private repos need a "
            "token with read access): check the name, or set HF_TOKEN / run `hf auth login`."
        ) from e
    except OfflineModeIsEnabled as e:
        raise _offline_error(repo_id, revision) from e
    except HfHubHTTPError as e:
        status = _status(e)
        if status == 401:
            raise HubError(
                f"The Hub at {endpoint} refused the token (401 Unauthorized) for {repo_id!r}: it is wrong or expired. "
                "Set HF_TOKEN to a valid token or run `hf auth login`."
            ) from e
        if status == 403:
            raise HubError(
                f"The token has no write access to {repo_id!r} (403 Forbidden): use a token with write permission "
                "on that namespace, or publish under your own ORG."
            ) from e
        if status is not None and (status >= 500 or status == 429):
            raise HubError(
                f"The Hub at {endpoint} failed (HTTP {status}) for {repo_id!r}, after huggingface_hub's own retries "
                "where it retries: try again later."
            ) from e
        raise HubError(f"The Hub at {endpoint} refused the request for {repo_id!r} (HTTP {status}): {e}") from e
    except httpx2.TransportError as e:
        raise HubError(
            f"Could not reach the Hub at {endpoint} ({type(e).__name__}): check your network connection and HF_ENDPOINT."
        ) from e
    except LocalEntryNotFoundError as e:
        # snapshot_download's answer when neither the Hub nor the cache can serve the revision.
        if constants.HF_HUB_OFFLINE:
            raise _offline_error(repo_id, revision) from e
        status = _status(e)
        if status is not None:
            raise HubError(
                f"The Hub at {endpoint} answered HTTP {status} for {repo_id!r} and the revision is not in the "
                "Hugging Face cache: the server is failing; try again later."
            ) from e
        raise HubError(
            f"Could not reach the Hub at {endpoint} for {repo_id!r}, and the revision is not in the Hugging Face "
            "cache: check your network connection and HF_ENDPOINT."
        ) from e
