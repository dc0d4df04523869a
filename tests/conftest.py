"""Fixtures shared by the whole suite: real-data location, tiny random models, offline Hub."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The real public data beside the project (../shared/data); override with SC_DATA_SHARED_DATA."""
    return Path(os.environ.get("SC_DATA_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent; set SC_DATA_SHARED_DATA to its location")
    return path


@pytest.fixture(scope="session")
def tiny_lm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random causal LM (safetensors) with a ChatML-templated BPE tokenizer."""
    from tests.tiny_models import build_causal_lm

    return build_causal_lm(tmp_path_factory.mktemp("tiny_lm"))


@pytest.fixture(scope="session")
def tiny_reward_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random sequence-classification reward model (one output)."""
    from tests.tiny_models import build_sequence_classifier

    return build_sequence_classifier(tmp_path_factory.mktemp("tiny_rm"), num_labels=1)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of a tiny random 4-label sequence classifier (a stand-in harm classifier)."""
    from tests.tiny_models import build_sequence_classifier

    return build_sequence_classifier(tmp_path_factory.mktemp("tiny_cls"), num_labels=4, seed=1)
