"""What a run leaves: tracker logs, the LoRA adapter (and merged model), the model card."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sc_data.errors import ConfigError
from sc_data.train.config import TrainConfig
from sc_data.train.trainer import train
from tests.hub import conftest as hub_fixtures
from tests.hub.fake_hub import VALID_TOKEN, FakeHub
from tests.train.conftest import tiny_config

fake_hub, hub_client, hub_env = hub_fixtures.fake_hub, hub_fixtures.hub_client, hub_fixtures.hub_env  # the loopback Hub's fixtures

IDS = torch.tensor([[5, 9, 30, 41, 7, 12, 3]])


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS).logits


class TestTracking:
    def test_tensorboard_event_file_holds_the_metrics(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        cfg = tiny_config(tiny_lm_dir, curriculum={"schedule": "shuffled", "max_steps_per_stage": 3}, output={"report_to": "tensorboard"})
        train(staged_dir, tmp_path / "run", cfg)
        events = sorted((tmp_path / "run" / "logs" / "sc-data").glob("events.out.tfevents.*"))
        assert events, "no tensorboard event file under run/logs/sc-data"
        acc = EventAccumulator(str(events[0])).Reload()
        rows = _metrics(tmp_path / "run")
        for key in ("loss", "margin", "accuracy", "lr"):
            logged = [(e.step, e.value) for e in acc.Scalars(key)]
            assert [s for s, _ in logged] == [r["step"] for r in rows]
            assert [v for _, v in logged] == pytest.approx([r[key] for r in rows], rel=1e-6, abs=1e-7)

    def test_trl_engine_logs_one_run_across_stages(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
        """Each stage is its own DPOTrainer; tensorboard still holds one run at the run's steps, beside the native engine's.

        A tracker's ``on_save`` still sees the stage's step, which names the checkpoint folder it
        may upload (wandb's ``WANDB_LOG_MODEL=checkpoint``).
        """
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        from transformers.integrations import TensorBoardCallback

        pytest.importorskip("trl")
        saved: list[tuple[Path, bool]] = []  # (the checkpoint folder on_save names, whether it is there then)
        monkeypatch.setattr(TensorBoardCallback, "on_save", lambda self, args, state, control, **kw: saved.append(
            (folder := Path(args.output_dir) / f"checkpoint-{state.global_step}", folder.is_dir())), raising=False)
        cfg = tiny_config(tiny_lm_dir, engine="trl", curriculum={"schedule": "staged_competence", "max_steps_per_stage": 2},
                          output={"report_to": "tensorboard"}, checkpoint={"every": 1})
        train(staged_dir, tmp_path / "run", cfg)
        assert [there for _, there in saved] == [True] * 6, saved
        rows = _metrics(tmp_path / "run")
        assert len({r["stage"] for r in rows}) == 3 and [r["step"] for r in rows] == list(range(1, 7))
        folder = tmp_path / "run" / "logs" / "sc-data"
        assert not list((tmp_path / "run" / "stages").rglob("events.out.tfevents.*"))
        logged = sorted((e.step, e.value) for f in folder.glob("events.out.tfevents.*") for e in EventAccumulator(str(f)).Reload().Scalars("train/loss"))
        assert [s for s, _ in logged] == [r["step"] for r in rows]
        assert [v for _, v in logged] == pytest.approx([r["loss"] for r in rows], rel=1e-5)

    def test_no_tracker_by_default(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        train(staged_dir, tmp_path / "run", tiny_config(tiny_lm_dir, curriculum={"schedule": "shuffled", "max_steps_per_stage": 1}))
        assert not (tmp_path / "run" / "logs").exists()

    def test_trl_engine_hands_report_to_to_dpo_config(self, tiny_lm_dir: Path, tmp_path: Path) -> None:
        from sc_data.train.trl_engine import dpo_config

        for choice, expected in (("tensorboard", ["tensorboard"]), ("none", [])):
            cfg = tiny_config(tiny_lm_dir, engine="trl", output={"report_to": choice})
            assert dpo_config(cfg, tmp_path / "trl", bf16=False, cpu=True).report_to == expected

    def test_unknown_tracker_is_refused(self, tiny_lm_dir: Path) -> None:
        with pytest.raises(ConfigError, match="output.report_to"):
            tiny_config(tiny_lm_dir, output={"report_to": "mlflow"})


@pytest.fixture(scope="module")
def lora_run(staged_dir: Path, tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three stages with a hard reference update after each (two adapters merged before the last), merged model asked for."""
    run = tmp_path_factory.mktemp("lora") / "run"
    cfg = tiny_config(tiny_lm_dir, lora={"enabled": True, "r": 4, "alpha": 8, "dropout": 0.0}, optim={"lr": 5e-3},
                      output={"merge": True})
    train(staged_dir, run, cfg)
    return run


class TestAdapter:
    def test_final_is_a_peft_adapter_equal_to_the_policy(self, lora_run: Path, tiny_lm_dir: Path) -> None:
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        final = lora_run / "final"
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= {p.name for p in final.iterdir()}
        assert not (final / "model.safetensors").exists()
        config = json.loads((final / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"]) == (12, 24)  # 3 generations of r=4 stacked, scale α/r unchanged
        base = AutoModelForCausalLM.from_pretrained(tiny_lm_dir, dtype=torch.float32).eval()
        before = _logits(base)
        adapted = PeftModel.from_pretrained(base, final).eval()
        merged = AutoModelForCausalLM.from_pretrained(lora_run / "merged", dtype=torch.float32).eval()
        assert not torch.allclose(_logits(merged), before, atol=1e-3)  # training moved the policy
        torch.testing.assert_close(_logits(adapted), _logits(merged), atol=2e-5, rtol=1e-5)

    def test_auto_peft_loads_final_alone(self, lora_run: Path) -> None:
        from peft import AutoPeftModelForCausalLM
        from transformers import AutoModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(lora_run / "final").eval()
        merged = AutoModelForCausalLM.from_pretrained(lora_run / "merged").eval()
        torch.testing.assert_close(_logits(model), _logits(merged), atol=2e-5, rtol=1e-5)

    def test_adapter_is_a_fraction_of_the_model(self, lora_run: Path) -> None:
        adapter = (lora_run / "final" / "adapter_model.safetensors").stat().st_size
        model = (lora_run / "merged" / "model.safetensors").stat().st_size
        assert adapter < model / 5

    def test_merge_needs_lora(self, tiny_lm_dir: Path) -> None:
        with pytest.raises(ConfigError, match="output.merge merges a LoRA adapter"):
            tiny_config(tiny_lm_dir, output={"merge": True})

    def test_resume_restores_the_merged_adapters(self, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path, lora_run: Path) -> None:
        """Resumed from the end of stage 1 (two adapters merged), the run writes the uninterrupted run's adapter."""
        from safetensors.torch import load_file

        run = tmp_path / "run"
        shutil.copytree(lora_run, run, ignore=shutil.ignore_patterns("final", "merged", "ckpt-0000006"))
        cfg = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()))
        train(staged_dir, run, cfg, resume=True)
        ours = load_file(str(run / "final" / "adapter_model.safetensors"))
        theirs = load_file(str(lora_run / "final" / "adapter_model.safetensors"))
        assert ours.keys() == theirs.keys()
        for key in ours:
            torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=1e-6)


class TestCard:
    def test_card_names_data_schedule_and_config(self, lora_run: Path, staged_dir: Path) -> None:
        from huggingface_hub import ModelCard

        card = ModelCard.load(lora_run / "final" / "README.md")
        assert card.data.library_name == "peft" and {"dpo", "curriculum-learning", "safety"} <= set(card.data.tags)
        manifest_sha = json.loads((lora_run / "run_info.json").read_text())["dataset"]["manifest_sha256"]
        assert f"`{staged_dir.name}`" in card.text and manifest_sha[:16] in card.text
        assert "`staged_competence`: 3 stage(s), 6 optimizer steps" in card.text
        assert str(Path.home()) not in card.content and str(lora_run.parent) not in card.content
        assert ModelCard.load(lora_run / "merged" / "README.md").data.library_name == "transformers"

    def test_eval_refreshes_the_card_with_its_figures(self, lora_run: Path, staged_dir: Path) -> None:
        from huggingface_hub import ModelCard

        from sc_data.train.evaluate import evaluate

        results = evaluate(lora_run, staged_dir, device="cpu", plots=False)
        card = ModelCard.load(lora_run / "final" / "README.md")
        assert f"| eval | {results['overall']['n']} | 0.500 → {results['overall']['accuracy']:.3f} |" in card.text


class TestPush:
    """Through the real huggingface_hub client against the loopback Hub (tests/hub/fake_hub.py)."""

    def test_lora_run_on_hub_data_round_trips(self, hub_client: FakeHub, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
        from huggingface_hub import HfApi, ModelCard, hf_api, snapshot_download
        from peft import AutoPeftModelForCausalLM, PeftModel
        from transformers import AutoModelForCausalLM

        from sc_data.hub import publish

        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(hf_api.api, "endpoint", hub_client.endpoint)  # peft calls the module-level client, built at import
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
        api = HfApi()
        api.create_repo("sc-org/tiny-lm", repo_type="model")
        api.upload_folder(repo_id="sc-org/tiny-lm", folder_path=str(tiny_lm_dir), repo_type="model")
        revision = publish(staged_dir, "sc-org/pairs").commit_oid
        cfg = tiny_config("sc-org/tiny-lm", lora={"enabled": True, "r": 4, "alpha": 8}, optim={"lr": 5e-3},
                          output={"push_to_hub": "sc-org/tiny-dpo"})
        result = train("sc-org/pairs", tmp_path / "run", cfg)
        assert result.hub_commit and hub_client.repo("sc-org/tiny-dpo", "model").private

        card = ModelCard.load("sc-org/tiny-dpo")
        assert card.data.base_model == "sc-org/tiny-lm" and card.data.datasets == ["sc-org/pairs"]
        assert f"at revision `{revision}`" in card.text and card.data.library_name == "peft"
        local = snapshot_download("sc-org/tiny-dpo")
        files = {p.relative_to(local).as_posix(): p.read_bytes() for p in Path(local).rglob("*") if p.is_file()}
        assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer.json"} <= files.keys()
        assert not any(name.startswith("checkpoints") or name in ("train_config.json", "optimizer.pt") for name in files)
        assert not any(VALID_TOKEN.encode() in data or str(tmp_path).encode() in data for data in files.values())

        trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_lm_dir), tmp_path / "run" / "final").eval()
        pulled = AutoPeftModelForCausalLM.from_pretrained("sc-org/tiny-dpo").eval()  # the base comes from the Hub too
        torch.testing.assert_close(_logits(pulled), _logits(trained), atol=1e-6, rtol=1e-6)
        assert not torch.allclose(_logits(pulled), _logits(AutoModelForCausalLM.from_pretrained(tiny_lm_dir)), atol=1e-4)

    def test_full_model_pushes_public_and_loads(self, hub_client: FakeHub, staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
        from huggingface_hub import ModelCard
        from transformers import AutoModelForCausalLM

        cfg = tiny_config(tiny_lm_dir, curriculum={"schedule": "shuffled", "max_steps_per_stage": 2},
                          output={"push_to_hub": "sc-org/tiny-full", "private": False})
        train(staged_dir, tmp_path / "run", cfg)
        assert not hub_client.repo("sc-org/tiny-full", "model").private
        pulled = AutoModelForCausalLM.from_pretrained("sc-org/tiny-full").eval()
        local = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final").eval()
        torch.testing.assert_close(_logits(pulled), _logits(local), atol=0, rtol=0)
        card = ModelCard.load("sc-org/tiny-full")
        assert card.data.library_name == "transformers" and card.data.base_model is None  # a local base is not claimed
        assert f"`{tiny_lm_dir.name}`" in card.text and str(tiny_lm_dir) not in card.text

    def test_bad_token_is_one_hub_error(self, hub_client: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from sc_data.errors import HubError
        from sc_data.train.push import push_run

        (tmp_path / "run" / "final").mkdir(parents=True)
        (tmp_path / "run" / "final" / "README.md").write_text("card")
        monkeypatch.setenv("HF_TOKEN", "hf_wrong")
        with pytest.raises(HubError, match="pushing .* to the model repo 'sc-org/x' failed"):
            push_run(tmp_path / "run", "sc-org/x")


def test_cli_flags_track_merge_and_push(hub_env: dict[str, str], hub_client: FakeHub, staged_dir: Path, tiny_lm_dir: Path,
                                        tmp_path: Path) -> None:
    """`sc-data train --report-to --merge --push-to-hub --public` through the real console script and the loopback Hub."""
    exe = shutil.which("sc-data") or str(Path(sys.executable).with_name("sc-data"))
    run = tmp_path / "run"
    proc = subprocess.run(
        [exe, "train", str(staged_dir), "-o", str(run), "--model", str(tiny_lm_dir), "--lora", "--lora-r", "4",
         "--schedule", "shuffled", "--max-steps-per-stage", "2", "--micro-batch", "2", "--effective-batch", "4",
         "--max-length", "64", "--max-prompt-length", "32", "--device", "cpu", "--dtype", "float32",
         "--report-to", "tensorboard", "--merge", "--push-to-hub", "sc-org/cli-run", "--public", "--json"],
        capture_output=True, text=True, timeout=300, env=hub_env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["hub_commit"].startswith(hub_client.endpoint)
    assert list((run / "logs" / "sc-data").glob("events.out.tfevents.*")) and (run / "merged" / "model.safetensors").is_file()
    assert not hub_client.repo("sc-org/cli-run", "model").private
    assert VALID_TOKEN not in proc.stderr + proc.stdout
