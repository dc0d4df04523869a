"""Atomic checkpoints with everything an exact resume needs, and no weight written twice.

``checkpoints/ckpt-{global_step:07d}/`` holds what changes every step: ``trainable.pt`` (the LoRA
adapter, or the full policy), ``optimizer.pt``, ``trainer_state.pt`` (scheduler, counters,
reference log-prob cache, rows seen, Cat-DPO state, π₀ dev log-probs, RNG states) and
``train_config.json``. What changes only when the reference moves — the LoRA-adapted base weights
(the only ones a merge touches) with their fp32 master, or the full fine-tune's reference copy — is
written once per reference generation to
``checkpoints/reference-g{generation:04d}/reference.pt`` and named by the checkpoints that build on
it (generation 0 is the model the run started from, reloaded, never copied). Every folder is
written beside its final name and renamed into place, so a killed run never leaves half a
checkpoint. ``keep`` bounds the checkpoints (step and stage-end alike); a reference generation no
kept checkpoint names is removed with them.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sc_data.errors import ConfigError, InputError
from sc_data.io import atomic_dir, write_json, write_text

CKPT_RE = re.compile(r"^ckpt-(\d{7})$")
REFERENCE_RE = re.compile(r"^reference-g(\d{4})$")
STAGE_END_MARK = "STAGE_END"


def checkpoint_dir(output: Path) -> Path:
    return output / "checkpoints"


def checkpoint_name(global_step: int) -> str:
    return f"ckpt-{global_step:07d}"


def reference_name(generation: int) -> str:
    return f"reference-g{generation:04d}"


def rng_states() -> dict[str, Any]:
    """Every RNG's state as tensors and plain values, so checkpoints load with ``weights_only=True``."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)
    states = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _atomic_folder(final: Path, files: dict[str, Any]) -> None:
    with atomic_dir(final) as tmp:
        for name, content in files.items():
            if name.endswith(".json"):
                write_json(content, tmp / name)
            elif content is None:
                (tmp / name).touch()
            else:
                torch.save(content, tmp / name)


def save_reference(output: Path, generation: int, state: dict[str, torch.Tensor]) -> None:
    """Write reference generation ``generation`` once (a no-op when it is already on disk)."""
    final = checkpoint_dir(output) / reference_name(generation)
    if generation > 0 and not (final / "reference.pt").is_file():
        _atomic_folder(final, {"reference.pt": state})


def save_checkpoint(
    output: Path,
    global_step: int,
    *,
    trainable: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    keep: int,
    stage_end: bool,
) -> Path:
    """Write checkpoint ``global_step`` atomically, then prune to the newest ``keep``.

    ``trainer_state["reference_generation"]`` names the reference it builds on (saved beforehand
    with :func:`save_reference`).
    """
    root = checkpoint_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(global_step)
    files: dict[str, Any] = {
        "trainable.pt": trainable,
        "optimizer.pt": optimizer,
        "trainer_state.pt": {**trainer_state, "rng": rng_states(), "stage_end": stage_end},
        "train_config.json": config,
    }
    if stage_end:
        files[STAGE_END_MARK] = None
    _atomic_folder(final, files)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    ckpts = sorted(p for p in root.iterdir() if CKPT_RE.match(p.name))
    for path in ckpts[:-keep]:
        shutil.rmtree(path)
    used = {
        torch.load(p / "trainer_state.pt", map_location="cpu", weights_only=True)["reference_generation"] for p in ckpts[-keep:]
    }
    for path in root.iterdir():
        match = REFERENCE_RE.match(path.name)
        if match and int(match.group(1)) not in used:
            shutil.rmtree(path)


def latest_checkpoint(output: Path) -> Path | None:
    """The checkpoint with the highest global step, or None."""
    root = checkpoint_dir(output)
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if CKPT_RE.match(p.name) and p.is_dir())
    return found[-1] if found else None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Trainable weights, optimizer, trainer state and (generation > 0) the reference state, on CPU.

    Raises:
        InputError: the reference generation the checkpoint builds on is missing.
    """
    state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True)
    generation = state["reference_generation"]
    reference = None
    if generation > 0:
        source = path.parent / reference_name(generation) / "reference.pt"
        if not source.is_file():
            raise InputError(
                f"checkpoint {str(path)!r} builds on reference generation {generation}, but {str(source)!r} is missing; "
                "restore it or start the run over"
            )
        reference = torch.load(source, map_location="cpu", weights_only=True)
    return {
        "trainable": torch.load(path / "trainable.pt", map_location="cpu", weights_only=True),
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        "trainer_state": state,
        "reference": reference,
    }


def check_run_folder(output: Path, *, resume: bool) -> None:
    """Refuse to train into a file, over a run without ``resume``, or into a folder sc-data did not write."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"output {str(output)!r} is a file; a training run is a folder: pass a new folder path")
    if not resume and ((output / "metrics.jsonl").exists() or latest_checkpoint(output) is not None):
        raise ConfigError(f"{str(output)!r} already holds a training run; pass resume=True (--resume) or choose a new output folder")
    if output.is_dir() and any(output.iterdir()) and not (output / "train_config.json").is_file():
        raise ConfigError(
            f"{str(output)!r} holds files that are not an sc-data training run ({sorted(p.name for p in output.iterdir())[:5]}); "
            "train into a new or empty folder"
        )


def truncate_metrics(path: Path, global_step: int) -> None:
    """Drop metric lines past the checkpoint a run resumes from (a torn last line with them)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text("utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record["step"] <= global_step:
            kept.append(line)
    write_text("".join(line + "\n" for line in kept), path)
