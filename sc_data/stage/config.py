"""The staging recipe: one validated model, written verbatim into the manifest.

With no options it is what the Staged-Competence paper (arXiv 2605.26315) did: difficulty from the
scorers' columns present, 20 % of the pairs held out for evaluation (seed 42), the rest sorted by
difficulty into K=3 equal-count tiers (the last takes the remainder).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sc_data.decontam.text import DEFAULT_NGRAM
from sc_data.errors import ConfigError, config_error
from sc_data.stage.difficulty import DifficultyColumn, MissingPolicy
from sc_data.stage.tiers import Strategy


class StageConfig(BaseModel):
    """The staging recipe; written verbatim into the manifest. Each field documents itself."""

    model_config = ConfigDict(extra="forbid")

    strategy: Strategy = Field(
        "equal",
        description="Tiering: equal (the paper: K equal-count bins by difficulty, the last takes the remainder), "
        "quantile (cuts = difficulty quantiles in (0, 1)), threshold (cuts = raw values of threshold_column), "
        "kmeans (1-D k-means on difficulty, tier 0 = lowest mean).",
    )
    tiers: int = Field(3, ge=1, le=1000, description="Number of tiers K; for quantile/threshold it is len(cuts) + 1.")
    cuts: list[float] | None = Field(None, description="Cut points for quantile / threshold, strictly increasing.")
    threshold_column: str | None = Field(None, description="Raw score column for threshold, COL[:easier|harder].")
    eval_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of all pairs held out as the eval split (exported as test; paper: 0.2)."
    )
    dev_fraction: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Share of all pairs carved from training into a dev split (Cat-DPO measures on it); "
        "eval_fraction + dev_fraction < 1.",
    )
    budget: float = Field(
        1.0, gt=0.0, le=1.0, description="Fraction of training pairs kept (paper: 0.75 matched the baseline)."
    )
    budget_mode: Literal["uniform", "easiest", "hardest"] = Field(
        "uniform", description="Which pairs the budget keeps: uniform within each tier, or the easiest / hardest end."
    )
    stratify: Literal["none", "category"] = Field(
        "none",
        description="category: keep each category's count equal across tiers (within one row; tiers are then "
        "ordered by difficulty within each category).",
    )
    per_category: bool = Field(False, description="Rank difficulty within each category.")
    missing: MissingPolicy = Field(
        "drop", description="Rows with a missing score: drop (to the rejects), or count them hardest / easiest."
    )
    difficulty_columns: list[DifficultyColumn] = Field(
        default_factory=list,
        description="Score columns COL[:easier|harder][=weight] that make the difficulty; empty = every known "
        "scorer's difficulty column present.",
    )
    near_duplicates: float | None = Field(
        None, gt=0, le=1,
        description="Also keep near-duplicate prompts on one side of the eval / dev split: merge prompt groups that "
        "decontaminate's exact or word n-gram method matches at this overlap coefficient (e.g. 0.6, decontaminate's "
        "threshold). Off (None): only equal normalised prompts are grouped.",
    )
    near_duplicate_ngram: int = Field(
        DEFAULT_NGRAM, ge=1,
        description="Word n-gram length of near_duplicates (decontaminate's ngram).",
    )
    seed: int = Field(42, description="Seed of every random choice; same seed, same result (paper: 42).")

    @field_validator("difficulty_columns", mode="before")
    @classmethod
    def _parse_specs(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [DifficultyColumn.parse(v) if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _check(self) -> StageConfig:
        strategy = self.strategy
        if strategy in ("quantile", "threshold"):
            if not self.cuts:
                raise ValueError(f"strategy={strategy!r} needs cuts, e.g. cuts=[0.3, 0.7] (--cuts 0.3,0.7)")
            if any(b <= a for a, b in zip(self.cuts, self.cuts[1:], strict=False)):
                raise ValueError(f"cuts must be strictly increasing, got {self.cuts}")
            if strategy == "quantile" and not all(0.0 < c < 1.0 for c in self.cuts):
                raise ValueError(f"quantile cuts must lie in (0, 1), got {self.cuts}")
            if "tiers" in self.model_fields_set and self.tiers != len(self.cuts) + 1:
                raise ValueError(
                    f"tiers={self.tiers} contradicts {len(self.cuts)} cuts ({len(self.cuts) + 1} tiers); drop tiers"
                )
            self.tiers = len(self.cuts) + 1
        elif self.cuts is not None:
            raise ValueError(f"cuts apply to strategy 'quantile' or 'threshold', not {strategy!r}; drop cuts")
        if strategy == "threshold" and not self.threshold_column:
            raise ValueError("strategy='threshold' needs threshold_column (--threshold-column COL[:easier|harder])")
        if strategy != "threshold" and self.threshold_column:
            raise ValueError(f"threshold_column applies to strategy 'threshold', not {strategy!r}")
        if self.stratify == "category" and strategy not in ("equal", "quantile"):
            raise ValueError(f"stratify='category' applies to strategies 'equal' and 'quantile', not {strategy!r}")
        if self.eval_fraction + self.dev_fraction >= 1.0:
            raise ValueError(
                f"eval_fraction + dev_fraction must be < 1, got {self.eval_fraction} + {self.dev_fraction}"
            )
        return self


def make_config(config: StageConfig | None = None, **options: Any) -> StageConfig:
    """``config`` (or the defaults) updated with ``options``, validated.

    Raises:
        ConfigError: an unknown option or an invalid value, worded by pydantic.
    """
    base = config.model_dump(exclude_unset=True) if config is not None else {}
    unknown = sorted(set(options) - set(StageConfig.model_fields))
    if unknown:
        raise ConfigError(f"unknown staging option(s) {unknown}; valid: {sorted(StageConfig.model_fields)}")
    try:
        return StageConfig(**{**base, **options})
    except ValidationError as e:
        raise config_error("staging config", e) from None
