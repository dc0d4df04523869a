"""The TRL engine (`engine: trl`): TRL's DPOTrainer with the native curriculum, checked against the native engine.

Both engines tokenise with the shared core and draw batches from the same StageSampler, so on the
tiny model they must give the same per-step losses; after every hard reference update the first
step's loss is log 2 (policy = reference).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("trl")

from sc_data.errors import ConfigError  # noqa: E402
from sc_data.train.trainer import train  # noqa: E402
from tests.train.conftest import tiny_config  # noqa: E402

STEPS_PER_STAGE = 3


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _sc_data() -> str:
    return shutil.which("sc-data") or str(Path(sys.executable).with_name("sc-data"))


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("schedule", ["shuffled", "staged_competence"])
def test_trl_engine_equals_native(staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path, schedule: str, lora: bool) -> None:
    runs = {}
    for engine in ("native", "trl"):
        cfg = tiny_config(tiny_lm_dir, engine=engine, lora={"enabled": lora, "r": 4, "alpha": 8}, optim={"lr": 5e-3},
                          curriculum={"schedule": schedule, "max_steps_per_stage": STEPS_PER_STAGE})
        train(staged_dir, tmp_path / engine, cfg)
        runs[engine] = _metrics(tmp_path / engine)
    native, trl = runs["native"], runs["trl"]
    stages = 1 if schedule == "shuffled" else 3
    assert [r["step"] for r in trl] == [r["step"] for r in native] == list(range(1, stages * STEPS_PER_STAGE + 1))
    for a, b in zip(native, trl, strict=True):
        assert (b["stage"], b["stage_step"], b["pool_size"], b["tokens"], b["pairs_seen"]) == \
            (a["stage"], a["stage_step"], a["pool_size"], a["tokens"], a["pairs_seen"])  # the same batches
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a["step"], a["loss"], b["loss"])
        if b["stage_step"] == 1:  # the first step of every stage: the reference is the policy
            assert b["loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert max(abs(r["loss"] - math.log(2)) for r in trl) > 1e-3  # training moved the policy, so agreement has teeth
    info = json.loads((tmp_path / "trl" / "run_info.json").read_text())
    assert info["engine"] == "trl" and info["stage0_reference"]["source"] == "live"
    assert (tmp_path / "trl" / "final" / ("adapter_model.safetensors" if lora else "model.safetensors")).is_file()
    assert not any((tmp_path / "trl" / "stages").rglob("checkpoint-*"))  # stage checkpoints pruned at stage ends


def test_tr_dpo_through_trl_sync_ref_model_equals_native(staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    """One stage, so TRL's stage-local sync period and the native global one coincide."""
    losses = {}
    for engine in ("native", "trl"):
        cfg = tiny_config(tiny_lm_dir, engine=engine, optim={"lr": 5e-3}, curriculum={
            "schedule": "shuffled", "max_steps_per_stage": 6, "ref_update": "tr_dpo", "tr_dpo_tau": 2, "tr_dpo_alpha": 0.5})
        train(staged_dir, tmp_path / engine, cfg)
        losses[engine] = [r["loss"] for r in _metrics(tmp_path / engine)]
    assert losses["trl"] == pytest.approx(losses["native"], abs=1e-4)  # a reference that never moved would differ from step 3


def _cat_dpo_config(model: Path, engine: str):
    return tiny_config(model, engine=engine, optim={"lr": 5e-3}, cat_dpo={"enabled": True, "every": 1, "min_count": 2, "target": 0.2},
                       curriculum={"schedule": "staged_competence", "max_steps_per_stage": STEPS_PER_STAGE}, checkpoint={"every": 1})


def _kill_mid_stage_1(proc: subprocess.Popen, run: Path, seen: dict) -> None:
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        found = list((run / "stages" / "stage-1").glob("checkpoint-*/sc_state.pt"))
        if found:
            seen["checkpoint"] = found[0].parent.name
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)


def test_cat_dpo_on_trl_rises_above_target_and_resumes_after_sigkill(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from tests.train.conftest import write_staged

    # harassment's dev pairs are flipped: learning the training pairs makes them worse, so its γ must rise; fraud's must not
    staged_dir = write_staged(tmp_path / "staged", flip_dev="harassment_insults")
    config = tmp_path / "train.yaml"
    cfg = _cat_dpo_config(tiny_lm_dir, "trl")
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cut_run = tmp_path / "cut"
    command = [_sc_data(), "train", str(staged_dir), "-o", str(cut_run), "--config", str(config), "--json"]
    cut = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    seen: dict = {}
    killer = threading.Thread(target=_kill_mid_stage_1, args=(cut, cut_run, seen))
    killer.start()
    try:
        train(staged_dir, tmp_path / "trl", cfg)  # uninterrupted, meanwhile
        train(staged_dir, tmp_path / "native", _cat_dpo_config(tiny_lm_dir, "native"))
    finally:
        killer.join(timeout=330)
        err = cut.communicate(timeout=30)[1].decode()
    assert cut.returncode == -signal.SIGKILL and "checkpoint" in seen, err[-3000:]
    assert not (cut_run / "final").exists()
    resumed = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=300, env=_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    want, got, native = _metrics(tmp_path / "trl"), _metrics(cut_run), _metrics(tmp_path / "native")
    assert [r["step"] for r in got] == [r["step"] for r in want] == list(range(1, 3 * STEPS_PER_STAGE + 1))
    for a, b, n in zip(want, got, native, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-6) and b["gamma"] == pytest.approx(a["gamma"], abs=1e-6)
        assert a["gamma"] == pytest.approx(n["gamma"], abs=1e-4) and a["loss"] == pytest.approx(n["loss"], abs=1e-4)
    # dual ascent: a category's γ rises exactly when its smoothed dev unsafe rate is above target (0.2)
    previous: dict[str, float] = {}
    rose = set()
    for record in want:
        for cat, gamma in record["gamma"].items():
            before = previous.get(cat, 0.0)
            if record["unsafe"][cat] > 0.2 and before < 2.0:
                assert gamma > before
                rose.add(cat)
            else:
                assert gamma <= before
        previous = record["gamma"]
    assert rose == {"harassment_insults"}, want[-1]
    # categories with fewer than min_count (2) dev pairs never get a margin
    assert set(want[-1]["gamma"]) == {"fraud_economic_crime", "harassment_insults"}


@pytest.fixture(scope="module")
def scored_staged(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.train.test_stored_logprobs import build_scored_staged

    return build_scored_staged(tiny_lm_dir, tmp_path_factory.mktemp("stored"))


def test_stored_logprobs_equal_trl_and_mismatch_is_refused(scored_staged: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    from sc_data.models.logprob import PairTokenizer, TruncationConfig
    from sc_data.train.data import load_staged, stored_ref_logprobs, tokenize_table

    cfg = tiny_config(tiny_lm_dir, engine="trl", data={"max_length": 64, "max_prompt_length": 32})
    train(scored_staged, tmp_path / "stored", cfg)
    info = json.loads((tmp_path / "stored" / "run_info.json").read_text())["stage0_reference"]
    assert info["source"] == "stored" and info["max_gap_nats"] < 1e-3, info

    # TRL's own reference pass over every training row, on the core's tokens, equals the stored log-probs
    staged = load_staged(scored_staged)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    pair_tokenizer = PairTokenizer(tok, truncation=TruncationConfig(max_length=64, max_prompt_length=32))
    pairs = tokenize_table(pair_tokenizer, staged.train)
    ds = Dataset.from_dict({"prompt_ids": [p.prompt_ids for p in pairs], "chosen_ids": [p.chosen_ids for p in pairs],
                            "rejected_ids": [p.rejected_ids for p in pairs]})
    args = DPOConfig(output_dir=str(tmp_path / "probe"), report_to=[], use_cpu=True, max_length=64, bf16=False)  # fp32, as scored
    text = Dataset.from_dict({"prompt": ["a"], "chosen": ["b"], "rejected": ["c"]})  # TRL's constructor wants one; unused
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_lm_dir), args=args, train_dataset=text, processing_class=tok)
    batch = DataCollatorForPreference(pad_token_id=tok.pad_token_id)([ds[i] for i in range(len(ds))])
    chosen, rejected = trainer.compute_ref_log_probs(trainer.model, batch)
    sha = json.loads((scored_staged / "sc_manifest.json").read_text())["scorers"]["ref_margin"]["model_ref"]["sha256"]
    stored = stored_ref_logprobs(staged, model_sha256=sha, template=pair_tokenizer.describe(), forward="float32")
    assert stored.usable, stored.reason
    tokens_c = np.array([len(p.chosen_ids) for p in pairs])
    tokens_r = np.array([len(p.rejected_ids) for p in pairs])
    assert np.max(np.abs(chosen.double().numpy() - stored.chosen) / tokens_c) <= 1e-4
    assert np.max(np.abs(rejected.double().numpy() - stored.rejected) / tokens_r) <= 1e-4

    mismatched = tiny_config(tiny_lm_dir, engine="trl", data={"max_length": 96, "max_prompt_length": 32})
    train(scored_staged, tmp_path / "refused", mismatched)
    info = json.loads((tmp_path / "refused" / "run_info.json").read_text())["stage0_reference"]
    assert info["source"] == "live" and "truncation.max_length: scorer 64, this run 96" in info["reason"], info


def test_two_processes_equal_one_on_trl(staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_lm_dir, engine="trl", optim={"lr": 5e-3},
                      curriculum={"schedule": "curri_dpo", "max_steps_per_stage": 2})
    train(staged_dir, tmp_path / "one", cfg)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29541",
           _sc_data(), "train", str(staged_dir), "-o", str(tmp_path / "two"), "--config", str(config), "--json"]
    two = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=_env())
    assert two.returncode == 0, two.stderr[-3000:]
    one_m, two_m = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["step"] for r in two_m] == [r["step"] for r in one_m] == list(range(1, 7))
    for a, b in zip(one_m, two_m, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-5, (a["step"], a["loss"], b["loss"])
        assert (a["tokens"], a["pool_size"]) == (b["tokens"], b["pool_size"])
    from safetensors.torch import load_file

    w1, w2 = (load_file(str(tmp_path / r / "final" / "model.safetensors")) for r in ("one", "two"))
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) <= 1e-5


@pytest.mark.parametrize(("section", "value", "named"), [
    ("loss", {"type": "cdpo", "label_smoothing": 0.1}, "loss.type='cdpo'"),
    ("loss", {"sft_weight": 0.5}, "loss.sft_weight"),
    ("model", {"device": "cuda:1"}, "model.device='cuda:1'"),
])
def test_options_the_trl_engine_lacks_are_named(tiny_lm_dir: Path, section: str, value: dict, named: str) -> None:
    from sc_data.train.trl_engine import check_trl_options

    with pytest.raises(ConfigError, match=named.replace(".", r"\.").replace("(", r"\(")):
        check_trl_options(tiny_config(tiny_lm_dir, engine="trl", **{section: value}))


def test_readme_trl_script_runs_as_written(staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    """The README's "Already training with TRL?" script, with the tiny model and staged fixture substituted."""
    readme = (Path(__file__).parents[2] / "README.md").read_text("utf-8")
    section = readme[readme.index("### Already training with TRL?"):]
    script = section[section.index("```python\n") + len("```python\n"):section.index("```\n", section.index("```python\n") + 10)]
    assert len(script.strip().splitlines()) <= 20
    for old, new in (('model_folder("smollm2-135m-instruct")', repr(str(tiny_lm_dir))), ('"staged/"', repr(str(staged_dir)))):
        assert old in script
        script = script.replace(old, new)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    run = tmp_path / "runs" / "trl"
    assert done.stdout.strip().endswith("runs/trl/final")
    metrics = _metrics(run)
    assert [r["stage"] for r in metrics] == [0] * 5 + [1] * 5 + [2] * 5  # 5 epochs of one 32-pair step per tier
    # DPOConfig's default bf16 autocast: the reference pass batches rows differently from the step, so log 2 to ~1e-3
    assert all(r["loss"] == pytest.approx(math.log(2), abs=5e-3) for r in metrics if r["stage_step"] == 1), metrics
    assert json.loads((run / "run_info.json").read_text())["engine"] == "trl"
    assert (run / "final" / "adapter_model.safetensors").is_file()  # peft_config: final/ is the adapter
