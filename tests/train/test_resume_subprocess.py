"""A real `sc-data train` process killed with SIGKILL after its first step checkpoint resumes exactly.

The uninterrupted run of the same config runs in this process meanwhile, to keep the test short.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from sc_data.train.checkpoint import latest_checkpoint, load_checkpoint
from sc_data.train.config import TrainConfig
from sc_data.train.trainer import train
from tests.train.conftest import tiny_config

STEPS = 12  # 3 stages × 4 steps


def _sc_data() -> str:
    return shutil.which("sc-data") or str(Path(sys.executable).with_name("sc-data"))


def _command(staged: Path, model: Path, run: Path, *extra: str) -> list[str]:
    return [
        _sc_data(), "train", str(staged), "-o", str(run), "--model", str(model), "--lora", "--lora-r", "4", "--lora-alpha", "8",
        "--schedule", "staged_competence", "--max-steps-per-stage", "4", "--epochs-per-stage", "4", "--micro-batch", "2",
        "--effective-batch", "4", "--max-length", "64", "--max-prompt-length", "32", "--device", "cpu", "--dtype", "float32",
        "--lr", "5e-3", "--seed", "0", "--checkpoint-every", "1", "--json", *extra,
    ]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _kill_after_first_checkpoint(proc: subprocess.Popen, run: Path, result: dict) -> None:
    """Poll for the first step checkpoint of ``run``, then SIGKILL ``proc`` (runs in a thread)."""
    deadline = time.monotonic() + 120
    while latest_checkpoint(run) is None and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    result["checkpoint"] = latest_checkpoint(run)
    os.kill(proc.pid, signal.SIGKILL)


def test_sigkill_then_resume_continues_uninterrupted_run(staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    full_run, cut_run = tmp_path / "full", tmp_path / "cut"
    cut = subprocess.Popen(_command(staged_dir, tiny_lm_dir, cut_run), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    seen: dict = {}
    killer = threading.Thread(target=_kill_after_first_checkpoint, args=(cut, cut_run, seen))
    killer.start()
    try:
        # the uninterrupted run, in this process meanwhile, with the config the CLI resolves (checked below)
        cfg = tiny_config(
            tiny_lm_dir, lora={"enabled": True, "r": 4, "alpha": 8}, optim={"lr": 5e-3, "lr_schedule": "cosine", "warmup_ratio": 0.1},
            curriculum={"max_steps_per_stage": 4, "epochs_per_stage": 4}, checkpoint={"every": 1},
        )
        train(staged_dir, full_run, cfg)
    finally:
        killer.join(timeout=150)
        if cut.poll() is None:
            cut.kill()
        err = cut.communicate(timeout=30)[1].decode()
    assert cut.returncode == -signal.SIGKILL, err[-3000:]
    assert seen["checkpoint"] is not None and seen["checkpoint"].name.startswith("ckpt-000000")
    killed_at = int(latest_checkpoint(cut_run).name.removeprefix("ckpt-"))
    assert 1 <= killed_at < STEPS and not (cut_run / "final").exists()
    assert TrainConfig.from_dict(json.loads((cut_run / "train_config.json").read_text())) == cfg

    resumed = subprocess.run(_command(staged_dir, tiny_lm_dir, cut_run, "--resume"), capture_output=True, text=True, timeout=180, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads(resumed.stdout)["global_step"] == STEPS and (cut_run / "final" / "adapter_config.json").is_file()

    want, got = _metrics(full_run), _metrics(cut_run)
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, STEPS + 1))
    for a, b in zip(want, got, strict=True):
        assert (b["stage"], b["stage_step"], b["pool_size"], b["tokens"]) == (a["stage"], a["stage_step"], a["pool_size"], a["tokens"])
        for key in ("loss", "margin", "chosen_reward", "rejected_reward", "competence", "grad_norm", "lr", "pairs_seen"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)
    assert max(r["margin"] for r in want) > 1e-3  # training moved the policy, so the comparison has teeth
    _check_base_references(full_run / "checkpoints")


def _check_base_references(ckpts: Path) -> None:
    """LoRA checkpoints hold only the adapter; the merged base is written once per reference update."""
    # keep=2: the last two checkpoints, and the two reference generations they build on
    assert sorted(p.name for p in ckpts.iterdir()) == ["ckpt-0000011", "ckpt-0000012", "reference-g0002", "reference-g0003"]
    for name, generation in (("ckpt-0000011", 2), ("ckpt-0000012", 3)):
        state = load_checkpoint(ckpts / name)
        assert state["trainer_state"]["reference_generation"] == generation
        assert state["trainable"] and all("lora_" in k for k in state["trainable"])
        base = {k for k in state["reference"] if k.startswith("base.")}
        assert base and all(k.endswith(("q_proj", "v_proj")) for k in base)  # only adapted weights
        merged = {k.split(".")[1] for k in state["reference"] if k.startswith("adapter.")}  # the adapters merged so far, for final/
        assert merged == {str(g) for g in range(generation)} and set(state["reference"]) - base == {
            k for k in state["reference"] if k.startswith("adapter.") and ".lora_" in k}
        assert (ckpts / f"reference-g{generation:04d}" / "reference.pt").is_file()
        assert not any("reference" in p.name for p in (ckpts / name).iterdir())  # the base is not copied per checkpoint
    step11, step12 = load_checkpoint(ckpts / "ckpt-0000011"), load_checkpoint(ckpts / "ckpt-0000012")
    assert any(not torch.equal(step11["reference"][k], step12["reference"][k]) for k in step11["reference"])  # the base moved
