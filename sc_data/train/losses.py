"""Preference losses: small modules returning per-example (loss, chosen_reward, rejected_reward).

Every loss sees the summed answer log-probs of the policy and the reference (from the shared
log-prob core, :mod:`sc_data.models.logprob`) and the answer lengths (IPO needs per-token means). The
trainer reduces (mean over the batch); the losses never do, so Cat-DPO margins, per-category
metrics and DDP slices all work on the same per-example values. Definitions follow TRL's
``DPOTrainer`` (trl 1.16) and torchtune's ``rlhf/loss/dpo.py``:

- rewards: ``chosen_reward = β·(log πθ(y_w|x) − log π_ref(y_w|x))``, likewise rejected; detached.
- ``h = [log πθ(y_w) − log π_ref(y_w)] − [log πθ(y_l) − log π_ref(y_l)]``.

References:
    Rafailov et al. 2023 (DPO, arXiv 2305.18290); Azar et al. 2023 (IPO, arXiv 2310.12036);
    Mitchell 2023 (cDPO note); Chowdhury et al. 2024 (robust DPO, arXiv 2403.00409).
"""

from __future__ import annotations

from typing import get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sc_data.train.config import LossType

LOSS_TYPES: tuple[str, ...] = get_args(LossType)

LossOutput = tuple[Tensor, Tensor, Tensor]


class PreferenceLoss(nn.Module):
    """Base of the pairwise losses; subclasses implement :meth:`per_example` on ``h``.

    Args:
        beta: DPO temperature β (> 0), default 0.1 as in the papers.
        label_smoothing: ε in [0, 0.5), used by ``cdpo`` and ``robust`` only.
    """

    #: Whether the loss compares per-token-mean log-ratios (IPO) instead of sums.
    uses_token_means: bool = False

    def __init__(self, beta: float = 0.1, *, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.beta = beta
        self.label_smoothing = label_smoothing

    def per_example(self, h: Tensor, margin: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(
        self,
        policy_chosen: Tensor,
        policy_rejected: Tensor,
        ref_chosen: Tensor,
        ref_rejected: Tensor,
        *,
        chosen_len: Tensor | None = None,
        rejected_len: Tensor | None = None,
        margin: Tensor | None = None,
    ) -> LossOutput:
        """Per-example loss and rewards.

        Args:
            policy_chosen, policy_rejected, ref_chosen, ref_rejected: summed answer log-probs, (B,).
            chosen_len, rejected_len: answer token counts, (B,); required by IPO.
            margin: per-example offset γ subtracted from β·h inside the sigmoid (Cat-DPO), (B,).

        Returns:
            (loss, chosen_reward, rejected_reward), each (B,); rewards are detached.
        """
        chosen_ratio = policy_chosen - ref_chosen  # (B,)
        rejected_ratio = policy_rejected - ref_rejected  # (B,)
        if self.uses_token_means:
            if chosen_len is None or rejected_len is None:
                raise ValueError("IPO compares per-token means: pass chosen_len and rejected_len.")
            h = chosen_ratio / chosen_len.clamp(min=1) - rejected_ratio / rejected_len.clamp(min=1)
        else:
            h = chosen_ratio - rejected_ratio
        if margin is None:
            margin = torch.zeros_like(h)
        loss = self.per_example(h, margin)
        return loss, self.beta * chosen_ratio.detach(), self.beta * rejected_ratio.detach()


class SigmoidLoss(PreferenceLoss):
    """DPO: −log σ(β·h − γ) (γ = 0 unless Cat-DPO sets a per-category margin)."""

    def per_example(self, h: Tensor, margin: Tensor) -> Tensor:
        return -F.logsigmoid(self.beta * h - margin)


class IPOLoss(PreferenceLoss):
    """IPO: (h − 1/(2β))² with h from per-token-mean log-ratios (TRL's normalisation)."""

    uses_token_means = True

    def per_example(self, h: Tensor, margin: Tensor) -> Tensor:
        return (h - margin / self.beta - 1.0 / (2.0 * self.beta)) ** 2


class HingeLoss(PreferenceLoss):
    """SLiC hinge: max(0, 1 − β·h)."""

    def per_example(self, h: Tensor, margin: Tensor) -> Tensor:
        return torch.relu(1.0 - (self.beta * h - margin))


class CDPOLoss(PreferenceLoss):
    """Conservative DPO (label smoothing ε): −(1−ε)·log σ(β·h) − ε·log σ(−β·h)."""

    def per_example(self, h: Tensor, margin: Tensor) -> Tensor:
        z = self.beta * h - margin
        eps = self.label_smoothing
        return -(1.0 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)


class RobustLoss(PreferenceLoss):
    """Robust DPO: [(1−ε)·(−log σ(β·h)) − ε·(−log σ(−β·h))] / (1 − 2ε), unbiased under label noise ε."""

    def per_example(self, h: Tensor, margin: Tensor) -> Tensor:
        z = self.beta * h - margin
        eps = self.label_smoothing
        return ((1.0 - eps) * -F.logsigmoid(z) - eps * -F.logsigmoid(-z)) / (1.0 - 2.0 * eps)


LOSSES: dict[str, type[PreferenceLoss]] = {
    "sigmoid": SigmoidLoss,
    "ipo": IPOLoss,
    "hinge": HingeLoss,
    "cdpo": CDPOLoss,
    "robust": RobustLoss,
}


def build_loss(loss_type: LossType, *, beta: float, label_smoothing: float = 0.0) -> PreferenceLoss:
    """The loss module named ``loss_type`` (one of :data:`LOSS_TYPES`)."""
    return LOSSES[loss_type](beta, label_smoothing=label_smoothing)


def sft_nll(policy_chosen: Tensor, chosen_len: Tensor) -> Tensor:
    """Per-example SFT term: negative log-likelihood of the chosen answer, per-token mean, (B,)."""
    return -policy_chosen / chosen_len.clamp(min=1)
