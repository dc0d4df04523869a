"""``reward_gap``: the gap r(prompt, chosen) − r(prompt, rejected) of a sequence-classification reward model.

A pair the reward model already separates by a wide margin is easy; a small or negative gap is
hard (docs/ARCHITECTURE.md, "Scorers"). The reward of a conversation is the model's single logit read at the
last real (non-pad) token: HF's ``*ForSequenceClassification`` decoders find that token through
``config.pad_token_id``, encoders pool their first token, so we pad on the tokenizer's own side and
let the model pool as it was trained to.

Text: the tokenizer's chat template over prompt + answer when it has one (the template adds BOS
and special tokens itself), else a plain rendering, one line per turn (``User: ...``,
``Assistant: ...``) tokenised with the tokenizer's special tokens (``[CLS] ... [SEP]`` for BERT-like
classifiers). Texts longer than ``max_length`` tokens are cut on ``truncation_side`` (default
``left``: keep the answer's end, where a decoder reward model reads its score) and flagged in
``reward_gap__truncated``.

Input columns: ``prompt``, ``chosen``, ``rejected``.
Output columns: ``reward_gap__chosen_reward``, ``reward_gap__rejected_reward``, ``reward_gap__gap``
(float64), ``reward_gap__truncated`` (bool), ``reward_gap__error``.

Example:
    >>> scorer = RewardGapScorer(model="OpenAssistant/reward-model-deberta-v3-large-v2")  # doctest: +SKIP
    >>> scorer.load(); scorer.score(batch)["reward_gap__gap"]  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from sc_data.errors import ConfigError
from sc_data.models.chat import classifier_logits, encode_conversations
from sc_data.models.loading import Device, DType
from sc_data.scorers.base import Batch, Scorer, ScorerOptions


class RewardGapScorer(Scorer):
    """Reward-model gap between chosen and rejected: a large gap means an easy pair.

    Options: see :class:`RewardGapScorer.Options` (``model`` is required).
    """

    class Options(ScorerOptions):
        """Options of :class:`RewardGapScorer`."""

        model: str | None = Field(
            None,
            description="Reward model: local folder, .gguf file or hub id; one output logit.",
        )
        max_length: int = Field(
            1024,
            ge=8,
            description="Tokens per (prompt + answer) text; longer ones are cut and flagged.",
        )
        truncation_side: Literal["left", "right"] = Field(
            "left",
            description="Which end a long text loses: left keeps the answer's end (decoders), right keeps the start.",
        )
        batch_size: int = Field(8, ge=1, description="Texts per forward pass.")
        device: Device = "auto"
        dtype: DType = "auto"
        trust_remote_code: bool = False

    name: ClassVar[str] = "reward_gap"
    fields: ClassVar[dict[str, str]] = {
        "chosen_reward": "float64",
        "rejected_reward": "float64",
        "gap": "float64",
        "truncated": "bool",
    }
    difficulty_field: ClassVar[str] = "gap"
    direction: ClassVar[Literal["larger_is_easier"]] = "larger_is_easier"

    def validate(self) -> ScorerOptions:
        """Check the options without loading anything (the runner calls it before any model loads).

        Raises:
            ConfigError: no model, or an option out of range / not a valid choice.
        """
        if self.model is None:
            raise ConfigError(
                "reward_gap needs a reward model: pass model=<folder, .gguf or hub id> "
                "(e.g. --option reward_gap.model=OpenAssistant/reward-model-deberta-v3-large-v2)"
            )
        return super().validate()

    def load(self) -> None:
        """Load the reward model; check it has a single output logit."""
        from sc_data.models.loading import load_sequence_classifier

        opts = self.validate()
        model, tokenizer, ref = load_sequence_classifier(
            opts.model,
            device=opts.device,
            dtype=opts.dtype,
            trust_remote_code=opts.trust_remote_code,
        )
        if model.config.num_labels != 1:
            raise ConfigError(
                f"reward model {opts.model!r} has {model.config.num_labels} output labels; a reward model "
                "has exactly 1 (a harm classifier with several labels belongs to the judge scorer: "
                "--option judge.backend=classifier)"
            )
        tokenizer.truncation_side = opts.truncation_side
        self._opts, self._model, self._tokenizer, self._ref = opts, model, tokenizer, ref

    def unload(self) -> None:
        """Drop the model (frees GPU memory once nothing else holds it)."""
        for attr in ("_model", "_tokenizer"):
            self.__dict__.pop(attr, None)

    def config(self) -> dict[str, Any]:
        """The options as given, plus the resolved reward model (path, sha256) once loaded."""
        out = super().config()
        if "_ref" in vars(self):
            out["model_ref"] = self._ref.as_dict()
        return out

    def score(self, batch: Batch) -> dict[str, list[Any]]:
        """Reward both answers of every row; a row whose text can't be scored gets nulls and an error."""
        n = len(batch["prompt"])
        cols: dict[str, list[Any]] = {c: [None] * n for c in self.output_columns()}
        convs, owners = [], []
        for i in range(n):
            try:
                for side in ("chosen", "rejected"):
                    convs.append(list(batch["prompt"][i]) + list(batch[side][i]))
                    owners.append(i)
            except (TypeError, KeyError) as e:
                cols["reward_gap__error"][i] = f"malformed messages: {type(e).__name__}: {e}"
        rewards: dict[int, list[float]] = {}
        errors: dict[int, str] = {}
        truncated: dict[int, bool] = {}
        good_ids, good_owner = [], []
        for owner, conv in zip(owners, convs, strict=True):
            try:
                ((ids, cut),) = encode_conversations(
                    self._tokenizer, [conv], max_length=self._opts.max_length
                )
            except Exception as e:  # a template that rejects this conversation fails this row only
                errors[owner] = (
                    f"could not render/tokenise the conversation: {type(e).__name__}: {e}"
                )
                continue
            pad_id = self._model.config.pad_token_id
            if pad_id is not None and ids and ids[-1] == pad_id:
                errors[owner] = (
                    "the text ends with the pad token, so the model cannot find its last real token; "
                    "use a tokenizer whose pad token differs from its end-of-text token"
                )
                continue
            truncated[owner] = truncated.get(owner, False) or cut
            good_ids.append(ids)
            good_owner.append(owner)
        logits = classifier_logits(
            self._model, self._tokenizer, good_ids, batch_size=self._opts.batch_size
        )
        for owner, row in zip(good_owner, logits, strict=True):
            rewards.setdefault(owner, []).append(float(row[0]))
        for i in range(n):
            if cols["reward_gap__error"][i] is not None:
                continue
            if i in errors:
                cols["reward_gap__error"][i] = errors[i]
                continue
            chosen, rejected = rewards[i]
            cols["reward_gap__chosen_reward"][i] = chosen
            cols["reward_gap__rejected_reward"][i] = rejected
            cols["reward_gap__gap"][i] = chosen - rejected
            cols["reward_gap__truncated"][i] = truncated[i]
        return cols
