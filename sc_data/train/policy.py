"""The trained policy and its reference: full fine-tune (a second copy) or LoRA (the same copy).

- Full fine-tune: the reference is a frozen fp32 copy, run under the same autocast as the
  policy, so after a hard update it computes exactly what the policy does (the next stage starts
  at loss log 2 in bf16 as in fp32) and a TR-DPO update, done in fp32, never rounds away.
- LoRA (peft): the reference is the base with the adapter disabled, so no second copy is held.
  The base may be held in the compute dtype (bf16), the adapter in fp32. A hard update merges the
  adapter into the base *in place* from an fp32 master of the adapted weights (a bf16 merge would
  round away lr-sized updates; the master keeps every one, and the bf16 base is cast from it
  once), then re-initialises the adapter (seeded, B = 0). Parameters stay the same objects, so a
  DDP / FSDP wrapper and the optimizer survive the update; the caller resets optimizer state and
  schedule.

Dropout is switched off in policy and reference (TRL's default), LoRA's dropout included.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from sc_data.errors import InputError
from sc_data.train.config import LoraConfig


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout probability, as TRL's ``disable_dropout_in_model`` does."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def with_adapter(base: nn.Module, lora: LoraConfig, *, seed: int) -> nn.Module:
    """``base`` wrapped in a fresh LoRA adapter built from our :class:`LoraConfig` (see :func:`with_peft_adapter`)."""
    from peft import LoraConfig as PeftLoraConfig

    config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                            target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
    return with_peft_adapter(base, config, seed=seed)


def with_peft_adapter(base: nn.Module, peft_config: Any, *, seed: int) -> nn.Module:
    """``base`` wrapped in a fresh adapter: seeded init, fp32 adapter weights whatever the base's dtype."""
    from peft import get_peft_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, peft_config, autocast_adapter_dtype=True)
    for param in model.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    disable_dropout(model)
    return model


def lora_layers(model: nn.Module) -> dict[str, Any]:
    """Every peft LoRA layer of ``model`` by its module name."""
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


class Policy:
    """Owns the policy model and gives access to the current reference.

    Args:
        model: the policy LM: a peft model for LoRA (see :func:`with_adapter`), else the plain LM
            with fp32 weights.
        reference: the frozen fp32 reference LM (full fine-tune only; None for LoRA).
        adapter_seed: seeds each fresh adapter's init, so resume rebuilds identical adapters.
    """

    def __init__(self, model: nn.Module, *, reference: nn.Module | None, adapter_seed: int) -> None:
        self.model = model
        self.reference = reference
        self.adapter_seed = adapter_seed
        self.lora = reference is None
        self.master: dict[str, torch.Tensor] = {}
        # Every adapter merged into the base so far (peft's state-dict keys, fp32, CPU): with the
        # current one they make the run's change to the starting model as one adapter (:meth:`adapter`).
        self.merged_adapters: list[dict[str, torch.Tensor]] = []
        if self.lora:
            # fp32 master of each adapted base weight, only where the base is held in lower precision.
            self.master = {
                name: layer.get_base_layer().weight.detach().float().clone()
                for name, layer in lora_layers(model).items()
                if layer.get_base_layer().weight.dtype != torch.float32
            }
        else:
            reference.requires_grad_(False)
            reference.eval()
        disable_dropout(self.model)
        self.model.train()

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    @contextlib.contextmanager
    def as_reference(self) -> Iterator[None]:
        """Inside, the policy model computes the reference (LoRA: adapter disabled); eval mode."""
        was_training = self.model.training
        self.model.eval()
        try:
            if self.lora:
                with self.model.disable_adapter():
                    yield
            else:
                yield
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def hard_update(self, generation: int) -> None:
        """π_ref ← π_θ. LoRA: merge in place (fp32 master) and restart the adapter for ``generation``."""
        if not self.lora:
            for ref, pol in zip(self.reference.parameters(), self.model.parameters(), strict=True):
                ref.copy_(pol)
            return
        self.merged_adapters.append(self._adapter_weights())
        for name, layer in lora_layers(self.model).items():
            weight = layer.get_base_layer().weight
            for adapter in layer.active_adapters:
                delta = layer.get_delta_weight(adapter).float()
                if name in self.master:
                    self.master[name] += delta
                    weight.copy_(self.master[name])  # one cast, from the fp32 sum
                else:
                    weight.add_(delta)
        self.reset_adapter(generation)

    @torch.no_grad()
    def reset_adapter(self, generation: int) -> None:
        """Fresh adapter weights for ``generation`` (A seeded as peft initialises it, B = 0)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.adapter_seed * 1009 + generation)
            for layer in lora_layers(self.model).values():
                for adapter in layer.active_adapters:
                    layer.reset_lora_parameters(adapter, init_lora_weights=True)
                    layer.lora_A[adapter].weight.data = layer.lora_A[adapter].weight.data.float()
                    layer.lora_B[adapter].weight.data = layer.lora_B[adapter].weight.data.float()

    @torch.no_grad()
    def soft_update(self, alpha: float) -> None:
        """TR-DPO: π_ref ← α π_θ + (1 − α) π_ref, in the fp32 reference (full fine-tune only)."""
        if self.reference is None:
            raise RuntimeError("TR-DPO soft updates need a full reference copy (config rejects LoRA + tr_dpo)")
        for ref, pol in zip(self.reference.parameters(), self.model.parameters(), strict=True):
            ref.mul_(1.0 - alpha).add_(pol.detach().float(), alpha=alpha)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What changes every step: the adapter (LoRA) or the whole policy (full fine-tune), on CPU."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items() if not self.lora or "lora_" in k}

    def reference_state(self) -> dict[str, torch.Tensor]:
        """What changes only at reference updates: the reference copy (full fine-tune), or, for LoRA,
        the adapted base weights (the only ones a merge touches; the rest is the starting model)
        and their fp32 master."""
        if not self.lora:
            return {k: v.detach().cpu().clone() for k, v in self.reference.state_dict().items()}
        out = {f"base.{name}": layer.get_base_layer().weight.detach().cpu().clone() for name, layer in lora_layers(self.model).items()}
        merged = {f"adapter.{i}.{k}": v for i, part in enumerate(self.merged_adapters) for k, v in part.items()}
        return {**out, **{f"master.{k}": v.cpu().clone() for k, v in self.master.items()}, **merged}

    def load_states(self, trainable: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None) -> None:
        """Restore :meth:`trainable_state` and (when given) :meth:`reference_state` exactly."""
        if reference is not None and not self.lora:
            self.reference.load_state_dict(reference, strict=True)
        elif reference is not None:
            with torch.no_grad():
                for name, layer in lora_layers(self.model).items():
                    layer.get_base_layer().weight.copy_(reference[f"base.{name}"])
            for k in self.master:
                self.master[k] = reference[f"master.{k}"].to(self.master[k].device)
            parts: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in reference.items():
                if key.startswith("adapter."):
                    _, index, name = key.split(".", 2)
                    parts.setdefault(int(index), {})[name] = value
            if not parts:  # a reference generation > 0 always follows a merged adapter
                raise InputError("this checkpoint's reference generation was written without the adapters merged into it "
                                 "(an older sc-data), so final/ could not hold the whole policy; start the run over")
            self.merged_adapters = [parts[i] for i in sorted(parts)]
        missing = self.model.load_state_dict(trainable, strict=False)
        if self.lora and any("lora_" in k for k in missing.missing_keys):
            raise RuntimeError(f"checkpoint lacks adapter weights {missing.missing_keys[:3]}")

    def _adapter_weights(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return {k: v.detach().float().cpu().clone() for k, v in get_peft_model_state_dict(self.model).items()}

    def adapter(self) -> tuple[dict[str, torch.Tensor], Any]:
        """The policy as one peft LoRA adapter on the starting model: (weights by peft's keys, ``LoraConfig``).

        The policy is base + Σₖ s·BₖAₖ (s = α/r) over the n adapters merged at reference updates and
        the current one (left out when a last-stage update has just restarted it at B = 0), so the
        A matrices stacked by rows and the B matrices by columns form one rank-n·r adapter with the
        same scale (α·n, or α·√n under rsLoRA), exact up to float rounding.
        """
        current = self._adapter_weights()
        fresh = all(not v.any() for k, v in current.items() if ".lora_B." in k)  # B = 0: a reference update just merged it
        parts = self.merged_adapters if fresh and self.merged_adapters else [*self.merged_adapters, current]
        stacked = {
            key: torch.cat([p[key] for p in parts], dim=0 if ".lora_A." in key else 1) if ".lora_" in key else value
            for key, value in parts[-1].items()
        }
        config = copy.deepcopy(self.model.peft_config["default"])
        n = len(parts)
        scale = math.sqrt(n) if config.use_rslora else n
        config.r, config.lora_alpha = config.r * n, config.lora_alpha * scale
        config.rank_pattern = {k: v * n for k, v in (config.rank_pattern or {}).items()}
        config.alpha_pattern = {k: v * scale for k, v in (config.alpha_pattern or {}).items()}
        return stacked, config

    def merged(self) -> nn.Module:
        """The policy as a plain model (LoRA merged in fp32 into the master); the Policy is spent afterwards."""
        if not self.lora:
            return self.model
        self.hard_update(generation=-1)
        return self.model.unload()
