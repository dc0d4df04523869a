"""Cat-DPO: one adaptive safety margin per harm category, updated by dual ascent.

Our formulation (docs/ARCHITECTURE.md, "Training: the method as implemented"; the paper, arXiv 2604.17299, publishes only its
abstract): ``loss_i = −log σ(β·h_i − γ_{c(i)})`` with ``γ_c ≥ 0``. Every N optimizer steps
``γ_c ← clip(γ_c + η·(u_c − u*), 0, γ_max)``, where u_c is the EMA-smoothed fraction of a *dev*
split (carved from the training pairs, never the eval split) on which the policy does not prefer
the safe answer, h measured against the initial model π₀ (the moving reference would reset it to
0.5 at each reference update). Ties (h = 0) count one half, as in evaluation. A category is updated
only once it has ``min_count`` dev pairs; a multi-category pair takes the largest γ of its
categories; ``unknown`` (or no category) always has γ = 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sc_data.errors import ConfigError

if TYPE_CHECKING:
    import pyarrow as pa

    from sc_data.train.config import CatDPOConfig

UNKNOWN = "unknown"


def unsafe_rates(h: Tensor, categories: Sequence[Sequence[str]]) -> dict[str, tuple[float, int]]:
    """Per category: (fraction of pairs with h < 0, ties counting 1/2; number of pairs).

    Args:
        h: log-ratio difference against π₀ per dev pair, (N,).
        categories: each pair's categories (a pair counts in each of them; ``unknown`` skipped).
    """
    unsafe = (h < 0).double() + 0.5 * (h == 0).double()  # (N,)
    sums: dict[str, list[float]] = {}
    for value, cats in zip(unsafe.tolist(), categories, strict=True):
        for cat in set(cats) - {UNKNOWN}:
            acc = sums.setdefault(cat, [0.0, 0])
            acc[0] += value
            acc[1] += 1
    return {cat: (total / count, int(count)) for cat, (total, count) in sums.items()}


class CatDPOController:
    """Holds γ_c and the smoothed unsafe rates u_c; dual ascent on dev-split measurements.

    Args:
        eta: dual step size η (γ units per unit of unsafe rate).
        target: target unsafe rate u*.
        gamma_max: upper clip of γ_c.
        ema: weight of the previous smoothed rate (0 = no smoothing).
        min_count: dev pairs a category needs before its γ is updated.
    """

    def __init__(self, *, eta: float, target: float, gamma_max: float, ema: float, min_count: int) -> None:
        self.eta = eta
        self.target = target
        self.gamma_max = gamma_max
        self.ema = ema
        self.min_count = min_count
        self.gamma: dict[str, float] = {}
        self.unsafe: dict[str, float] = {}

    def update(self, rates: dict[str, tuple[float, int]]) -> None:
        """One dual-ascent step from fresh per-category (rate, count) measurements."""
        for cat, (rate, count) in sorted(rates.items()):
            if cat == UNKNOWN or count < self.min_count:
                continue
            prev = self.unsafe.get(cat)
            smoothed = rate if prev is None else self.ema * prev + (1.0 - self.ema) * rate
            self.unsafe[cat] = smoothed
            gamma = self.gamma.get(cat, 0.0) + self.eta * (smoothed - self.target)
            self.gamma[cat] = min(max(gamma, 0.0), self.gamma_max)

    def margins(self, categories: Sequence[Sequence[str] | None]) -> Tensor:
        """Per-pair margin: the largest γ over the pair's categories (0 for unknown / none), (B,)."""
        values = [max((self.gamma.get(c, 0.0) for c in (cats or ()) if c != UNKNOWN), default=0.0) for cats in categories]
        return torch.tensor(values, dtype=torch.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"gamma": dict(self.gamma), "unsafe": dict(self.unsafe)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gamma = dict(state["gamma"])
        self.unsafe = dict(state["unsafe"])


def controller_for(config: CatDPOConfig, dev: pa.Table | None) -> CatDPOController:
    """The controller a run's ``cat_dpo`` section asks for, once its dev split is known to exist.

    Raises:
        ConfigError: the staged data has no dev split (the unsafe rates are measured there).
    """
    if dev is None or len(dev) == 0:
        raise ConfigError(
            "cat_dpo.enabled needs a dev split (data/dev/*.parquet) in the staged dataset; stage with a dev fraction or disable cat_dpo"
        )
    return CatDPOController(eta=config.eta, target=config.target, gamma_max=config.gamma_max, ema=config.ema, min_count=config.min_count)
