"""What every command shares: option aliases, error handling, output helpers.

Shared options are ``Annotated`` aliases so a flag's name and help text are identical in every
command. Results go to stdout; logs, warnings, errors and progress to stderr.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar, get_args, get_origin

import typer
from rich.console import Console
from rich.markup import escape

from sc_data.errors import ScDataError

if TYPE_CHECKING:
    from pydantic import BaseModel

stdout = Console()
stderr = Console(stderr=True)


def show_progress() -> bool:
    """Progress bars and info logs: on a terminal, unless ``--quiet`` (which also silences ``stdout``)."""
    return stderr.is_terminal and not stdout.quiet


@contextlib.contextmanager
def counting(description: str, unit: str) -> Iterator[Callable[[int], None]]:
    """A spinner counting ``unit`` as a step reports them (its ``progress=`` callback), with the time elapsed.

    For steps that don't know their total ahead (ingest reads compressed files and streams).
    """
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn(description), TextColumn(f"{{task.completed:,}} {unit}"),
                  TimeElapsedColumn(), console=stderr, transient=True, disable=not show_progress()) as bar:
        task = bar.add_task(description, total=None)
        yield lambda n: bar.advance(task, n)

F = TypeVar("F", bound=Callable[..., Any])

DEBUG_ENV = "SC_DATA_DEBUG"

OutputFile = Annotated[Path, typer.Option("--output", "-o", help="Output file.", dir_okay=False)]
OutputDir = Annotated[Path, typer.Option("--output", "-o", help="Output folder.", file_okay=False)]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
Seed = Annotated[int, typer.Option("--seed", help="Random seed; same seed, same result.")]
ConfigFile = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML file with options; flags given on the command line win.", exists=True, dir_okay=False),
]


DIST = "sc-data"


def _import_name(requirement: str) -> str:
    """The top-level module of a requirement's distribution (``sentence-transformers>=3`` -> ``sentence_transformers``)."""
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    return name[0].lower().replace("-", "_").replace(".", "_") if name else ""


@functools.cache
def extra_modules() -> dict[str, frozenset[str]]:
    """Extra -> the top-level modules it installs, with those of the extras it includes.

    Read from the installed sc-data's ``Requires-Dist`` lines (``torch>=2.2; extra == "score"``), so
    pyproject.toml's ``[project.optional-dependencies]`` stays the one declaration. Empty when
    sc-data runs from a source tree that was never installed.
    """
    try:
        requires = importlib.metadata.requires(DIST) or []
    except importlib.metadata.PackageNotFoundError:
        return {}
    listed: dict[str, set[str]] = {}
    included: dict[str, set[str]] = {}
    for requirement in requires:
        marker = re.search(r"""extra\s*==\s*['"]([^'"]+)['"]""", requirement)
        if marker is None:
            continue  # a core dependency
        listed.setdefault(marker[1], set())
        if _import_name(requirement) == _import_name(DIST):  # sc-data[score]: includes another extra
            inner = re.search(r"\[([^\]]*)\]", requirement)
            included.setdefault(marker[1], set()).update(e.strip() for e in (inner[1] if inner else "").split(","))
        else:
            listed[marker[1]].add(_import_name(requirement))

    def closure(extra: str, seen: frozenset[str] = frozenset()) -> set[str]:
        inner = included.get(extra, set()) - seen - {extra}
        return listed.get(extra, set()).union(*(closure(e, seen | {extra}) for e in inner))

    return {extra: frozenset(closure(extra)) for extra in listed}


def extra_for(module: str, wanted: str | None = None) -> str | None:
    """The extra to install for a missing ``module``: ``wanted`` (the command's) if it installs it, else the smallest that does.

    Ties go to the extra declared first (``datasets``: ``[hub]`` before ``[bench]``).
    """
    extras = extra_modules()
    if wanted in extras and module in extras[wanted]:
        return wanted
    holding = [extra for extra, modules in extras.items() if module in modules]
    return min(holding, key=lambda extra: len(extras[extra]), default=None)


def missing_module_message(e: ModuleNotFoundError, wanted: str | None = None) -> str:
    """``this needs 'torch', which is not installed: pip install "sc-data[train]"``."""
    module = (e.name or "").split(".")[0]
    extra = extra_for(module, wanted)
    how = f'pip install "{DIST}[{extra}]"' if extra else f"pip install {module}"
    return f"this needs {module!r}, which is not installed: {how}"


@contextlib.contextmanager
def needs_extra(extra: str) -> Iterator[None]:
    """Name ``extra`` for a module it installs that is missing inside this block.

    WHY: a command needs a whole extra, and the first missing module alone would name a smaller
    one (``train`` stops at ``torch``, which ``[score]`` installs, but needs ``[train]``'s peft).
    """
    try:
        yield
    except ModuleNotFoundError as e:
        raise ScDataError(missing_module_message(e, extra)) from e


def _message(e: BaseException) -> str:
    """One line for an error at the CLI boundary: the project's own, a missing extra, or a file-system / decoding fault naming its path."""
    if isinstance(e, ScDataError):
        return str(e)
    if isinstance(e, ModuleNotFoundError):
        return missing_module_message(e)
    if isinstance(e, OSError):
        where = f": {e.filename!r}" if getattr(e, "filename", None) else ""
        return f"{e.strerror or e}{where} (check the path, that its folders exist and that you may write there)"
    return f"{type(e).__name__}: {e}"


def handle_errors(fn: F) -> F:
    """Print known errors as one ``Error: ...`` line on stderr and exit 1; tracebacks only with SC_DATA_DEBUG=1.

    Known: the project's :class:`ScDataError`, file-system errors (``OSError``: unreadable input,
    unwritable output, a full disk), text that can't be decoded and a missing optional dependency
    (named with the extra that installs it). Anything else is a bug and
    propagates with its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ScDataError, OSError, UnicodeError, ModuleNotFoundError) as e:
            if os.environ.get(DEBUG_ENV):
                raise
            stderr.print(f"[bold red]Error:[/bold red] {escape(_message(e))}", highlight=False, markup=True, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """Write ``obj`` as JSON to stdout (no rich markup, so it can be piped)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


class ConfigFlags:
    """Command-line flags bound to fields of a library config model, each declared once there.

    A flag's help is the field's description plus its default, and its choices are the field's
    ``Literal`` values, both read from the model, so the CLI never restates them. The values given
    are collected as dotted overrides for :func:`sc_data.config.load_config` (flags win over
    ``--config``; a flag left out is None and does not override).

    Args:
        model: the config model (e.g. ``TrainConfig``), instantiable with its defaults.
        fields: parameter name -> dotted field path (``lr="optim.lr"``).
    """

    def __init__(self, model: type[BaseModel], /, **fields: str) -> None:
        self.model = model
        self.fields = fields
        self._defaults = model()

    def _field(self, name: str) -> tuple[Any, Any]:
        """(pydantic FieldInfo, default value) of the parameter ``name``'s field."""
        node: Any = self.model
        default: Any = self._defaults
        info = None
        for part in self.fields[name].split("."):
            info = node.model_fields[part]
            node = info.annotation
            default = getattr(default, part)
        return info, default

    def help(self, name: str) -> str:
        info, default = self._field(name)
        text = (info.description or "").rstrip(".") + "."
        return text if default in (None, []) else f"{text} [default: {_show(default)}]"

    def option(self, name: str, *names: str, **kwargs: Any) -> Any:
        """A ``typer.Option`` for parameter ``name`` with the field's help."""
        flag = names or ("--" + name.replace("_", "-"),)
        return typer.Option(*flag, help=self.help(name), show_default=False, **kwargs)

    def choices(self, name: str) -> type[Enum]:
        """An Enum of the field's ``Literal`` values, for typer to show and check."""
        info, _ = self._field(name)
        annotation = info.annotation
        if get_origin(annotation) is not Literal:
            raise TypeError(f"{self.fields[name]} is not a Literal field")
        values = get_args(annotation)
        return Enum(name.title().replace("_", ""), {str(v): v for v in values}, type=str)  # type: ignore[return-value]

    def overrides(self, given: dict[str, Any]) -> dict[str, Any]:
        """Dotted key -> value for every bound parameter in ``given`` (e.g. ``locals()``); enums as values."""
        return {
            dotted: (given[name].value if isinstance(given[name], Enum) else given[name])
            for name, dotted in self.fields.items()
            if name in given
        }


def choice_enum(name: str, literal: Any) -> type[Enum]:
    """An Enum of a ``Literal``'s values (or a tuple of names), for a flag outside a config model."""
    values = get_args(literal) if get_origin(literal) is Literal else tuple(literal)
    return Enum(name, {str(v): v for v in values}, type=str)  # type: ignore[return-value]
