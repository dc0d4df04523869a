"""The Python API exposes every CLI verb under the same name, lazily."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sc_data import api


@pytest.mark.parametrize("verb", api.__all__)
def test_every_verb_is_a_function(verb: str) -> None:
    fn = getattr(api, verb)
    assert callable(fn) and fn.__name__ == verb


def test_unknown_verb_lists_the_verbs() -> None:
    with pytest.raises(AttributeError, match="verbs: \\['curriculum_dpo', 'decontaminate', 'evaluate'"):
        api.nonsense  # noqa: B018


def test_import_is_cheap() -> None:
    code = "import sys, sc_data.api; assert 'torch' not in sys.modules and 'sc_data.scorers.runner' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ingest_through_the_api_keeps_the_package_module(tmp_path) -> None:
    import sc_data.ingest  # binds the package attribute to the module, which api must not mind

    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}\n', "utf-8")
    result = api.ingest([src], tmp_path / "out.parquet")
    assert (result.rows_in, result.rows_out, result.rows_rejected) == (1, 1, 0)
    assert callable(sc_data.ingest.ingest)


def test_type_checkers_see_every_verb() -> None:
    """``__all__`` lists every verb, and the TYPE_CHECKING imports name each from the module that defines it."""
    import ast
    from pathlib import Path

    from sc_data import api

    assert api.__all__ == sorted(api._VERBS)
    tree = ast.parse(Path(api.__file__).read_text("utf-8"))
    block = next(n for n in tree.body if isinstance(n, ast.If) and getattr(n.test, "id", "") == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in block.body for alias in node.names}
    assert imported == api._VERBS
