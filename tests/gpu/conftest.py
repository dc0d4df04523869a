"""Fixtures the GPU tests share with the scorer and training tests."""

from tests.scorers.conftest import tiny_qwen2_dir  # noqa: F401 - fixtures, used by name
from tests.train.conftest import staged_dir  # noqa: F401
