"""Push a run's ``final/`` to a Hub model repo (``output.push_to_hub``), through ``huggingface_hub``.

What goes up: the adapter (LoRA) or the model, the tokenizer and the card, in one commit; never
checkpoints, optimizer state, ``merged/`` or ``train_config.json`` (the card carries the config
without local paths). A local base-model path in ``adapter_config.json`` is replaced by None on
the way up (load the adapter with ``PeftModel.from_pretrained(base, repo)``). The token is
whatever ``huggingface_hub`` finds (``HF_TOKEN``, ``hf auth login``) or the one passed in; it is
never written anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from sc_data.errors import HubError, InputError
from sc_data.train.outputs import hub_base_id

#: Files of ``final/`` that stay local.
_LOCAL_ONLY = {"train_config.json"}


def _operations(final: Path) -> list[object]:
    from huggingface_hub import CommitOperationAdd

    ops: list[object] = []
    for path in sorted(p for p in final.rglob("*") if p.is_file()):
        name = path.relative_to(final).as_posix()
        if name in _LOCAL_ONLY:
            continue
        if name == "adapter_config.json":
            config = json.loads(path.read_text("utf-8"))
            config["base_model_name_or_path"] = hub_base_id(config.get("base_model_name_or_path") or "")
            ops.append(CommitOperationAdd(name, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode()))
        else:
            ops.append(CommitOperationAdd(name, str(path)))
    return ops


def push_run(run: str | Path, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
    """Upload ``run/final`` to the model repo ``repo_id`` (created private unless ``private=False``).

    Args:
        run: a finished training run folder.
        repo_id: ``ORG/NAME`` of a model repo; an existing repo keeps its visibility.
        private: create the repo private (default).
        token: a Hub token; default: ``HF_TOKEN`` or the ``hf auth login`` cache.

    Returns:
        The URL of the commit.

    Raises:
        InputError: ``run`` has no ``final/``.
        HubError: no or rejected token, no rights on the namespace, network failure.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError

    final = Path(run) / "final"
    if not final.is_dir():
        raise InputError(f"{str(run)!r} has no final/ to push; finish the run with `sc-data train` first")
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.create_commit(repo_id, _operations(final), commit_message=f"sc-data: {final.parent.name}", repo_type="model")
    except (HfHubHTTPError, LocalTokenNotFoundError) as e:
        raise HubError(f"pushing {str(final)!r} to the model repo {repo_id!r} failed: {e}; check the token "
                       "(HF_TOKEN or `hf auth login`) and your rights on the namespace") from e
    return info.commit_url
