"""The shared log-prob core: tokenisation rule, truncation, and the fast path vs a float64 reference."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sc_data.errors import ConfigError
from sc_data.models.logprob import (
    FALLBACK_TEMPLATE,
    PairTokenizer,
    TruncationConfig,
    pair_logprobs,
)
from tests.reference import reference_pair_logprobs
from tests.scorers.conftest import PROMPTS, REFUSALS, UNSAFE
from tests.tiny_models import CHATML_TEMPLATE


def _load(path: Path, dtype: torch.dtype = torch.float64, attn: str = "sdpa"):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _pairs(tok, n: int = 6, truncation: TruncationConfig = TruncationConfig()):
    pt = PairTokenizer(tok, truncation=truncation)
    out = []
    for i in range(n):
        prompt = PROMPTS[i % 3]
        chosen = [{"role": "assistant", "content": REFUSALS[i % 3] * (1 + i % 2)}]
        rejected = [{"role": "assistant", "content": UNSAFE[(i + 1) % 3]}]
        out.append(pt(prompt, chosen, rejected))
    return out


def _naive_logp(model, ids: list[int], start: int) -> float:
    """Sum of log p(ids[t] | ids[:t]) for t >= start, one token at a time in float64 (no cache, no mask)."""
    total = 0.0
    with torch.no_grad():
        for t in range(start, len(ids)):
            logits = model(input_ids=torch.tensor([ids[:t]])).logits[0, -1].double()
            total += float(torch.log_softmax(logits, -1)[ids[t]])
    return total


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def model_dir(request, tiny_lm_dir: Path, tiny_qwen2_dir: Path) -> Path:
    return tiny_lm_dir if request.param == "llama" else tiny_qwen2_dir


class TestPairTokenizer:
    def test_answer_ends_with_end_of_turn_not_newline(self, tiny_lm_dir: Path) -> None:
        tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
        prompt, chosen = PROMPTS[1], [{"role": "assistant", "content": "No."}]
        pair = PairTokenizer(tok)(prompt, chosen, [{"role": "assistant", "content": "Sure"}])
        full = tok(tok.apply_chat_template(prompt + chosen, tokenize=False), add_special_tokens=False).input_ids
        assert pair.chosen_ids[-1] == tok.convert_tokens_to_ids("<|im_end|>")
        assert tok.decode(pair.chosen_ids) == "No.<|im_end|>"
        # Full rendering = prompt + answer + the newline the template emits after <|im_end|>.
        assert full == pair.prompt_ids + pair.chosen_ids + tok("\n", add_special_tokens=False).input_ids
        assert tok.decode(pair.prompt_ids).endswith("<|im_start|>assistant\n")
        assert pair.flags == ()

    def test_no_second_bos(self, tmp_path: Path) -> None:
        from tokenizers.processors import TemplateProcessing

        from tests.tiny_models import build_tokenizer

        tok = build_tokenizer(tmp_path)
        tok.bos_token = "<|endoftext|>"
        bos = tok.bos_token_id
        tok._tokenizer.post_processor = TemplateProcessing(single="<|endoftext|> $A", special_tokens=[("<|endoftext|>", bos)])
        tok.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
        assert tok("hi").input_ids[0] == bos  # this tokenizer does add a BOS on its own
        pair = PairTokenizer(tok)(PROMPTS[0], [{"role": "assistant", "content": "No."}], [{"role": "assistant", "content": "Yes"}])
        assert pair.prompt_ids[0] == bos
        assert (pair.prompt_ids + pair.chosen_ids).count(bos) == 1

    def test_prefix_mismatch_is_flagged_and_split_consistently(self, tiny_lm_dir: Path) -> None:
        tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
        # Marks the last user turn only when it IS last: the generation prompt differs from the
        # rendering with the answer, as templates that rewrite earlier turns do.
        template = (
            "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if loop.last and m['role'] == 'user' %}!{% endif %}"
            "{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
        )
        pt = PairTokenizer(tok, chat_template=template)
        chosen, rejected = [{"role": "assistant", "content": "No."}], [{"role": "assistant", "content": "Sure"}]
        pair = pt(PROMPTS[0], chosen, rejected)
        assert "template_prefix_mismatch" in pair.flags
        full_c = tok(tok.apply_chat_template(PROMPTS[0] + chosen, chat_template=template, tokenize=False), add_special_tokens=False).input_ids
        full_r = tok(tok.apply_chat_template(PROMPTS[0] + rejected, chat_template=template, tokenize=False), add_special_tokens=False).input_ids
        assert full_c[: len(pair.prompt_ids) + len(pair.chosen_ids)] == pair.prompt_ids + pair.chosen_ids
        assert full_r[: len(pair.prompt_ids) + len(pair.rejected_ids)] == pair.prompt_ids + pair.rejected_ids
        assert pair.chosen_ids[-1] == tok.eos_token_id

    def test_truncation(self, tiny_lm_dir: Path) -> None:
        tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
        full = PairTokenizer(tok)(PROMPTS[1], [{"role": "assistant", "content": REFUSALS[1]}], [{"role": "assistant", "content": UNSAFE[0]}])
        cut = PairTokenizer(tok, truncation=TruncationConfig(max_length=30, max_prompt_length=12))(
            PROMPTS[1], [{"role": "assistant", "content": REFUSALS[1]}], [{"role": "assistant", "content": UNSAFE[0]}]
        )
        assert cut.prompt_ids == full.prompt_ids[-12:]  # left-truncated
        assert cut.chosen_ids == full.chosen_ids[:18]  # right-truncated to 30 - 12, no <|im_end|> added
        assert cut.rejected_ids == full.rejected_ids[:18]
        assert set(cut.flags) == {"prompt_truncated", "chosen_truncated", "rejected_truncated"}

    def test_bad_truncation_config(self) -> None:
        with pytest.raises(ConfigError, match=r"max_prompt_length < max_length; got max_prompt_length=512, max_length=512"):
            TruncationConfig(max_length=512, max_prompt_length=512)

    def test_fallback_template_and_describe(self, tiny_lm_dir: Path) -> None:
        tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
        tok.chat_template = None
        pt = PairTokenizer(tok)
        assert pt.template == FALLBACK_TEMPLATE
        pair = pt(PROMPTS[0], [{"role": "assistant", "content": "No."}], [{"role": "assistant", "content": "Sure"}])
        assert tok.decode(pair.prompt_ids).endswith("assistant: ")
        assert tok.decode(pair.chosen_ids) == "No.<|im_end|>"
        desc = pt.describe()
        assert desc["template_source"] == "fallback"
        other = PairTokenizer(tok, truncation=TruncationConfig(256, 128)).describe()
        assert other["truncation"]["max_length"] == 256 and other["template_sha256"] == desc["template_sha256"]
        assert other != desc


class TestPairLogprobs:
    @pytest.mark.parametrize("attn", ["sdpa", "eager"])
    def test_fast_path_matches_reference_float64(self, model_dir: Path, attn: str) -> None:
        model, tok = _load(model_dir, attn=attn)
        pairs = _pairs(tok)
        assert len({len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for p in pairs}) > 1  # padding happens
        with torch.no_grad():
            fast = pair_logprobs(model, pairs, pad_token_id=tok.pad_token_id)
            ref = reference_pair_logprobs(model, pairs)
            single = [pair_logprobs(model, [p]) for p in pairs]
        # HF's eager attention runs its softmax in float32 even for a float64 model.
        atol = 1e-9 if attn == "sdpa" else 1e-5
        torch.testing.assert_close(fast.chosen_sum, ref.chosen_sum, rtol=0, atol=atol)
        torch.testing.assert_close(fast.rejected_sum, ref.rejected_sum, rtol=0, atol=atol)
        torch.testing.assert_close(torch.cat([s.chosen_sum for s in single]), ref.chosen_sum, rtol=0, atol=atol)
        assert fast.chosen_len.tolist() == [len(p.chosen_ids) for p in pairs]
        assert fast.rejected_len.tolist() == [len(p.rejected_ids) for p in pairs]
        torch.testing.assert_close(fast.chosen_mean, ref.chosen_sum / ref.chosen_len, rtol=0, atol=atol)

    def test_flex_attention_block_mask_matches_dense_mask(self, tiny_qwen2_dir: Path) -> None:
        """The GPU default (a FlexAttention block mask, never a (T, T) tensor) computes what the dense mask does.

        Forward only: torch has no FlexAttention backward on the CPU (the GPU tests check gradients).
        """
        pairs = _pairs(AutoTokenizer.from_pretrained(tiny_qwen2_dir))
        with torch.no_grad():
            flex = pair_logprobs(_load(tiny_qwen2_dir, dtype=torch.float32, attn="flex_attention")[0], pairs)
            dense = pair_logprobs(_load(tiny_qwen2_dir, dtype=torch.float32, attn="sdpa")[0], pairs)
            ref = reference_pair_logprobs(_load(tiny_qwen2_dir)[0], pairs)
        for side in ("chosen_sum", "rejected_sum"):
            torch.testing.assert_close(getattr(flex, side).double(), getattr(ref, side), rtol=0, atol=1e-4)
            torch.testing.assert_close(getattr(flex, side), getattr(dense, side), rtol=1e-6, atol=1e-5)

    def test_reference_matches_token_by_token_loop(self, tiny_lm_dir: Path) -> None:
        model, tok = _load(tiny_lm_dir)
        pair = _pairs(tok, 2)[1]
        with torch.no_grad():
            ref = reference_pair_logprobs(model, [pair])
        expected = _naive_logp(model, pair.prompt_ids + pair.rejected_ids, len(pair.prompt_ids))
        assert abs(float(ref.rejected_sum[0]) - expected) < 1e-9

    def test_truncated_pairs_match_reference(self, model_dir: Path) -> None:
        model, tok = _load(model_dir)
        pairs = _pairs(tok, truncation=TruncationConfig(max_length=24, max_prompt_length=10))
        assert all("prompt_truncated" in p.flags for p in pairs)
        with torch.no_grad():
            fast, ref = pair_logprobs(model, pairs), reference_pair_logprobs(model, pairs)
        torch.testing.assert_close(fast.rejected_sum, ref.rejected_sum, rtol=0, atol=1e-9)
        torch.testing.assert_close(fast.chosen_sum, ref.chosen_sum, rtol=0, atol=1e-9)

    def test_float32_close_to_float64(self, tiny_lm_dir: Path) -> None:
        model64, tok = _load(tiny_lm_dir)
        model32, _ = _load(tiny_lm_dir, dtype=torch.float32)
        pairs = _pairs(tok)
        with torch.inference_mode():
            fast = pair_logprobs(model32, pairs)
        ref = reference_pair_logprobs(model64, pairs)
        assert fast.chosen_sum.dtype == torch.float32
        torch.testing.assert_close(fast.chosen_mean.double(), ref.chosen_mean, rtol=0, atol=1e-4)
        torch.testing.assert_close(fast.rejected_mean.double(), ref.rejected_mean, rtol=0, atol=1e-4)

    def test_gradients_match_reference(self, tiny_qwen2_dir: Path) -> None:
        model, tok = _load(tiny_qwen2_dir)
        pairs = _pairs(tok, 3)
        grads = []
        for fn in (pair_logprobs, reference_pair_logprobs):
            model.zero_grad()
            lp = fn(model, pairs)
            (lp.chosen_sum - lp.rejected_sum).sum().backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        # HF's RMSNorm computes in float32 even in a float64 model, so gradients (whose rounding
        # depends on how the upstream gradient is split) agree to float32 precision, not float64.
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-5)
        assert grads[1].abs().max() > 0.1

    def test_empty_batch(self, tiny_lm_dir: Path) -> None:
        model, _ = _load(tiny_lm_dir)
        with pytest.raises(ConfigError, match="at least one pair; got an empty batch"):
            pair_logprobs(model, [])


_MEMORY_PROBE = """
import resource, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from sc_data.models.logprob import TokenizedPair, pair_logprobs
torch.manual_seed(0)
vocab, batch, answer = int(sys.argv[1]), 4, 1000
model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
ids = [(7 * t) % 900 + 1 for t in range(answer + 20)]
pairs = [TokenizedPair(ids[:10], ids[10 : 10 + answer], ids[20 : 20 + answer]) for _ in range(batch)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
lp = pair_logprobs(model, pairs)
(lp.chosen_sum.sum() - lp.rejected_sum.sum()).backward()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024)  # ru_maxrss is in KiB on Linux
"""


def _peak_growth(vocab: int) -> int:
    """The probe's peak RSS growth. glibc's mmap threshold is fixed at 1 MiB: left dynamic, it rises
    after the first large free, later chunks come from the heap, and the freed heap is not always
    given back, so the peak read 0.3 or 1.3 GB for the same run at random."""
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(vocab)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "MALLOC_MMAP_THRESHOLD_": str(2**20)})
    assert out.returncode == 0, out.stderr[-2000:]
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ off Linux")
def test_head_runs_in_chunks_without_batch_length_vocab_logits() -> None:
    """Forward + backward over 8,000 answer tokens: what a 32,000 vs a 1,000 vocabulary adds to the
    peak is the head's share, and it stays far below the batch's fp32 logits (~1 GiB)."""
    batch_logits = 4 * 2 * 1000 * (32_000 - 1_000) * 4  # batch × answers × tokens × extra vocab × fp32 bytes
    extra = _peak_growth(32_000) - _peak_growth(1_000)
    assert extra < batch_logits / 3, f"the vocabulary added {extra / 2**20:.0f} MiB; the batch's logits are {batch_logits / 2**20:.0f} MiB"
