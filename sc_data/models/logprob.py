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
in which rejected cannot see chosen and rejected's positions restart at the prompt length. The
prompt therefore runs once for both answers, and the LM head runs only on the positions that
predict answer tokens, in chunks, so no batch × length × vocabulary logits are ever held. On the
host a batch is only token ids, positions and a segment id per position (:class:`PackedPairs`);
the attention mask is built on the model's device: a dense additive mask for ``eager`` / ``sdpa``
attention, a FlexAttention block mask for ``flex_attention``. It is differentiable (the trainer
backprops through it), works wrapped by DDP / FSDP (:class:`PairLogProbModel` is the module they
wrap), and is checked against two plain forward passes per pair in float64 (the test suite's
reference implementation).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from sc_data.errors import ConfigError

#: Used when the tokenizer has no chat template: ``role: content<eos>\n`` per message and
#: ``assistant: `` as the generation prompt. The end-of-turn is the tokenizer's EOS (if any).
FALLBACK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}{{ eos_token or '' }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

#: The Human/Assistant transcript the Staged-Competence reference code trains on (``data.template:
#: hh``, preset ``paper``): ``\n\nHuman: ...\n\nAssistant: ...`` with the answer closed by EOS.
HH_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '\n\nAssistant: ' + message['content'] + (eos_token or '') }}"
    "{% elif message['role'] == 'user' %}{{ '\n\nHuman: ' + message['content'] }}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '\n\nAssistant:' }}{% endif %}"
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


def forward_dtype(weights: torch.dtype, autocast: torch.dtype | None = None) -> str:
    """How a forward ran: the weights' dtype and, under autocast, its dtype (``float32+autocast:bfloat16``).

    Stored log-probs are reused only when this matches exactly: weights held in bf16 and fp32
    weights under bf16 autocast round differently (autocast keeps norms and softmax in fp32).
    """
    name = str(weights).removeprefix("torch.")
    return name if autocast is None else f"{name}+autocast:{str(autocast).removeprefix('torch.')}"


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


#: Segment ids of a packed row: which part each position belongs to.
PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, 3
#: Logits (tokens × vocabulary) per LM-head chunk: 8M fp32 values, 32 MiB, e.g. 256 tokens of a
#: 32k vocabulary or 55 of Qwen2's 152k. Forward and backward hold a few chunks at once, never a batch's.
HEAD_CHUNK_LOGITS = 8 * 2**20


@dataclass
class PackedPairs:
    """A batch of pairs packed ``[prompt; chosen; rejected; padding]`` per row: what goes to the device.

    Attributes:
        input_ids: (B, T) token ids, padding filled with the pad id.
        position_ids: (B, T); rejected's positions restart at the prompt length.
        segment: (B, T) int8, :data:`PROMPT`, :data:`CHOSEN`, :data:`REJECTED` or :data:`PAD`.
        predictor: (N,) flat index ``b * T + t`` of the hidden state that predicts each answer token.
        labels: (N,) the answer tokens, in the order chosen_0, rejected_0, chosen_1, ...
        owner: (N,) ``2 * b`` for a chosen token of row b, ``2 * b + 1`` for a rejected one.
        lengths: (B, 2) answer token counts (chosen, rejected).
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment: torch.Tensor
    predictor: torch.Tensor
    labels: torch.Tensor
    owner: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedPairs:
        """The same batch on ``device`` (pinned host memory makes ``non_blocking`` copies asynchronous)."""
        return PackedPairs(*(getattr(self, f.name).to(device, non_blocking=non_blocking) for f in fields(self)))

    def pin_memory(self) -> PackedPairs:
        return PackedPairs(*(getattr(self, f.name).pin_memory() for f in fields(self)))

    @property
    def tokens(self) -> int:
        """Real (non-padding) tokens in the batch."""
        return int((self.segment != PAD).sum())


def pack_pairs(pairs: Sequence[TokenizedPair], *, pad_token_id: int | None = None) -> PackedPairs:
    """Pack tokenised pairs for :func:`packed_logprobs` (host tensors; the mask is built on the device).

    Raises:
        ConfigError: no pair, or a pair with an empty prompt.
    """
    if not pairs:
        raise ConfigError("pair_logprobs needs at least one pair; got an empty batch")
    lens = np.asarray([(len(p.prompt_ids), len(p.chosen_ids), len(p.rejected_ids)) for p in pairs], dtype=np.int64)
    if (lens[:, 0] == 0).any():
        raise ConfigError("every pair needs a non-empty prompt (the template's generation prompt at least)")
    batch, width = len(pairs), int(lens.sum(axis=1).max())
    ids = np.full((batch, width), pad_token_id or 0, dtype=np.int64)
    pos = np.zeros((batch, width), dtype=np.int64)
    seg = np.full((batch, width), PAD, dtype=np.int8)
    predictor, labels, owner = [], [], []
    for b, (pair, (lp, lc, lr)) in enumerate(zip(pairs, lens, strict=True)):
        n = lp + lc + lr
        ids[b, :n] = pair.prompt_ids + pair.chosen_ids + pair.rejected_ids
        pos[b, : lp + lc] = np.arange(lp + lc)
        pos[b, lp + lc : n] = np.arange(lp, lp + lr)
        seg[b, :lp], seg[b, lp : lp + lc], seg[b, lp + lc : n] = PROMPT, CHOSEN, REJECTED
        base = b * width
        # The last prompt position predicts the first token of both answers.
        predictor.append(base + lp - 1 + np.arange(lc))
        predictor.append(base + np.concatenate([[lp - 1], lp + lc + np.arange(lr - 1)]) if lr else np.zeros(0, np.int64))
        labels += pair.chosen_ids + pair.rejected_ids
        owner.append(np.concatenate([np.full(lc, 2 * b), np.full(lr, 2 * b + 1)]))
    return PackedPairs(
        torch.from_numpy(ids), torch.from_numpy(pos), torch.from_numpy(seg),
        torch.from_numpy(np.concatenate(predictor).astype(np.int64)), torch.tensor(labels, dtype=torch.long),
        torch.from_numpy(np.concatenate(owner).astype(np.int64)), torch.from_numpy(lens[:, 1:].copy()),
    )


def _allowed(segment: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bool on ``segment``'s device: causal, rejected never sees chosen, nothing sees padding.

    Padding queries see position 0 so their softmax stays finite (their outputs are never read).
    """
    width = segment.shape[1]
    idx = torch.arange(width, device=segment.device)
    q_seg, k_seg = segment[:, :, None], segment[:, None, :]  # (B, T, 1), (B, 1, T)
    allowed = (idx[None, :, None] >= idx[None, None, :]) & (k_seg != PAD) & ~((q_seg == REJECTED) & (k_seg == CHOSEN))
    return allowed | ((q_seg == PAD) & (idx[None, None, :] == 0))


def dense_mask(segment: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 1, T, T) additive mask for ``eager`` / ``sdpa`` attention, built where ``segment`` lives."""
    mask = torch.zeros((*segment.shape, segment.shape[1]), dtype=dtype, device=segment.device)
    return mask.masked_fill_(~_allowed(segment), torch.finfo(dtype).min)[:, None]


def block_mask(segment: torch.Tensor) -> Any:
    """The same rule as a FlexAttention ``BlockMask`` (no (T, T) tensor at all on CUDA)."""
    from torch.nn.attention.flex_attention import create_block_mask

    def rule(b: Any, h: Any, q: Any, k: Any) -> Any:
        q_seg, k_seg = segment[b, q], segment[b, k]
        return ((k <= q) & (k_seg != PAD) & ~((q_seg == REJECTED) & (k_seg == CHOSEN))) | ((q_seg == PAD) & (k == 0))

    batch, width = segment.shape
    return create_block_mask(rule, B=batch, H=None, Q_LEN=width, KV_LEN=width, device=segment.device)


def _decoder_and_head(model: Any) -> tuple[Any, Any]:
    """(decoder body, LM head) of a causal LM, a PEFT wrapper around one included."""
    if hasattr(model, "get_base_model"):  # peft.PeftModel
        model = model.get_base_model()
    return model.base_model, model.get_output_embeddings()


def _logp_dtype(model: Any) -> torch.dtype:
    # fp32-upcast logits; float64 models (tests' reference) keep float64.
    return torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32


def _chunk_logps(head: Any, hidden: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    logits = head(hidden).to(dtype)  # (n, V)
    return logits.gather(-1, labels[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)  # (n,)


def answer_token_logps(head: Any, hidden: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """log p(label) at each selected hidden state, the LM head run over :data:`HEAD_CHUNK_LOGITS` at a time.

    Under grad each chunk is checkpointed, so its (n, V) logits are recomputed in backward rather
    than kept: peak memory is a few chunks' logits, not the batch's.
    """
    step = max(1, HEAD_CHUNK_LOGITS // head.weight.shape[0])
    out = []
    for start in range(0, len(labels), step):
        h, y = hidden[start : start + step], labels[start : start + step]
        if torch.is_grad_enabled() and h.requires_grad:
            out.append(checkpoint(_chunk_logps, head, h, y, dtype, use_reentrant=False))
        else:
            out.append(_chunk_logps(head, h, y, dtype))
    return torch.cat(out) if out else hidden.new_zeros(0, dtype=dtype)


class PairLogProbModel(nn.Module):
    """A causal LM seen as "packed pairs in, answer log-probs out": the module DDP / FSDP wrap.

    Calling it (rather than the LM's own forward) is what lets a distributed wrapper see the
    packed forward: the decoder body runs on the packed rows, the head only on answer positions.
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm = lm

    def forward(self, packed: PackedPairs) -> PairLogProbs:
        body, head = _decoder_and_head(self.lm)
        param = next(self.lm.parameters())
        impl = getattr(self.lm.config, "_attn_implementation", "sdpa")
        mask = block_mask(packed.segment) if impl == "flex_attention" else dense_mask(packed.segment, param.dtype)
        if torch.is_autocast_enabled(packed.input_ids.device.type) and impl != "flex_attention":
            mask = mask.to(torch.get_autocast_dtype(packed.input_ids.device.type))
        out = body(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids, use_cache=False)
        hidden = out.last_hidden_state.reshape(-1, out.last_hidden_state.shape[-1])  # (B*T, H)
        token_logps = answer_token_logps(head, hidden[packed.predictor], packed.labels, _logp_dtype(self.lm))  # (N,)
        batch = packed.lengths.shape[0]
        sums = torch.zeros(2 * batch, dtype=token_logps.dtype, device=token_logps.device).index_add(0, packed.owner, token_logps)
        return PairLogProbs(sums[0::2], sums[1::2], packed.lengths[:, 0], packed.lengths[:, 1])


def pair_logprobs(model: Any, pairs: Sequence[TokenizedPair], *, pad_token_id: int | None = None) -> PairLogProbs:
    """Summed log-probs of both answers of every pair, each prompt run once (the fast path).

    Works for Llama-, Mistral- and Qwen2-style models with ``eager``, ``sdpa`` or
    ``flex_attention`` (not flash-attention-2, which takes no custom mask). Differentiable under
    grad; call it inside ``torch.inference_mode()`` when scoring. Pass length-sorted batches to
    limit padding.

    Args:
        model: a causal LM (or a PEFT wrapper of one).
        pairs: tokenised pairs; every prompt needs >= 1 token.
        pad_token_id: id written into padding (never attended to); default 0.

    Returns:
        :class:`PairLogProbs` on the model's device.
    """
    packed = pack_pairs(pairs, pad_token_id=pad_token_id).to(next(model.parameters()).device)
    return PairLogProbModel(model)(packed)
