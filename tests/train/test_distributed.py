"""`accelerate launch --num_processes 2 --cpu sc-data train` equals one process: losses, final weights, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from sc_data.train.trainer import train
from tests.train.conftest import tiny_config

TOL = 1e-6


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _launch(staged: Path, run: Path, config: Path, port: int, *extra: str) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("sc-data") or str(Path(sys.executable).with_name("sc-data"))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
           exe, "train", str(staged), "-o", str(run), "--config", str(config), "--json", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    """final/'s weights: the model (full fine-tune) or the adapter (LoRA)."""
    model = run / "final" / "model.safetensors"
    return load_file(str(model if model.is_file() else run / "final" / "adapter_model.safetensors"))


@pytest.mark.parametrize(("lora", "port"), [(False, 29531), (True, 29532)], ids=["full", "lora"])
def test_two_processes_equal_one(staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path, lora: bool, port: int) -> None:
    cfg = tiny_config(tiny_lm_dir, lora={"enabled": lora, "r": 4, "alpha": 8}, optim={"lr": 5e-3},
                      curriculum={"schedule": "curri_dpo", "max_steps_per_stage": 2}, checkpoint={"every": 1, "keep": 10})
    train(staged_dir, tmp_path / "one", cfg)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    two = _launch(staged_dir, tmp_path / "two", config, port)
    assert two.returncode == 0, two.stderr[-3000:]
    one_m, two_m = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in two_m] == [r["step"] for r in one_m] == list(range(1, 7))
    assert {r["stage"] for r in two_m} == {0, 1, 2}  # two hard reference updates happened
    for a, b in zip(one_m, two_m, strict=True):
        assert abs(a["loss"] - b["loss"]) <= TOL, (a["step"], a["loss"], b["loss"])
        assert (a["tokens"], a["pool_size"], a["pairs_seen"]) == (b["tokens"], b["pool_size"], b["pairs_seen"])
    w1, w2 = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert w1.keys() == w2.keys()
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= TOL
    # training moved the weights (LoRA: final/ is the adapter, whose B matrices start at 0)
    moved = [bool(w1[k].any()) for k in w1 if ".lora_B." in k] if lora else [not torch.equal(w1[k], _initial(tiny_lm_dir)[k]) for k in w1]
    assert any(moved)

    # A resume of the two-process run from its step-3 checkpoint (mid stage 1) ends where it did.
    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "two", cut)
    shutil.rmtree(cut / "final")
    for ckpt in (cut / "checkpoints").iterdir():
        if ckpt.name.startswith("ckpt-") and int(ckpt.name.removeprefix("ckpt-")) > 3:
            shutil.rmtree(ckpt)
    resumed = _launch(staged_dir, cut, config, port, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["loss"] for r in _metrics(cut)] == [r["loss"] for r in two_m]
    w3 = _weights(cut)
    assert all(torch.equal(w2[k], w3[k]) for k in w2)


def _initial(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))
