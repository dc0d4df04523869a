"""The probe judge: labelled answers, the probe's arithmetic against scikit-learn, save/load, the backend, the CLI."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sc_data.errors import ConfigError, InputError
from sc_data.io import write_parquet
from sc_data.scorers.judge import JudgeScorer
from sc_data.scorers.labelled import read_labelled
from sc_data.scorers.probe import (
    INFO_FILE,
    WEIGHTS_FILE,
    LabelledAnswers,
    Probe,
    ProbeRecipe,
    cross_validate,
    fit_probe,
)
from tests.conftest import REPO_ROOT
from tests.scorers.conftest import make_pairs
from tests.scorers.test_score_runner import SC_DATA, _env

EXAMPLES = REPO_ROOT / "examples" / "pairs.jsonl"


def _synthetic(n: int = 240, d: int = 6, seed: int = 0) -> tuple[np.ndarray, LabelledAnswers]:
    """Features where dimension 0 drives harm and dimension 1 its severity; some severities missing."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    unsafe = x[:, 0] + 0.3 * rng.normal(size=n) > 0
    severity = np.where(unsafe, np.clip(np.digitize(x[:, 1], [-0.5, 0.5]) + 1, 1, 3), 0).astype(float)
    severity[::7] = np.nan  # a source that only says safe / unsafe
    labels = LabelledAnswers(
        [[{"role": "user", "content": f"q{i // 2}"}] for i in range(n)], [[{"role": "assistant", "content": f"a{i}"}] for i in range(n)],
        unsafe, severity, [None] * n, ["synthetic"] * n, [f"q{i // 2}" for i in range(n)],
    )
    return x, labels


class TestProbeArithmetic:
    def test_predict_equals_two_sklearn_regressions_on_standardised_features(self) -> None:
        from sklearn.linear_model import LogisticRegression

        x, labels = _synthetic()
        probe = fit_probe(x, labels, ProbeRecipe(), c=0.5)
        probs = probe.predict(x)
        z = (x - x.mean(0)) / x.std(0)
        unsafe = LogisticRegression(C=0.5, max_iter=5000).fit(z, labels.unsafe.astype(int)).predict_proba(z)[:, 1]
        rated = labels.unsafe & ~np.isnan(labels.severity)
        given = LogisticRegression(C=0.5, max_iter=5000).fit(z[rated], labels.severity[rated].astype(int)).predict_proba(z)
        for i in range(0, len(x), 17):  # per example, in float64
            assert probs[i, 0] == pytest.approx(1 - unsafe[i], abs=1e-6)
            for s in range(3):
                assert probs[i, s + 1] == pytest.approx(unsafe[i] * given[i, s], abs=1e-6)
        assert np.allclose(probs.sum(1), 1.0)

    def test_save_load_round_trip_without_pickle(self, tmp_path: Path) -> None:
        x, labels = _synthetic()
        probe = fit_probe(x, labels, ProbeRecipe(layer=3), c=0.5)
        probe.info = {"note": "test"}
        probe.save(tmp_path / "probe")
        assert sorted(p.name for p in (tmp_path / "probe").iterdir()) == [INFO_FILE, WEIGHTS_FILE]
        loaded = Probe.load(tmp_path / "probe")
        assert loaded.recipe == ProbeRecipe(layer=3) and loaded.info == {"note": "test"}
        assert np.array_equal(loaded.predict(x), probe.predict(x))
        with pytest.raises(InputError, match="is not a probe folder"):
            Probe.load(tmp_path)

    def test_cross_validation_never_splits_a_prompt(self) -> None:
        x, labels = _synthetic()
        report = cross_validate(x, labels, ProbeRecipe(), c=0.5, folds=4, seed=0)
        assert report["overall"]["answers"] == len(labels) and report["overall"]["auroc"] > 0.85
        assert report["overall"]["spearman_severity"] > 0.5

    def test_one_class_is_refused(self) -> None:
        x, labels = _synthetic()
        labels.unsafe[:] = False
        with pytest.raises(InputError, match="all safe; a probe needs both safe and unsafe answers"):
            fit_probe(x, labels, ProbeRecipe(), c=1.0)


class TestLabelledAnswers:
    def test_pku_layout_keeps_severities(self) -> None:
        labels, report = read_labelled([EXAMPLES])
        assert len(labels) == 300 and report["pairs.jsonl"]["layout"] == "pku-saferlhf"
        assert int(labels.unsafe.sum()) == 130 and not np.isnan(labels.severity).any()
        assert set(labels.severity[labels.unsafe].tolist()) == {1.0, 2.0, 3.0} and set(labels.severity[~labels.unsafe].tolist()) == {0.0}
        assert labels.groups[0] == labels.groups[1]  # both answers of a pair share their prompt's group

    def test_answer_table_with_a_column_map(self, tmp_path: Path) -> None:
        path = tmp_path / "rated.jsonl"
        rows = [{"question": "q1", "response": "fine", "level": 0}, {"question": "q1", "response": "bad", "level": 2},
                {"question": "q2", "response": "?", "level": None}]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        labels, report = read_labelled([path], column_map={"prompt": "question", "answer": "response", "severity": "level"})
        assert labels.unsafe.tolist() == [False, True] and labels.severity.tolist() == [0.0, 2.0]
        assert report["rated.jsonl"]["skipped"] == {"no_label": 1}

    def test_pairs_without_flags_need_the_assumption(self, tmp_path: Path) -> None:
        table = make_pairs(4).drop_columns(["chosen_safe", "rejected_safe", "categories", "category"])
        table = table.append_column("chosen_safe", pa.nulls(4, pa.bool_())).append_column("rejected_safe", pa.nulls(4, pa.bool_()))
        path = tmp_path / "pairs.parquet"
        write_parquet(table, path)
        with pytest.raises(InputError, match=r"no labelled answer \(\{'no_safety_flags': 4\}\)"):
            read_labelled([path])
        labels, report = read_labelled([path], assume_chosen_safe=True)
        assert labels.unsafe.tolist() == [False, True] * 4 and np.isnan(labels.severity).all()
        assert report["pairs.parquet"]["labels"] == "assumed: chosen safe, rejected unsafe"


def test_cli_fit_then_score_with_the_probe_backend(tiny_lm_dir: Path, tmp_path: Path) -> None:
    probe_dir = tmp_path / "probe"
    fit = subprocess.run([SC_DATA, "judge", "fit", str(EXAMPLES), "-o", str(probe_dir), "--encoder", str(tiny_lm_dir),
                          "--layer", "2", "--max-length", "64", "--device", "cpu", "--folds", "3", "--json"],
                         capture_output=True, text=True, env=_env(), timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    result = json.loads(fit.stdout)
    assert result["answers"] == 300 and result["cross_validation"]["folds"] == 3
    assert 0.0 <= result["cross_validation"]["overall"]["auroc"] <= 1.0
    info = json.loads((probe_dir / INFO_FILE).read_text())
    assert info["recipe"]["layer"] == 2 and info["encoder_ref"]["sha256"] and info["trained_on"]["answers"] == 300
    again = subprocess.run([SC_DATA, "judge", "fit", str(EXAMPLES), "-o", str(probe_dir), "--encoder", str(tiny_lm_dir)],
                           capture_output=True, text=True, env=_env(), timeout=600)
    assert again.returncode == 1 and "already holds a probe; pass --overwrite" in again.stderr

    judge = JudgeScorer(backend="probe", probe=str(probe_dir), device="cpu", predict_category=True)
    judge.load()
    batch = make_pairs(5).to_pydict()
    out = judge.score(batch)
    probe = Probe.load(probe_dir)
    from sc_data.scorers.probe import Encoder

    expected = probe.predict(Encoder(probe.recipe, device="cpu").load().features(batch["prompt"], batch["rejected"]))
    assert out["judge__error"] == [None] * 5 and out["judge__method"] == ["probe"] * 5
    assert out["judge__p_unsafe"] == pytest.approx((1 - expected[:, 0]).tolist(), abs=1e-9)
    assert out["judge__severity"] == pytest.approx((expected @ np.arange(4)).tolist(), abs=1e-9)
    assert out["judge__category"] == [None] * 5  # the probe predicts no category
    assert all(math.isfinite(v) for v in out["judge__chosen_severity"])


def test_probe_refuses_a_changed_encoder(tiny_lm_dir: Path, tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    x, labels = _synthetic(d=8)
    probe = fit_probe(x, labels, ProbeRecipe(encoder=str(tiny_qwen2_dir), layer=1), c=1.0)
    probe.info = {"encoder_ref": {"sha256": "0" * 64}}
    probe.save(tmp_path / "probe")
    judge = JudgeScorer(backend="probe", probe=str(tmp_path / "probe"), device="cpu")
    with pytest.raises(ConfigError, match="refit the probe for this encoder"):
        judge.load()
    with pytest.raises(ConfigError, match="backend 'probe' needs probe=<folder"):
        JudgeScorer(backend="probe").load()


@pytest.mark.integration
def test_default_probe_held_out_auroc_on_pku(shared_data: Path) -> None:
    """The default recipe on the real SmolLM2, PKU-SafeRLHF split by prompt (records 0-99 held out): a regression fails here.

    Measured when the defaults were chosen (bench/RESULTS.md): AUROC 0.93, Spearman 0.73 on these 200 answers.
    """
    from sc_data.scorers.probe import Encoder, ProbeOptions, quality

    labels, _ = read_labelled([shared_data / "pku-saferlhf" / "alpaca7b_test_head.jsonl"])
    held = set(labels.groups[:200])  # the prompts of the first 100 records
    test = np.flatnonzero([g in held for g in labels.groups])
    train = np.flatnonzero([g not in held for g in labels.groups])
    recipe, options = ProbeRecipe(), ProbeOptions()
    features = Encoder(recipe, device="cpu").load().features(labels.prompts, labels.answers)
    probe = fit_probe(features[train], labels.take(train), recipe, c=options.c)
    result = quality(probe.predict(features[test]), labels.take(test))["overall"]
    assert result["answers"] >= 200
    assert result["auroc"] >= 0.90, result
    assert result["spearman_severity"] >= 0.6, result
