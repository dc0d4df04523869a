"""Stage 0 reuses the ref_margin scorer's stored log-probs: score → stage → train on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sc_data.manifest import file_entry
from sc_data.train.data import load_staged, stored_ref_logprobs
from sc_data.train.trainer import train
from tests.train.conftest import tiny_config

MAX_LENGTH, MAX_PROMPT = 64, 32


def build_scored_staged(model_dir: Path, root: Path) -> Path:
    """24 pairs scored by the real ref_margin scorer on the tiny model, then staged in 3 tiers."""
    import pyarrow as pa

    from sc_data.io import write_parquet
    from sc_data.schema import pair_schema
    from sc_data.scorers.runner import score
    from sc_data.stage.pipeline import stage
    from tests.train.conftest import staged_table

    schema = pair_schema()
    rows = staged_table(24).to_pylist()
    write_parquet(pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema), root / "pairs.parquet")
    options = {"model": str(model_dir), "device": "cpu", "dtype": "float32", "max_length": MAX_LENGTH, "max_prompt_length": MAX_PROMPT}
    score(root / "pairs.parquet", root / "scored.parquet", scorers=["ref_margin"], options={"ref_margin": options})
    stage(root / "scored.parquet", root / "staged", tiers=3, eval_fraction=0.2, plots=False)
    return root / "staged"


@pytest.fixture(scope="module")
def scored_staged(tiny_lm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scored_staged(tiny_lm_dir, tmp_path_factory.mktemp("stored"))


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _run_info(run: Path) -> dict:
    return json.loads((run / "run_info.json").read_text())["stage0_reference"]


def test_reused_when_model_template_and_dtype_match(scored_staged: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_lm_dir, data={"max_length": MAX_LENGTH, "max_prompt_length": MAX_PROMPT})
    train(scored_staged, tmp_path / "stored", cfg)
    info = _run_info(tmp_path / "stored")
    assert info["source"] == "stored", info
    tier0 = json.loads((scored_staged / "sc_manifest.json").read_text())["counts"]["by_tier"]["tier_0"]
    assert info["checked_rows"] == min(32, tier0) and info["max_gap_nats"] < 1e-4 and info["tolerance_nats"] == 0.05
    assert info["forward_dtype"] == "float32"

    off = cfg.model_copy(update={"data": cfg.data.model_copy(update={"reuse_ref_logps": False})})
    train(scored_staged, tmp_path / "live", off)
    assert _run_info(tmp_path / "live") == {"source": "live", "reason": "data.reuse_ref_logps is false", "forward_dtype": "float32"}

    stored, live = _metrics(tmp_path / "stored"), _metrics(tmp_path / "live")
    assert len(stored) == len(live) == 6
    for a, b in zip(live, stored, strict=True):
        if a["stage"] != 0:
            continue
        assert b["tokens"] == a["tokens"] and b["pool_size"] == a["pool_size"]
        for key in ("loss", "chosen_reward", "rejected_reward", "margin", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)


def test_half_a_nat_on_one_row_is_refused(scored_staged: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    """Summed log-probs off by 0.5 nats on a single stage-0 row: the live check refuses them all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sc_data.stage.pipeline import stage

    root = scored_staged.parent
    row_id = pq.read_table(next((scored_staged / "data" / "tier_0").glob("*.parquet"))).column("id")[0].as_py()
    scored = pq.read_table(root / "scored.parquet")
    chosen = scored.column("ref_margin__chosen_logp").to_pylist()
    chosen[scored.column("id").to_pylist().index(row_id)] += 0.5
    scored = scored.set_column(scored.column_names.index("ref_margin__chosen_logp"), "ref_margin__chosen_logp", pa.array(chosen))
    pq.write_table(scored, tmp_path / "scored.parquet")
    manifest = json.loads((root / "scored.manifest.json").read_text())  # as if the scorer itself had written these log-probs
    manifest["files"] = [file_entry(tmp_path, "scored.parquet", scored.num_rows)]
    (tmp_path / "scored.manifest.json").write_text(json.dumps(manifest))
    stage(tmp_path / "scored.parquet", tmp_path / "staged", tiers=3, eval_fraction=0.2, plots=False)
    cfg = tiny_config(tiny_lm_dir, data={"max_length": MAX_LENGTH, "max_prompt_length": MAX_PROMPT}, curriculum={"max_steps_per_stage": 1})
    train(tmp_path / "staged", tmp_path / "run", cfg)
    info = _run_info(tmp_path / "run")
    assert info["source"] == "live" and info["max_gap_nats"] == pytest.approx(0.5, abs=1e-3)
    assert info["reason"].startswith("stored log-probs differ from a live pass by up to 0.5")


def test_not_reused_with_other_truncation(scored_staged: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tiny_lm_dir, data={"max_length": 96, "max_prompt_length": MAX_PROMPT}, curriculum={"max_steps_per_stage": 1})
    train(scored_staged, tmp_path / "run", cfg)
    info = _run_info(tmp_path / "run")
    assert info["source"] == "live"
    assert info["reason"].startswith("template / tokenizer / truncation differ from the scorer's: truncation.max_length: scorer 64, this run 96")


def test_model_and_dtype_mismatch_refused(scored_staged: Path, tiny_lm_dir: Path) -> None:
    from sc_data.models.loading import load_causal_lm
    from sc_data.models.logprob import PairTokenizer, TruncationConfig

    _, tokenizer, ref = load_causal_lm(str(tiny_lm_dir), device="cpu", dtype="float32")
    template = PairTokenizer(tokenizer, truncation=TruncationConfig(max_length=MAX_LENGTH, max_prompt_length=MAX_PROMPT)).describe()
    data = load_staged(scored_staged)

    ok = stored_ref_logprobs(data, model_sha256=ref.sha256, template=template, forward="float32")
    assert ok.usable and len(ok.chosen) == len(data.train)
    assert ok.chosen.tolist() == data.train.column("ref_margin__chosen_logp").to_pylist()

    other = stored_ref_logprobs(data, model_sha256="0" * 64, template=template, forward="float32")
    assert not other.usable and other.reason == f"reference model sha256 {'0' * 64} differs from the scorer's {ref.sha256}"
    bf16 = stored_ref_logprobs(data, model_sha256=ref.sha256, template=template, forward="float32+autocast:bfloat16")
    assert not bf16.usable and bf16.reason == "the reference forward runs in float32+autocast:bfloat16, the scorer's ran in float32"
    assert not stored_ref_logprobs(data, model_sha256=None, template=template, forward="float32").usable
