"""Atomic checkpoints with everything an exact resume needs.

A checkpoint is a folder ``checkpoints/ckpt-{global_step:07d}`` holding ``weights.pt`` (policy;
for LoRA the merged base plus adapter; the full-fine-tune reference copy), ``optimizer.pt``,
``trainer_state.pt`` (scheduler, counters, Cat-DPO state, π₀ dev log-probs, RNG states) and
``train_config.json``. It is written into a hidden temporary folder and renamed into place, so
a killed run never leaves a half-written checkpoint under a final name. Samplers are stateless
(the batch of a step is a function of seed, stage and step), so counters restore them exactly.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sc_data.io import write_json

CKPT_RE = re.compile(r"^ckpt-(\d{7})$")
STAGE_END_MARK = "STAGE_END"


def checkpoint_dir(output: Path) -> Path:
    return output / "checkpoints"


def rng_states() -> dict[str, Any]:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
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
) -> Path:
    """Write checkpoint ``global_step`` atomically and prune old step (not stage-end) checkpoints."""
    root = checkpoint_dir(output)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{global_step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
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


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Weights, optimizer and trainer state of one checkpoint (on CPU)."""
    return {
        "weights": torch.load(path / "weights.pt", map_location="cpu", weights_only=False),
        "optimizer": torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False),
        "trainer_state": torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False),
    }
