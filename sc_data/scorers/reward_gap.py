"""``reward_gap``: the gap r(prompt, chosen) − r(prompt, rejected) of a sequence-classification reward model.

A pair the reward model already separates by a wide margin is easy; a small or negative gap is
hard (DESIGN.md, Scorers). The reward of a conversation is the model's single logit read at the
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

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sc_data.errors import ConfigError, config_error
from sc_data.scorers.base import Batch, Scorer

Message = dict[str, str]

_ROLE_NAMES = {"user": "User", "assistant": "Assistant", "system": "System"}


def plain_conversation(messages: Sequence[Message]) -> str:
    """One line per turn, ``User: ...`` / ``Assistant: ...``: the rendering without a chat template."""
    return "\n".join(
        f"{_ROLE_NAMES.get(m['role'], m['role'].capitalize())}: {m['content']}" for m in messages
    )


def render_conversation(tokenizer: Any, messages: Sequence[Message]) -> tuple[str, bool]:
    """Render ``messages`` for a classifier.

    Returns:
        (text, add_special_tokens): the chat-templated text (which already holds its special
        tokens, so none are added) or the plain rendering (tokenised with the special tokens).
    """
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(list(messages), tokenize=False), False
    return plain_conversation(messages), True


def encode_conversations(
    tokenizer: Any, conversations: Sequence[Sequence[Message]], *, max_length: int
) -> list[tuple[list[int], bool]]:
    """Token ids of each conversation, cut to ``max_length`` on ``tokenizer.truncation_side``.

    Returns:
        One (ids, truncated) per conversation.
    """
    out = []
    for messages in conversations:
        text, add_special = render_conversation(tokenizer, messages)
        full = tokenizer(text, add_special_tokens=add_special)["input_ids"]
        if len(full) <= max_length:
            out.append((full, False))
        else:
            cut = tokenizer(
                text, add_special_tokens=add_special, truncation=True, max_length=max_length
            )
            out.append((cut["input_ids"], True))
    return out


def classifier_logits(
    model: Any, tokenizer: Any, ids: Sequence[list[int]], *, batch_size: int
) -> list[Any]:
    """Run a sequence classifier over token-id lists in padded batches.

    Rows are sorted by length so a batch holds similar lengths (less padding). With left padding,
    position ids are passed explicitly so a padded row sees the same positions as alone.

    Returns:
        One float32 CPU tensor of shape (num_labels,) per row, in input order.
    """
    import torch

    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[Any] = [None] * len(ids)
    device = next(model.parameters()).device
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        enc = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, return_tensors="pt")
        kwargs = {
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
        }
        if tokenizer.padding_side == "left":
            kwargs["position_ids"] = (kwargs["attention_mask"].cumsum(-1) - 1).clamp(
                min=0
            )  # (B, T)
        with torch.inference_mode():
            logits = model(**kwargs).logits.float().cpu()  # (B, num_labels)
        for row, i in enumerate(chunk):
            out[i] = logits[row]
    return out


class RewardGapOptions(BaseModel):
    """Options of :class:`RewardGapScorer`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(
        description="Reward model: local folder, .gguf file or hub id; one output logit."
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
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False


class RewardGapScorer(Scorer):
    """Reward-model gap between chosen and rejected: a large gap means an easy pair.

    Args:
        model: reward model reference (required).
        max_length: tokens per text (default 1024); longer texts are cut and flagged.
        truncation_side: ``left`` (default) or ``right``.
        batch_size: texts per forward pass (default 8).
        device, dtype, trust_remote_code: as :func:`sc_data.models.load_sequence_classifier`.
    """

    name: ClassVar[str] = "reward_gap"
    fields: ClassVar[dict[str, str]] = {
        "chosen_reward": "float64",
        "rejected_reward": "float64",
        "gap": "float64",
        "truncated": "bool",
    }
    difficulty_field: ClassVar[str] = "gap"
    direction: ClassVar[Literal["larger_is_easier"]] = "larger_is_easier"

    def __init__(
        self,
        *,
        model: str | None = None,
        max_length: int = 1024,
        truncation_side: str = "left",
        batch_size: int = 8,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
    ) -> None:
        self.model = model
        self.max_length = max_length
        self.truncation_side = truncation_side
        self.batch_size = batch_size
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code

    def _options(self) -> RewardGapOptions:
        if self.model is None:
            raise ConfigError(
                "reward_gap needs a reward model: pass model=<folder, .gguf or hub id> "
                "(e.g. --option reward_gap.model=OpenAssistant/reward-model-deberta-v3-large-v2)"
            )
        try:
            return RewardGapOptions(**self.config())
        except ValidationError as e:
            raise config_error(f"{self.name} option(s)", e, hint="Fix the value(s) or drop the option(s).") from None

    def load(self) -> None:
        """Load the reward model; check it has a single output logit."""
        from sc_data.models.loading import load_sequence_classifier

        opts = self._options()
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

    def validate(self) -> None:
        """Check the options without loading anything (the runner calls it before any model loads).

        Raises:
            ConfigError: no model, or an option out of range / not a valid choice.
        """
        self._options()

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
