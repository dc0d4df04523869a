"""Fixtures for the Hub tests: a loopback Hub, client settings pointing at it, staged folders.

The root conftest sets HF_HUB_OFFLINE=1 for the whole suite; these tests talk to a server on
127.0.0.1, so in-process tests patch huggingface_hub's import-time constants for the duration
of one test, and subprocess tests get a clean environment of their own.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sc_data.schema import REJECT_SCHEMA, pair_schema
from sc_data.stage.export import ExportConfig, export
from tests.hub.fake_hub import VALID_TOKEN, FakeHub
from tests.reference import pair_id

PAPER_FILE = "paper/hh_rlhf_clean_gpt.jsonl"
EVAL_START = 12

def parquet_bytes(records: list[dict[str, str]]) -> bytes:
    """``records`` as the bytes of a Parquet file, to commit to the loopback Hub."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records), sink)
    return sink.getvalue().to_pybytes()


def dataset_v1_then_main(repo: str, v1: dict[str, bytes], main: dict[str, bytes], message: str) -> dict[str, str]:
    """Create the dataset repo ``repo`` on the Hub the client points at: commit ``v1`` (files by path),
    tag it with branch ``v1``, then commit ``main`` on top. Returns the commit ids by name."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset")
    first = api.create_commit(repo, [CommitOperationAdd(p, b) for p, b in v1.items()], commit_message="v1", repo_type="dataset")
    api.create_branch(repo, branch="v1", repo_type="dataset")
    second = api.create_commit(repo, [CommitOperationAdd(p, b) for p, b in main.items()], commit_message=message, repo_type="dataset")
    return {"v1": first.oid, "main": second.oid}


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    """A loopback Hub on a free port; stopped (and its thread joined) at teardown."""
    hub = FakeHub().start()
    try:
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def hub_client(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeHub:
    """Point the in-process huggingface_hub at ``fake_hub`` with the valid token in HF_TOKEN."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(constants, "ENDPOINT", fake_hub.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", fake_hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-file"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setenv("HF_TOKEN", VALID_TOKEN)
    monkeypatch.setenv("SC_DATA_CACHE", str(tmp_path / "sc-cache"))
    return fake_hub


@pytest.fixture
def hub_env(fake_hub: FakeHub, tmp_path: Path) -> dict[str, str]:
    """Environment for subprocess runs of the real CLI / datasets against ``fake_hub``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(
        HF_ENDPOINT=fake_hub.endpoint,
        HF_TOKEN=VALID_TOKEN,
        HF_HOME=str(tmp_path / "hf_home"),
        HF_HUB_OFFLINE="0",
        HF_DATASETS_OFFLINE="0",
        HF_HUB_DISABLE_XET="1",
        HF_UPDATE_DOWNLOAD_COUNTS="0",
        HF_HUB_DISABLE_TELEMETRY="1",
        SC_DATA_CACHE=str(tmp_path / "sc-cache"),
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


@pytest.fixture(scope="session")
def paper_rows(shared_data: Path) -> list[dict[str, str]]:
    """The first 16 pairs of the paper's released training set."""
    with open(shared_data / PAPER_FILE, encoding="utf-8") as fh:
        return [json.loads(next(fh)) for _ in range(16)]


def _pairs_table(rows: list[dict[str, str]], indices: list[int]) -> pa.Table:
    """Canonical pairs (+ difficulty, tier, split) for the paper rows at ``indices``.

    Every value depends only on the row's index, so a tier holding the same rows in two
    versions of the dataset is written as byte-identical Parquet.
    """
    records = []
    for i in indices:
        row = rows[i]
        prompt = [{"role": "user", "content": row["prompt"].removeprefix("Human: ").strip()}]
        chosen = [{"role": "assistant", "content": row["chosen"].strip()}]
        rejected = [{"role": "assistant", "content": row["rejected"].strip()}]
        records.append({
            "id": pair_id(prompt, chosen, rejected), "prompt": prompt, "chosen": chosen, "rejected": rejected,
            "categories": [], "category": None, "source": "paper", "chosen_safe": None, "rejected_safe": None,
            "difficulty": i / 16, "tier": i // 4 if i < EVAL_START else None, "split": "train" if i < EVAL_START else "test",
        })
    schema = pair_schema().append(pa.field("difficulty", pa.float64())).append(pa.field("tier", pa.int64()))
    return pa.Table.from_pylist(records, schema=schema.append(pa.field("split", pa.string())))


def build_staged(folder: Path, rows: list[dict[str, str]], *, tiers: int = 2, drop: int = 0) -> Path:
    """Stage the paper rows with the real exporter: ``tiers`` tiers of 4 pairs and 4 eval pairs.

    Tier k holds rows 4k..4k+3 (minus the first ``drop`` rows of tier 0); eval holds rows
    12..15 in every version, so versions differ exactly where a test wants them to.
    """
    train = [i for i in range(4 * tiers) if i >= drop]
    table = _pairs_table(rows, train + list(range(EVAL_START, EVAL_START + 4)))
    position = {i: n for n, i in enumerate(train)}
    parts = {f"tier_{k}": np.array([position[i] for i in range(4 * k, 4 * k + 4) if i in position]) for k in range(tiers)}
    parts["eval"] = np.arange(len(train), len(train) + 4)
    export(
        table, folder, parts=parts, rejects=REJECT_SCHEMA.empty_table(), recipe={"stage": {"tiers": tiers}},
        inputs=[], config=ExportConfig(plots=False),
    )
    return folder


@pytest.fixture
def staged(tmp_path: Path, paper_rows: list[dict[str, str]]) -> Path:
    """A staged folder (tiers 0 and 1, eval, rejects) written by sc_data.stage.export."""
    return build_staged(tmp_path / "staged", paper_rows)
