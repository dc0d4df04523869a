"""Independent reference implementations the suite checks the product code against.

Each is the plain, obviously-correct version of something the library does fast: built from the
definitions in docs/ARCHITECTURE.md, with dicts, loops and float64 where the product uses columnar
or packed paths. Benchmarks use them as the naive baselines.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Sequence
from typing import Any

import torch

from sc_data.models.logprob import PairLogProbs, TokenizedPair


def _normalise(text: str) -> str:
    return unicodedata.normalize("NFC", text).strip()


def _normalise_messages(messages: Sequence[dict[str, str]]) -> list[dict[str, str]]:
    return [{"content": _normalise(m["content"]), "role": m["role"]} for m in messages]


def pair_id(
    prompt: Sequence[dict[str, str]],
    chosen: Sequence[dict[str, str]],
    rejected: Sequence[dict[str, str]],
) -> str:
    """Content id of a pair: first 16 hex of sha256 of the canonical JSON of the normalised texts.

    Canonical JSON = sorted keys, no spaces, UTF-8; texts NFC-normalised and stripped, so a
    re-encoded or re-indented copy of the same pair gets the same id.
    """
    payload = {
        "chosen": _normalise_messages(chosen),
        "prompt": _normalise_messages(prompt),
        "rejected": _normalise_messages(rejected),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def reference_pair_logprobs(model: Any, pairs: Sequence[TokenizedPair]) -> PairLogProbs:
    """The plain, obviously-correct version: one full forward pass per (prompt + answer), no batching.

    Tests run it on ``model.double()`` as the ground truth for ``pair_logprobs``; the benchmark
    uses it as the "two passes" baseline.
    """
    device = next(model.parameters()).device
    dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    sums: dict[str, list[torch.Tensor]] = {"chosen": [], "rejected": []}
    counts: dict[str, list[int]] = {"chosen": [], "rejected": []}
    for pair in pairs:
        for name, answer in (("chosen", pair.chosen_ids), ("rejected", pair.rejected_ids)):
            seq = torch.tensor([pair.prompt_ids + answer], device=device)
            logits = model(input_ids=seq, use_cache=False).logits[0].to(dtype)  # (T, V)
            logps = torch.log_softmax(logits, dim=-1)
            start = len(pair.prompt_ids)
            total = torch.zeros((), dtype=dtype, device=device)
            for t, token in enumerate(answer):
                total = total + logps[start + t - 1, token]
            sums[name].append(total)
            counts[name].append(len(answer))
    return PairLogProbs(
        torch.stack(sums["chosen"]),
        torch.stack(sums["rejected"]),
        torch.tensor(counts["chosen"], dtype=torch.long, device=device),
        torch.tensor(counts["rejected"], dtype=torch.long, device=device),
    )
