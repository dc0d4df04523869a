"""The trainer end to end on a tiny random model: reference updates, precision, loss, resume, checkpoints."""

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
from sc_data.train.policy import Policy, with_adapter
from sc_data.train.trainer import lr_schedule, train
from tests.train.conftest import tiny_config


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def _load(tiny_lm_dir: Path, dtype: str = "float32"):
    from sc_data.models.loading import load_causal_lm

    return load_causal_lm(str(tiny_lm_dir), device="cpu", dtype=dtype)[0]


IDS = torch.tensor([[5, 9, 30, 41, 7]])


class TestReferenceUpdate:
    def test_full_finetune_reference_equals_policy_after_update(self, tiny_lm_dir: Path) -> None:
        policy = Policy(_load(tiny_lm_dir), reference=_load(tiny_lm_dir), adapter_seed=0)
        with torch.no_grad():
            for p in policy.trainable_parameters():
                p.add_(0.01 * torch.randn_like(p))
        assert not torch.allclose(_logits(policy.reference, IDS), _logits(policy.model, IDS))
        policy.hard_update(generation=1)
        for r, p in zip(policy.reference.parameters(), policy.model.parameters(), strict=True):
            assert torch.equal(r, p)

    def test_lora_merged_in_place_with_adapter_disabled_matches_policy(self, tiny_lm_dir: Path) -> None:
        model = with_adapter(_load(tiny_lm_dir), LoraConfig(r=4, alpha=8), seed=0)
        policy = Policy(model, reference=None, adapter_seed=0)
        params = [id(p) for p in policy.model.parameters()]
        with torch.no_grad():
            for p in policy.trainable_parameters():
                p.add_(0.05 * torch.randn_like(p))
        trained = _logits(policy.model, IDS)
        with policy.as_reference():
            assert not torch.allclose(_logits(policy.model, IDS), trained, atol=1e-4)
        policy.hard_update(generation=1)
        with policy.as_reference():
            torch.testing.assert_close(_logits(policy.model, IDS), trained, rtol=1e-5, atol=1e-5)
        # the fresh adapter starts at B = 0, so the policy equals its new reference
        torch.testing.assert_close(_logits(policy.model, IDS), trained, rtol=1e-5, atol=1e-5)
        assert [id(p) for p in policy.model.parameters()] == params  # same objects: wrappers and optimizer survive
        assert all(p.dtype == torch.float32 for p in policy.trainable_parameters())

    def test_bf16_lora_base_keeps_every_update_in_its_fp32_master(self, tiny_lm_dir: Path) -> None:
        """A bf16 merge rounds away lr-sized deltas; the fp32 master keeps their sum exactly."""
        model = with_adapter(_load(tiny_lm_dir, "bfloat16"), LoraConfig(r=4, alpha=8), seed=0)
        policy = Policy(model, reference=None, adapter_seed=0)
        name, layer = next((n, m) for n, m in model.named_modules() if hasattr(m, "lora_A") and n.endswith("q_proj"))
        start = policy.master[name].clone()
        expected, naive = start.double(), start.to(torch.bfloat16)
        for generation in range(1, 4):
            with torch.no_grad():
                layer.lora_B["default"].weight.fill_(1e-6)  # far below bf16's resolution of the weights
            delta = layer.get_delta_weight("default")
            expected += delta.double()
            naive = naive + delta.to(torch.bfloat16)  # what a bf16 merge would keep
            policy.hard_update(generation)
        torch.testing.assert_close(policy.master[name].double(), expected, rtol=0, atol=5e-8)  # fp32 rounding only
        assert ((expected - start.double()).abs() > 1e-9).float().mean() > 0.95  # the updates are real...
        assert (naive == start.to(torch.bfloat16)).float().mean() > 0.9  # ...and a bf16 merge would drop them
        assert torch.equal(layer.get_base_layer().weight, policy.master[name].to(torch.bfloat16))


class TestSchedule:
    def test_warmup_never_spends_a_step_at_lr_zero(self) -> None:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = lr_schedule(opt, TrainConfig().optim.model_copy(update={"warmup_ratio": 0.5, "lr_schedule": "linear"}), 4)
        lrs = []
        for _ in range(4):
            lrs.append(sched.get_last_lr()[0])
            opt.step()
            sched.step()
        assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.5])


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
            # the margin grows within each stage once the first update lands
            margins = [r["margin"] for r in rows if r["stage"] == stage]
            assert margins[0] == pytest.approx(0.0, abs=1e-6) and max(margins[1:]) > 1e-3
        assert sum(r["loss"] for r in rows[-3:]) / 3 < math.log(2) - 0.02
        comp = [r["competence"] for r in rows if r["stage"] == 2]
        assert comp == sorted(comp) and [r["pool_size"] for r in rows if r["stage"] == 2] == sorted(r["pool_size"] for r in rows if r["stage"] == 2)
        seen = [r["pairs_seen"] for r in rows]
        assert seen == sorted(seen) and 0 < seen[-1] <= sum(tier_sizes.values())
        # keep=2 bounds every checkpoint; the reference generations they build on stay beside them
        names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
        assert names == ["ckpt-0000008", "ckpt-0000012", "reference-g0002", "reference-g0003"]
        ckpt = load_checkpoint(latest_checkpoint(tmp_path / "run"))
        assert ckpt["trainer_state"]["counters"] == {"stage": 3, "stage_step": 0, "global_step": 12, "reference_generation": 3}
        from transformers import AutoModelForCausalLM

        final = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
        assert torch.isfinite(final(input_ids=torch.tensor([[3, 4, 5]])).logits).all()
        assert TrainConfig.from_dict(json.loads((tmp_path / "run" / "train_config.json").read_text())) == cfg

    @pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
    def test_bf16_next_stage_starts_at_log2(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path, lora: bool) -> None:
        cfg = tiny_config(tiny_lm_dir, model={"dtype": "bfloat16"}, lora={"enabled": lora, "r": 4, "alpha": 8},
                          optim={"lr": 5e-3}, curriculum={"schedule": "curri_dpo", "max_steps_per_stage": 2})
        train(staged_dir, tmp_path / "run", cfg)
        rows = _metrics(tmp_path / "run")
        firsts = [next(r for r in rows if r["stage"] == s) for s in range(3)]
        for first in firsts:
            assert first["loss"] == pytest.approx(math.log(2), abs=1e-3), first
        assert json.loads((tmp_path / "run" / "run_info.json").read_text())["stage0_reference"]["forward_dtype"] == (
            "bfloat16+autocast:bfloat16" if lora else "float32+autocast:bfloat16"
        )

    def test_tr_dpo_update_in_bf16_moves_what_float64_moves(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        """With bf16 compute the TR-DPO reference stays an fp32 master: no update is rounded away."""
        cfg = tiny_config(tiny_lm_dir, model={"dtype": "bfloat16"}, optim={"lr": 1e-4},
                          curriculum={"schedule": "shuffled", "max_steps_per_stage": 2, "ref_update": "tr_dpo",
                                      "tr_dpo_tau": 1, "tr_dpo_alpha": 0.5}, checkpoint={"every": 1, "keep": 5})
        train(staged_dir, tmp_path / "run", cfg)
        root = tmp_path / "run" / "checkpoints"
        step1 = torch.load(root / "ckpt-0000001" / "trainable.pt", weights_only=True)  # the policy after step 1
        ref1 = torch.load(root / "reference-g0001" / "reference.pt", weights_only=True)  # the reference after it
        ref0 = {k: v.double() for k, v in _load(tiny_lm_dir).state_dict().items()}
        moved_fp64 = moved_kept = 0
        for key, initial in ref0.items():
            exact = 0.5 * step1[key].double() + 0.5 * initial
            moved = exact != initial
            moved_fp64 += int(moved.sum())
            moved_kept += int((ref1[key].double() != initial)[moved].sum())
        assert moved_fp64 > 1000 and moved_kept == moved_fp64

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
            for key in ("loss", "chosen_reward", "rejected_reward", "grad_norm", "lr", "competence", "pool_size", "pairs_seen"):
                assert b[key] == a[key], (a["step"], key)  # bit-identical: same batches, state and reference log-probs

    def test_existing_run_needs_resume(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "metrics.jsonl").write_text("")
        with pytest.raises(ConfigError, match="already holds a training run; pass resume=True"):
            train(staged_dir, tmp_path / "run", tiny_config(tiny_lm_dir))
        (tmp_path / "mine").mkdir()
        (tmp_path / "mine" / "notes.txt").write_text("mine")
        with pytest.raises(ConfigError, match=r"holds files that are not an sc-data training run \(\['notes.txt'\]\)"):
            train(staged_dir, tmp_path / "mine", tiny_config(tiny_lm_dir))


class TestConfig:
    def test_unknown_key_and_bad_choice_fail_loudly(self) -> None:
        with pytest.raises(ConfigError, match=r"curriculum\.schedul='x': Extra inputs are not permitted"):
            TrainConfig.from_dict({"curriculum": {"schedul": "x"}})
        with pytest.raises(ConfigError, match=r"curriculum\.schedule='random': Input should be 'shuffled', 'sqrt_pacing'"):
            TrainConfig.from_dict({"curriculum": {"schedule": "random"}})
        with pytest.raises(ConfigError, match="label_smoothing=0.1 only applies to loss type 'cdpo' or 'robust'"):
            TrainConfig.from_dict({"loss": {"label_smoothing": 0.1}})
        with pytest.raises(ConfigError, match=r"model.device='gpu1': device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
            TrainConfig.from_dict({"model": {"device": "gpu1"}})
        assert TrainConfig.from_dict({"model": {"device": "cuda:1"}}).model.device == "cuda:1"

    def test_paper_defaults_and_grad_accum(self) -> None:
        cfg = TrainConfig()
        assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (16, 32.0, 0.05, ["q_proj", "v_proj"])
        assert (cfg.optim.lr, cfg.optim.effective_batch, cfg.curriculum.epochs_per_stage, cfg.loss.beta) == (5e-5, 32, 5.0, 0.1)
        assert (cfg.data.max_length, cfg.data.max_prompt_length) == (1024, 512)
        assert cfg.model.gradient_checkpointing is True
        assert cfg.grad_accum_for(2) == 4
        with pytest.raises(ConfigError, match="effective_batch=32 is not a multiple of micro_batch × world size = 4 × 3"):
            cfg.grad_accum_for(3)
        mismatch = TrainConfig.from_dict({"optim": {"grad_accum": 2, "effective_batch": 32, "micro_batch": 4}})
        with pytest.raises(ConfigError, match=r"optim.grad_accum=2 × micro_batch 4 × world size 1 = 8, but optim.effective_batch=32"):
            mismatch.grad_accum_for(1)

    def test_paper_preset_fills_only_what_is_not_set(self) -> None:
        cfg = TrainConfig.from_dict({"preset": "paper", "optim": {"lr": 1e-4}})
        assert (cfg.curriculum.competence_step, cfg.optim.lr_schedule, cfg.optim.warmup_ratio, cfg.data.template) == (
            "zero_based", "linear", 0.0, "hh")
        assert cfg.optim.lr == 1e-4
        assert TrainConfig.from_dict({"preset": "paper", "optim": {"warmup_ratio": 0.2}}).optim.warmup_ratio == 0.2


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
