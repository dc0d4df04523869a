"""``ref_margin``: how strongly a reference model already prefers the safe answer.

margin = log pi_ref(chosen | prompt) - log pi_ref(rejected | prompt), summed over answer tokens and
as a per-token mean, computed by the shared log-prob core (:mod:`sc_data.models.logprob`) so the trainer
can reuse ``chosen_logp`` / ``rejected_logp`` as its first stage's reference log-probs. The
difficulty column is the per-token-mean margin: the summed margin mostly tracks answer length
(in the paper's set the rejected answer is the longer one in 66 % of pairs). Staged-Competence:
arXiv 2605.26315.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from sc_data.models.loading import Attention, Device, DType
from sc_data.schema import score_column
from sc_data.scorers.base import Batch, Direction, Scorer, ScorerOptions


class RefMarginScorer(Scorer):
    """Reference-model log-prob margin between the chosen and the rejected answer.

    Input columns: ``prompt``, ``chosen``, ``rejected`` (message lists).
    Output columns (``ref_margin__<field>``): ``chosen_logp``, ``rejected_logp`` (summed, nats),
    ``chosen_logp_mean``, ``rejected_logp_mean`` (per token), ``chosen_tokens``,
    ``rejected_tokens``, ``margin`` (summed), ``margin_mean`` (per token; the difficulty column,
    larger = easier), ``flags`` (comma-joined truncation / template flags, null when none).

    Options: see :class:`RefMarginScorer.Options`.
    """

    class Options(ScorerOptions):
        """Options of :class:`RefMarginScorer`."""

        model: str = Field(
            "smollm2-135m-instruct", min_length=1,
            description="Reference model: alias, local folder, .gguf file or hub id.",
        )
        device: Device = Field("auto", description="Where the model runs; auto = CUDA, then MPS, then CPU.")
        dtype: DType = Field("auto", description="Weights' dtype; auto = bf16 on CUDA, fp32 otherwise.")
        attn_implementation: Attention = Field(
            "auto", description="Attention kernel: auto = flex_attention on CUDA (a block mask), sdpa elsewhere.",
        )
        batch_tokens: int = Field(
            8192, ge=1,
            description="Token budget of one forward pass (rows x longest packed row); rows are length-sorted.",
        )
        max_length: int = Field(1024, ge=2, description="Most tokens of prompt + one answer (the paper: 1024).")
        max_prompt_length: int = Field(512, ge=1, description="Most prompt tokens, left-truncated (the paper: 512).")
        trust_remote_code: bool = Field(False, description="Run the model repository's own code.")

    name: ClassVar[str] = "ref_margin"
    fields: ClassVar[dict[str, str]] = {
        "chosen_logp": "float64",
        "rejected_logp": "float64",
        "chosen_logp_mean": "float64",
        "rejected_logp_mean": "float64",
        "chosen_tokens": "int64",
        "rejected_tokens": "int64",
        "margin": "float64",
        "margin_mean": "float64",
        "flags": "string",
    }
    difficulty_field: ClassVar[str] = "margin_mean"
    direction: ClassVar[Direction] = "larger_is_easier"

    def validate(self) -> ScorerOptions:
        """Check the options and the truncation rule without loading anything.

        Raises:
            ConfigError: an option is out of range, not a valid choice, or the limits contradict.
        """
        from sc_data.models.logprob import TruncationConfig

        opts = super().validate()
        TruncationConfig(self.max_length, self.max_prompt_length)
        return opts

    def load(self) -> None:
        """Load the reference model in eval mode and build the pair tokenizer."""
        from sc_data.models.loading import load_causal_lm, resolve_attention, resolve_device
        from sc_data.models.logprob import PairTokenizer, TruncationConfig, forward_dtype

        self.validate()
        attention = resolve_attention(self.attn_implementation, resolve_device(self.device))
        model, tokenizer, ref = load_causal_lm(
            self.model, device=self.device, dtype=self.dtype, trust_remote_code=self.trust_remote_code,
            attn_implementation=attention,
        )
        model.requires_grad_(False)
        self._model, self._tokenizer, self._ref = model, tokenizer, ref
        self._pairs = PairTokenizer(tokenizer, truncation=TruncationConfig(self.max_length, self.max_prompt_length))
        self._torch_dtype = forward_dtype(next(model.parameters()).dtype)
        self._torch_device = str(next(model.parameters()).device)

    def unload(self) -> None:
        """Drop the model (and free GPU memory)."""
        for attr in ("_model", "_tokenizer", "_pairs"):
            self.__dict__.pop(attr, None)
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def config(self) -> dict[str, Any]:
        """Options plus, once loaded, the model ref/hash, template, truncation rule and dtype."""
        out = super().config()
        if "_ref" in vars(self):
            out["model_ref"] = self._ref.as_dict()
            out["template"] = self._pairs.describe()
            out["torch_dtype"] = self._torch_dtype
            out["torch_device"] = self._torch_device
        return out

    def _chunks(self, order: list[int], widths: list[int]) -> list[list[int]]:
        """Group rows (already length-sorted) so rows x widest row stays within ``batch_tokens``."""
        chunks: list[list[int]] = []
        current: list[int] = []
        widest = 0
        for i in order:
            w = max(widest, widths[i])
            if current and w * (len(current) + 1) > self.batch_tokens:
                chunks.append(current)
                current, w = [], widths[i]
            current.append(i)
            widest = w
        if current:
            chunks.append(current)
        return chunks

    def score(self, batch: Batch) -> dict[str, list[Any]]:
        """Score a batch: tokenise, length-sort, run the fast path in ``inference_mode``."""
        import torch

        from sc_data.models.logprob import pair_logprobs

        n = len(batch["prompt"])
        out: dict[str, list[Any]] = {score_column(self.name, f): [None] * n for f in [*self.fields, "error"]}
        col = {f: score_column(self.name, f) for f in [*self.fields, "error"]}
        tokenized: dict[int, Any] = {}
        for i in range(n):
            try:
                pair = self._pairs(batch["prompt"][i], batch["chosen"][i], batch["rejected"][i])
            except Exception as e:  # noqa: BLE001 - a bad row gets an error, never aborts the batch
                out[col["error"]][i] = f"tokenization failed: {type(e).__name__}: {e}"
                continue
            empty = [f for f in pair.flags if f.endswith("_empty")]
            if empty:
                out[col["error"]][i] = f"answer has no tokens after templating ({', '.join(empty)})"
                out[col["flags"]][i] = ",".join(pair.flags)
                continue
            tokenized[i] = pair
        widths = {i: len(p.prompt_ids) + len(p.chosen_ids) + len(p.rejected_ids) for i, p in tokenized.items()}
        order = sorted(tokenized, key=lambda i: widths[i])
        width_list = [widths.get(i, 0) for i in range(n)]
        pad = self._tokenizer.pad_token_id
        for chunk in self._chunks(order, width_list):
            with torch.inference_mode():
                lp = pair_logprobs(self._model, [tokenized[i] for i in chunk], pad_token_id=pad)
            values = {
                "chosen_logp": lp.chosen_sum.double().tolist(),
                "rejected_logp": lp.rejected_sum.double().tolist(),
                "chosen_logp_mean": lp.chosen_mean.double().tolist(),
                "rejected_logp_mean": lp.rejected_mean.double().tolist(),
                "chosen_tokens": lp.chosen_len.tolist(),
                "rejected_tokens": lp.rejected_len.tolist(),
            }
            for k, i in enumerate(chunk):
                for field, vals in values.items():
                    out[col[field]][i] = vals[k]
                out[col["margin"]][i] = values["chosen_logp"][k] - values["rejected_logp"][k]
                out[col["margin_mean"]][i] = values["chosen_logp_mean"][k] - values["rejected_logp_mean"][k]
                out[col["flags"]][i] = ",".join(tokenized[i].flags) or None
        return out
