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


def test_quiet_prints_only_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    src = tmp_path / "in.jsonl"
    src.write_text('{"prompt": "Q?", "chosen": "No.", "rejected": "Yes."}\n')
    quiet = runner.invoke(app, ["-q", "ingest", str(src), "-o", str(tmp_path / "a.parquet")])
    loud = runner.invoke(app, ["ingest", str(src), "-o", str(tmp_path / "b.parquet")])
    assert quiet.exit_code == loud.exit_code == 0 and (tmp_path / "a.parquet").is_file()
    assert quiet.output == "" and "ingest" in loud.output
    failed = runner.invoke(app, ["--quiet", "ingest", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "c.parquet")])
    assert failed.exit_code == 1 and "does not exist" in failed.output  # errors still say why
