"""Atomic checkpoints with everything an exact resume needs.

A checkpoint is a folder ``checkpoints/ckpt-{global_step:07d}`` holding ``weights.pt`` (policy;
for LoRA the merged base plus adapter; the full-fine-tune reference copy), ``optimizer.pt``,
``trainer_state.pt`` (scheduler, counters, Cat-DPO state, π₀ dev log-probs, RNG states) and
``train_config.json``. It is written into a hidden temporary folder and renamed into place, so
a killed run never leaves a half-written checkpoint under a final name. Samplers are stateless
(the batch of a step is a function of seed, stage and step), so counters restore them exactly.

A LoRA step checkpoint may leave out the frozen base (hundreds of MB) when it is unchanged since
a stage-end checkpoint: ``base_ref.json`` then names that checkpoint and the keys taken from it.
Stage-end checkpoints always hold full weights and are never pruned, so the reference stays valid.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sc_data.errors import InputError
from sc_data.io import temp_dir_beside, write_json

CKPT_RE = re.compile(r"^ckpt-(\d{7})$")
STAGE_END_MARK = "STAGE_END"
BASE_REF = "base_ref.json"


def checkpoint_dir(output: Path) -> Path:
    return output / "checkpoints"


def checkpoint_name(global_step: int) -> str:
    return f"ckpt-{global_step:07d}"


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


def save_checkpoint(
    output: Path,
    global_step: int,
    *,
    weights: dict[str, Any],
    optimizer: dict[str, Any],
    trainer_state: dict[str, Any],
    config: dict[str, Any],
    keep: int,
    stage_end: bool,
    base_from: str | None = None,
    base_keys: frozenset[str] = frozenset(),
) -> Path:
    """Write checkpoint ``global_step`` atomically and prune old step (not stage-end) checkpoints.

    Args:
        base_from: name of a stage-end checkpoint in the same folder whose ``policy`` entries
            ``base_keys`` equal the current ones (LoRA: the frozen base); they are referenced
            instead of written again. Ignored for stage-end checkpoints, which stay self-contained.
        base_keys: the policy state-dict keys ``base_from`` provides.
    """
    root = checkpoint_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(global_step)
    tmp = temp_dir_beside(final)
    try:
        if base_from is not None and base_keys and not stage_end:
            weights = {**weights, "policy": {k: v for k, v in weights["policy"].items() if k not in base_keys}}
            write_json({"checkpoint": base_from, "keys": sorted(base_keys)}, tmp / BASE_REF)
        torch.save(weights, tmp / "weights.pt")
        torch.save(optimizer, tmp / "optimizer.pt")
        torch.save({**trainer_state, "rng": rng_states(), "stage_end": stage_end}, tmp / "trainer_state.pt")
        write_json(config, tmp / "train_config.json")
        if stage_end:
            (tmp / STAGE_END_MARK).touch()
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    step_ckpts = []
    for path in sorted(root.iterdir()):
        if CKPT_RE.match(path.name) and not (path / STAGE_END_MARK).exists():
            step_ckpts.append(path)
    for path in step_ckpts[:-keep]:
        shutil.rmtree(path)


def latest_checkpoint(output: Path) -> Path | None:
    """The checkpoint with the highest global step, or None."""
    root = checkpoint_dir(output)
    if not root.is_dir():
        return None
    found = sorted(p for p in root.iterdir() if CKPT_RE.match(p.name) and p.is_dir())
    return found[-1] if found else None


def base_source(path: Path) -> str | None:
    """The stage-end checkpoint holding the base this checkpoint's weights build on, if any.

    That is the checkpoint itself at a stage end, the one ``base_ref.json`` names for a step
    checkpoint that references it, and None for a self-contained step checkpoint.
    """
    if (path / STAGE_END_MARK).exists():
        return path.name
    if (path / BASE_REF).is_file():
        return json.loads((path / BASE_REF).read_text("utf-8"))["checkpoint"]
    return None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Weights (a referenced base filled in), optimizer and trainer state of one checkpoint (on CPU).

    Raises:
        InputError: the checkpoint references a base checkpoint that is missing.
    """
    weights = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    if (path / BASE_REF).is_file():
        ref = json.loads((path / BASE_REF).read_text("utf-8"))
        source = path.parent / ref["checkpoint"] / "weights.pt"
        if not source.is_file():
            raise InputError(
                f"checkpoint {str(path)!r} takes its base weights from {str(source)!r}, which is missing; "
                "restore that stage-end checkpoint or resume from an earlier one"
            )
        base = torch.load(source, map_location="cpu", weights_only=True)["policy"]
        weights["policy"] = {**{k: base[k] for k in ref["keys"]}, **weights["policy"]}
    return {
        "weights": weights,
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True),
        "trainer_state": torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=True),
    }
