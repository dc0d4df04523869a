"""The trainer end to end on a tiny random model: reference updates, loss, resume, checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from sc_data.errors import ConfigError
from sc_data.train.checkpoint import latest_checkpoint, load_checkpoint
from sc_data.train.config import LoraConfig, TrainConfig
from sc_data.train.curriculum import competence
from sc_data.train.policy import PolicyPair
from sc_data.train.trainer import train
from tests.train.conftest import tiny_config


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


class TestReferenceUpdate:
    def test_full_finetune_reference_equals_policy_after_update(self, tiny_lm_dir: Path) -> None:
        from sc_data.models.loading import load_causal_lm

        model, _, _ = load_causal_lm(str(tiny_lm_dir), device="cpu", dtype="float32")
        pair = PolicyPair(model, lora=LoraConfig(enabled=False), ref_dtype=torch.float32, adapter_seed=0)
        with torch.no_grad():
            for p in pair.trainable_parameters():
                p.add_(0.01 * torch.randn_like(p))
        ids = torch.tensor([[5, 9, 30, 41, 7]])
        with pair.reference_model() as ref:
            assert not torch.allclose(_logits(ref, ids), _logits(pair.model, ids))
        pair.hard_update(generation=1)
        for r, p in zip(pair.reference.parameters(), pair.model.parameters(), strict=True):
            assert torch.equal(r, p)

    def test_lora_merged_base_with_adapter_disabled_matches_policy(self, tiny_lm_dir: Path) -> None:
        from sc_data.models.loading import load_causal_lm

        model, _, _ = load_causal_lm(str(tiny_lm_dir), device="cpu", dtype="float32")
        pair = PolicyPair(model, lora=LoraConfig(r=4, alpha=8), ref_dtype=torch.float32, adapter_seed=0)
        with torch.no_grad():
            for p in pair.trainable_parameters():
                p.add_(0.05 * torch.randn_like(p))
        ids = torch.tensor([[5, 9, 30, 41, 7]])
        trained = _logits(pair.model, ids)
        with pair.reference_model() as ref:
            assert not torch.allclose(_logits(ref, ids), trained, atol=1e-4)
        pair.hard_update(generation=1)
        with pair.reference_model() as ref:
            torch.testing.assert_close(_logits(ref, ids), trained, rtol=1e-5, atol=1e-5)
        # the fresh adapter starts at B = 0, so the policy equals its new reference
        torch.testing.assert_close(_logits(pair.model, ids), trained, rtol=1e-5, atol=1e-5)
        assert all(p.requires_grad for p in pair.trainable_parameters()) and pair.trainable_parameters()


class TestTrain:
    def test_staged_competence_end_to_end(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        cfg = tiny_config(tiny_lm_dir, optim={"lr": 5e-3}, curriculum={"max_steps_per_stage": 4, "epochs_per_stage": 4})
        result = train(staged_dir, tmp_path / "run", cfg)
        rows = _metrics(tmp_path / "run")
        assert [r["stage"] for r in rows] == [0] * 4 + [1] * 4 + [2] * 4
        assert result.global_step == 12 and result.stages == 3
        tier_sizes = json.loads((staged_dir / "sc_manifest.json").read_text())["counts"]["by_tier"]
        for stage in range(3):
            first = next(r for r in rows if r["stage"] == stage)
            # the reference was just set to the policy: every h is 0, the loss is exactly log 2
            assert first["loss"] == pytest.approx(math.log(2), abs=1e-6)
            horizon = 4 * math.ceil(tier_sizes[f"tier_{stage}"] / 4)  # epochs × ceil(|tier| / effective batch)
            assert first["competence"] == pytest.approx(competence(1, horizon))
        assert sum(r["loss"] for r in rows[-3:]) / 3 < math.log(2) - 0.02
        comp = [r["competence"] for r in rows if r["stage"] == 2]
        assert comp == sorted(comp) and [r["pool_size"] for r in rows if r["stage"] == 2] == sorted(r["pool_size"] for r in rows if r["stage"] == 2)
        # checkpoints at stage ends, final model loads and saved config round-trips
        assert [p.name for p in sorted((tmp_path / "run" / "checkpoints").iterdir())] == ["ckpt-0000004", "ckpt-0000008", "ckpt-0000012"]
        ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
        assert ckpt["trainer_state"]["counters"] == {"stage": 3, "stage_step": 0, "global_step": 12}
        from transformers import AutoModelForCausalLM

        final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
        assert torch.isfinite(final(input_ids=torch.tensor([[3, 4, 5]])).logits).all()
        assert TrainConfig.from_dict(json.loads((tmp_path / "run" / "train_config.json").read_text())) == cfg

    def test_resume_after_interruption_continues_exactly(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        cfg = tiny_config(tiny_lm_dir, lora={"enabled": True, "r": 4, "alpha": 8}, optim={"lr": 5e-3},
                          curriculum={"max_steps_per_stage": 3, "epochs_per_stage": 3}, checkpoint={"every": 1})
        train(staged_dir, tmp_path / "full", cfg)

        def crash(record: dict, total: int) -> None:
            if record["step"] == 5:
                raise KeyboardInterrupt("injected")

        with pytest.raises(KeyboardInterrupt, match="injected"):
            train(staged_dir, tmp_path / "cut", cfg, progress=crash)
        assert latest_checkpoint(tmp_path / "cut").name == "ckpt-0000004"  # mid stage 1
        train(staged_dir, tmp_path / "cut", cfg, resume=True)
        full, cut = _metrics(tmp_path / "full"), _metrics(tmp_path / "cut")
        assert [r["step"] for r in cut] == list(range(1, 10))
        for a, b in zip(full, cut, strict=True):
            for key in ("loss", "chosen_reward", "rejected_reward", "grad_norm", "lr", "competence", "pool_size"):
                assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["step"], key)

    def test_existing_run_needs_resume(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "metrics.jsonl").write_text("")
        with pytest.raises(ConfigError, match="already holds a training run; pass resume=True"):
            train(staged_dir, tmp_path / "run", tiny_config(tiny_lm_dir))


class TestConfig:
    def test_unknown_key_and_bad_choice_fail_loudly(self) -> None:
        with pytest.raises(ConfigError, match=r"curriculum\.schedul='x': Extra inputs are not permitted"):
            TrainConfig.from_dict({"curriculum": {"schedul": "x"}})
        with pytest.raises(ConfigError, match=r"curriculum\.schedule='random': Input should be 'shuffled', 'sqrt_pacing'"):
            TrainConfig.from_dict({"curriculum": {"schedule": "random"}})
        with pytest.raises(ConfigError, match="label_smoothing=0.1 only applies to loss type 'cdpo' or 'robust'"):
            TrainConfig.from_dict({"loss": {"label_smoothing": 0.1}})

    def test_paper_defaults_and_grad_accum(self) -> None:
        cfg = TrainConfig()
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (16, 32.0, 0.05, ["q_proj", "v_proj"])
        assert (cfg.optim.lr, cfg.optim.effective_batch, cfg.curriculum.epochs_per_stage, cfg.loss.beta) == (5e-5, 32, 5.0, 0.1)
        assert (cfg.data.max_length, cfg.data.max_prompt_length) == (1024, 512)
        assert cfg.grad_accum_for(2) == 4
        with pytest.raises(ConfigError, match="effective_batch=32 is not a multiple of micro_batch × world size = 4 × 3"):
            cfg.grad_accum_for(3)


class TestCatDPOTraining:
    def test_resume_restores_margins_and_pi0(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        """Cat-DPO state (γ, EMA, π₀ dev log-probs) survives a checkpoint loaded with weights_only=True."""
        cfg = tiny_config(tiny_lm_dir, optim={"lr": 5e-3}, checkpoint={"every": 1},
                          curriculum={"max_steps_per_stage": 2, "epochs_per_stage": 3},
                          cat_dpo={"enabled": True, "every": 1, "min_count": 1, "target": 0.0, "eta": 0.5, "ema": 0.5})
        train(staged_dir, tmp_path / "full", cfg)

        def crash(record: dict, total: int) -> None:
            if record["step"] == 3:
                raise KeyboardInterrupt("injected")

        with pytest.raises(KeyboardInterrupt, match="injected"):
            train(staged_dir, tmp_path / "cut", cfg, progress=crash)
        train(staged_dir, tmp_path / "cut", cfg, resume=True)
        full, cut = _metrics(tmp_path / "full"), _metrics(tmp_path / "cut")
        assert len(full) == len(cut) == 6
        for a, b in zip(full, cut, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], rel=1e-5, abs=1e-6), a["step"]
            assert b["gamma"] == pytest.approx(a["gamma"], rel=1e-5, abs=1e-7), a["step"]

    def test_gamma_follows_dev_unsafe_rate(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        cfg = tiny_config(tiny_lm_dir, curriculum={"schedule": "shuffled", "max_steps_per_stage": 2},
                          cat_dpo={"enabled": True, "every": 1, "min_count": 1, "target": 0.0, "eta": 0.5, "ema": 0.0})
        train(staged_dir, tmp_path / "run", cfg)
        first, second = _metrics(tmp_path / "run")
        assert first["unsafe"] and set(first["gamma"]) == set(first["unsafe"]) and "unknown" not in first["gamma"]
        for cat, u in first["unsafe"].items():
            assert first["gamma"][cat] == pytest.approx(min(max(0.5 * u, 0.0), 2.0))
        for cat, u in second["unsafe"].items():
            assert second["gamma"][cat] == pytest.approx(min(max(first["gamma"][cat] + 0.5 * u, 0.0), 2.0))


_DDP_WORKER = """
import json, sys
from pathlib import Path
from sc_data.train.config import TrainConfig
from sc_data.train.trainer import train
cfg = TrainConfig.from_dict(json.loads(Path(sys.argv[3]).read_text()))
train(sys.argv[1], sys.argv[2], cfg)
"""


class TestDistributed:
    def test_two_processes_match_one(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        import os
        import subprocess
        import sys

        cfg = tiny_config(tiny_lm_dir, curriculum={"schedule": "curri_dpo", "max_steps_per_stage": 2})
        train(staged_dir, tmp_path / "one", cfg)
        (tmp_path / "cfg.json").write_text(json.dumps(cfg.model_dump(mode="json")))
        (tmp_path / "worker.py").write_text(_DDP_WORKER)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
             str(tmp_path / "worker.py"), str(staged_dir), str(tmp_path / "two"), str(tmp_path / "cfg.json")],
            capture_output=True, text=True, timeout=300, env=env,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        one, two = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
        assert len(one) == len(two) == 6
        for a, b in zip(one, two, strict=True):
            # accuracy is left out: at a stage start every h is ~0 and float noise flips the sign
            for key in ("loss", "margin", "grad_norm", "tokens"):
                assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
