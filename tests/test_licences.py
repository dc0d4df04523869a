"""Licences of inputs: the layout's by default, a REUSE sidecar or ``--license`` when declared; to the card."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from sc_data.errors import ConfigError, InputError
from sc_data.ingest import ingest
from sc_data.scorers.runner import score
from sc_data.stage.pipeline import stage
from tests.scorers.test_score_runner import LengthScorer

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "pairs.jsonl"
SC_DATA = str(Path(sys.executable).parent / "sc-data")


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def _card_license(staged: Path) -> Any:
    return yaml.safe_load((staged / "README.md").read_text("utf-8").split("---")[1])["license"]


@pytest.fixture
def pku_copy(tmp_path: Path) -> Path:
    """The examples' rows without their sidecar: a plain PKU-SafeRLHF-layout file."""
    path = tmp_path / "pku_layout.jsonl"
    shutil.copyfile(EXAMPLES, path)
    return path


class TestIngestLicence:
    def test_bundled_examples_are_apache_by_their_sidecar(self, tmp_path: Path) -> None:
        result = ingest([EXAMPLES], tmp_path / "pairs.parquet")
        manifest = _manifest(tmp_path / "pairs.manifest.json")
        assert result.inputs[0].format == "pku-saferlhf"
        assert [x.lower() for x in manifest["licenses"]] == ["apache-2.0"]
        assert manifest["inputs"][0]["license_from"] == str(EXAMPLES) + ".license"

    def test_pku_layout_without_declaration_keeps_the_source_licence(self, pku_copy: Path, tmp_path: Path) -> None:
        ingest([pku_copy], tmp_path / "pairs.parquet")
        manifest = _manifest(tmp_path / "pairs.manifest.json")
        assert manifest["licenses"] == ["CC-BY-NC-4.0"]
        assert manifest["inputs"][0]["license_from"] == "format pku-saferlhf"

    def test_option_wins_over_layout_and_sidecar(self, pku_copy: Path, tmp_path: Path) -> None:
        ingest([pku_copy, EXAMPLES], tmp_path / "pairs.parquet", license="mit", safety_pairs="keep")
        manifest = _manifest(tmp_path / "pairs.manifest.json")
        assert manifest["licenses"] == ["mit"] and manifest["recipe"]["license"] == "mit"
        assert [(i["license"], i["license_from"]) for i in manifest["inputs"]] == [("mit", "--license")] * 2

    def test_bad_licence_id_and_bad_sidecar_are_errors(self, pku_copy: Path, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match=r"license='Apache 2': not a licence id: one SPDX / Hub id"):
            ingest([pku_copy], tmp_path / "a.parquet", license="Apache 2")
        pku_copy.with_name(pku_copy.name + ".license").write_text("Apache-2.0\n", "utf-8")
        with pytest.raises(InputError, match=r"pku_layout.jsonl.license: a licence sidecar needs exactly one line "
                                             r"'SPDX-License-Identifier: <id>' \(e.g. Apache-2.0\), found none"):
            ingest([pku_copy], tmp_path / "b.parquet")
        assert not (tmp_path / "b.parquet").exists()


class TestToTheCard:
    def test_examples_scored_through_the_front_door_give_an_apache_card(self, tmp_path: Path) -> None:
        scored = tmp_path / "scored.parquet"
        score([str(EXAMPLES)], scored, scorers=[LengthScorer()])
        assert [x.lower() for x in _manifest(tmp_path / "scored.manifest.json")["licenses"]] == ["apache-2.0"]
        stage(scored, tmp_path / "staged", plots=False, difficulty_columns=["length__chars:harder"])
        assert _card_license(tmp_path / "staged") == "apache-2.0"
        assert "Licences of the sources: apache-2.0." in (tmp_path / "staged" / "README.md").read_text("utf-8")

    def test_cli_license_flag_on_ingest_and_score(self, pku_copy: Path, tmp_path: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
        run = subprocess.run([SC_DATA, "ingest", str(pku_copy), "-o", str(tmp_path / "p.parquet"), "--license", "cc-by-4.0", "--json"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["inputs"][0]["license"] == "cc-by-4.0"
        # score's front door passes --license to ingest (the scorer's model is never loaded: --model is missing)
        bad = subprocess.run([SC_DATA, "score", str(pku_copy), "-o", str(tmp_path / "s.parquet"), "--license", "a b", "-s", "ref_margin"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert bad.returncode == 1 and bad.stderr.startswith("Error: invalid ingest option(s): license='a b': not a licence id")
