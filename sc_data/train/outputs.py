"""What a finished run leaves for its users: ``final/`` (the adapter or the model), ``merged/``, the card.

A LoRA run's ``final/`` is peft's adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``) on the model the run started from, every reference update's
adapter included (:meth:`~sc_data.train.policy.Policy.adapter`), so it loads with
``PeftModel.from_pretrained(base, final)`` / ``AutoPeftModelForCausalLM`` and weighs a fraction of
the model; ``output.merge`` also writes the merged model to ``merged/``. A full fine-tune's
``final/`` is the model. Both carry the tokenizer, ``train_config.json`` and the model card
(:mod:`sc_data.train.card`). Each folder is built beside its name and swapped in, as checkpoints are.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sc_data.io import atomic_dir, sha256_file, write_json
from sc_data.train.config import TrainConfig

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?")


def hub_base_id(name: str) -> str | None:
    """The base model's Hub id when the run started from one; None for a local path or a built-in alias
    (the alias's de-quantised GGUF is not the Hub model bit for bit, so the card does not claim it)."""
    if Path(name).expanduser().exists() or not _HUB_ID.fullmatch(name):
        return None
    return name.partition("@")[0]


def dataset_identity(data: str | Path, root: Path) -> dict[str, str]:
    """How the card names the staged dataset: its Hub id and commit, or the local folder's name and manifest hash."""
    if Path(data).expanduser().exists():
        return {"name": Path(data).expanduser().resolve().name, "manifest_sha256": sha256_file(root / "sc_manifest.json")}
    return {"id": str(data).partition("@")[0], "revision": root.name}  # resolve_dataset pulls into <cache>/<org>/<name>/<commit>


def _swap_in(folder: Path, write: Callable[[Path], None]) -> Path:
    with atomic_dir(folder) as tmp:
        write(tmp)
    return folder


def save_model(folder: Path, model: Any, tokenizer: Any, config: dict[str, Any]) -> Path:
    """A ``save_pretrained`` folder (safetensors) with the tokenizer and the run's config."""
    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json(config, tmp / "train_config.json")

    return _swap_in(folder, write)


def save_adapter(folder: Path, weights: dict[str, Any], peft_config: Any, tokenizer: Any, config: dict[str, Any]) -> Path:
    """peft's adapter folder: ``adapter_config.json`` (base: the Hub id when there is one) and ``adapter_model.safetensors``."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        peft_config.base_model_name_or_path = hub_base_id(config["model"]["name"]) or peft_config.base_model_name_or_path
        peft_config.save_pretrained(tmp)
        save_file(weights, str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        write_json(config, tmp / "train_config.json")

    return _swap_in(folder, write)


def save_outputs(output: Path, *, policy: Any, model: Any, tokenizer: Any, config: TrainConfig) -> Path:
    """``final/`` (LoRA: the adapter, else the model), ``merged/`` when asked, then the card. Main process only.

    Args:
        policy: the run's :class:`~sc_data.train.policy.Policy`, or None (the TRL engine's full fine-tune).
        model: the trained model, used when there is no LoRA policy.
    """
    from sc_data.train.card import write_card

    resolved = config.model_dump(mode="json")
    if policy is not None and policy.lora:
        weights, peft_config = policy.adapter()
        save_adapter(output / "final", weights, peft_config, tokenizer, resolved)
        if config.output.merge:
            save_model(output / "merged", policy.merged(), tokenizer, resolved)
    else:
        save_model(output / "final", policy.model if policy is not None else model, tokenizer, resolved)
    write_card(output)
    return output / "final"


def load_trained(run: Path, base: str, *, device: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """``run/final`` as a plain causal LM and its tokenizer: a LoRA adapter is loaded onto ``base`` and merged."""
    from sc_data.models.loading import load_causal_lm

    final = run / "final"
    if not (final / "adapter_config.json").is_file():
        model, tokenizer, _ = load_causal_lm(str(final), device=device, dtype="float32", trust_remote_code=trust_remote_code)
        return model, tokenizer
    from peft import PeftModel

    model, tokenizer, _ = load_causal_lm(base, device=device, dtype="float32", trust_remote_code=trust_remote_code)
    return PeftModel.from_pretrained(model, str(final)).merge_and_unload().eval(), tokenizer
