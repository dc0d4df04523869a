"""One way to configure every verb: a YAML file, then ``KEY=VALUE`` overrides on top (flags win).

Every verb (``score``, ``stage``, ``train``, ``eval``) and the experiment scripts read their
configuration through :func:`load_config`; the result is then validated by the verb's own
pydantic model, so unknown keys and wrong types fail with the same wording everywhere
(:func:`sc_data.errors.config_error`). Keys are dotted paths into the nested mapping
(``optim.lr``, ``scorers.ref_margin.max_length``, ``judge.backend``); values given as text are
read as YAML (``1e-4`` is a float, ``[0, 1]`` a list, ``null`` None).

Example:
    >>> load_config(None, {"optim.lr": 1e-4, "seed": None})
    {'optim': {'lr': 0.0001}}
    >>> parse_assignments(["judge.backend=openai", "seeds=[0,1]"])
    {'judge.backend': 'openai', 'seeds': [0, 1]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from sc_data.errors import ConfigError


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file holding a mapping (an empty file is ``{}``).

    Raises:
        ConfigError: the file can't be read, is not YAML, or holds something other than a mapping.
    """
    try:
        data = yaml.safe_load(Path(path).read_text("utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"can't read config file {str(path)!r}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r} must hold a mapping of option: value, got {type(data).__name__}")
    return data


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``data`` with each dotted key of ``overrides`` set; None values (flags not given) are skipped.

    Raises:
        ConfigError: a dotted key walks through a value that is not a mapping.
    """
    out = _copy(data)
    for dotted, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = out
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key!r} is a value, not a section; cannot set {dotted}")
        node[leaf] = value
    return out


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The mapping in YAML file ``path`` (``{}`` without one) with ``overrides`` applied on top.

    Raises:
        ConfigError: see :func:`read_yaml` and :func:`apply_overrides`.
    """
    return apply_overrides(read_yaml(path) if path is not None else {}, overrides or {})


def parse_assignments(
    items: Iterable[str], *, flag: str = "--set", form: str = "KEY=VALUE", example: str = "section.key=value", dotted: bool = False
) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": 1, "c": "x"}``, each value read as YAML (text if it isn't).

    Args:
        items: the repeated flag's values.
        flag, form, example: how the error names the flag, the expected form and an example.
        dotted: every key must be ``SECTION.KEY`` (e.g. a scorer's name and one of its options).

    Raises:
        ConfigError: an item has no ``=``, an empty key, or (``dotted``) a key without a section.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not key.strip() or (dotted and not (dot and section and name)):
            raise ConfigError(f"{flag} {item!r} must look like {form}, e.g. {example}")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    return out
