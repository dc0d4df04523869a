"""Training configuration: one small pydantic model per concern, composed into :class:`TrainConfig`.

Defaults are the Staged-Competence paper's (arXiv 2605.26315): LoRA r=16, α=32, dropout 0.05 on
q_proj,v_proj; lr 5e-5; effective batch 32; max length 1024, prompt ≤ 512; 5 epochs per stage;
β = 0.1. Unknown keys and wrong types fail loudly; the resolved config is written beside the run
(``train_config.json``) and into every checkpoint.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sc_data.errors import ConfigError, config_error
from sc_data.models.loading import Attention
from sc_data.train.curriculum import CompetenceKind, Schedule

#: The preference losses of :mod:`sc_data.train.losses` (one class each, registered there by this name).
LossType = Literal["sigmoid", "ipo", "hinge", "cdpo", "robust"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which model to train and how it is held in memory."""

    name: str = Field("smollm2-135m-instruct", description="Model reference: hub id, local folder, GGUF file or builtin alias.")
    device: str = Field(
        "auto",
        description="'auto' (the GPU accelerate assigns, else CPU), 'cpu', 'cuda', 'cuda:N' (one process) or 'mps'.",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Compute dtype: 'bfloat16' (auto on GPU) runs bf16 autocast through accelerate with fp32 trainable "
        "weights and reference master; a LoRA base is held in bf16.",
    )
    attn_implementation: Attention = Field(
        "auto",
        description="Attention kernel: auto is flex_attention on CUDA (a block mask, no dense (T, T) mask), sdpa elsewhere.",
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward instead of keeping them (TRL's default: on)."
    )
    trust_remote_code: bool = Field(False, description="Run the model repository's own code (only for models you trust).")

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", value):
            return value
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got {value!r}")


class LoraConfig(_Section):
    """LoRA adapter (peft); ``enabled=False`` means a full fine-tune with a second reference copy."""

    enabled: bool = Field(True, description="Train a LoRA adapter (False: a full fine-tune with a second reference copy).")
    r: int = Field(16, gt=0, description="Adapter rank (paper: 16).")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha (paper: 32).")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (paper: 0.05).")
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], description="Modules the adapter wraps (paper: q_proj, v_proj).")


class LossConfig(_Section):
    """Preference loss (sc_data.train.losses)."""

    type: LossType = Field("sigmoid", description="Preference loss: sigmoid is DPO, cdpo and robust use label_smoothing.")
    beta: float = Field(0.1, gt=0, description="DPO temperature β (paper: 0.1).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="ε for cdpo / robust, in [0, 0.5).")
    sft_weight: float = Field(0.0, ge=0, description="Weight of an SFT (per-token NLL on chosen) term; 0 = off.")

    @model_validator(mode="after")
    def _smoothing_applies(self) -> LossConfig:
        if self.label_smoothing > 0 and self.type not in ("cdpo", "robust"):
            raise ValueError(
                f"label_smoothing={self.label_smoothing} only applies to loss type 'cdpo' or 'robust', got {self.type!r}; "
                "set loss.type to one of those or label_smoothing to 0"
            )
        return self


class CurriculumConfig(_Section):
    """Schedule, competence and reference updates (sc_data.train.curriculum)."""

    schedule: Schedule = Field("staged_competence", description="Curriculum schedule (the Staged-Competence paper's comparison).")
    epochs_per_stage: float = Field(5.0, gt=0, description="Passes over each stage (paper: 5).")
    competence: CompetenceKind = Field("sqrt", description="Competence function: sqrt (Platanios et al. 2019) or linear.")
    competence_step: Literal["current", "zero_based"] = Field(
        "current",
        description="t in c(t): the step being taken (current: the last step reaches c = 1) or its 0-based index "
        "(zero_based: the reference code's, preset paper).",
    )
    c0: float = Field(0.01, gt=0, le=1, description="Initial competence c(0).")
    horizon: float = Field(1.0, gt=0, description="Competence horizon as a fraction of the stage's steps (c = 1 at T).")
    max_steps_per_stage: int | None = Field(None, gt=0, description="Cap on optimizer steps per stage (demos, tests).")
    ref_update: Literal["hard", "tr_dpo", "none"] = Field(
        "hard", description="hard: π_ref ← π_θ at each stage end (multi-stage schedules); tr_dpo: soft update every tau steps; none."
    )
    tr_dpo_alpha: float = Field(0.5, gt=0, le=1, description="TR-DPO mixing α (π_ref ← α π_θ + (1−α) π_ref).")
    tr_dpo_tau: int = Field(32, gt=0, description="TR-DPO update period in optimizer steps.")


class OptimConfig(_Section):
    """AdamW, LR schedule (per stage), batching, clipping."""

    lr: float = Field(5e-5, gt=0, description="Peak learning rate (paper: 5e-5).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    lr_schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="Decay after warm-up, restarted at each stage.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Fraction of a stage's steps spent warming up.")
    micro_batch: int = Field(4, gt=0, description="Pairs per forward pass per process.")
    grad_accum: int | None = Field(None, gt=0, description="Accumulation steps; default: effective_batch / (micro_batch × world size).")
    effective_batch: int = Field(32, gt=0, description="Pairs per optimizer step over all processes (paper: 32).")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")


class DataConfig(_Section):
    """Tokenisation limits (the shared log-prob core's truncation rule)."""

    max_length: int = Field(1024, gt=0, description="Prompt + answer tokens (paper: 1024).")
    max_prompt_length: int = Field(512, gt=0, description="Prompt tokens, left-truncated (paper: 512).")
    template: Literal["chat", "hh"] = Field(
        "chat",
        description="How a conversation becomes text: the tokenizer's chat template, or hh (the reference code's "
        "'\\n\\nHuman: ...\\n\\nAssistant: ...' transcript, preset paper).",
    )
    reuse_ref_logps: bool = Field(
        True, description="Stage 0 reuses the stored ref_margin log-probs when model, template, truncation and forward dtype match."
    )
    reuse_check_rows: int = Field(32, gt=0, description="Rows a live reference pass checks the stored log-probs on (all if fewer).")
    reuse_tolerance: float = Field(
        0.05, gt=0, description="Largest difference, in nats of a summed answer log-prob, at which stored log-probs are reused."
    )


class CatDPOConfig(_Section):
    """Category-adaptive margins (sc_data.train.cat_dpo); needs a dev split in the staged data."""

    enabled: bool = Field(False, description="Category-adaptive margins (needs a dev split in the staged data).")
    eta: float = Field(0.5, gt=0, description="Dual step size η.")
    target: float = Field(0.2, ge=0, le=1, description="Target unsafe rate u*.")
    gamma_max: float = Field(2.0, ge=0, description="Upper clip of γ_c.")
    every: int = Field(10, gt=0, description="Optimizer steps between dual updates.")
    ema: float = Field(0.5, ge=0, lt=1, description="EMA weight of the previous unsafe rate.")
    min_count: int = Field(5, gt=0, description="Dev pairs a category needs before its γ moves.")


class CheckpointConfig(_Section):
    """Checkpoints (at stage ends and every N steps)."""

    every: int | None = Field(None, gt=0, description="Also checkpoint every N optimizer steps.")
    keep: int = Field(2, gt=0, description="Checkpoints kept (step and stage-end alike; the newest are kept).")
    stage_ends: bool = Field(True, description="Checkpoint at every stage end (off only for smoke tests: no resume across stages).")


#: Experiment trackers ``output.report_to`` can feed (accelerate's trackers / transformers' callbacks of the same names).
ReportTo = Literal["none", "tensorboard", "wandb", "trackio"]


class OutputConfig(_Section):
    """What a run leaves besides ``metrics.jsonl``: tracking, the merged model, the Hub push (sc_data.train.outputs)."""

    report_to: ReportTo = Field(
        "none", description="Also log metrics and config to this tracker (tensorboard writes under run/logs/; the library must be installed)."
    )
    merge: bool = Field(False, description="LoRA runs: also write the merged model (safetensors) to run/merged/; final/ holds the adapter.")
    push_to_hub: str | None = Field(
        None, description="Hub model repo ORG/NAME to push final/ (adapter or model, tokenizer, card) to; token from HF_TOKEN or `hf auth login`."
    )
    private: bool = Field(True, description="Create the pushed repo private (an existing repo keeps its visibility).")

    @field_validator("push_to_hub")
    @classmethod
    def _repo_id(cls, value: str | None) -> str | None:
        if value is None or re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", value):
            return value
        raise ValueError(f"push_to_hub must be a Hub repo id ORG/NAME; got {value!r}")


#: Bundles of settings; a preset fills only the keys the configuration does not set itself.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "none": {},
    # The Staged-Competence reference code's choices where they differ from ours (README, "Presets").
    "paper": {
        "curriculum": {"competence_step": "zero_based"},
        "optim": {"lr_schedule": "linear", "warmup_ratio": 0.0},
        "data": {"template": "hh"},
    },
}


class TrainConfig(_Section):
    """Everything one training run needs; composed from the sections above."""

    preset: Literal["none", "paper"] = Field(
        "none", description="Start from a bundle of settings (paper: the reference code's); explicit keys win."
    )
    seed: int = Field(0, description="Seed of every random choice; same seed, same run.")
    engine: Literal["native", "trl"] = Field(
        "native", description="Training loop: native (sc-data's packed prompt-once loop) or trl (TRL's DPOTrainer, same curriculum)."
    )
    model: ModelConfig = Field(default_factory=ModelConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    cat_dpo: CatDPOConfig = Field(default_factory=CatDPOConfig)
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset", "none") not in PRESETS:
            return data
        out = dict(data)
        for section, values in PRESETS[data.get("preset", "none")].items():
            given = out.get(section) or {}
            out[section] = {**values, **given} if isinstance(given, dict) else given  # a non-mapping fails validation
        return out

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.data.max_prompt_length >= self.data.max_length:
            raise ValueError(
                f"data.max_prompt_length ({self.data.max_prompt_length}) must be below data.max_length "
                f"({self.data.max_length}) so answers keep some tokens; lower it or raise max_length"
            )
        if self.cat_dpo.enabled and self.loss.type == "ipo":
            raise ValueError("cat_dpo needs a sigmoid-type loss (sigmoid, hinge, cdpo, robust), got loss.type='ipo'")
        if self.output.merge and not self.lora.enabled:
            raise ValueError("output.merge merges a LoRA adapter, but lora.enabled is false: a full fine-tune's final/ is already the model")
        if self.curriculum.ref_update == "tr_dpo" and self.lora.enabled:
            raise ValueError("ref_update='tr_dpo' needs a full reference copy: set lora.enabled=false or ref_update='hard'")
        return self

    def grad_accum_for(self, world_size: int) -> int:
        """Accumulation steps so that micro_batch × accum × world_size = effective_batch.

        Raises:
            ConfigError: the effective batch is not a multiple of micro_batch × world size, or an
                explicit ``grad_accum`` disagrees with it (both are named).
        """
        per_step = self.optim.micro_batch * world_size
        if self.optim.grad_accum is not None and self.optim.grad_accum * per_step != self.optim.effective_batch:
            raise ConfigError(
                f"optim.grad_accum={self.optim.grad_accum} × micro_batch {self.optim.micro_batch} × world size {world_size} = "
                f"{self.optim.grad_accum * per_step}, but optim.effective_batch={self.optim.effective_batch}; set one of them "
                "so they agree (or leave grad_accum unset to derive it)"
            )
        if self.optim.effective_batch % per_step:
            raise ConfigError(
                f"optim.effective_batch={self.optim.effective_batch} is not a multiple of micro_batch × world size "
                f"= {self.optim.micro_batch} × {world_size}; choose micro_batch dividing it or set grad_accum"
            )
        return self.optim.effective_batch // per_step

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Validate a nested dict, raising :class:`ConfigError` with every problem listed."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise config_error("training config", e) from None
