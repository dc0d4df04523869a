"""Curriculum schedules: which rows each optimizer step trains on, and when the reference moves.

Five schedules (the Staged-Competence paper's comparison, arXiv 2605.26315):

============== ======== ================ =============================
schedule       stages   inside a stage   reference update after stage
============== ======== ================ =============================
shuffled       1 (all)  shuffled epochs  no
sqrt_pacing    1 (all)  competence       no
sequential     1 (all)  easy → hard      no
curri_dpo      K tiers  shuffled epochs  yes
staged_compet. K tiers  competence       yes
============== ======== ================ =============================

Steps per stage = ``epochs_per_stage × ceil(|stage| / effective_batch)`` for every schedule, so
all schedules take the same number of optimizer steps on the same data; ``max_steps_per_stage``
caps it for short runs (the competence horizon T is not changed by the cap).

Competence (Platanios et al. 2019): ``c(t) = sqrt((1 − c0²)·t/T + c0²)`` or linear
``min(1, t·(1 − c0)/T + c0)``, with t = optimizer steps within the stage counting the one being
taken (the stage's step index + 1) and ``T = horizon × epochs_per_stage × ceil(|stage| /
effective_batch)``. Counting the current step makes the last step of a horizon-1.0 stage reach
c = 1, so the hardest pairs of a tier are eligible late but never left out. Item i of a stage
has ``d_i = rank_i / N`` (0-based rank by difficulty, ties by id), and each step samples its
effective batch uniformly *with replacement* from ``{i : d_i ≤ c(t)}``.

Samplers are stateless: the batch of step t is a pure function of (seed, stage, t), so
resuming from a checkpoint replays exactly the same batches, and every DDP rank draws the same
global batch and takes its own disjoint slice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np

Schedule = Literal["shuffled", "sqrt_pacing", "sequential", "curri_dpo", "staged_competence"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
CompetenceKind = Literal["sqrt", "linear"]
Order = Literal["shuffled", "sequential", "competence"]

_ORDER: dict[str, Order] = {
    "shuffled": "shuffled",
    "sqrt_pacing": "competence",
    "sequential": "sequential",
    "curri_dpo": "shuffled",
    "staged_competence": "competence",
}
#: Schedules with one stage per tier and a reference update after each.
MULTI_STAGE: tuple[str, ...] = ("curri_dpo", "staged_competence")


def competence(t: float, horizon_steps: float, *, kind: CompetenceKind = "sqrt", c0: float = 0.01) -> float:
    """Competence c(t) in [c0, 1] after ``t`` optimizer steps of a stage with horizon ``T``."""
    if horizon_steps <= 0:
        return 1.0
    if kind == "sqrt":
        return min(1.0, math.sqrt((1.0 - c0 * c0) * t / horizon_steps + c0 * c0))
    return min(1.0, t * (1.0 - c0) / horizon_steps + c0)


def difficulty_ranks(difficulty: Sequence[float], ids: Sequence[str]) -> np.ndarray:
    """``d_i = rank_i / N`` with 0-based ranks by (difficulty, id): the easiest item has d = 0."""
    n = len(difficulty)
    order = sorted(range(n), key=lambda i: (float(difficulty[i]), str(ids[i])))
    d = np.empty(n, dtype=np.float64)
    d[order] = np.arange(n, dtype=np.float64) / max(n, 1)
    return d


@dataclass(frozen=True)
class Stage:
    """One curriculum stage: the rows it trains on and whether the reference moves after it.

    Attributes:
        index: 0-based stage number.
        rows: row indices into the training table, (N,).
        d: difficulty ranks of those rows in [0, 1), (N,).
        order: how batches are drawn (shuffled epochs, easy→hard, competence sampling).
        steps: optimizer steps the stage runs.
        horizon_steps: T of the competence function.
        ref_update: whether π_ref ← π_θ at the end of the stage.
    """

    index: int
    rows: np.ndarray
    d: np.ndarray
    order: Order
    steps: int
    horizon_steps: float
    ref_update: bool


def build_stages(
    schedule: Schedule,
    *,
    tiers: Sequence[int],
    difficulty: Sequence[float],
    ids: Sequence[str],
    effective_batch: int,
    epochs_per_stage: float,
    horizon: float = 1.0,
    max_steps_per_stage: int | None = None,
) -> list[Stage]:
    """Split the training rows into the schedule's stages (one per tier, easiest first, or one).

    Args:
        schedule: one of :data:`SCHEDULES`.
        tiers, difficulty, ids: per training row, from the staged dataset.
        effective_batch: micro batch × gradient accumulation × world size.
        epochs_per_stage: passes over each stage (the paper: 5).
        horizon: competence horizon as a fraction of the stage's steps (default 1.0).
        max_steps_per_stage: cap on optimizer steps per stage, for short runs.

    Returns:
        The stages in training order; a multi-stage schedule skips empty tiers.
    """
    tiers_arr = np.asarray(tiers, dtype=np.int64)
    if schedule in MULTI_STAGE:
        groups = [np.flatnonzero(tiers_arr == k) for k in sorted(set(tiers_arr.tolist()))]
    else:
        groups = [np.arange(len(tiers_arr))]
    stages = []
    for rows in groups:
        d = difficulty_ranks([difficulty[i] for i in rows], [ids[i] for i in rows])
        per_epoch = math.ceil(len(rows) / effective_batch)
        steps = max(1, math.ceil(epochs_per_stage * per_epoch))
        if max_steps_per_stage is not None:
            steps = min(steps, max_steps_per_stage)
        stages.append(
            Stage(
                index=len(stages),
                rows=rows,
                d=d,
                order=_ORDER[schedule],
                steps=steps,
                horizon_steps=horizon * epochs_per_stage * per_epoch,
                ref_update=schedule in MULTI_STAGE,
            )
        )
    return stages


class StageSampler:
    """The global batch of every optimizer step of one stage, a pure function of (seed, stage, step).

    Args:
        stage: the stage to sample from.
        effective_batch: rows per optimizer step, over all ranks and accumulation steps.
        seed: run seed.
        competence_kind: ``sqrt`` (default) or ``linear``.
        c0: initial competence (default 0.01).
        zero_based: evaluate c at the step's 0-based index, as the reference code does (the
            hardest pairs of a horizon-1.0 stage are then never eligible); default: the step
            being taken, so the last step reaches c = 1.
    """

    def __init__(
        self,
        stage: Stage,
        *,
        effective_batch: int,
        seed: int,
        competence_kind: CompetenceKind = "sqrt",
        c0: float = 0.01,
        zero_based: bool = False,
    ) -> None:
        self.stage = stage
        self.effective_batch = effective_batch
        self.seed = seed
        self.competence_kind = competence_kind
        self.c0 = c0
        self.zero_based = zero_based
        self._by_difficulty = np.argsort(stage.d, kind="stable")  # positions, easiest first

    def competence(self, step: int) -> float:
        """c(t) for the stage's 0-based step index ``step``: t = step + 1, or step when ``zero_based`` (1.0 for non-competence orders)."""
        if self.stage.order != "competence":
            return 1.0
        t = step if self.zero_based else step + 1
        return competence(t, self.stage.horizon_steps, kind=self.competence_kind, c0=self.c0)

    def pool_size(self, step: int) -> int:
        """How many rows are eligible at ``step``: ``|{i : d_i ≤ c(t)}|`` (≥ 1)."""
        n = len(self.stage.rows)
        if self.stage.order != "competence":
            return n
        c = self.competence(step)
        return int(np.count_nonzero(self.stage.d <= c + 1e-12)) or 1

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if self.stage.order == "sequential":
            return self._by_difficulty
        rng = np.random.default_rng([self.seed, self.stage.index, epoch, 0x5348])
        return rng.permutation(len(self.stage.rows))

    def positions(self, step: int) -> np.ndarray:
        """Positions within the stage (into ``stage.rows``) of step ``step``'s global batch, (B,)."""
        b, n = self.effective_batch, len(self.stage.rows)
        if self.stage.order == "competence":
            rng = np.random.default_rng([self.seed, self.stage.index, step, 0x4350])
            pool = self._by_difficulty[: self.pool_size(step)]
            return pool[rng.integers(0, len(pool), size=b)]
        flat = np.arange(step * b, (step + 1) * b)
        out = np.empty(b, dtype=np.int64)
        for epoch in np.unique(flat // n):
            sel = flat // n == epoch
            out[sel] = self._epoch_order(int(epoch))[flat[sel] % n]
        return out

    def rows(self, step: int) -> np.ndarray:
        """Row indices into the training table of step ``step``'s global batch, (B,)."""
        return self.stage.rows[self.positions(step)]


def rank_slice(global_batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This rank's disjoint, contiguous share of a global batch (sizes differ by at most one)."""
    return np.array_split(global_batch, world_size)[rank]
