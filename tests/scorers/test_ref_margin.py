"""ref_margin scorer: numbers vs an independent float64 per-example loop, options, real SmolLM2."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from sc_data.errors import ConfigError
from sc_data.scorers.ref_margin import RefMarginScorer
from tests.scorers.conftest import make_pairs


def _independent(model_dir: Path, batch: dict) -> list[tuple[float, float, int, int]]:
    """Per row: (chosen sum, rejected sum, chosen len, rejected len) in float64, from rendered text."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float64).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    end = tok.convert_tokens_to_ids("<|im_end|>")
    out = []
    for prompt, chosen, rejected in zip(batch["prompt"], batch["chosen"], batch["rejected"], strict=True):
        gen = tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True), add_special_tokens=False).input_ids
        row = []
        for answer in (chosen, rejected):
            full = tok(tok.apply_chat_template(prompt + answer, tokenize=False), add_special_tokens=False).input_ids
            ans = full[len(gen) : full.index(end, len(gen)) + 1]
            with torch.no_grad():
                logps = torch.log_softmax(model(torch.tensor([gen + ans])).logits[0].double(), -1)
            row.append((sum(float(logps[len(gen) + t - 1, a]) for t, a in enumerate(ans)), len(ans)))
        out.append((row[0][0], row[1][0], row[0][1], row[1][1]))
    return out


@pytest.fixture(scope="module")
def scorer(tiny_lm_dir: Path):
    s = RefMarginScorer(model=str(tiny_lm_dir), device="cpu", batch_tokens=200)
    s.load()
    yield s
    s.unload()


class TestRefMargin:
    def test_matches_independent_float64_loop(self, scorer: RefMarginScorer, tiny_lm_dir: Path) -> None:
        batch = make_pairs(7).to_pydict()
        got = scorer.score(batch)
        expected = _independent(tiny_lm_dir, batch)
        for i, (c, r, lc, lr) in enumerate(expected):
            assert got["ref_margin__chosen_tokens"][i] == lc and got["ref_margin__rejected_tokens"][i] == lr
            assert got["ref_margin__chosen_logp"][i] == pytest.approx(c, abs=1e-3)
            assert got["ref_margin__rejected_logp"][i] == pytest.approx(r, abs=1e-3)
            assert got["ref_margin__margin"][i] == pytest.approx(c - r, abs=2e-3)
            assert got["ref_margin__margin_mean"][i] == pytest.approx(c / lc - r / lr, abs=1e-4)
            assert got["ref_margin__chosen_logp_mean"][i] == pytest.approx(c / lc, abs=1e-4)
            assert got["ref_margin__flags"][i] is None and got["ref_margin__error"][i] is None

    def test_token_budget_does_not_change_results(self, scorer: RefMarginScorer, tiny_lm_dir: Path) -> None:
        batch = make_pairs(5).to_pydict()
        big = RefMarginScorer(model=str(tiny_lm_dir), device="cpu", batch_tokens=100_000)
        big.load()
        a, b = scorer.score(batch), big.score(batch)
        assert scorer._chunks(list(range(5)), [100] * 5) == [[0, 1], [2, 3], [4]]  # 200-token budget
        for col in a:
            if a[col][0] is None or isinstance(a[col][0], str):
                assert a[col] == b[col]
            else:
                assert a[col] == pytest.approx(b[col], abs=1e-4)

    def test_truncation_flags(self, tiny_lm_dir: Path) -> None:
        s = RefMarginScorer(model=str(tiny_lm_dir), device="cpu", max_length=16, max_prompt_length=8)
        s.load()
        out = s.score(make_pairs(2).to_pydict())
        assert out["ref_margin__flags"][0] == "prompt_truncated,chosen_truncated,rejected_truncated"
        assert out["ref_margin__chosen_tokens"] == [8, 8]
        assert s.config()["template"]["truncation"]["max_length"] == 16

    def test_config_records_model_template_dtype(self, scorer: RefMarginScorer) -> None:
        cfg = scorer.config()
        assert len(cfg["model_ref"]["sha256"]) == 64
        assert cfg["torch_dtype"] == "float32" and cfg["template"]["template_source"] == "tokenizer"
        assert RefMarginScorer.difficulty_column() == "ref_margin__margin_mean"
        assert RefMarginScorer.direction == "larger_is_easier"

    @pytest.mark.parametrize(
        ("options", "match"),
        [
            ({"device": "tpu"}, r"invalid ref_margin option\(s\): device='tpu': Input should be 'auto', 'cpu', 'cuda' or 'mps'\. Fix"),
            ({"batch_tokens": 0}, r"batch_tokens=0: Input should be greater than or equal to 1"),
            ({"max_length": 64, "max_prompt_length": 64}, r"max_prompt_length < max_length"),
        ],
    )
    def test_invalid_options(self, options: dict, match: str) -> None:
        with pytest.raises(ConfigError, match=match):
            RefMarginScorer(**options).validate()


@pytest.mark.integration
def test_smollm2_prefers_refusals(smollm2_pairs) -> None:
    """On the real SmolLM2-135M-Instruct, refusals get a higher per-token log-prob on average."""
    s = RefMarginScorer(device="cpu")
    s.load()
    out = s.score(smollm2_pairs)
    margins = out["ref_margin__margin_mean"]
    assert all(e is None for e in out["ref_margin__error"])
    assert all(m is not None and math.isfinite(m) for m in margins)
    assert sum(margins) / len(margins) > 0
    assert s.config()["model_ref"]["gguf_file"] == "SmolLM2-135M-Instruct.Q4_1.gguf"
