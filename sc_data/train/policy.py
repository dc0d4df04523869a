"""The trained policy and its reference: full fine-tune (two copies) or LoRA (one copy).

- Full fine-tune: the reference is a frozen copy (bf16 allowed on GPU). A hard update copies
  the policy's weights into it; TR-DPO mixes them, ``π_ref ← α π_θ + (1 − α) π_ref``.
- LoRA (peft): the reference is the base with the adapter disabled, so no second copy is held.
  A hard update merges the adapter into the base in fp32 (a bf16 merge rounds away
  lr-5e-5-sized updates) and starts a fresh adapter; the caller resets optimizer and schedule.

Dropout is switched off in policy and reference (TRL's default), LoRA's dropout included.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sc_data.train.config import LoraConfig


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout probability, as TRL's ``disable_dropout_in_model`` does."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


class PolicyPair:
    """Owns the policy model and gives access to the current reference.

    Args:
        model: the loaded causal LM (fp32 weights).
        lora: adapter settings; ``lora.enabled=False`` for a full fine-tune.
        ref_dtype: dtype of the frozen reference copy (full fine-tune only).
        adapter_seed: seeds each fresh adapter's init, so resume rebuilds identical adapters.
    """

    def __init__(self, model: nn.Module, *, lora: LoraConfig, ref_dtype: torch.dtype, adapter_seed: int) -> None:
        self.lora = lora
        self.adapter_seed = adapter_seed
        self.reference: nn.Module | None = None
        if lora.enabled:
            self.model = self._with_adapter(model, generation=0)
        else:
            self.model = model
            self.reference = copy.deepcopy(model).to(ref_dtype)
            self.reference.requires_grad_(False)
            self.reference.eval()
        disable_dropout(self.model)
        self.model.train()

    def _with_adapter(self, base: nn.Module, *, generation: int) -> nn.Module:
        from peft import LoraConfig as PeftLoraConfig
        from peft import get_peft_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.adapter_seed * 1009 + generation)
            peft_config = PeftLoraConfig(
                r=self.lora.r,
                lora_alpha=self.lora.alpha,
                lora_dropout=self.lora.dropout,
                target_modules=list(self.lora.target_modules),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(base, peft_config)
        disable_dropout(model)
        return model

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def reference_model(self) -> Iterator[nn.Module]:
        """The current reference, in eval mode; for LoRA, the base with the adapter disabled."""
        if self.reference is not None:
            yield self.reference
            return
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                yield self.model
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def hard_update(self, generation: int) -> None:
        """π_ref ← π_θ. LoRA: merge in fp32 and start adapter ``generation`` (fresh, B = 0)."""
        if self.reference is not None:
            for ref, pol in zip(self.reference.parameters(), self.model.parameters(), strict=True):
                ref.copy_(pol.to(ref.dtype))
            return
        base = self.model.merge_and_unload(safe_merge=True)
        self.model = self._with_adapter(base, generation=generation)
        self.model.train()

    @torch.no_grad()
    def soft_update(self, alpha: float) -> None:
        """TR-DPO: π_ref ← α π_θ + (1 − α) π_ref (full fine-tune only)."""
        if self.reference is None:
            raise RuntimeError("TR-DPO soft updates need a full reference copy (config rejects LoRA + tr_dpo)")
        for ref, pol in zip(self.reference.parameters(), self.model.parameters(), strict=True):
            ref.copy_((alpha * pol.float() + (1.0 - alpha) * ref.float()).to(ref.dtype))

    def state_dicts(self) -> dict[str, dict[str, Any]]:
        """Everything to restore exactly: policy (base + adapter for LoRA) and the reference copy."""
        out = {"policy": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}}
        if self.reference is not None:
            out["reference"] = {k: v.detach().cpu().clone() for k, v in self.reference.state_dict().items()}
        return out

    def load_state_dicts(self, states: dict[str, dict[str, Any]]) -> None:
        self.model.load_state_dict(states["policy"], strict=True)
        if self.reference is not None:
            self.reference.load_state_dict(states["reference"], strict=True)

    def merged(self) -> nn.Module:
        """The policy as a plain model (LoRA merged in fp32); the PolicyPair is spent afterwards."""
        if self.reference is not None:
            return self.model
        return self.model.merge_and_unload(safe_merge=True)
