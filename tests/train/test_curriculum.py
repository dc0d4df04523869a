"""Competence values, stage construction and the stateless samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sc_data.train.curriculum import (
    SCHEDULES,
    StageSampler,
    build_stages,
    competence,
    difficulty_ranks,
    rank_slice,
)


class TestCompetence:
    def test_sqrt_known_points(self) -> None:
        assert competence(0, 100) == pytest.approx(0.01, abs=1e-12)
        assert competence(100, 100) == pytest.approx(1.0, abs=1e-12)
        assert competence(50, 100) == pytest.approx(math.sqrt((1 - 0.01**2) * 0.5 + 0.01**2), abs=1e-12)
        assert competence(250, 100) == 1.0

    def test_linear_known_points(self) -> None:
        assert competence(0, 100, kind="linear") == pytest.approx(0.01)
        assert competence(100, 100, kind="linear") == pytest.approx(1.0)
        assert competence(50, 100, kind="linear") == pytest.approx(0.5 * 0.99 + 0.01)
        assert competence(500, 100, kind="linear") == 1.0


class TestDifficultyRanks:
    def test_ties_broken_by_id_and_easiest_is_zero(self) -> None:
        d = difficulty_ranks([0.5, 0.1, 0.5, 0.9], ["b", "z", "a", "c"])
        np.testing.assert_allclose(d, [0.5, 0.0, 0.25, 0.75])


def _stages(schedule: str, **kw):
    tiers = [0] * 10 + [1] * 7 + [2] * 5
    diff = list(np.linspace(0, 1, 22))
    ids = [f"id{i:02d}" for i in range(22)]
    return build_stages(schedule, tiers=tiers, difficulty=diff, ids=ids, effective_batch=4, epochs_per_stage=2, **kw)


class TestBuildStages:
    @pytest.mark.parametrize("schedule", SCHEDULES)
    def test_shapes(self, schedule: str) -> None:
        stages = _stages(schedule)
        multi = schedule in ("curri_dpo", "staged_competence")
        assert len(stages) == (3 if multi else 1)
        assert [s.ref_update for s in stages] == [multi] * len(stages)
        assert sorted(np.concatenate([s.rows for s in stages]).tolist()) == list(range(22))
        # steps = epochs × ceil(N / B), the same rule for every schedule
        assert [s.steps for s in stages] == ([2 * 3, 2 * 2, 2 * 2] if multi else [2 * 6])

    def test_max_steps_caps_steps_not_horizon(self) -> None:
        stages = _stages("staged_competence", max_steps_per_stage=1, horizon=0.5)
        assert [s.steps for s in stages] == [1, 1, 1]
        assert [s.horizon_steps for s in stages] == [3.0, 2.0, 2.0]


class TestSampler:
    def test_competence_pool_grows_and_never_draws_outside(self) -> None:
        stage = build_stages("sqrt_pacing", tiers=[0] * 100, difficulty=list(np.random.default_rng(0).random(100)),
                             ids=[str(i) for i in range(100)], effective_batch=8, epochs_per_stage=5)[0]
        sampler = StageSampler(stage, effective_batch=8, seed=1)
        assert stage.horizon_steps == 5 * 13
        sizes = []
        for t in range(stage.steps):
            c = sampler.competence(t)
            assert c == pytest.approx(competence(t + 1, 65))
            pos = sampler.positions(t)
            assert np.all(stage.d[pos] <= c + 1e-12)
            expected = min(100, math.floor(c * 100 + 1e-9) + 1)
            assert sampler.pool_size(t) == expected
            sizes.append(sampler.pool_size(t))
        # step 0 is the first optimizer step: c(1/65) = 0.1244 admits d = 0.00 .. 0.12
        assert sizes[0] == 13 and sizes[-1] == 100 and sizes == sorted(sizes)

    def test_last_step_of_a_stage_reaches_full_competence(self) -> None:
        """With horizon 1.0 every pair of a tier is eligible by the stage's last step."""
        stage = build_stages("staged_competence", tiers=[0] * 1000, difficulty=list(np.random.default_rng(1).random(1000)),
                             ids=[str(i) for i in range(1000)], effective_batch=32, epochs_per_stage=5)[0]
        sampler = StageSampler(stage, effective_batch=32, seed=0)
        assert stage.steps == stage.horizon_steps == 5 * 32
        assert sampler.competence(stage.steps - 1) == pytest.approx(1.0)
        assert sampler.pool_size(stage.steps - 1) == 1000

    def test_deterministic_and_seed_dependent(self) -> None:
        stage = _stages("staged_competence")[0]
        a = StageSampler(stage, effective_batch=4, seed=7)
        b = StageSampler(stage, effective_batch=4, seed=7)
        c = StageSampler(stage, effective_batch=4, seed=8)
        assert all(np.array_equal(a.rows(t), b.rows(t)) for t in range(6))
        assert any(not np.array_equal(a.rows(t), c.rows(t)) for t in range(1, 6))

    def test_shuffled_epochs_cover_every_row_once(self) -> None:
        stage = _stages("shuffled")[0]
        s = StageSampler(stage, effective_batch=4, seed=0)
        drawn = np.concatenate([s.rows(t) for t in range(11)])  # 44 = 2 epochs of 22
        assert sorted(drawn[:22].tolist()) == list(range(22))
        assert sorted(drawn[22:].tolist()) == list(range(22))
        assert not np.array_equal(drawn[:22], drawn[22:])

    def test_sequential_is_easy_to_hard_each_epoch(self) -> None:
        stage = _stages("sequential")[0]
        s = StageSampler(stage, effective_batch=4, seed=0)
        drawn = np.concatenate([s.rows(t) for t in range(11)])
        assert drawn[:22].tolist() == list(range(22)) and drawn[22:].tolist() == list(range(22))

    def test_rank_slices_partition_the_global_batch(self) -> None:
        batch = np.arange(10)
        parts = [rank_slice(batch, r, 3) for r in range(3)]
        assert np.concatenate(parts).tolist() == list(range(10))
