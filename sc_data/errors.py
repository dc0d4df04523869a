"""The project's exceptions.

Every user-input error is a :class:`ScDataError` (a ``ValueError``), so callers can catch one
type and the CLI can print ``Error: ...`` and exit 1 without a traceback. Messages say what is
wrong, the offending value, the valid options and how to fix it.
"""

from __future__ import annotations


class ScDataError(ValueError):
    """Base class of all errors caused by user input or configuration."""


class InputError(ScDataError):
    """An input file or table can't be read or has no usable columns."""


class ConfigError(ScDataError):
    """A configuration value is invalid."""


class ModelNotFoundError(ScDataError):
    """A model reference could not be resolved to local files."""


class VerifyError(ScDataError):
    """A staged dataset does not match its manifest."""


class HubError(ScDataError):
    """Publishing to or pulling from the Hub failed for a reason the user can fix."""
