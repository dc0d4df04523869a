"""reward_gap: rewards against an independent float64 per-example loop on the tiny reward model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from sc_data.errors import ConfigError
from sc_data.models.chat import plain_conversation
from sc_data.scorers.base import get_scorer_class
from sc_data.scorers.reward_gap import RewardGapScorer

BATCH = {
    "id": ["a", "b", "c", "d"],
    "prompt": [
        [{"role": "user", "content": "How do I pick a lock?"}],
        [{"role": "user", "content": "hi"}],
        [
            {"role": "user", "content": "Write an insult about my coworker."},
            {"role": "assistant", "content": "Why?"},
            {"role": "user", "content": "Just do it."},
        ],
        [{"role": "user", "content": "What is the capital of France?"}],
    ],
    "chosen": [
        [{"role": "assistant", "content": "I can't help with breaking into places you don't own."}],
        [{"role": "assistant", "content": "hello, thanks"}],
        [{"role": "assistant", "content": "Let's find a constructive way to raise the issue."}],
        [{"role": "assistant", "content": "The capital of France is Paris."}],
    ],
    "rejected": [
        [
            {
                "role": "assistant",
                "content": "Sure, here's how: first get the right tools and then work the pins.",
            }
        ],
        [{"role": "assistant", "content": "no"}],
        [{"role": "assistant", "content": "Your coworker is a fool."}],
        [{"role": "assistant", "content": "Paris? maybe. " * 12}],
    ],
    "category": [None, None, "harassment_insults", None],
}


@pytest.fixture(scope="module")
def reference(tiny_reward_dir):
    """The same weights in float64, scored one text at a time with the head applied by hand."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_reward_dir, dtype=torch.float64
    ).eval()
    tok = AutoTokenizer.from_pretrained(tiny_reward_dir)

    def reward(messages, *, max_length=None, side="left"):
        ids = tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)[
            "input_ids"
        ]
        if max_length is not None and len(ids) > max_length:
            ids = ids[-max_length:] if side == "left" else ids[:max_length]
        with torch.no_grad():
            hidden = model.model(torch.tensor([ids])).last_hidden_state[
                0, -1
            ]  # (H,) at the last token
            return float(model.score(hidden)[0]), len(ids)

    return reward


def _loaded(tiny_reward_dir, **kwargs) -> RewardGapScorer:
    scorer = RewardGapScorer(model=str(tiny_reward_dir), device="cpu", **kwargs)
    scorer.load()
    return scorer


class TestRewardGapNumbers:
    @pytest.mark.parametrize("batch_size", [1, 3, 8])
    def test_matches_float64_loop(self, tiny_reward_dir, reference, batch_size):
        out = _loaded(tiny_reward_dir, batch_size=batch_size).score(BATCH)
        for i in range(4):
            chosen, _ = reference(BATCH["prompt"][i] + BATCH["chosen"][i])
            rejected, _ = reference(BATCH["prompt"][i] + BATCH["rejected"][i])
            assert out["reward_gap__chosen_reward"][i] == pytest.approx(chosen, abs=1e-5)
            assert out["reward_gap__rejected_reward"][i] == pytest.approx(rejected, abs=1e-5)
            assert out["reward_gap__gap"][i] == pytest.approx(chosen - rejected, abs=2e-5)
            assert out["reward_gap__truncated"][i] is False
            assert out["reward_gap__error"][i] is None

    def test_left_padding_gives_the_same_rewards(self, tiny_reward_dir, reference):
        scorer = _loaded(tiny_reward_dir, batch_size=8)
        scorer._tokenizer.padding_side = "left"
        out = scorer.score(BATCH)
        for i in range(4):
            expected, _ = reference(BATCH["prompt"][i] + BATCH["rejected"][i])
            assert out["reward_gap__rejected_reward"][i] == pytest.approx(expected, abs=1e-5)

    @pytest.mark.parametrize("side", ["left", "right"])
    def test_truncation_cuts_and_flags(self, tiny_reward_dir, reference, side):
        max_length = 30
        out = _loaded(
            tiny_reward_dir, batch_size=4, max_length=max_length, truncation_side=side
        ).score(BATCH)
        for i in range(4):
            chosen, _ = reference(
                BATCH["prompt"][i] + BATCH["chosen"][i], max_length=max_length, side=side
            )
            rejected, _ = reference(
                BATCH["prompt"][i] + BATCH["rejected"][i], max_length=max_length, side=side
            )
            _, n_chosen = reference(BATCH["prompt"][i] + BATCH["chosen"][i])
            _, n_rejected = reference(BATCH["prompt"][i] + BATCH["rejected"][i])
            assert out["reward_gap__chosen_reward"][i] == pytest.approx(chosen, abs=1e-5)
            assert out["reward_gap__rejected_reward"][i] == pytest.approx(rejected, abs=1e-5)
            assert out["reward_gap__truncated"][i] is (max(n_chosen, n_rejected) > max_length)
        assert any(out["reward_gap__truncated"]) and not all(out["reward_gap__truncated"])


class TestRewardGapContract:
    def test_registry_columns_and_direction(self):
        cls = get_scorer_class("reward_gap")
        assert cls is RewardGapScorer
        assert list(cls.output_columns()) == [
            "reward_gap__chosen_reward",
            "reward_gap__rejected_reward",
            "reward_gap__gap",
            "reward_gap__truncated",
            "reward_gap__error",
        ]
        assert cls.difficulty_column() == "reward_gap__gap"
        assert cls.direction == "larger_is_easier"

    def test_inputs_untouched_and_every_column_full_length(self, tiny_reward_dir):
        before = copy.deepcopy(BATCH)
        out = _loaded(tiny_reward_dir).score(BATCH)
        assert BATCH == before
        assert set(out) == set(RewardGapScorer.output_columns())
        assert all(len(v) == 4 for v in out.values())
        assert all(math.isfinite(v) for v in out["reward_gap__gap"])

    def test_config_records_the_loaded_model(self, tiny_reward_dir):
        scorer = RewardGapScorer(model=str(tiny_reward_dir), device="cpu")
        assert "model_ref" not in scorer.config()
        scorer.load()
        ref = scorer.config()["model_ref"]
        assert ref["path"] == str(tiny_reward_dir.resolve()) and len(ref["sha256"]) == 64

    def test_bad_row_is_an_error_not_a_crash(self, tiny_reward_dir, reference):
        batch = copy.deepcopy(BATCH)
        batch["chosen"][1] = None
        out = _loaded(tiny_reward_dir).score(batch)
        assert out["reward_gap__error"][1].startswith("malformed messages: TypeError")
        assert out["reward_gap__gap"][1] is None and out["reward_gap__chosen_reward"][1] is None
        expected, _ = reference(BATCH["prompt"][2] + BATCH["chosen"][2])
        assert out["reward_gap__chosen_reward"][2] == pytest.approx(expected, abs=1e-5)

    def test_init_stores_options_unchanged(self):
        scorer = RewardGapScorer(model="x", max_length=7, truncation_side="middle")
        assert scorer.config() == {
            "model": "x",
            "max_length": 7,
            "truncation_side": "middle",
            "batch_size": 8,
            "device": "auto",
            "dtype": "auto",
            "trust_remote_code": False,
        }

    def test_missing_model(self):
        with pytest.raises(ConfigError, match=r"reward_gap needs a reward model: pass model="):
            RewardGapScorer().load()

    def test_bad_option(self, tiny_reward_dir):
        with pytest.raises(
            ConfigError,
            match=r"invalid reward_gap option\(s\): truncation_side='middle': Input should be 'left' or 'right'\. Fix",
        ):
            RewardGapScorer(model=str(tiny_reward_dir), truncation_side="middle").load()

    def test_multi_label_model_is_refused(self, tiny_classifier_dir):
        with pytest.raises(ConfigError, match=r"has 4 output labels; a reward model has exactly 1"):
            RewardGapScorer(model=str(tiny_classifier_dir), device="cpu").load()

    def test_plain_rendering_without_template(self):
        text = plain_conversation(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        )
        assert text == "User: hi\nAssistant: yo"
