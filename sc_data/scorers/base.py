"""The scorer interface and the name -> class registry.

A scorer turns batches of canonical rows into score columns named ``<name>__<field>``. It declares
its output columns and its one difficulty column with a direction up front, so the pipeline can
check wiring (and ``difficulty.py`` can rank) before any model loads. Third-party scorers register
through the entry-point group ``sc_data.scorers``; see ``examples/`` for a plugin.

A scorer's options are declared once, as one pydantic model attached to the class (``Options``,
like a distilabel step's fields or scikit-learn's parameter constraints): type, range, default and
meaning of each. ``__init__`` stores what it is given unchanged (defaults filled in), so a scorer is
cheap to build and to describe; :meth:`Scorer.validate` checks the options against the model
before anything loads, and every error is worded by :func:`sc_data.errors.config_error`.

Example:
    >>> from typing import Literal
    >>> from pydantic import Field
    >>> class Length(Scorer):
    ...     class Options(ScorerOptions):
    ...         unit: Literal["chars", "words"] = Field("chars", description="What to count.")
    ...     name = "length"
    ...     fields = {"size": "float64"}
    ...     difficulty_field = "size"
    ...     direction = "larger_is_harder"
    ...     needs_model = False
    ...     def score(self, batch):
    ...         count = len if self.unit == "chars" else (lambda t: len(t.split()))
    ...         return {"length__size": [float(count(r[-1]["content"])) for r in batch["rejected"]]}
    >>> Length(unit="words").score({"rejected": [[{"role": "assistant", "content": "no way"}]]})
    {'length__size': [2.0]}
"""

from __future__ import annotations

import abc
import functools
from importlib.metadata import entry_points
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from sc_data.errors import ConfigError, config_error
from sc_data.schema import score_column

Direction = Literal["larger_is_easier", "larger_is_harder"]

#: A batch is a dict of column name -> list of Python values (``Table.to_pydict()`` of a slice).
Batch = dict[str, list[Any]]

ENTRY_POINT_GROUP = "sc_data.scorers"

_ARROW_TYPES = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string(), "bool": pa.bool_()}


class ScorerOptions(BaseModel):
    """Base of every scorer's ``Options``: unknown keys fail, each field says its range and default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Scorer(abc.ABC):
    """Base class of difficulty scorers.

    Subclasses set the class attributes, declare their options as a nested ``Options`` model
    (a :class:`ScorerOptions`) and implement :meth:`score`. ``Scorer(**options)`` stores the
    options unchanged as attributes (defaults filled in) and does no work; :meth:`validate`
    checks them, :meth:`load` loads models.

    Class attributes:
        name: registry name and column prefix, lower snake case.
        fields: output field -> Arrow type name (``float64``, ``int64``, ``string``, ``bool``).
            Every scorer also writes ``<name>__error`` (string, null when the row scored).
        difficulty_field: the one field ``difficulty.py`` ranks by default.
        direction: whether a larger difficulty value means easier or harder.
        needs_model: whether :meth:`load` loads a model (capability, not an isinstance check).
        Options: the scorer's options model.
    """

    Options: ClassVar[type[ScorerOptions]] = ScorerOptions
    name: ClassVar[str]
    fields: ClassVar[dict[str, str]]
    difficulty_field: ClassVar[str]
    direction: ClassVar[Direction]
    needs_model: ClassVar[bool] = True

    def __init__(self, **options: Any) -> None:
        """Store ``options`` unchanged, every other option at its default.

        Raises:
            ConfigError: a name that is not an option of this scorer (the valid ones are listed).
        """
        valid = self.Options.model_fields
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise ConfigError(f"unknown option(s) {unknown} for scorer {self.name!r}; valid options: {sorted(valid)}")
        for key, spec in valid.items():
            setattr(self, key, options[key] if key in options else spec.get_default(call_default_factory=True))

    def options(self) -> dict[str, Any]:
        """The options as stored, not yet validated: the public attributes (private ones hold loaded state)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def validate(self) -> ScorerOptions:
        """Check the options without loading anything; the runner calls it before any model loads.

        Returns:
            The validated options.

        Raises:
            ConfigError: an option out of range or not a valid choice, worded as
                ``invalid <scorer> option(s): key=value: problem``.
        """
        declared = {k: v for k, v in self.options().items() if k in self.Options.model_fields}
        try:
            return self.Options(**declared)
        except ValidationError as e:
            raise config_error(f"{self.name} option(s)", e, hint="Fix the value(s) or drop the option(s).") from None

    def load(self) -> None:  # noqa: B027 - optional hook
        """Load models and other heavy state. Called once before the first :meth:`score`."""

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Free what :meth:`load` took (GPU memory above all)."""

    @abc.abstractmethod
    def score(self, batch: Batch) -> dict[str, list[Any]]:
        """Score a batch of canonical rows.

        Returns:
            Column name -> one value per row for every column in :meth:`output_columns`. A row that
            fails gets nulls in its value columns and a message in ``<name>__error``; a scorer
            never drops a row or raises for one bad row.
        """

    def config(self) -> dict[str, Any]:
        """What the manifest records: the options and, once loaded, what was loaded (never secrets)."""
        return self.options()

    @classmethod
    def output_columns(cls) -> dict[str, pa.DataType]:
        """Column name -> Arrow type, ``<name>__error`` included."""
        cols = {score_column(cls.name, f): _ARROW_TYPES[t] for f, t in cls.fields.items()}
        cols[score_column(cls.name, "error")] = pa.string()
        return cols

    @classmethod
    def difficulty_column(cls) -> str:
        """The full name of the column ``difficulty.py`` ranks by default."""
        return score_column(cls.name, cls.difficulty_field)


_BUILTINS: dict[str, str] = {
    "ref_margin": "sc_data.scorers.ref_margin:RefMarginScorer",
    "reward_gap": "sc_data.scorers.reward_gap:RewardGapScorer",
    "judge": "sc_data.scorers.judge:JudgeScorer",
    "similarity": "sc_data.scorers.similarity:SimilarityScorer",
}


def _load_ref(ref: str) -> type[Scorer]:
    module, _, attr = ref.partition(":")
    mod = __import__(module, fromlist=[attr])
    return getattr(mod, attr)


@functools.cache
def _plugins() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_scorers() -> list[str]:
    """Names of the built-in and installed third-party scorers."""
    return sorted(set(_BUILTINS) | set(_plugins()))


def get_scorer_class(name: str) -> type[Scorer]:
    """Resolve a scorer name to its class.

    Raises:
        ConfigError: no built-in or installed scorer has that name.
    """
    if name in _BUILTINS:
        return _load_ref(_BUILTINS[name])
    plugins = _plugins()
    if name in plugins:
        cls = plugins[name].load()
        if not (isinstance(cls, type) and issubclass(cls, Scorer)):
            raise ConfigError(
                f"entry point {name!r} in group {ENTRY_POINT_GROUP!r} is {cls!r}, not a Scorer subclass"
            )
        return cls
    raise ConfigError(
        f"unknown scorer {name!r}; valid scorers: {available_scorers()}. Third-party scorers "
        f"register through the entry-point group {ENTRY_POINT_GROUP!r}."
    )
