"""Training throughput: our curriculum DPO step vs TRL's DPOTrainer on the same model, data and batch.

GPU mode (default): a Qwen2-0.5B-shaped random model in bf16 autocast (fp32 master weights), full
fine-tune, synthetic pairs with fixed prompt / answer lengths. ``--cpu``: the tiny random test
model (or ``--model smollm2-135m-instruct``) on CPU. Both trainers see the same pairs, micro batch,
lengths and β; reports steps/s, tokens/s, peak memory and (GPU) MFU = 6·N·tokens/s / peak FLOP/s.

    python -m bench.train --cpu --steps 4          # from the repository root (tests.tiny_models imports)
    python -m bench.train --steps 20 --batch 8 --prompt-len 256 --answer-len 256
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from pathlib import Path

import torch

#: The measured bf16 matmul peak on the lent H100 (../shared/gpu), not the 989e12 datasheet figure,
#: so MFU here compares with the scoring benchmark and the peer figures taken there.
PEAK_BF16_FLOPS = 790e12


def _model_dir(args: argparse.Namespace, root: Path) -> str:
    if args.model:
        return args.model
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
    rng = random.Random(seed)
    vocab = "help safe unsafe lock car tax phone sorry sure first then maybe please no yes".split()
    words = lambda k: " ".join(rng.choice(vocab) for _ in range(k))  # noqa: E731
    return [{"prompt": [{"role": "user", "content": words(prompt_words)}], "chosen": [{"role": "assistant", "content": words(answer_words)}],
             "rejected": [{"role": "assistant", "content": words(answer_words)}]} for _ in range(n)]


def _peak_mem(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench_ours(model_dir: str, rows: list[dict], args: argparse.Namespace, device: torch.device) -> dict:
    from sc_data.models.loading import load_causal_lm
    from sc_data.models.logprob import PairTokenizer, TruncationConfig, pair_logprobs
    from sc_data.train.config import LoraConfig
    from sc_data.train.losses import build_loss
    from sc_data.train.policy import PolicyPair

    model, tok, _ = load_causal_lm(model_dir, device=device.type, dtype="float32")
    pair = PolicyPair(model, lora=LoraConfig(enabled=False), ref_dtype=torch.bfloat16 if device.type == "cuda" else torch.float32, adapter_seed=0)
    ptok = PairTokenizer(tok, truncation=TruncationConfig(max_length=args.max_length, max_prompt_length=args.max_length // 2))
    pairs = [ptok(r["prompt"], r["chosen"], r["rejected"]) for r in rows]
    opt = torch.optim.AdamW(pair.trainable_parameters(), lr=1e-6)
    loss_fn = build_loss("sigmoid", beta=0.1)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    tokens, times = 0, []
    for step in range(args.steps + 1):
        batch = pairs[(step * args.batch) % len(pairs):][: args.batch]
        t0 = time.perf_counter()
        with torch.no_grad(), pair.reference_model() as ref, amp:
            r = pair_logprobs(ref, batch, pad_token_id=tok.pad_token_id)
        with amp:
            p = pair_logprobs(pair.model, batch, pad_token_id=tok.pad_token_id)
        loss = loss_fn(p.chosen_sum.float(), p.rejected_sum.float(), r.chosen_sum.float(), r.rejected_sum.float())[0].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(pair.trainable_parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # step 0 is warm-up
            times.append(time.perf_counter() - t0)
            tokens += sum(len(q.prompt_ids) + len(q.chosen_ids) + len(q.rejected_ids) for q in batch)
    n_params = sum(p.numel() for p in pair.model.parameters())
    return _result("sc_data", sum(times), args.steps, tokens, n_params, device)


def bench_trl(model_dir: str, rows: list[dict], args: argparse.Namespace, device: torch.device, root: Path) -> dict:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ds = datasets.Dataset.from_list(rows * 4)
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.t0)

    cfg = DPOConfig(output_dir=str(root / "trl"), beta=0.1, per_device_train_batch_size=args.batch, max_steps=args.steps + 1, learning_rate=1e-6,
                    report_to=[], max_length=args.max_length, use_cpu=device.type == "cpu", bf16=device.type == "cuda", save_strategy="no",
                    logging_steps=10**6, max_grad_norm=1.0)
    trainer = DPOTrainer(model=model, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    # TRL batches are [chosen; rejected] rows: prompt counted twice, as TRL runs it.
    loader = trainer.get_train_dataloader()
    tokens = sum(int(b["attention_mask"].sum()) for _, b in zip(range(args.steps), loader, strict=False))
    n_params = sum(p.numel() for p in model.parameters())
    return _result("trl", sum(times[1:]), args.steps, tokens, n_params, device)


def _result(name: str, seconds: float, steps: int, tokens: int, n_params: int, device: torch.device) -> dict:
    out = {"trainer": name, "steps_per_s": steps / seconds, "tokens_per_s": tokens / seconds, "peak_mem_gib": _peak_mem(device),
           "params": n_params}
    if device.type == "cuda":
        out["mfu"] = 6 * n_params * tokens / seconds / PEAK_BF16_FLOPS
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true")
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-words", type=int, default=60)
    ap.add_argument("--answer-words", type=int, default=80)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--only", choices=["ours", "trl"], default=None, help="Run one trainer (peak memory is per process).")
    args = ap.parse_args()
    device = torch.device("cpu" if args.cpu else "cuda")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = _model_dir(args, root)
        rows = _pairs(args.batch * 4, args.prompt_words, args.answer_words)
        results = []
        if args.only in (None, "ours"):
            results.append(bench_ours(model_dir, rows, args, device))
        if args.only in (None, "trl"):
            results.append(bench_trl(model_dir, rows, args, device, root))
    print(json.dumps({"device": str(device), "args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
