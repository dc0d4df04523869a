"""Publish a staged dataset to the Hugging Face Hub and pull it back.

A staged folder (docs/ARCHITECTURE.md, "The data contract between steps") is also the Hub repo layout, so publishing
is a verified copy: check the folder against its manifest, create the dataset repo (private by
default: the data is harmful text on purpose), and make ONE commit that adds what changed and
deletes what the new manifest no longer lists. Pulling downloads a revision into a temporary
folder, verifies it the same way and renames it into place, so a half-finished or tampered
download never appears under the final name.

Credentials come only from ``token=`` (the CLI passes nothing: huggingface_hub then reads
``HF_TOKEN`` or the ``hf auth login`` cache). The token is never printed, logged, or written to
any file: error messages are built from status codes and repo names only.

Example:
    >>> result = publish("staged/", "my-org/safety-curriculum")  # doctest: +SKIP
    >>> folder = pull("my-org/safety-curriculum@v1", "local/")    # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sc_data.errors import HubError, InputError
from sc_data.io import cache_dir as default_cache_dir
from sc_data.io import sha256_file, temp_dir_beside

#: Files the Hub itself manages in every repo; publish leaves them alone, pull skips them.
HUB_MANAGED = (".gitattributes",)
#: Transient failures (5xx, 429, connection errors) are retried this many times in all...
RETRY_ATTEMPTS = 4
#: ...waiting RETRY_BASE_S * 2**attempt seconds between tries (1, 2, 4 s by default).
RETRY_BASE_S = 1.0

_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_REPO_ID_RE = re.compile(rf"^{_PART}/{_PART}$")
_REF_RE = re.compile(rf"^(?P<repo>{_PART}/{_PART})(?:@(?P<rev>[^\s@]+))?$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_NAME_HELP = (
    "a Hub dataset name must be ORG/NAME: two parts of letters, digits, '-', '_' or '.', each "
    "starting and ending with a letter or digit, at most 96 characters, no '--' or '..' "
    "(e.g. my-org/safety-curriculum)"
)

T = TypeVar("T")
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

    Only files whose content differs from the remote revision are uploaded (compared by sha256
    for LFS files and git blob id for the rest); remote files the new manifest no longer lists
    are deleted in the same commit, so the repo always equals the folder.

    Args:
        path: The staged folder (README.md, sc_manifest.json, data/, rejects.parquet, ...).
        repo_id: ``ORG/NAME`` of the dataset repo; created if missing.
        private: Create the repo private (default True: safety data holds harmful text). An
            existing repo's visibility is never changed.
        revision: Branch to commit to; created from ``main`` if missing. Default ``main``.
        create_pr: Open a pull request with the commit instead of committing to the branch.
        message: Commit summary; default says what was added, changed and deleted.
        token: A Hub token; default ``HF_TOKEN`` or the ``hf auth login`` cache.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
        progress: Called as ``progress(step, done, total)`` between steps (the CLI draws a bar).

    Returns:
        PublishResult with the URL, the commit id and the files added, changed and deleted.

    Raises:
        VerifyError: The folder does not match its manifest (nothing is uploaded).
        HubError: Bad name, no or rejected token, repo or revision not found, network failure.
    """
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    from sc_data.stage.folder import verify

    validate_repo_id(repo_id)
    if revision is not None and _COMMIT_RE.match(revision):
        raise HubError(f"Cannot publish to commit {revision!r}: a commit is immutable. Pass a branch name as --revision.")
    step = progress or (lambda *_: None)
    folder = Path(path)
    step("verify", 0, 4)
    verify(folder)
    token = _require_token(token)
    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or _default_endpoint()

    step("create repo", 1, 4)
    with _hub_errors(repo_id, revision, where):
        _retry(api.whoami)  # a wrong token fails here, with the clearest answer the Hub gives
        repo_url = _retry(lambda: api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True))
        if revision not in (None, "main") and not revision.startswith("refs/pr/"):
            _retry(lambda: api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True))
        is_private = bool(_retry(lambda: api.repo_info(repo_id, repo_type="dataset")).private)

        step("compare", 2, 4)
        remote = _retry(lambda: _remote_files(api, repo_id, revision or "main"))
    local = _local_files(folder)
    added, changed, unchanged = _diff(local, remote)
    deleted = sorted(p for p in remote if p not in local and p not in HUB_MANAGED)
    url = str(repo_url) if revision in (None, "main") else f"{repo_url}/tree/{revision}"
    result = PublishResult(repo_id, url, revision or "main", is_private, None, None, None, added, changed, deleted, unchanged)
    if not (added or changed or deleted):
        step("up to date", 4, 4)
        return result

    step(f"upload {len(added) + len(changed)} files, delete {len(deleted)}", 3, 4)
    summary = message or f"Publish sc-data staged dataset: {len(added)} added, {len(changed)} changed, {len(deleted)} deleted"

    def commit() -> Any:
        operations = [CommitOperationAdd(p, str(local[p])) for p in [*added, *changed]]
        operations += [CommitOperationDelete(p) for p in deleted]
        return api.create_commit(
            repo_id, operations, commit_message=summary, repo_type="dataset", revision=revision, create_pr=create_pr
        )

    with _hub_errors(repo_id, revision, where):
        info = _retry(commit)
    step("done", 4, 4)
    return PublishResult(
        repo_id, url, revision or "main", is_private, info.oid, info.commit_url, info.pr_url, added, changed, deleted, unchanged
    )


def pull(
    repo_ref: str,
    output: str | os.PathLike[str],
    *,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download ``ORG/NAME[@REV]`` into ``output`` and verify it against its manifest.

    The download goes to a temporary sibling of ``output`` and is renamed into place only after
    :func:`sc_data.stage.folder.verify` passes, so ``output`` either holds a complete verified dataset
    or does not exist. Hub-managed files (``.gitattributes``) are skipped; any other file the
    manifest does not list fails verification.

    Args:
        repo_ref: ``ORG/NAME`` or ``ORG/NAME@REV`` (branch, tag, ``refs/pr/N`` or commit sha).
        output: Folder to create; must not exist or be empty.
        token: A Hub token for private repos; default ``HF_TOKEN`` or the login cache.
        endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.

    Returns:
        The output folder.

    Raises:
        HubError: Bad reference, repo or revision not found, token refused, network failure.
        VerifyError: The downloaded files do not match the manifest.
    """
    from huggingface_hub import snapshot_download

    from sc_data.stage.folder import verify

    ref = parse_repo_ref(repo_ref)
    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HubError(f"Output {str(out)!r} already exists and is not an empty folder: pass a new folder to --output.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(out, suffix=".pull")
    try:
        with _hub_errors(ref.repo_id, ref.revision, endpoint or _default_endpoint()):
            _retry(
                lambda: snapshot_download(
                    ref.repo_id,
                    repo_type="dataset",
                    revision=ref.revision,
                    local_dir=tmp,
                    token=token,
                    endpoint=endpoint,
                    ignore_patterns=list(HUB_MANAGED),
                )
            )
        shutil.rmtree(tmp / ".cache", ignore_errors=True)  # huggingface_hub's local_dir metadata
        verify(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def resolve_dataset(
    ref: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    token: str | None = None,
    endpoint: str | None = None,
) -> Path:
    """Turn "a folder or a Hub dataset" into a local verified folder.

    An existing local path is returned as is (the caller verifies it as it would any folder).
    Anything else shaped like ``ORG/NAME[@REV]`` is resolved to its commit and pulled once into
    ``<cache>/<org>/<name>/<commit>`` (cache: ``cache_dir``, else ``$SC_DATA_CACHE``, else
    ``~/.cache/sc-data``); a later call for the same commit reuses the cached copy after
    verifying it again. This lets ``train`` and ``inspect`` accept ``ORG/NAME`` wherever they
    accept a folder.

    Raises:
        InputError: ``ref`` is neither an existing folder nor an ``ORG/NAME[@REV]`` reference.
        HubError, VerifyError: As :func:`pull`.
    """
    from huggingface_hub import HfApi

    from sc_data.stage.folder import verify

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
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    commit = parsed.revision if parsed.revision and _COMMIT_RE.match(parsed.revision) else None
    if commit is None:
        api = HfApi(endpoint=endpoint, token=token)
        with _hub_errors(parsed.repo_id, parsed.revision, endpoint or _default_endpoint()):
            commit = _retry(lambda: api.repo_info(parsed.repo_id, repo_type="dataset", revision=parsed.revision).sha)
    org, name = parsed.repo_id.split("/")
    target = root / org / name / commit
    if target.is_dir():
        verify(target)
        return target
    return pull(f"{parsed.repo_id}@{commit}", target, token=token, endpoint=endpoint)


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


def git_blob_oid(path: Path) -> str:
    """Git's blob id of a file (sha1 of ``blob <size>\\0<bytes>``): how the Hub names non-LFS files."""
    digest = hashlib.sha1(b"blob %d\x00" % path.stat().st_size)
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _local_files(folder: Path) -> dict[str, Path]:
    """Every file of the (already verified) folder by its repo path, hidden folders excluded."""
    files = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = p
    return files


def _remote_files(api: Any, repo_id: str, revision: str) -> dict[str, Any]:
    from huggingface_hub.hf_api import RepoFile

    tree = api.list_repo_tree(repo_id, recursive=True, revision=revision, repo_type="dataset")
    return {entry.path: entry for entry in tree if isinstance(entry, RepoFile)}


def _diff(local: dict[str, Path], remote: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """Split local files into (added, changed, unchanged) against the remote tree."""
    added, changed, unchanged = [], [], []
    for rel, p in local.items():
        entry = remote.get(rel)
        if entry is None:
            added.append(rel)
        elif (entry.lfs.sha256 == sha256_file(p)) if entry.lfs else (entry.blob_id == git_blob_oid(p)):
            unchanged.append(rel)
        else:
            changed.append(rel)
    return added, changed, unchanged


def _status(err: BaseException) -> int | None:
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _status_in_chain(err: BaseException) -> int | None:
    """The first HTTP status found along the cause chain, if any."""
    node: BaseException | None = err
    for _ in range(8):
        if node is None:
            return None
        if _status(node) is not None:
            return _status(node)
        node = node.__cause__ or node.__context__
    return None


def _is_transient(err: BaseException) -> bool:
    """5xx, 429 and connection/timeout errors, anywhere in the cause chain, are worth a retry."""
    import httpx2

    seen = 0
    node: BaseException | None = err
    while node is not None and seen < 8:
        status = _status(node)
        if isinstance(node, httpx2.TransportError) or (status is not None and (status >= 500 or status == 429)):
            return True
        node, seen = node.__cause__ or node.__context__, seen + 1
    return False


def _retry(fn: Callable[[], T]) -> T:
    """Call ``fn``; retry transient failures with exponential backoff, RETRY_ATTEMPTS tries in all."""
    for attempt in range(RETRY_ATTEMPTS - 1):
        try:
            return fn()
        except Exception as err:
            if not _is_transient(err):
                raise
            time.sleep(RETRY_BASE_S * 2**attempt)
    return fn()  # the last attempt's error propagates


@contextlib.contextmanager
def _hub_errors(repo_id: str, revision: str | None, endpoint: str) -> Iterator[None]:
    """Turn huggingface_hub/httpx failures into HubErrors that say what to do (never the token)."""
    import httpx2
    from huggingface_hub.errors import (
        HfHubHTTPError,
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
        raise HubError("HF_HUB_OFFLINE is set, so the Hub cannot be reached: unset it (or set HF_HUB_OFFLINE=0) and retry.") from e
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
        if _is_transient(e):
            raise HubError(
                f"The Hub at {endpoint} kept failing ({status}) after {RETRY_ATTEMPTS} attempts for {repo_id!r}: "
                "try again later."
            ) from e
        raise HubError(f"The Hub at {endpoint} refused the request for {repo_id!r} ({status}): {e}") from e
    except httpx2.TransportError as e:
        raise HubError(
            f"Could not reach the Hub at {endpoint} after {RETRY_ATTEMPTS} attempts ({type(e).__name__}): check your "
            "network connection and HF_ENDPOINT."
        ) from e
    except OSError as e:
        # snapshot_download wraps connection errors and server errors in LocalEntryNotFoundError.
        if _is_transient(e):
            status = _status_in_chain(e)
            if status is not None:
                raise HubError(
                    f"The Hub at {endpoint} kept answering HTTP {status} after {RETRY_ATTEMPTS} attempts for {repo_id!r}: "
                    "the server is failing; try again later."
                ) from e
            raise HubError(
                f"Could not reach the Hub at {endpoint} after {RETRY_ATTEMPTS} attempts: check your network "
                "connection and HF_ENDPOINT."
            ) from e
        raise
