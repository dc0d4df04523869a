"""`sc-data publish` and `sc-data pull`: move a staged dataset to and from the Hugging Face Hub.

The token is read by huggingface_hub from HF_TOKEN or the `hf auth login` cache; there is
deliberately no --token flag, so a token never lands in shell history.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from sc_data.cli._common import (
    JsonFlag,
    OutputDir,
    handle_errors,
    print_json,
    show_progress,
    stderr,
    stdout,
)

PUBLISH_EXAMPLES = """Examples:

  HF_TOKEN=... sc-data publish staged/ --repo my-org/safety-curriculum

  sc-data publish staged/ --repo my-org/safety-curriculum --revision v2 --message "Re-tiered with K=4"

  sc-data publish staged/ --repo my-org/safety-curriculum --create-pr --json
"""

PULL_EXAMPLES = """Examples:

  sc-data pull my-org/safety-curriculum -o curriculum/

  sc-data pull my-org/safety-curriculum@v2 -o curriculum-v2/ --json
"""


@handle_errors
def publish(
    path: Annotated[Path, typer.Argument(help="Staged dataset folder (from `sc-data stage`).", exists=True, file_okay=False)],
    repo: Annotated[str, typer.Option("--repo", "-r", help="Hub dataset repo ORG/NAME; created if missing.")],
    public: Annotated[bool, typer.Option("--public", help="Create the repo public (default: private, the data is harmful text).")] = False,
    revision: Annotated[str | None, typer.Option("--revision", help="Branch to commit to; created from main if missing.")] = None,
    create_pr: Annotated[bool, typer.Option("--create-pr", help="Open a pull request instead of committing to the branch.")] = False,
    message: Annotated[str | None, typer.Option("--message", "-m", help="Commit message.")] = None,
    json_out: JsonFlag = False,
) -> None:
    """Publish a staged dataset folder to a Hugging Face Hub dataset repo in one commit."""
    from huggingface_hub.utils import disable_progress_bars

    from sc_data.hub import publish as publish_dataset

    disable_progress_bars()  # one rich bar instead of a tqdm bar per file
    with Progress(TextColumn("{task.description}"), BarColumn(), console=stderr, transient=True, disable=not show_progress()) as bar:
        task = bar.add_task("verify", total=4)

        def progress(step: str, done: int, total: int) -> None:
            bar.update(task, description=step, completed=done, total=total)

        result = publish_dataset(
            path, repo, private=not public, revision=revision, create_pr=create_pr, message=message, progress=progress
        )
    if result.private is public:
        stderr.print(
            f"Warning: {repo} already exists and is {'private' if result.private else 'PUBLIC'}; publish never "
            "changes an existing repo's visibility (change it in the repo settings).",
            highlight=False,
        )
    if json_out:
        print_json(result.to_dict())
        return
    _print_publish(result.to_dict())


@handle_errors
def pull(
    ref: Annotated[str, typer.Argument(help="Hub dataset ORG/NAME or ORG/NAME@REVISION (branch, tag or commit).")],
    output: OutputDir,
    json_out: JsonFlag = False,
) -> None:
    """Download a published dataset from the Hugging Face Hub and verify it against its manifest."""
    from huggingface_hub.utils import disable_progress_bars

    from sc_data.hub import pull as pull_dataset

    disable_progress_bars()
    with stderr.status(f"Pulling {ref} ..."):
        folder = pull_dataset(ref, output)
    if json_out:
        print_json({"ref": ref, "path": str(folder), "verified": True})
        return
    stdout.print(f"Pulled {ref} into {folder} (verified against sc_manifest.json).", highlight=False)


def _print_publish(result: dict[str, Any]) -> None:
    if result["commit_oid"] is None:
        stdout.print(f"Already up to date: {result['url']}", highlight=False)
        return
    stdout.print(f"Published {result['repo_id']} ({'private' if result['private'] else 'public'})", highlight=False)
    table = Table()
    table.add_column("change")
    table.add_column("files", justify="right")
    for key in ("added", "changed", "deleted", "unchanged"):
        table.add_row(key, str(len(result[key])))
    stdout.print(table)
    stdout.print(f"Commit {result['commit_oid']}", highlight=False)
    if result["pr_url"]:
        stdout.print(f"Pull request: {result['pr_url']}", highlight=False)
    stdout.print(result["url"], highlight=False)


def register(app: typer.Typer) -> None:
    """Add `publish` and `pull` to the `sc-data` app."""
    app.command("publish", epilog=PUBLISH_EXAMPLES)(publish)
    app.command("pull", epilog=PULL_EXAMPLES)(pull)
