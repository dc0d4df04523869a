"""Every command answers -h as --help (the `hf` CLI's convention), and the package ships type information."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from sc_data.cli.main import app


def _commands(group: typer.Typer, prefix: list[str]) -> list[list[str]]:
    out = [prefix + [c.name or c.callback.__name__] for c in group.registered_commands]
    for sub in group.registered_groups:
        out += _commands(sub.typer_instance, prefix + [sub.name])
    return out


def test_dash_h_is_help_everywhere() -> None:
    runner = CliRunner()
    commands = _commands(app, [])
    assert ["score"] in commands and ["judge", "fit"] in commands and len(commands) >= 10
    for command in [[], *commands]:
        short, long = runner.invoke(app, [*command, "-h"]), runner.invoke(app, [*command, "--help"])
        assert short.exit_code == 0 and short.output == long.output and "Usage:" in short.output, command


def test_py_typed_ships() -> None:
    import sc_data

    assert (Path(sc_data.__file__).parent / "py.typed").is_file()
    assert 'sc_data = ["py.typed"]' in (Path(__file__).parents[1] / "pyproject.toml").read_text()
