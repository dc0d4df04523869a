"""The one log-prob core shared by the ``ref_margin`` scorer, the DPO trainer and evaluation.

How a (prompt, answer) pair becomes tokens, and how the answer's log-prob is summed, must be the
same code everywhere, or stored reference log-probs can't be reused and losses won't match TRL's
(docs/ARCHITECTURE.md, "The log-prob core"):

* Answer tokens = ``tokens(template(prompt + answer))[len(tokens(template(prompt,
  add_generation_prompt=True))):]``, with a prefix check on every row. The template string is
  tokenised with ``add_special_tokens=False`` (never a second BOS). The answer keeps the
  end-of-turn token the template emits (ChatML ``<|im_end|>``) and drops what follows it (the
  newline), since the model is never asked to predict past the end of its turn.
* Truncation: the prompt is left-truncated to ``max_prompt_length``; answers are right-truncated
  to ``max_length - len(prompt)``; no end-of-turn is added after a cut; the row is flagged.
* ``log pi(y|x)`` = sum over answer tokens of ``log_softmax`` of fp32-upcast logits; the per-token
  mean is ``sum / len``.

Fast path (:func:`pair_logprobs`): each pair is ONE packed sequence ``[prompt; chosen; rejected]``
with a 4-D additive attention mask in which rejected cannot see chosen and rejected's positions
restart at the prompt length. The prompt therefore runs once for both answers, and the LM head
runs only on the positions that predict answer tokens. It is differentiable (the trainer
backprops through it) and is checked against two plain forward passes per pair in float64 (the
test suite's reference implementation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sc_data.errors import ConfigError

#: Used when the tokenizer has no chat template: ``role: content<eos>\n`` per message and
#: ``assistant: `` as the generation prompt. The end-of-turn is the tokenizer's EOS (if any).
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}{{ eos_token or '' }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

TRUNCATION_RULE = (
    "prompt left-truncated to max_prompt_length; answers right-truncated to "
    "max_length - len(prompt); no end-of-turn added after a cut"
)
ANSWER_RULE = (
    "answer = tokens(template(prompt+answer))[len(tokens(template(prompt, add_generation_prompt=True))):], "
    "add_special_tokens=False, ending at the last end-of-turn (eos) token"
)


@dataclass(frozen=True)
class TruncationConfig:
    """Token limits (the paper: 1024 in total, prompt <= 512).

    Attributes:
        max_length: most tokens of prompt + one answer, >= 2.
        max_prompt_length: most prompt tokens, < max_length so every answer keeps >= 1 token.
    """

    max_length: int = 1024
    max_prompt_length: int = 512

    def __post_init__(self) -> None:
        if not 1 <= self.max_prompt_length < self.max_length:
            raise ConfigError(
                f"truncation needs 1 <= max_prompt_length < max_length; got max_prompt_length="
                f"{self.max_prompt_length}, max_length={self.max_length}. Lower max_prompt_length or "
                "raise max_length."
            )


@dataclass
class TokenizedPair:
    """Token ids of one preference pair, split at the answer boundary.

    Attributes:
        prompt_ids: the prompt, generation prompt included (e.g. ``<|im_start|>assistant\\n``).
        chosen_ids / rejected_ids: the answers, each ending at the end-of-turn token unless cut.
        flags: ``prompt_truncated``, ``chosen_truncated``, ``rejected_truncated``,
            ``template_prefix_mismatch``, ``chosen_empty``, ``rejected_empty``.
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    flags: tuple[str, ...] = ()


def _common_prefix_len(*seqs: Sequence[int]) -> int:
    n = 0
    for items in zip(*seqs, strict=False):
        if any(x != items[0] for x in items[1:]):
            break
        n += 1
    return n


class PairTokenizer:
    """Turn (prompt, chosen, rejected) message lists into :class:`TokenizedPair` s.

    Args:
        tokenizer: a Hugging Face tokenizer; its EOS is taken as the end-of-turn token.
        truncation: token limits (default: 1024 total, prompt 512).
        chat_template: Jinja template overriding the tokenizer's; :data:`FALLBACK_TEMPLATE`
            when neither exists.

    Example:
        >>> pt = PairTokenizer(tok)  # doctest: +SKIP
        >>> pt([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": "hello"}],
        ...    [{"role": "assistant", "content": "go away"}]).chosen_ids  # doctest: +SKIP
    """

    def __init__(
        self,
        tokenizer: Any,
        *,
        truncation: TruncationConfig = TruncationConfig(),  # noqa: B008 - frozen, immutable
        chat_template: str | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.truncation = truncation
        self.chat_template = chat_template

    @property
    def template(self) -> str:
        """The template in use: the argument, else the tokenizer's, else the fallback."""
        return self.chat_template or getattr(self.tokenizer, "chat_template", None) or FALLBACK_TEMPLATE

    def _template_source(self) -> str:
        if self.chat_template:
            return "argument"
        return "tokenizer" if getattr(self.tokenizer, "chat_template", None) else "fallback"

    def _ids(self, messages: list[dict], *, generation_prompt: bool) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            [{"role": m["role"], "content": m["content"]} for m in messages],
            chat_template=self.template,
            tokenize=False,
            add_generation_prompt=generation_prompt,
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _end_at_turn(self, answer: list[int]) -> list[int]:
        eos = self.tokenizer.eos_token_id
        if eos is None or eos not in answer:
            return answer
        last = len(answer) - 1 - answer[::-1].index(eos)
        return answer[: last + 1]

    def __call__(self, prompt: list[dict], chosen: list[dict], rejected: list[dict]) -> TokenizedPair:
        """Tokenise one pair by the rule in the module docstring, then truncate it."""
        flags: list[str] = []
        gen = self._ids(prompt, generation_prompt=True)
        full_c = self._ids(list(prompt) + list(chosen), generation_prompt=False)
        full_r = self._ids(list(prompt) + list(rejected), generation_prompt=False)
        if full_c[: len(gen)] == gen and full_r[: len(gen)] == gen:
            split = len(gen)
        else:
            # The template rewrites earlier turns: split where the three renderings diverge, so
            # prompt + answer is still exactly what the template produced.
            flags.append("template_prefix_mismatch")
            split = _common_prefix_len(gen, full_c, full_r)
        prompt_ids = full_c[:split]
        chosen_ids = self._end_at_turn(full_c[split:])
        rejected_ids = self._end_at_turn(full_r[split:])

        cfg = self.truncation
        if len(prompt_ids) > cfg.max_prompt_length:
            prompt_ids = prompt_ids[-cfg.max_prompt_length :]
            flags.append("prompt_truncated")
        room = cfg.max_length - len(prompt_ids)
        for name, ids in (("chosen", chosen_ids), ("rejected", rejected_ids)):
            if len(ids) > room:
                flags.append(f"{name}_truncated")
            if not ids:
                flags.append(f"{name}_empty")
        return TokenizedPair(prompt_ids, chosen_ids[:room], rejected_ids[:room], tuple(flags))

    def describe(self) -> dict[str, Any]:
        """What decides the tokens, for manifests: stored log-probs are reused only on an exact match."""
        tok = self.tokenizer
        vocab = json.dumps(sorted(tok.get_vocab().items()), ensure_ascii=False).encode("utf-8")
        return {
            "template_sha256": hashlib.sha256(self.template.encode("utf-8")).hexdigest(),
            "template_source": self._template_source(),
            "answer_rule": ANSWER_RULE,
            "truncation": {
                "max_length": self.truncation.max_length,
                "max_prompt_length": self.truncation.max_prompt_length,
                "rule": TRUNCATION_RULE,
            },
            "tokenizer": {
                "class": type(tok).__name__,
                "vocab_size": len(tok),
                "vocab_sha256": hashlib.sha256(vocab).hexdigest(),
                "eos_token": tok.eos_token,
                "bos_token": tok.bos_token,
            },
        }


@dataclass
class PairLogProbs:
    """Summed answer log-probs of a batch of pairs.

    Attributes:
        chosen_sum / rejected_sum: (B,) float32 (float64 for a float64 model), log pi(y|x).
        chosen_len / rejected_len: (B,) int64 answer token counts.
    """

    chosen_sum: torch.Tensor
    rejected_sum: torch.Tensor
    chosen_len: torch.Tensor
    rejected_len: torch.Tensor

    @property
    def chosen_mean(self) -> torch.Tensor:
        """(B,) per-token mean; 0 for an empty answer."""
        return self.chosen_sum / self.chosen_len.clamp(min=1)

    @property
    def rejected_mean(self) -> torch.Tensor:
        """(B,) per-token mean; 0 for an empty answer."""
        return self.rejected_sum / self.rejected_len.clamp(min=1)


def _unwrap(model: Any) -> tuple[Any, Any]:
    """(decoder body, LM head) of a causal LM, a PEFT wrapper around one included."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    return model.base_model, model.get_output_embeddings()


def _logp_dtype(model: Any) -> torch.dtype:
    # fp32-upcast logits; float64 models (tests' reference) keep float64.
    return torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32


def _answer_logps(hidden: torch.Tensor, head: Any, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    logits = head(hidden).to(dtype)  # (N, V)
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (N,)


def pair_logprobs(model: Any, pairs: Sequence[TokenizedPair], *, pad_token_id: int | None = None) -> PairLogProbs:
    """Summed log-probs of both answers of every pair, each prompt run once (the fast path).

    Row b of the batch is ``[prompt; chosen; rejected; padding]``. The additive 4-D mask is causal,
    except that rejected tokens cannot see chosen tokens and nothing sees padding; rejected's
    position ids restart at ``len(prompt)``, so rejected sees exactly what a separate
    ``[prompt; rejected]`` pass would. The LM head runs only on the positions that predict an
    answer token (the last prompt position predicts the first token of both answers).

    Works for Llama-, Mistral- and Qwen2-style models with ``eager`` or ``sdpa`` attention (not
    flash-attention-2, which takes no custom mask). Differentiable under grad; call it inside
    ``torch.inference_mode()`` when scoring. Pass length-sorted batches to limit padding.

    Args:
        model: a causal LM (or a PEFT wrapper of one).
        pairs: tokenised pairs; every prompt needs >= 1 token.
        pad_token_id: id written into padding (never attended to); default 0.

    Returns:
        :class:`PairLogProbs` on the model's device.
    """
    if not pairs:
        raise ConfigError("pair_logprobs needs at least one pair; got an empty batch")
    body, head = _unwrap(model)
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    lens = [(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in pairs]
    if any(lp == 0 for lp, _, _ in lens):
        raise ConfigError("every pair needs a non-empty prompt (the template's generation prompt at least)")
    width = max(lp + lc + lr for lp, lc, lr in lens)
    batch = len(pairs)
    ids = torch.full((batch, width), pad_token_id or 0, dtype=torch.long)
    pos = torch.zeros((batch, width), dtype=torch.long)
    allowed = torch.zeros((batch, width, width), dtype=torch.bool)
    causal = torch.ones((width, width), dtype=torch.bool).tril_()
    hidden_idx: list[int] = []  # flat (row * width + position) of the states that predict each label
    labels: list[int] = []
    for b, (pair, (lp, lc, lr)) in enumerate(zip(pairs, lens, strict=True)):
        n = lp + lc + lr
        ids[b, :n] = torch.tensor(pair.prompt_ids + pair.chosen_ids + pair.rejected_ids)
        pos[b, : lp + lc] = torch.arange(lp + lc)
        pos[b, lp + lc : n] = torch.arange(lp, lp + lr)
        allowed[b, :n, :n] = causal[:n, :n]
        allowed[b, lp + lc : n, lp : lp + lc] = False  # rejected never sees chosen
        allowed[b, n:, 0] = True  # padding queries attend somewhere so softmax stays finite
        base = b * width
        hidden_idx += [base + lp - 1 + j for j in range(lc)]
        hidden_idx += [base + (lp - 1 if j == 0 else lp + lc + j - 1) for j in range(lr)]
        labels += pair.chosen_ids + pair.rejected_ids
    mask = torch.zeros((batch, 1, width, width), dtype=dtype)
    mask.masked_fill_(~allowed[:, None], torch.finfo(dtype).min)  # (B, 1, T, T) additive

    out = body(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device), use_cache=False)
    hidden = out.last_hidden_state.reshape(batch * width, -1)  # (B*T, H)
    sel = torch.tensor(hidden_idx, dtype=torch.long, device=device)
    token_logps = _answer_logps(hidden[sel], head, torch.tensor(labels, device=device), _logp_dtype(model))

    # Sum per answer: segment k covers one answer, in the order chosen_0, rejected_0, chosen_1, ...
    seg_lens = torch.tensor([x for _, lc, lr in lens for x in (lc, lr)], device=device)
    seg = torch.repeat_interleave(torch.arange(2 * batch, device=device), seg_lens)
    sums = torch.zeros(2 * batch, dtype=token_logps.dtype, device=device).index_add(0, seg, token_logps)
    seg_lens = seg_lens.to(torch.long)
    return PairLogProbs(sums[0::2], sums[1::2], seg_lens[0::2], seg_lens[1::2])
