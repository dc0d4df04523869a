"""Benchmark of ref_margin's log-prob core: fast path vs two plain passes vs TRL's precompute.

CPU mode (default): SmolLM2-135M-Instruct (the PyPI GGUF, de-quantised, fp32) over the first
``--pairs`` pairs of the paper's released set. GPU mode (``--gpu``): the issue's spec, a
Qwen2-0.5B-shaped random bf16 model built from a config, 2,048 random-token pairs with prompt
length ~ U[64, 448] and answers ~ U[32, 512]; MFU = 2 * N_params * tokens/s / 790e12.

Throughput counts pairs/s and tokens/s, tokens = prompt + chosen + rejected (each prompt once).

Usage (from the repository root, so ``tests.reference`` imports):
    python -m bench.score --pairs 32            # CPU, SmolLM2
    python -m bench.score --gpu                 # CUDA, random Qwen2-0.5B shape
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

from sc_data.models.logprob import PairTokenizer, TokenizedPair, pair_logprobs
from tests.reference import reference_pair_logprobs

PEAK_FLOPS = 790e12


def _batches(pairs: list[TokenizedPair], budget: int) -> list[list[TokenizedPair]]:
    """Length-sorted batches whose rows x widest row stay within ``budget`` tokens (as the scorer does)."""
    order = sorted(pairs, key=lambda p: len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids))
    out, cur, widest = [], [], 0
    for p in order:
        w = max(widest, len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids))
        if cur and w * (len(cur) + 1) > budget:
            out.append(cur)
            cur, w = [], len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids)
        cur.append(p)
        widest = w
    return out + ([cur] if cur else [])


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _time(fn) -> float:
    _sync()
    t0 = time.perf_counter()
    fn()
    _sync()
    return time.perf_counter() - t0


def bench_core(model, pairs: list[TokenizedPair], budget: int, pad: int) -> dict[str, float]:
    tokens = sum(len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs)
    batches = _batches(pairs, budget)

    def fast() -> None:
        with torch.inference_mode():
            for b in batches:
                pair_logprobs(model, b, pad_token_id=pad)

    def plain() -> None:
        with torch.inference_mode():
            reference_pair_logprobs(model, pairs)

    with torch.inference_mode():
        pair_logprobs(model, batches[0][:1], pad_token_id=pad)  # warm-up
    out = {"pairs": len(pairs), "tokens": tokens}
    for name, fn in (("fast", fast), ("two_pass", plain)):
        secs = _time(fn)
        out[f"{name}_s"] = secs
        out[f"{name}_pairs_per_s"] = len(pairs) / secs
        out[f"{name}_tokens_per_s"] = tokens / secs
    return out


def bench_trl(model, tokenizer, rows: list[dict], batch_size: int) -> dict[str, float | str]:
    """Time TRL's reference-log-prob precompute (it runs inside ``DPOTrainer.__init__``)."""
    try:
        from datasets import Dataset
        from trl import DPOConfig, DPOTrainer

        ds = Dataset.from_list(rows)
        with tempfile.TemporaryDirectory() as tmp:
            args = DPOConfig(
                output_dir=tmp,
                precompute_ref_log_probs=True,
                precompute_ref_batch_size=batch_size,
                per_device_train_batch_size=batch_size,
                max_length=1024,
                report_to=[],
                bf16=torch.cuda.is_available(),
                use_cpu=not torch.cuda.is_available(),
                dataloader_num_workers=0,
            )
            t0 = time.perf_counter()
            DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
            _sync()
            secs = time.perf_counter() - t0
        return {"trl_s": secs, "trl_pairs_per_s": len(rows) / secs}
    except Exception as e:  # noqa: BLE001 - report why TRL could not run instead of failing the bench
        return {"trl_error": f"{type(e).__name__}: {e}"[:300]}


def cpu_mode(args: argparse.Namespace) -> dict:
    from sc_data.models.loading import load_causal_lm

    data = Path(args.data)
    rows = [json.loads(line) for line in data.open(encoding="utf-8")][: args.pairs]
    convo = []
    for r in rows:
        prompt = r["prompt"].removeprefix("Human:").strip()
        convo.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
                "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
            }
        )
    torch.set_num_threads(args.threads)
    model, tok, _ = load_causal_lm("smollm2-135m-instruct", device="cpu", dtype="float32")
    pt = PairTokenizer(tok)
    pairs = [pt(c["prompt"], c["chosen"], c["rejected"]) for c in convo]
    result = {"mode": "cpu", "model": "smollm2-135m-instruct (fp32)", "threads": args.threads}
    result |= bench_core(model, pairs, args.budget, tok.pad_token_id)
    if not args.no_trl:
        result |= bench_trl(model, tok, convo, batch_size=8)
        if "trl_s" in result:
            result["fast_vs_trl"] = result["trl_s"] / result["fast_s"]
    return result


def gpu_mode(args: argparse.Namespace) -> dict:
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096, tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16).eval()
    n_params = sum(p.numel() for p in model.parameters())
    rng = random.Random(0)
    n = args.pairs if args.pairs != 32 else 2048

    def toks(k: int) -> list[int]:
        return [rng.randrange(100, 150000) for _ in range(k)]

    pairs = [TokenizedPair(toks(rng.randint(64, 448)), toks(rng.randint(32, 512)), toks(rng.randint(32, 512))) for _ in range(n)]
    result = {"mode": "gpu", "device": torch.cuda.get_device_name(), "model": "Qwen2-0.5B shape, random, bf16", "params": n_params}
    result |= bench_core(model, pairs, args.budget, 0)
    for name in ("fast", "two_pass"):
        result[f"{name}_mfu"] = 2 * n_params * result[f"{name}_tokens_per_s"] / PEAK_FLOPS
    if not args.no_trl:
        tok_dir = os.environ.get("BENCH_TOKENIZER")
        if tok_dir:
            tok = AutoTokenizer.from_pretrained(tok_dir)
            rows = [
                {"prompt": tok.decode(p.prompt_ids), "chosen": tok.decode(p.chosen_ids), "rejected": tok.decode(p.rejected_ids)}
                for p in pairs
            ]
            result |= bench_trl(model, tok, rows, batch_size=16)
            if "trl_s" in result:
                result["fast_vs_trl"] = result["trl_s"] / result["fast_s"]
        else:
            result["trl_error"] = "set BENCH_TOKENIZER to a Qwen2 tokenizer folder to time TRL in the same run"
    return result


def main() -> None:
    shared = Path(os.environ.get("SC_DATA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", action="store_true", help="the issue's GPU benchmark (needs CUDA)")
    p.add_argument("--pairs", type=int, default=32, help="pairs (CPU default 32; GPU default 2048)")
    p.add_argument("--budget", type=int, default=8192, help="token budget per forward pass")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-trl", action="store_true")
    p.add_argument("--data", default=str(shared / "paper" / "hh_rlhf_clean_gpt.jsonl"))
    args = p.parse_args()
    if args.gpu and not torch.cuda.is_available():
        sys.exit("--gpu needs a CUDA GPU; none is visible")
    result = gpu_mode(args) if args.gpu else cpu_mode(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
