"""Options and result of ``ingest``, and the reject-reason vocabulary.

The options are a pydantic model (``extra="forbid"``) so a typo or a wrong choice fails at
construction with the valid values, not deep inside the row loop. The resolved options are written
into the ingest manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sc_data.errors import ConfigError, config_error
from sc_data.ingest.formats import FORMAT_NAMES
from sc_data.ingest.licences import LICENSE_ID

#: Canonical columns a ``column_map`` may fill: source column names are looked up under these.
MAPPABLE_COLUMNS: tuple[str, ...] = (
    "prompt", "chosen", "rejected", "id", "categories", "category", "source",
    "chosen_safe", "rejected_safe",
)

#: Default per-text limit (characters): generous, so only pathological rows (a 5 MB line) trip it.
DEFAULT_MAX_CHARS = 100_000


class IngestOptions(BaseModel):
    """How raw rows become canonical pairs; each field documents itself."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: str = Field(
        "auto", description="Source layout (see sc_data.ingest.formats); auto detects it per input from its columns."
    )
    column_map: dict[str, str] | None = Field(
        None,
        description="Canonical column -> source column, e.g. prompt=question; implies format 'mapped'.",
    )
    prefer: Literal["safer", "better"] = Field(
        "safer",
        description="PKU-SafeRLHF: the chosen answer is the safer one (safer_response_id, the paper's) or the better one.",
    )
    safety_pairs: Literal["drop", "flag", "keep"] = Field(
        "drop",
        description="PKU-SafeRLHF: drop (the paper's: only safe-chosen / unsafe-rejected pairs, the others to the "
        "rejects as safety_pair:<chosen>/<rejected>), flag or keep the other pairs.",
    )
    dedup: bool = Field(False, description="Send pairs whose id was already seen to the rejects (reason duplicate).")
    max_chars: int = Field(DEFAULT_MAX_CHARS, gt=0, description="Longest accepted text of one message, in characters.")
    split: str | None = Field(
        None, description="The split to read from a datasets DatasetDict or Hub dataset (splits are never merged; required when it has several)."
    )
    subset: str | None = Field(
        None, description="Hub inputs: the dataset's config (subset) to read, datasets.load_dataset's name; required when it has several."
    )
    revision: str | None = Field(
        None, description="Hub inputs: the branch, tag or commit to read (or write ORG/NAME@REV); the commit read is recorded."
    )
    streaming: bool = Field(
        False, description="Hub inputs: stream the rows (datasets streaming) instead of downloading and preparing the set first."
    )
    license: str | None = Field(
        None,
        description="Licence of the inputs (an SPDX / Hub id, e.g. apache-2.0), recorded in the manifest and the card; "
        "default: a REUSE <file>.license sidecar, else the known source's (PKU layout: cc-by-nc-4.0).",
    )

    @field_validator("license")
    @classmethod
    def _licence_id(cls, value: str | None) -> str | None:
        if value is not None and not LICENSE_ID.fullmatch(value):
            raise ValueError(
                "not a licence id: one SPDX / Hub id of letters, digits, '.', '-' and '+', e.g. apache-2.0, mit, "
                "cc-by-nc-4.0 or other"
            )
        return value

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str) -> str:
        if value not in FORMAT_NAMES:
            raise ValueError(f"unknown format {value!r}; valid formats: {list(FORMAT_NAMES)}")
        return value

    @field_validator("column_map")
    @classmethod
    def _check_map(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        unknown = sorted(set(value) - set(MAPPABLE_COLUMNS))
        if unknown:
            raise ValueError(
                f"column map key(s) {unknown} are not canonical columns; valid keys: "
                f"{list(MAPPABLE_COLUMNS)}. Write the map as canonical=source, e.g. prompt=question"
            )
        return dict(value)

    @model_validator(mode="after")
    def _map_needs_mapped(self) -> IngestOptions:
        if self.column_map and self.format not in ("auto", "mapped"):
            raise ValueError(
                f"a column map applies to format 'mapped', not {self.format!r}; drop --format "
                "or pass --format mapped"
            )
        if self.format == "mapped" and not self.column_map:
            raise ValueError("format 'mapped' needs a column map, e.g. --map prompt=question")
        return self


def make_options(**kwargs: Any) -> IngestOptions:
    """Build :class:`IngestOptions`, turning pydantic's error into a :class:`ConfigError`.

    Raises:
        ConfigError: an option has an invalid value; the message names it and the valid choices.
    """
    try:
        return IngestOptions(**kwargs)
    except ValidationError as e:
        raise config_error("ingest option(s)", e) from None


def parse_column_map(items: list[str] | None) -> dict[str, str] | None:
    """Parse ``["prompt=question", "chosen=good"]`` (the CLI's repeated ``--map``) into a dict.

    Raises:
        ConfigError: an item is not ``canonical=source``.
    """
    if not items:
        return None
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(
                f"--map {item!r} is not of the form canonical=source; e.g. --map prompt=question "
                f"(canonical columns: {list(MAPPABLE_COLUMNS)})"
            )
        out[key.strip()] = value.strip()
    return out


@dataclass
class InputReport:
    """What one input contributed: where it was, its hash, the detected format and its counts.

    ``hub`` is set for a Hub dataset: repo id, config, split, the revision asked for, the commit
    read and whether it was streamed. ``license_from`` says where ``license`` came from:
    ``--license``, the sidecar file, or ``format <name>`` (the known source's).
    """

    path: str
    sha256: str
    format: str | None
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    license: str | None = None
    license_from: str | None = None
    hub: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


@dataclass
class IngestResult:
    """Counts and paths of one ``ingest`` run; ``rows_in == rows_out + rows_rejected`` always.

    Attributes:
        output: the canonical pairs Parquet.
        rejects: the rejects Parquet (:data:`sc_data.schema.REJECT_SCHEMA`).
        manifest: the JSON manifest written beside ``output``.
        by_reason: reject reason -> count.
        inputs: one :class:`InputReport` per input, in order.
    """

    output: Path | None
    rejects: Path | None
    manifest: Path | None
    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    inputs: list[InputReport] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what ``sc-data ingest --json`` prints)."""
        return {
            "output": str(self.output) if self.output else None,
            "rejects": str(self.rejects) if self.rejects else None,
            "manifest": str(self.manifest) if self.manifest else None,
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_rejected": self.rows_rejected,
            "by_reason": dict(sorted(self.by_reason.items())),
            "inputs": [i.to_dict() for i in self.inputs],
            "seconds": round(self.seconds, 3),
        }
