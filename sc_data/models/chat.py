"""Conversations as classifiers and rubric judges read them, and batched classifier forwards.

Shared by the ``reward_gap`` scorer and the ``judge`` scorer's classifier backend: a conversation
is rendered with the tokenizer's chat template when it has one (the template adds its own special
tokens), else one line per turn (``User: ...``); long texts are cut on the tokenizer's
``truncation_side``; rows run length-sorted in padded batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Message = dict[str, str]

_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


def plain_conversation(messages: Sequence[Message]) -> str:
    """One line per turn, ``User: ...`` / ``Assistant: ...``: the rendering without a chat template."""
    return "\n".join(
        f"{_ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages
    )


def render_conversation(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, bool]:
    """Render ``messages`` for a classifier.

    Returns:
        (text, add_special_tokens): the chat-templated text (which already holds its special
        tokens, so none are added) or the plain rendering (tokenised with the special tokens).
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False), False
    return plain_conversation(messages), True


def encode_conversations(
    tokenizer: Any, conversations: Sequence[Sequence[Message]], *, max_length: int
) -> list[tuple[list[int], bool]]:
    """Token ids of each conversation, cut to ``max_length`` on ``tokenizer.truncation_side``.

    Returns:
        One (ids, truncated) per conversation.
    """
    out = []
    for messages in conversations:
        text, add_special = render_conversation(tokenizer, messages)
        full = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        if len(full) <= max_length:
            out.append((full, False))
        else:
            cut = tokenizer(
                text, add_special_tokens=add_special, truncation=True, max_length=max_length
            )
            out.append((cut["input_ids"], True))
    return out


def classifier_logits(
    model: Any, tokenizer: Any, ids: Sequence[list[int]], *, batch_size: int
) -> list[Any]:
    """Run a sequence classifier over token-id lists in padded batches.

    Rows are sorted by length so a batch holds similar lengths (less padding). With left padding,
    position ids are passed explicitly so a padded row sees the same positions as alone.

    Returns:
        One float32 CPU tensor of shape (num_labels,) per row, in input order.
    """
    import torch

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[Any] = [None] * len(ids)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
        kwargs = {
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
        }
        if tokenizer.padding_side == "left":
            kwargs["position_ids"] = (kwargs["attention_mask"].cumsum(-1) - 1).clamp(
                min=0
            )  # (B, T)
        with torch.inference_mode():
            logits = model(**kwargs).logits.float().cpu()  # (B, num_labels)
        for row, i in enumerate(chunk):
            out[i] = logits[row]
    return out
