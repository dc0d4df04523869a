"""The project's exceptions.

Every user-input error is a :class:`ScDataError` (a ``ValueError``), so callers can catch one
type and the CLI can print ``Error: ...`` and exit 1 without a traceback. Messages say what is
wrong, the offending value, the valid options and how to fix it.
"""

from __future__ import annotations

import pydantic


class ScDataError(ValueError):
    """Base class of all errors caused by user input or configuration."""


class InputError(ScDataError):
    """An input file or table can't be read or has no usable columns."""


class ConfigError(ScDataError):
    """A configuration value is invalid."""


class ModelNotFoundError(ScDataError):
    """A model reference could not be resolved to local files."""


class ScorerFailure(ScDataError):
    """A scorer erred on more rows than allowed (by default: on every row); its output was still written."""


class VerifyError(ScDataError):
    """A staged dataset does not match its manifest."""


class HubError(ScDataError):
    """Publishing to or pulling from the Hub failed for a reason the user can fix."""


def config_error(what: str, error: pydantic.ValidationError, *, hint: str = "") -> ConfigError:
    """Turn pydantic's errors into one line: ``invalid <what>: field=value: problem; ...``.

    Every options model (ingest, scorers, staging, training) reports through this, so all
    configuration errors are worded alike and name the offending value.
    """
    parts = []
    for err in error.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:
            parts.append(msg)
            continue
        where = ".".join(str(p) for p in err["loc"])
        got = "" if err["type"] == "missing" else f"={err['input']!r}"
        parts.append(f"{where}{got}: {msg}")
    return ConfigError(f"invalid {what}: {'; '.join(parts)}" + (f". {hint}" if hint else ""))
