"""Training data: a staged dataset folder (or Hub ORG/NAME) → tables, tokenised pairs, log-probs.

Tokenisation and log-probs go through the shared core (:mod:`sc_data.models.logprob`), so the trainer,
the ``ref_margin`` scorer and evaluation split prompt/answer and truncate identically, and the
stored reference log-probs of the scorer can stand in for stage 0's reference pass.

The staged folder is read through :mod:`sc_data.stage.folder`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from sc_data.errors import InputError
from sc_data.stage.folder import StagedData, read_staged

STORED_CHOSEN = "ref_margin__chosen_logp"
STORED_REJECTED = "ref_margin__rejected_logp"


def load_staged(ref: str | Path, *, verify: bool = True) -> StagedData:
    """Read a staged dataset folder, or pull a Hub dataset ``ORG/NAME[@REV]`` first.

    Args:
        ref: local folder or Hub reference.
        verify: check shards against the manifest (:func:`sc_data.stage.folder.verify`) before reading.

    Raises:
        InputError: not a staged folder, or no training tiers.
        VerifyError: the folder does not match its manifest.
    """
    from sc_data.hub import resolve_dataset

    return read_staged(resolve_dataset(ref), verify_files=verify)


def curriculum_columns(train: pa.Table) -> tuple[list[str], list[float], list[int]]:
    """The training rows' ids, difficulties and tiers, which every schedule needs.

    Raises:
        InputError: a column is missing (the table was not written by ``sc-data stage``).
    """
    for name in ("id", "difficulty", "tier"):
        if name not in train.column_names:
            raise InputError(f"the staged training rows have no {name!r} column; re-run `sc-data stage` to add it")
    return [str(x) for x in train.column("id").to_pylist()], train.column("difficulty").to_pylist(), train.column("tier").to_pylist()


def messages(table: pa.Table, column: str) -> list[list[dict[str, str]]]:
    """A message-list column as Python lists of ``{"role", "content"}`` dicts."""
    return table.column(column).to_pylist()


def categories_of(table: pa.Table) -> list[list[str]]:
    """Each row's categories (``categories`` list, else the ``category`` column, else none)."""
    if "categories" in table.column_names:
        return [list(c or []) for c in table.column("categories").to_pylist()]
    if "category" in table.column_names:
        return [[c] if c else [] for c in table.column("category").to_pylist()]
    return [[] for _ in range(len(table))]


def tokenize_table(pair_tokenizer: Any, table: pa.Table) -> list[Any]:
    """Tokenise every row with the shared core's ``PairTokenizer`` (one TokenizedPair per row)."""
    prompts, chosen, rejected = (messages(table, c) for c in ("prompt", "chosen", "rejected"))
    return [pair_tokenizer(p, c, r) for p, c, r in zip(prompts, chosen, rejected, strict=True)]


def pair_length(pair: Any) -> int:
    """Tokens a pair costs in a forward pass (prompt once, both answers)."""
    return len(pair.prompt_ids) + len(pair.chosen_ids) + len(pair.rejected_ids)


def length_grouped(indices: np.ndarray, pairs: Sequence[Any], micro_batch: int) -> list[np.ndarray]:
    """Split ``indices`` into micro-batches of similar length, so padding stays small.

    The loss is a sum over the whole optimizer step divided by the effective batch, so the
    order rows are grouped in changes nothing but the padding.
    """
    order = sorted(range(len(indices)), key=lambda i: (pair_length(pairs[int(indices[i])]), i))
    ordered = np.asarray(indices)[order]
    return [ordered[i : i + micro_batch] for i in range(0, len(ordered), micro_batch)]


@dataclass
class LogProbTable:
    """Summed answer log-probs and lengths per row of one table, (N,) each, float32 / int64."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    chosen_len: torch.Tensor
    rejected_len: torch.Tensor


@torch.no_grad()
def compute_logprobs(
    model: Any, pairs: Sequence[Any], indices: np.ndarray, *, micro_batch: int, pad_token_id: int | None
) -> LogProbTable:
    """Log-probs of ``pairs[indices]`` under ``model`` (no grad), batched by length."""
    from sc_data.models.logprob import pair_logprobs

    n = len(indices)
    out = LogProbTable(torch.zeros(n), torch.zeros(n), torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long))
    position = {int(row): i for i, row in enumerate(indices)}
    for group in length_grouped(np.asarray(indices), pairs, micro_batch):
        lp = pair_logprobs(model, [pairs[int(i)] for i in group], pad_token_id=pad_token_id)
        where = torch.tensor([position[int(i)] for i in group])
        out.chosen[where] = lp.chosen_sum.float().cpu()
        out.rejected[where] = lp.rejected_sum.float().cpu()
        out.chosen_len[where] = torch.as_tensor(lp.chosen_len).long().cpu()
        out.rejected_len[where] = torch.as_tensor(lp.rejected_len).long().cpu()
    return out


@dataclass
class StoredRefLogProbs:
    """The ``ref_margin`` scorer's stored log-probs, or why they cannot stand in for a live pass.

    Attributes:
        chosen / rejected: (N,) float64 summed log-probs aligned with ``data.train``, or None.
        reason: why they were accepted or refused (logged, and recorded in ``run_info.json``).
    """

    chosen: np.ndarray | None
    rejected: np.ndarray | None
    reason: str

    @property
    def usable(self) -> bool:
        return self.chosen is not None and self.rejected is not None


def _refused(reason: str) -> StoredRefLogProbs:
    return StoredRefLogProbs(None, None, reason)


def stored_ref_logprobs(data: StagedData, *, model_sha256: str | None, template: dict[str, Any], forward: str) -> StoredRefLogProbs:
    """The ``ref_margin`` scorer's stored log-probs of the training rows, if they fit this run.

    The manifest records under ``scorers.ref_margin`` the scorer's ``config()``: ``model_ref``
    (with the weights' ``sha256``), ``template`` (``PairTokenizer.describe()``: template, answer
    rule, truncation, tokenizer identity) and ``torch_dtype``. The stored values are reused only
    when all three equal this run's exactly, because any difference in weights, tokens or
    precision changes the log-probs; the caller still checks them against a live pass.

    Args:
        data: the staged dataset (manifest and training rows).
        model_sha256: the training model's ``ModelRef.sha256`` (None: unknown, never reused).
        template: this run's ``PairTokenizer.describe()``.
        forward: how this run's reference forward runs (:func:`sc_data.models.logprob.forward_dtype`).

    Returns:
        :class:`StoredRefLogProbs`; ``usable`` is False with the reason when they do not fit.
    """
    if STORED_CHOSEN not in data.train.column_names or STORED_REJECTED not in data.train.column_names:
        return _refused(f"the staged training rows have no {STORED_CHOSEN} / {STORED_REJECTED} columns")
    recorded = (data.manifest.get("scorers") or {}).get("ref_margin")
    if not isinstance(recorded, dict):
        return _refused("the manifest records no scorers.ref_margin configuration")
    model_ref = recorded.get("model_ref")
    recorded_sha = model_ref.get("sha256") if isinstance(model_ref, dict) else None
    if model_sha256 is None or recorded_sha != model_sha256:
        return _refused(f"reference model sha256 {model_sha256} differs from the scorer's {recorded_sha}")
    if recorded.get("template") != template:
        return _refused(f"template / tokenizer / truncation differ from the scorer's: {_template_diff(recorded.get('template'), template)}")
    if str(recorded.get("torch_dtype")) != forward:
        return _refused(f"the reference forward runs in {forward}, the scorer's ran in {recorded.get('torch_dtype')}")
    chosen = np.asarray(data.train.column(STORED_CHOSEN).to_pylist(), dtype=np.float64)
    rejected = np.asarray(data.train.column(STORED_REJECTED).to_pylist(), dtype=np.float64)
    missing = int((~np.isfinite(chosen) | ~np.isfinite(rejected)).sum())
    if missing:
        return _refused(f"{missing} training row(s) have no finite stored log-probs")
    return StoredRefLogProbs(chosen, rejected, "model sha256, template and dtype match the scorer's")


def _template_diff(recorded: Any, current: dict[str, Any]) -> str:
    """Where two ``describe()`` dicts differ (first three), e.g. ``truncation.max_length: scorer 64, this run 96``."""
    if not isinstance(recorded, dict):
        return f"recorded {recorded!r}"
    diffs = []
    for key in sorted(set(recorded) | set(current)):
        a, b = recorded.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{key}.{k}: scorer {a.get(k)!r}, this run {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            diffs.append(f"{key}: scorer {a!r}, this run {b!r}")
    return "; ".join(diffs[:3])
