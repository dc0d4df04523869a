"""Training throughput: sc-data's training recipe against TRL's DPOTrainer, same model, pairs, batch and β.

Both sides run a full fine-tune with a live reference model (every step draws pairs it has not
seen, so sc-data's reference cache computes a reference forward every step, as TRL does), the
same gradient checkpointing setting (``--gradient-checkpointing on|off``, default on as TRL's),
the same micro batch and no gradient accumulation. TRL is also run with its precomputed
reference log-probs (reference forwards before training, outside the timed steps) and, where
the installed TRL supports it, ``padding_free``. Each trainer runs in its own process, the
trainers alternate, and every repeat reports the ratio of the two runs it contains: on a shared
machine the ratio of neighbouring runs is the figure to trust.

sc-data is timed through its public API: ``train()`` on a staged folder (ingested and staged by
the library from the same synthetic pairs), step times from ``metrics.jsonl``; the first step
of each run is warm-up and left out. GPU mode (default) builds a Qwen2-0.5B-shaped random model
and trains in bf16 autocast over fp32 weights on both sides; MFU counts 6·N per policy token plus
2·N per reference token over the measured bf16 peak.

    python -m bench.train --cpu --steps 4 --repeats 3       # from the repository root
    python -m bench.train --steps 20 --batch 8 --prompt-words 200 --answer-words 200
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

#: The measured bf16 matmul peak on the lent H100 (bench/RESULTS.md), not the 989e12 datasheet figure.
PEAK_BF16_FLOPS = 790e12
#: TRL variants beside its default; each is a DPOConfig override.
TRL_VARIANTS = {"trl": {}, "trl_precompute": {"precompute_ref_log_probs": True}, "trl_padding_free": {"padding_free": True}}


def _model_dir(args: argparse.Namespace, root: Path) -> str:
    if args.model:  # any reference sc-data resolves (alias, GGUF, folder), as a folder TRL reads too
        from sc_data.models.loading import model_folder

        return str(model_folder(args.model))
    if args.cpu:
        from tests.tiny_models import build_causal_lm

        return str(build_causal_lm(root / "tiny", hidden=64, layers=4))
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.tiny_models import build_tokenizer

    tok = build_tokenizer(root / "qwen")
    cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                      num_key_value_heads=2, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(root / "qwen")
    return str(root / "qwen")


def _pairs(n: int, prompt_words: int, answer_words: int, seed: int = 0) -> list[dict]:
    """Distinct TRL-conversational pairs of fixed word counts (so the two trainers see the same lengths)."""
    rng = random.Random(seed)
    vocab = "help safe unsafe lock car tax phone sorry sure first then maybe please no yes".split()
    words = lambda k: " ".join(rng.choice(vocab) for _ in range(k))  # noqa: E731
    return [{"prompt": [{"role": "user", "content": f"{i} {words(prompt_words)}"}], "chosen": [{"role": "assistant", "content": words(answer_words)}],
             "rejected": [{"role": "assistant", "content": words(answer_words)}]} for i in range(n)]


def _prepare(root: Path, args: argparse.Namespace) -> tuple[str, Path, Path]:
    """The model, the pairs as JSONL (TRL's input) and the same pairs staged as one tier (ours)."""
    import numpy as np
    import pyarrow as pa

    from sc_data.ingest.pipeline import ingest_tables
    from sc_data.stage.pipeline import stage

    model_dir = _model_dir(args, root)
    rows = _pairs(args.batch * (args.steps + 1), args.prompt_words, args.answer_words)
    jsonl = root / "pairs.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    pairs, _ = ingest_tables([jsonl])
    scored = pairs.append_column("bench_score", pa.array(np.random.default_rng(0).random(pairs.num_rows)))
    staged = root / "staged"
    stage(scored, staged, tiers=1, eval_fraction=0.0, difficulty_columns=["bench_score:harder"], plots=False)
    return model_dir, jsonl, staged


def _peak_mem(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def run_ours(model_dir: str, staged: Path, args: argparse.Namespace, device: torch.device, root: Path) -> dict[str, Any]:
    from sc_data.train.config import TrainConfig
    from sc_data.train.trainer import train

    cfg = TrainConfig.from_dict({
        "model": {"name": model_dir, "device": device.type, "dtype": "bfloat16" if device.type == "cuda" else "float32",
                  "gradient_checkpointing": args.gradient_checkpointing == "on"},
        "lora": {"enabled": False},
        "loss": {"beta": 0.1},
        "optim": {"lr": 1e-6, "micro_batch": args.batch, "effective_batch": args.batch, "warmup_ratio": 0.0, "lr_schedule": "constant"},
        "curriculum": {"schedule": "shuffled", "epochs_per_stage": 1, "ref_update": "none"},
        "data": {"max_length": args.max_length, "max_prompt_length": args.max_length // 2, "reuse_ref_logps": False},
        "checkpoint": {"stage_ends": False},
    })
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    train(staged, root / "ours", cfg)
    records = [json.loads(line) for line in (root / "ours" / "metrics.jsonl").read_text("utf-8").splitlines()]
    tokens = sum(r["tokens"] for r in records[1:])  # step 0 is warm-up
    return {"seconds": records[-1]["time"] - records[0]["time"], "steps": len(records) - 1, "policy_tokens": tokens,
            "reference_tokens": tokens, "peak_mem_gib": _peak_mem(device)}


def run_trl(variant: str, model_dir: str, jsonl: Path, args: argparse.Namespace, device: torch.device, root: Path) -> dict[str, Any]:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ds = datasets.load_dataset("json", data_files=str(jsonl), split="train")
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a: Any, **k: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    cfg = DPOConfig(output_dir=str(root / "trl"), beta=0.1, per_device_train_batch_size=args.batch, max_steps=args.steps + 1, learning_rate=1e-6,
                    lr_scheduler_type="constant", report_to=[], max_length=args.max_length, use_cpu=device.type == "cpu",
                    bf16=device.type == "cuda", save_strategy="no", logging_steps=10**6, max_grad_norm=1.0,
                    gradient_checkpointing=args.gradient_checkpointing == "on", **TRL_VARIANTS[variant])
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    for key, value in TRL_VARIANTS[variant].items():
        if getattr(trainer, key, value) != value:  # TRL turned the option off (it warns): nothing to time
            return {"unavailable": f"TRL {_version('trl')} turns {key}={value} off"}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    # TRL batches are [chosen; rejected] rows: the prompt is counted twice, as TRL runs it.
    loader = trainer.get_train_dataloader()
    tokens = sum(int(b["attention_mask"].sum()) for _, b in zip(range(args.steps + 1), loader, strict=False))
    first = next(iter(loader))["attention_mask"].sum().item()
    tokens -= int(first)
    live = not TRL_VARIANTS[variant].get("precompute_ref_log_probs", False)
    return {"seconds": sum(times[1:]), "steps": len(times) - 1, "policy_tokens": tokens, "reference_tokens": tokens if live else 0,
            "peak_mem_gib": _peak_mem(device)}


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _worker(args: argparse.Namespace) -> None:
    device = torch.device("cpu" if args.cpu else "cuda")
    root = Path(tempfile.mkdtemp(dir=args.workdir))
    if args.worker == "sc_data":
        out = run_ours(args.model_dir, Path(args.workdir) / "staged", args, device, root)
    else:
        out = run_trl(args.worker, args.model_dir, Path(args.workdir) / "pairs.jsonl", args, device, root)
    print("BENCH_RESULT " + json.dumps(out))


def _spawn(name: str, model_dir: str, workdir: Path, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.train", *argv, "--worker", name, "--model-dir", model_dir, "--workdir", str(workdir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("BENCH_RESULT ")]
    if proc.returncode or not lines:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1].removeprefix("BENCH_RESULT "))


def _n_params(model_dir: str) -> int:
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    return sum(p.numel() for p in model.parameters())


def _summary(name: str, runs: list[dict[str, Any]], n_params: int, gpu: bool) -> dict[str, Any]:
    timed = [r for r in runs if "seconds" in r]
    if not timed:
        return {"trainer": name, "unavailable": runs[0]["unavailable"]}
    steps_per_s = [r["steps"] / r["seconds"] for r in timed]
    out = {"trainer": name, "steps_per_s": [round(x, 4) for x in steps_per_s],
           "tokens_per_s": round(statistics.median(r["policy_tokens"] / r["seconds"] for r in timed), 1),
           "peak_mem_gib": round(max(r["peak_mem_gib"] for r in timed), 3)}
    if gpu:
        flops = statistics.median((6 * r["policy_tokens"] + 2 * r["reference_tokens"]) * n_params / r["seconds"] for r in timed)
        out["mfu"] = round(flops / PEAK_BF16_FLOPS, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="Tiny random model on the CPU (default: CUDA, Qwen2-0.5B shape).")
    ap.add_argument("--model", default=None, help="A model folder or builtin alias instead of the random one.")
    ap.add_argument("--steps", type=int, default=10, help="Timed optimizer steps per run (plus one warm-up step).")
    ap.add_argument("--batch", type=int, default=8, help="Pairs per step (one micro batch, no accumulation).")
    ap.add_argument("--prompt-words", type=int, default=60)
    ap.add_argument("--answer-words", type=int, default=80)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--gradient-checkpointing", choices=["on", "off"], default="on", help="The same on both sides.")
    ap.add_argument("--repeats", type=int, default=3, help="Alternating rounds; each reports its own ratio.")
    ap.add_argument("--variants", default="trl,trl_precompute,trl_padding_free", help="TRL variants to run beside sc_data.")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args)
    argv = sys.argv[1:]
    load_before = os.getloadavg()
    variants = [v for v in args.variants.split(",") if v]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir, _, _ = _prepare(workdir, args)
        n_params = _n_params(model_dir)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ["sc_data", *variants]}
        ratios: dict[str, list[float]] = {v: [] for v in variants}
        for k in range(args.repeats):
            order = ["sc_data", *variants] if k % 2 == 0 else [*variants, "sc_data"]
            this = {name: _spawn(name, model_dir, workdir, argv) for name in order}
            for name, result in this.items():
                runs[name].append(result)
            for v in variants:
                if "seconds" in this[v]:
                    ours, theirs = this["sc_data"], this[v]
                    ratios[v].append(round((ours["steps"] / ours["seconds"]) / (theirs["steps"] / theirs["seconds"]), 3))
    report = {
        "command": "python -m bench.train " + " ".join(argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs" + (f", {torch.cuda.get_device_name()}" if not args.cpu else ""),
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)], "torch": torch.__version__, "trl": _version("trl"),
        "params": n_params, "results": [_summary(name, r, n_params, not args.cpu) for name, r in runs.items()],
        "ratio_sc_data_over": {v: {"per_repeat": r, "median": statistics.median(r)} for v, r in ratios.items() if r},
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
