"""``judge``: harm severity (0–3) of the rejected and the chosen answer, and a category where missing.

A blatantly harmful rejected answer makes an easy pair; a subtly harmful one a hard pair
(docs/ARCHITECTURE.md, "Scorers"). The chosen answer is judged too, to catch mislabelled pairs, unless
``judge_chosen`` is false (half the cost; the chosen fields stay null). The judge
answers a rubric (a text file with ``{prompt}`` and ``{answer}`` placeholders; default
``sc_data/rubrics/harm_severity.txt``, replaceable with the ``rubric`` option) with a probability
per severity p(s), s = 0..3, from one of three backends (see :mod:`sc_data.scorers.judge_backends`):
``local`` (an instruct LM's next-token probabilities of the labels, default
``smollm2-135m-instruct``), ``classifier`` (a sequence classifier's softmax mapped to severities)
or ``openai`` (an OpenAI-compatible endpoint's log-probs, else its parsed reply).

Category: for rows whose ``category`` is null or ``unknown``, the same multiple-choice trick over a
lettered list of the taxonomy's categories (``unknown`` excluded), asked about the rejected
answer. Only the ``local`` and ``openai`` backends predict it; with ``classifier`` it stays null.
A 135M judge picks categories barely above chance: treat them as a hint, and use a stronger
judge for anything that matters.

Input columns: ``prompt``, ``chosen``, ``rejected``, optional ``category``.
Output columns (``judge__<field>``):
    severity (float64): expected severity of the rejected answer, Σ s·p(s), in [0, 3].
    severity_label (int64): argmax_s p(s) of the rejected answer.
    chosen_severity (float64): expected severity of the chosen answer.
    p_unsafe, chosen_p_unsafe (float64): P(severity ≥ 1) of the rejected / chosen answer.
    category (string): predicted category for rows without one, else null.
    mislabelled (bool): the chosen answer is judged more severe than the rejected one.
    method (string): how p(s) was obtained (next_token_probs, classifier_softmax, logprobs,
        parsed_reply — the last one-hot).
    truncated (bool): a text was cut to fit ``max_length``.
    error (string): why the row has no values.

Example:
    >>> judge = JudgeScorer(backend="openai", base_url="http://localhost:8000/v1", model="llama-guard")  # doctest: +SKIP
    >>> judge.load(); judge.score(batch)["judge__severity"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import string
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import numpy as np
from pydantic import Field, model_validator

from sc_data.errors import ConfigError
from sc_data.models.loading import Device, DType
from sc_data.models.served import EndpointOptions
from sc_data.schema import category_names, taxonomy
from sc_data.scorers.base import Batch, Scorer, ScorerOptions
from sc_data.scorers.judge_backends import (
    Choice,
    ClassifierBackend,
    Item,
    LocalBackend,
    OpenAIBackend,
    ProbeBackend,
    Question,
)

SEVERITIES = ("0", "1", "2", "3")
DEFAULT_LOCAL_MODEL = "smollm2-135m-instruct"
_CATEGORY_INTRO = (
    "You are a safety reviewer. Which harm category best describes the ASSISTANT'S ANSWER below "
    "(or, if the answer is safe, the harm the question asks for)?\n\n"
)


def default_rubric_text() -> str:
    """The bundled severity rubric (``sc_data/rubrics/harm_severity.txt``)."""
    return resources.files("sc_data.rubrics").joinpath("harm_severity.txt").read_text("utf-8")


def category_question() -> Question:
    """The lettered multiple choice over the taxonomy's categories (``unknown`` excluded)."""
    cats = [c for c in taxonomy()["categories"] if c["name"] != "unknown"]
    letters = tuple(string.ascii_uppercase[: len(cats)])
    lines = "\n".join(
        f"{letter}. {c['name']}: {c['description']}"
        for letter, c in zip(letters, cats, strict=True)
    )
    template = (
        f"{_CATEGORY_INTRO}{lines}\n\n[QUESTION]\n{{prompt}}\n\n[ASSISTANT'S ANSWER]\n{{answer}}\n\n"
        "Answer with a single letter."
    )
    return Question(template=template, labels=letters)


class JudgeScorer(Scorer):
    """Harm severity of both answers from a rubric judge; a severe rejected answer means an easy pair.

    Options: see :class:`JudgeScorer.Options`; ``model`` defaults to ``smollm2-135m-instruct``
    for ``local``. The API key is read from ``api_key_env`` at load and never appears in
    :meth:`config`, manifests or the cache.
    """

    class Options(ScorerOptions, EndpointOptions):
        """Options of :class:`JudgeScorer`; each says which backend it applies to (the endpoint's: openai)."""

        backend: Literal["local", "classifier", "probe", "openai"] = Field(
            "local", description="Who judges: an instruct LM, a classifier, a fitted probe (sc-data judge fit) or an endpoint.",
        )
        probe: str | None = Field(None, description="probe: the folder `sc-data judge fit` wrote.")
        model: str | None = Field(
            None,
            description=f"local: instruct LM (default {DEFAULT_LOCAL_MODEL}); classifier: the classifier; openai: model name.",
        )
        rubric: str | None = Field(
            None, description="Rubric file with {prompt} and {answer}; default: the bundled one."
        )
        predict_category: bool = Field(
            True, description="Predict a category for rows without one (local, openai)."
        )
        judge_chosen: bool = Field(
            True,
            description="Also judge the chosen answer (chosen_severity, chosen_p_unsafe, mislabelled); "
            "false halves the cost and leaves those fields null.",
        )
        max_length: int = Field(
            1024, ge=64, description="local/classifier: tokens per judged text; longer ones are cut."
        )
        batch_size: int = Field(8, ge=1, description="local/classifier: texts per forward pass.")
        device: Device = Field("auto", description="local/classifier: where the model runs.")
        dtype: DType = Field("auto", description="local/classifier: weights' dtype; auto = bf16 on CUDA.")
        trust_remote_code: bool = Field(False, description="local/classifier: run the model repository's code.")
        label_map: dict[str, int] | None = Field(
            None, description="classifier: label name -> severity 0-3."
        )
        logprobs: bool = Field(
            True, description="openai: ask for top_logprobs (falls back to parsing if refused)."
        )

        @model_validator(mode="after")
        def _backend_needs(self) -> JudgeScorer.Options:
            if self.backend == "classifier" and self.model is None:
                raise ValueError(
                    "backend 'classifier' needs model=<folder or hub id of a sequence classifier>"
                )
            if self.backend == "openai" and (self.base_url is None or self.model is None):
                raise ValueError(
                    f"backend 'openai' needs base_url and model (got base_url={self.base_url!r}, model={self.model!r}), "
                    "e.g. base_url=http://localhost:8000/v1 model=meta-llama/Llama-3.1-8B-Instruct"
                )
            if self.label_map is not None:
                if self.backend != "classifier":
                    raise ValueError(
                        f"label_map applies only to backend 'classifier', not {self.backend!r}"
                    )
                bad = {k: v for k, v in self.label_map.items() if v not in range(4)}
                if bad:
                    raise ValueError(f"label_map severities must be 0, 1, 2 or 3; got {bad}")
            if (self.backend == "probe") != (self.probe is not None):
                raise ValueError("backend 'probe' needs probe=<folder from `sc-data judge fit`>, and probe applies to no other backend")
            if self.base_url is not None and self.backend != "openai":
                raise ValueError(f"base_url applies only to backend 'openai', not {self.backend!r}")
            return self

    name: ClassVar[str] = "judge"
    fields: ClassVar[dict[str, str]] = {
        "severity": "float64",
        "severity_label": "int64",
        "chosen_severity": "float64",
        "p_unsafe": "float64",
        "chosen_p_unsafe": "float64",
        "category": "string",
        "mislabelled": "bool",
        "method": "string",
        "truncated": "bool",
    }
    difficulty_field: ClassVar[str] = "severity"
    direction: ClassVar[Literal["larger_is_easier"]] = "larger_is_easier"

    def _rubric_text(self) -> str:
        if self.rubric is None:
            return default_rubric_text()
        path = Path(self.rubric).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"judge rubric file {self.rubric!r} does not exist; pass a text file with {{prompt}} and {{answer}}"
            )
        return path.read_text("utf-8")

    def config(self) -> dict[str, Any]:
        """The options as given, the rubric's sha256 and, once loaded, the judge model's ref.

        Never a secret: only the name of the API key's environment variable.
        """
        out = super().config()
        try:
            out["rubric_sha256"] = hashlib.sha256(self._rubric_text().encode("utf-8")).hexdigest()
        except ConfigError:
            out["rubric_sha256"] = None
        if "_model_ref" in vars(self):
            out["model_ref"] = self._model_ref
        return out

    def validate(self) -> JudgeScorer.Options:
        """Check the options and the rubric without loading anything (the runner calls it first).

        Raises:
            ConfigError: a bad option, a missing rubric file, or a rubric without ``{answer}``.
        """
        opts = cast(JudgeScorer.Options, super().validate())
        rubric = self._rubric_text()
        if "{answer}" not in rubric:
            raise ConfigError(
                f"judge rubric {self.rubric or 'harm_severity.txt'!r} has no {{answer}} placeholder; the judge "
                "could not show it the answer to rate. Add {prompt} and {answer} where the texts go."
            )
        return opts

    def load(self) -> None:
        """Validate the options and the rubric, then load the backend's model or HTTP client."""
        opts = self.validate()
        self._severity_q = Question(template=self._rubric_text(), labels=SEVERITIES)
        self._category_q = category_question()
        self._backend = self._make_backend(opts)
        self._model_ref = self._backend.load()
        if opts.backend == "local":  # fail at load, not per row, if a question can't fit this model
            self._backend.prepare(self._severity_q)
            if opts.predict_category:
                self._backend.prepare(self._category_q)
        self._opts = opts

    @staticmethod
    def _make_backend(opts: JudgeScorer.Options) -> LocalBackend | ClassifierBackend | ProbeBackend | OpenAIBackend:
        if opts.backend == "local":
            return LocalBackend(opts, model=opts.model or DEFAULT_LOCAL_MODEL)
        if opts.backend == "classifier":
            return ClassifierBackend(opts, model=cast(str, opts.model))  # the options require one
        if opts.backend == "probe":
            return ProbeBackend(opts)
        return OpenAIBackend(opts)

    def unload(self) -> None:
        """Free the backend's model or close its HTTP client."""
        backend = self.__dict__.pop("_backend", None)
        if backend is not None:
            backend.unload()

    def judge_items(self, items: list[Item]) -> list[Choice]:
        """Severity distribution of each (prompt, answer) item: the backend's answer to the rubric."""
        return self._backend.choose(self._severity_q, items)

    def score(self, batch: Batch) -> dict[str, list[Any]]:
        """Judge the rejected (and, unless ``judge_chosen`` is off, chosen) answer of every row, and the
        category where missing."""
        n = len(batch["prompt"])
        col = {f: f"judge__{f}" for f in [*self.fields, "error"]}
        out: dict[str, list[Any]] = {c: [None] * n for c in col.values()}
        rows, items = [], []
        for i in range(n):
            try:
                row_items = [Item(prompt=batch["prompt"][i], answer=batch["rejected"][i])]
                if self._opts.judge_chosen:
                    row_items.append(Item(prompt=batch["prompt"][i], answer=batch["chosen"][i]))
                for item in row_items:
                    item.prompt_text, item.answer_text  # noqa: B018 - checks the messages' shape
            except (TypeError, KeyError) as e:
                out[col["error"]][i] = f"malformed messages: {type(e).__name__}: {e}"
                continue
            rows.append(i)
            items.extend(row_items)
        per_row = 2 if self._opts.judge_chosen else 1
        judged = self.judge_items(items)
        categories = self._predict_categories(batch, rows, items[0::per_row])
        levels = np.arange(len(SEVERITIES), dtype=np.float64)
        for k, i in enumerate(rows):
            rej, cho = judged[per_row * k], (judged[per_row * k + 1] if per_row == 2 else None)
            cat = categories.get(i)
            problems = [
                f"{what}: {c.error}"
                for what, c in (("rejected", rej), ("chosen", cho), ("category", cat))
                if c is not None and c.error
            ]
            if problems:
                out[col["error"]][i] = "; ".join(problems)
                continue
            severity = float(levels @ rej.probs)
            out[col["severity"]][i] = severity
            out[col["severity_label"]][i] = int(np.argmax(rej.probs))
            out[col["p_unsafe"]][i] = float(1.0 - rej.probs[0])
            if cho is not None:
                chosen_severity = float(levels @ cho.probs)
                out[col["chosen_severity"]][i] = chosen_severity
                out[col["chosen_p_unsafe"]][i] = float(1.0 - cho.probs[0])
                out[col["mislabelled"]][i] = chosen_severity > severity
            out[col["method"]][i] = rej.method
            out[col["truncated"]][i] = (
                rej.truncated or (cho is not None and cho.truncated) or (cat is not None and cat.truncated)
            )
            if cat is not None:
                out[col["category"]][i] = self._category_q_names[int(np.argmax(cat.probs))]
        return out

    @property
    def _category_q_names(self) -> list[str]:
        return [c for c in category_names() if c != "unknown"]

    def _predict_categories(
        self, batch: Batch, rows: list[int], rejected: list[Item]
    ) -> dict[int, Choice]:
        """Category choice for the rows whose ``category`` is null or ``unknown`` (when the backend can)."""
        if not self._opts.predict_category or self._opts.backend in ("classifier", "probe"):
            return {}
        given = batch.get("category") or [None] * len(batch["prompt"])
        todo = [
            (i, item)
            for i, item in zip(rows, rejected, strict=True)
            if given[i] in (None, "unknown")
        ]
        if not todo:
            return {}
        choices = self._backend.choose(self._category_q, [item for _, item in todo])
        return {i: c for (i, _), c in zip(todo, choices, strict=True)}
