"""The GPU path: FlexAttention scoring and gradients, bf16 training, FSDP through `accelerate launch`.

On a machine with CUDA (the lent GPU machine) these run there. Without one they run the same
checks on the CPU, where the device decides otherwise: sdpa/eager instead of FlexAttention, and
accelerate's CPU path, which takes no FSDP. So a CPU run checks the tests themselves and the
device-independent part; the GPU-specific part (flex kernels and their backward, bf16 CUDA
autocast, FSDP2 wrapping) is only checked where ``DEVICE`` is ``cuda``. ``SC_DATA_TEST_DEVICE``
overrides the choice.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
import yaml
from safetensors.torch import load_file

from sc_data.io import write_parquet
from sc_data.models.loading import resolve_attention
from sc_data.scorers.runner import score
from sc_data.train.trainer import train
from tests.scorers.conftest import make_pairs
from tests.train.conftest import tiny_config

DEVICE = os.environ.get("SC_DATA_TEST_DEVICE", "cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.cuda


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_auto_attention_is_flex_on_cuda_and_scores_equal_dense(tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    assert resolve_attention("auto", torch.device(DEVICE)) == ("flex_attention" if DEVICE == "cuda" else "sdpa")
    src = tmp_path / "pairs.parquet"
    write_parquet(make_pairs(24), src)
    columns = {}
    for attn in ("auto", "sdpa"):
        out = tmp_path / f"{attn}.parquet"
        score(src, out, scorers=["ref_margin"], options={"ref_margin": {
            "model": str(tiny_qwen2_dir), "device": DEVICE, "dtype": "float32", "attn_implementation": attn,
            "max_length": 64, "max_prompt_length": 32}})
        columns[attn] = pq.read_table(out)
    for col in ("ref_margin__chosen_logp", "ref_margin__rejected_logp"):
        a, b = columns["auto"].column(col).to_pylist(), columns["sdpa"].column(col).to_pylist()
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 1e-4, col


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_bf16_training_starts_each_stage_at_log2(staged_dir: Path, tiny_qwen2_dir: Path, tmp_path: Path, lora: bool) -> None:
    cfg = tiny_config(tiny_qwen2_dir, model={"device": DEVICE, "dtype": "bfloat16"}, lora={"enabled": lora, "r": 4, "alpha": 8},
                      optim={"lr": 5e-3}, curriculum={"schedule": "curri_dpo", "max_steps_per_stage": 2})
    result = train(staged_dir, tmp_path / "run", cfg)
    rows = _metrics(tmp_path / "run")
    assert [r["stage"] for r in rows] == [0, 0, 1, 1, 2, 2]
    for stage in range(3):
        first, second = (r for r in rows if r["stage"] == stage)
        assert first["loss"] == pytest.approx(math.log(2), abs=1e-3), first
        assert math.isfinite(second["loss"]) and second["loss"] != first["loss"]
    weights = load_file(str(result.final_dir / ("adapter_model.safetensors" if lora else "model.safetensors")))
    assert all(torch.isfinite(w.float()).all() for w in weights.values())


def test_fsdp_launch_equals_one_plain_process(staged_dir: Path, tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    """One process under accelerate's FSDP2 wrapping trains what the unwrapped loop trains (full fine-tune, fp32)."""
    cfg = tiny_config(tiny_qwen2_dir, model={"device": "auto" if DEVICE == "cuda" else "cpu"}, lora={"enabled": False},
                      optim={"lr": 5e-3}, curriculum={"schedule": "curri_dpo", "max_steps_per_stage": 2}, checkpoint={"every": 2, "keep": 10})
    train(staged_dir, tmp_path / "plain", cfg)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    exe = shutil.which("sc-data") or str(Path(sys.executable).with_name("sc-data"))
    device_flags = ["--use_fsdp", "--fsdp_version", "2", "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                    "--fsdp_state_dict_type", "FULL_STATE_DICT"] if DEVICE == "cuda" else ["--cpu"]
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", *device_flags, exe, "train", str(staged_dir), "-o", str(tmp_path / "fsdp"), "--config", str(config), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    plain, fsdp = _metrics(tmp_path / "plain"), _metrics(tmp_path / "fsdp")
    assert len(plain) == len(fsdp) == 6
    for a, b in zip(plain, fsdp, strict=True):
        assert abs(a["loss"] - b["loss"]) <= 1e-4, (a["step"], a["loss"], b["loss"])
    w1, w2 = (load_file(str(tmp_path / run / "final" / "model.safetensors")) for run in ("plain", "fsdp"))
    assert w1.keys() == w2.keys()
    assert max(float((w1[k].float() - w2[k].float()).abs().max()) for k in w1) <= 1e-4


def test_flex_gradients_equal_dense(tiny_qwen2_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sc_data.models.logprob import PairTokenizer, TruncationConfig, pair_logprobs
    from tests.scorers.conftest import PROMPTS, REFUSALS, UNSAFE

    tok = AutoTokenizer.from_pretrained(tiny_qwen2_dir)
    pt = PairTokenizer(tok, truncation=TruncationConfig(64, 32))
    pairs = [pt(PROMPTS[i % 3], [{"role": "assistant", "content": REFUSALS[i % 3]}], [{"role": "assistant", "content": UNSAFE[i % 3]}])
             for i in range(6)]
    grads = {}
    attns = ("flex_attention", "sdpa") if DEVICE == "cuda" else ("sdpa", "eager")  # no flex backward on the CPU
    for attn in attns:
        model = AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, dtype=torch.float32, attn_implementation=attn).to(DEVICE)
        lp = pair_logprobs(model, pairs, pad_token_id=tok.pad_token_id)
        (lp.chosen_sum - lp.rejected_sum).sum().backward()
        grads[attn] = torch.cat([p.grad.flatten() for p in model.parameters()]).cpu()
    torch.testing.assert_close(grads[attns[0]], grads[attns[1]], rtol=1e-4, atol=1e-5)
    assert grads[attns[0]].abs().max() > 1e-3
