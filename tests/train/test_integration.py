"""A short LoRA run on the real SmolLM2-135M-Instruct (shipped on PyPI): finite loss, reference update."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from sc_data.train.config import TrainConfig
from sc_data.train.trainer import train


@pytest.mark.integration
def test_smollm2_lora_staged_competence(staged_dir: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({
        "model": {"name": "smollm2-135m-instruct", "device": "cpu", "dtype": "float32"},
        "optim": {"lr": 1e-3, "micro_batch": 2, "effective_batch": 2, "warmup_ratio": 0.0},
        "curriculum": {"schedule": "staged_competence", "epochs_per_stage": 1, "max_steps_per_stage": 1},
        "data": {"max_length": 64, "max_prompt_length": 32},
        "checkpoint": {"stage_ends": False},  # three 540 MB checkpoints would dominate the test
    })
    result = train(staged_dir, tmp_path / "run", cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result.global_step == 3 and [r["stage"] for r in rows] == [0, 1, 2]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in rows)
    # after each stage the merged policy is the reference: the next stage starts at h = 0
    for r in rows:
        assert r["loss"] == pytest.approx(math.log(2), abs=1e-4)
        assert r["margin"] == pytest.approx(0.0, abs=1e-4)
    # final/ is the adapter (3 stacked r=16 adapters on q_proj, v_proj: ~8 MB), not the 540 MB model
    assert 1_000_000 < (tmp_path / "run" / "final" / "adapter_model.safetensors").stat().st_size < 20_000_000
