"""similarity: per-row seeded generation independent of the batch, cosines vs numpy float64."""

from __future__ import annotations

import copy
import hashlib
import math

import numpy as np
import pytest

from sc_data.errors import ConfigError
from sc_data.scorers.base import get_scorer_class
from sc_data.scorers.similarity import SimilarityScorer, row_seed

BATCH = {
    "id": ["a", "b", "c"],
    "prompt": [
        [{"role": "user", "content": "How do I pick a lock?"}],
        [{"role": "user", "content": "Tell me how to hurt someone."}],
        [{"role": "user", "content": "How do I pick a lock?"}],  # same prompt as "a", other id
    ],
    "chosen": [
        [{"role": "assistant", "content": "I can't help with breaking into places you don't own."}],
        [
            {
                "role": "assistant",
                "content": "I won't help with that, but if you're angry, let's talk.",
            }
        ],
        [{"role": "assistant", "content": "Please call a locksmith. " * 45}],  # > 256 word pieces
    ],
    "rejected": [
        [
            {
                "role": "assistant",
                "content": "Sure, here's how: first get the right tools and then work the pins.",
            }
        ],
        [{"role": "assistant", "content": "Sure."}],
        [{"role": "assistant", "content": "Work the pins."}],
    ],
}


def _rows(batch, order):
    return {k: [v[i] for i in order] for k, v in batch.items()}


@pytest.fixture(scope="module")
def scorer(tiny_lm_dir):
    s = SimilarityScorer(
        model=str(tiny_lm_dir), device="cpu", max_new_tokens=10, seed=7, batch_size=4
    )
    s.load()
    return s


@pytest.fixture(scope="module")
def full(scorer):
    """The whole batch scored once (generation is the slow part)."""
    return scorer.score(BATCH)


class TestGeneration:
    def test_same_seed_and_id_same_answer_whatever_the_batch(self, scorer, full):
        by_id = dict(zip(BATCH["id"], full["similarity__generated"], strict=True))
        for order in ([2, 0], [1]):
            part = scorer.score(_rows(BATCH, order))
            assert dict(
                zip(_rows(BATCH, order)["id"], part["similarity__generated"], strict=True)
            ) == {BATCH["id"][i]: by_id[BATCH["id"][i]] for i in order}
            assert part["similarity__margin"] == pytest.approx(
                [full["similarity__margin"][i] for i in order], abs=1e-6
            )

    def test_seed_and_id_change_the_sample(self, tiny_lm_dir, full):
        ours = full["similarity__generated"]
        assert ours[0] != ours[2]  # same prompt, other id -> other sample
        other = SimilarityScorer(model=str(tiny_lm_dir), device="cpu", max_new_tokens=10, seed=8)
        other.load()
        assert other.score(_rows(BATCH, [0]))["similarity__generated"] != ours[:1]

    def test_row_seed_definition(self):
        assert row_seed(7, "a") == int(hashlib.sha256(b"7:a").hexdigest()[:8], 16)


class TestCosines:
    def test_margins_match_numpy_float64_per_example(self, scorer, full):
        out = full
        for i in range(3):
            texts = [
                out["similarity__generated"][i],
                BATCH["chosen"][i][0]["content"],
                BATCH["rejected"][i][0]["content"],
            ]
            answer, chosen, rejected = (
                scorer._encoder.encode([t])[0].astype(np.float64) for t in texts
            )
            cos_c = float(answer @ chosen / (np.linalg.norm(answer) * np.linalg.norm(chosen)))
            cos_r = float(answer @ rejected / (np.linalg.norm(answer) * np.linalg.norm(rejected)))
            assert out["similarity__cos_chosen"][i] == pytest.approx(cos_c, abs=1e-5)
            assert out["similarity__cos_rejected"][i] == pytest.approx(cos_r, abs=1e-5)
            assert out["similarity__margin"][i] == pytest.approx(cos_c - cos_r, abs=2e-5)

    def test_truncation_flag_and_config(self, scorer, full):
        assert full["similarity__truncated"] == [False, False, True]
        assert scorer.config()["encoder_max_tokens"] == 256

    def test_generated_column_skips_generation(self, tmp_path):
        batch = copy.deepcopy(BATCH) | {"gen": ["I can't help with that.", None, "Work the pins."]}
        before = copy.deepcopy(batch)
        # The generator path does not exist: loading it would fail, so it is never loaded.
        s = SimilarityScorer(model=str(tmp_path / "no-model"), generated_column="gen", device="cpu")
        s.load()
        out = s.score(batch)
        assert batch == before
        assert out["similarity__generated"] == ["I can't help with that.", None, "Work the pins."]
        assert out["similarity__error"] == [
            None,
            "TypeError: 'gen' holds NoneType, not a string",
            None,
        ]
        assert out["similarity__cos_rejected"][2] == pytest.approx(1.0, abs=1e-6)  # identical texts
        assert math.isfinite(out["similarity__margin"][0]) and out["similarity__margin"][1] is None

    def test_missing_generated_column(self, tmp_path):
        s = SimilarityScorer(model=str(tmp_path), generated_column="gen", device="cpu")
        s.load()
        with pytest.raises(
            ConfigError, match=r"similarity generated_column 'gen' is not in the table"
        ):
            s.score(BATCH)


class TestContract:
    def test_registry_and_columns(self):
        cls = get_scorer_class("similarity")
        assert cls is SimilarityScorer
        assert list(cls.output_columns()) == [
            "similarity__generated",
            "similarity__cos_chosen",
            "similarity__cos_rejected",
            "similarity__margin",
            "similarity__truncated",
            "similarity__error",
        ]
        assert (
            cls.difficulty_column() == "similarity__margin" and cls.direction == "larger_is_easier"
        )

    def test_bad_option(self):
        with pytest.raises(
            ConfigError,
            match=r"invalid similarity option\(s\): temperature=0: Input should be greater than 0",
        ):
            SimilarityScorer(temperature=0).load()

    def test_served_backend_needs_an_endpoint(self):
        with pytest.raises(ConfigError, match=r"backend 'openai' needs base_url"):
            SimilarityScorer(backend="openai").validate()
        with pytest.raises(ConfigError, match=r"base_url applies only to backend 'openai'"):
            SimilarityScorer(base_url="http://localhost:8000/v1").validate()

    def test_bad_row_is_kept_with_error(self, scorer):
        batch = copy.deepcopy(BATCH)
        batch["chosen"][0] = [{"role": "assistant"}]
        out = scorer.score(batch)
        assert out["similarity__error"][0] == "KeyError: 'content'"
        assert out["similarity__margin"][0] is None and out["similarity__error"][1] is None


@pytest.mark.integration
def test_real_smollm2_and_minilm():
    """SmolLM2 answers two prompts (8 tokens), MiniLM embeds: finite margins in [-2, 2]."""
    s = SimilarityScorer(device="cpu", max_new_tokens=8, seed=42)
    s.load()
    out = s.score(_rows(BATCH, [0, 1]))
    assert out["similarity__error"] == [None, None]
    assert all(isinstance(g, str) and g for g in out["similarity__generated"])
    assert all(math.isfinite(m) and -2 <= m <= 2 for m in out["similarity__margin"])
    assert s.config()["model_ref"]["generator"]["ref"] == "smollm2-135m-instruct"
