"""The probe judge: a linear probe on an encoder's features of an answer read in its prompt's context.

Why a probe: offline, the only rubric judge is a small instruct LM prompted with the rubric, and a
135M model answers that prompt at chance. Its hidden states, read as features, separate harmful
from harmless answers far better than its answer to the question does (bench/RESULTS.md, "Probe
judge"). So the ``probe`` backend costs one encoder forward per answer and a dot product.

Features (:class:`ProbeRecipe`): ``kind: lm`` runs a causal LM over the chat-templated
conversation (the prompt, then the answer as the assistant turn, the log-prob core's template and
truncation) and mean-pools the hidden states of layer ``layer`` over the answer's tokens;
``kind: sentence`` embeds "prompt + answer" with a sentence encoder (MiniLM). Features are
standardised with the training set's mean and scale.

Model (:class:`Probe`): two logistic regressions (scikit-learn, L2, ``C``): P(unsafe) over every
labelled answer, and a multinomial over severities 1–3 among unsafe answers that carry a severity.
p(0) = 1 − P(unsafe), p(s) = P(unsafe)·P(s | unsafe) for s = 1..3, so ``p_unsafe`` =
P(severity ≥ 1) and sources that only say safe / unsafe still teach the first model. Without any
severity labels P(s | unsafe) is the uniform 1/3.

Saved as ``probe.safetensors`` (the arrays) and ``probe.json`` (recipe, encoder reference and
hash, classes, training counts per source, the cross-validation report): no pickle.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from sc_data.errors import ConfigError, InputError
from sc_data.io import write_json
from sc_data.models.loading import Device

Messages = list[dict[str, str]]
WEIGHTS_FILE, INFO_FILE = "probe.safetensors", "probe.json"
SEVERITY_LEVELS = 4


class ProbeRecipe(BaseModel):
    """Which features the probe reads; stored with its weights so scoring recomputes exactly these."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoder: str = Field("smollm2-135m-instruct", description="Encoder: a causal LM (kind lm) or a sentence encoder (kind sentence).")
    kind: Literal["lm", "sentence"] = Field("lm", description="lm: pooled hidden states of a causal LM; sentence: a sentence embedding.")
    layer: int = Field(
        16, description="lm: hidden-state layer (0 = embeddings, negative counts from the top; 16 of SmolLM2's 30 measured best, "
        "bench/RESULTS.md).",
    )
    max_length: int = Field(512, ge=16, description="lm: tokens of prompt + answer (prompt left-truncated to half).")


class ProbeOptions(BaseModel):
    """How a probe is fitted."""

    model_config = ConfigDict(extra="forbid")

    c: float = Field(0.01, gt=0, description="Inverse L2 strength of both logistic regressions (scikit-learn's C).")
    folds: int = Field(5, ge=2, description="Prompt-grouped cross-validation folds of the report.")
    seed: int = Field(0, description="Seed of the fold assignment.")
    batch_size: int = Field(8, ge=1, description="Answers per encoder forward.")
    device: Device = Field("auto", description="Where the encoder runs.")


class JudgeFitConfig(BaseModel):
    """``sc-data judge fit``'s settings: the features and the fit (a YAML file has these two sections)."""

    model_config = ConfigDict(extra="forbid")

    recipe: ProbeRecipe = Field(default_factory=ProbeRecipe)
    fit: ProbeOptions = Field(default_factory=ProbeOptions)


@dataclass
class LabelledAnswers:
    """Answers with safety labels, one row each (see :mod:`sc_data.scorers.labelled`)."""

    prompts: list[Messages]
    answers: list[Messages]
    unsafe: np.ndarray  # (N,) bool
    severity: np.ndarray  # (N,) float, NaN where the source gives none
    categories: list[str | None]
    sources: list[str]
    groups: list[str]  # normalised prompt: cross-validation never splits one prompt's answers

    def __len__(self) -> int:
        return len(self.answers)

    def take(self, idx: np.ndarray) -> LabelledAnswers:
        pick = [int(i) for i in idx]
        return LabelledAnswers(
            [self.prompts[i] for i in pick], [self.answers[i] for i in pick], self.unsafe[idx], self.severity[idx],
            [self.categories[i] for i in pick], [self.sources[i] for i in pick], [self.groups[i] for i in pick],
        )

    @staticmethod
    def concat(parts: Sequence[LabelledAnswers]) -> LabelledAnswers:
        return LabelledAnswers(
            [p for x in parts for p in x.prompts], [a for x in parts for a in x.answers],
            np.concatenate([x.unsafe for x in parts]), np.concatenate([x.severity for x in parts]),
            [c for x in parts for c in x.categories], [s for x in parts for s in x.sources], [g for x in parts for g in x.groups],
        )


class Encoder:
    """Features of (prompt, answer) items under a :class:`ProbeRecipe`."""

    def __init__(self, recipe: ProbeRecipe, *, device: str = "auto", batch_size: int = 8) -> None:
        self.recipe, self.device, self.batch_size = recipe, device, batch_size
        self.ref: dict[str, Any] = {}

    def load(self) -> Encoder:
        from sc_data.models.loading import load_causal_lm, load_sentence_encoder

        if self.recipe.kind == "lm":
            from sc_data.models.logprob import PairTokenizer, TruncationConfig

            self._model, tokenizer, ref = load_causal_lm(self.recipe.encoder, device=self.device, dtype="float32")
            n_layers = self._model.config.num_hidden_layers
            if not -n_layers - 1 <= self.recipe.layer <= n_layers:
                raise ConfigError(f"probe layer {self.recipe.layer} is outside 0..{n_layers} of {self.recipe.encoder!r}")
            half = self.recipe.max_length // 2
            self._pairs = PairTokenizer(tokenizer, truncation=TruncationConfig(self.recipe.max_length, half))
            self._pad = tokenizer.pad_token_id or 0
        else:
            self._model, ref = load_sentence_encoder(self.recipe.encoder, device=self.device)
        self.ref = ref.as_dict()
        return self

    def features(self, prompts: Sequence[Messages], answers: Sequence[Messages]) -> np.ndarray:
        """(N, D) float32 features, one row per (prompt, answer)."""
        if self.recipe.kind == "sentence":
            texts = ["\n\n".join(m["content"] for m in [*p, *a]) for p, a in zip(prompts, answers, strict=True)]
            return np.asarray(self._model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                                 show_progress_bar=False), dtype=np.float32)
        return self.layer_features(prompts, answers, [self.recipe.layer])[self.recipe.layer]

    def layer_features(self, prompts: Sequence[Messages], answers: Sequence[Messages], layers: Sequence[int]) -> dict[int, np.ndarray]:
        """kind lm: answer-mean-pooled hidden states of several layers from one forward pass (to compare layers)."""
        import torch

        tokenized = [self._pairs(p, a, a) for p, a in zip(prompts, answers, strict=True)]
        order = sorted(range(len(tokenized)), key=lambda i: len(tokenized[i].prompt_ids) + len(tokenized[i].chosen_ids))
        out = {layer: np.zeros((len(tokenized), self._model.config.hidden_size), dtype=np.float32) for layer in layers}
        device = next(self._model.parameters()).device
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            seqs = [tokenized[i].prompt_ids + tokenized[i].chosen_ids for i in rows]
            width = max(len(s) for s in seqs)
            ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
            attention = torch.zeros((len(rows), width), dtype=torch.long)
            answer = torch.zeros((len(rows), width), dtype=torch.float32)
            for k, (i, seq) in enumerate(zip(rows, seqs, strict=True)):
                ids[k, : len(seq)] = torch.tensor(seq)
                attention[k, : len(seq)] = 1
                answer[k, len(tokenized[i].prompt_ids) : len(seq)] = 1.0
            with torch.inference_mode():
                states = self._model(input_ids=ids.to(device), attention_mask=attention.to(device),
                                     output_hidden_states=True, use_cache=False).hidden_states  # layers + 1 of (B, T, H)
            weights = answer.to(device)[:, :, None]
            for layer in layers:
                pooled = (states[layer].float() * weights).sum(1) / weights.sum(1).clamp(min=1.0)
                out[layer][rows] = pooled.cpu().numpy()
        return out


@dataclass
class Probe:
    """A fitted probe: standardisation, P(unsafe), P(severity | unsafe), and what it was fitted on."""

    recipe: ProbeRecipe
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    unsafe_coef: np.ndarray  # (D,)
    unsafe_intercept: float
    severity_coef: np.ndarray  # (3, D) for severities 1..3; zeros without severity labels
    severity_intercept: np.ndarray  # (3,)
    info: dict[str, Any] = field(default_factory=dict)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N, 4) probabilities of severities 0..3."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        p_unsafe = 1.0 / (1.0 + np.exp(-(z @ self.unsafe_coef + self.unsafe_intercept)))
        logits = z @ self.severity_coef.T + self.severity_intercept  # (N, 3)
        logits -= logits.max(axis=1, keepdims=True)
        given = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return np.column_stack([1.0 - p_unsafe, p_unsafe[:, None] * given])

    def save(self, folder: str | Path) -> Path:
        from safetensors.numpy import save_file

        from sc_data.io import atomic_dir

        folder = Path(folder)
        arrays = {"mean": self.mean, "scale": self.scale, "unsafe_coef": self.unsafe_coef,
                  "unsafe_intercept": np.asarray([self.unsafe_intercept]), "severity_coef": self.severity_coef,
                  "severity_intercept": self.severity_intercept}
        with atomic_dir(folder) as tmp:  # replaces an existing folder: judge_fit checked it holds only a probe
            save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(tmp / WEIGHTS_FILE))
            write_json({"recipe": self.recipe.model_dump(), **self.info}, tmp / INFO_FILE)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> Probe:
        """Raises: InputError: not a probe folder (``probe.json`` + ``probe.safetensors``)."""
        from safetensors.numpy import load_file

        folder = Path(folder).expanduser()
        if not (folder / INFO_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
            raise InputError(f"{str(folder)!r} is not a probe folder (no {INFO_FILE} / {WEIGHTS_FILE}); fit one with `sc-data judge fit`")
        info = json.loads((folder / INFO_FILE).read_text("utf-8"))
        a = load_file(str(folder / WEIGHTS_FILE))
        return cls(ProbeRecipe(**info.pop("recipe")), a["mean"], a["scale"], a["unsafe_coef"], float(a["unsafe_intercept"][0]),
                   a["severity_coef"], a["severity_intercept"], info)


def fit_probe(features: np.ndarray, labels: LabelledAnswers, recipe: ProbeRecipe, *, c: float) -> Probe:
    """Fit both regressions on ``features`` (N, D) of ``labels``' answers.

    Raises:
        InputError: the labels hold only safe or only unsafe answers.
    """
    from sklearn.linear_model import LogisticRegression

    y = labels.unsafe.astype(int)
    if len(set(y.tolist())) < 2:
        raise InputError(f"the labelled answers are all {'unsafe' if y.all() else 'safe'}; a probe needs both safe and unsafe answers")
    x = np.asarray(features, dtype=np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    unsafe = LogisticRegression(C=c, max_iter=5000).fit(z, y)
    sev_coef, sev_int = np.zeros((SEVERITY_LEVELS - 1, x.shape[1])), np.zeros(SEVERITY_LEVELS - 1)
    rated = labels.unsafe & ~np.isnan(labels.severity) & (labels.severity >= 1)
    levels = sorted({int(s) for s in labels.severity[rated]})
    if len(levels) >= 2:
        multi = LogisticRegression(C=c, max_iter=5000).fit(z[rated], labels.severity[rated].astype(int))
        for k, level in enumerate(multi.classes_):
            coef = multi.coef_[k] if len(multi.classes_) > 2 else (multi.coef_[0] if k else -multi.coef_[0]) / 2
            icpt = multi.intercept_[k] if len(multi.classes_) > 2 else (multi.intercept_[0] if k else -multi.intercept_[0]) / 2
            sev_coef[int(level) - 1], sev_int[int(level) - 1] = coef, icpt
        for level in set(range(1, SEVERITY_LEVELS)) - set(levels):
            sev_int[level - 1] = -30.0  # a level no answer had gets (practically) no mass
    elif len(levels) == 1:
        sev_int[:] = -30.0
        sev_int[levels[0] - 1] = 0.0
    return Probe(recipe, mean, scale, unsafe.coef_[0], float(unsafe.intercept_[0]), sev_coef, sev_int)


def quality(probs: np.ndarray, labels: LabelledAnswers) -> dict[str, Any]:
    """AUROC of p_unsafe against the labels, Spearman of expected severity with the given severities, per source and category."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    p_unsafe = 1.0 - probs[:, 0]
    expected = probs @ np.arange(SEVERITY_LEVELS)

    def summary(mask: np.ndarray) -> dict[str, Any]:
        y = labels.unsafe[mask]
        out: dict[str, Any] = {"answers": int(mask.sum()), "unsafe": int(y.sum())}
        out["auroc"] = float(roc_auc_score(y, p_unsafe[mask])) if 0 < y.sum() < len(y) else None
        rated = mask & ~np.isnan(labels.severity)
        if rated.sum() > 2 and len(set(labels.severity[rated].tolist())) > 1:
            rho, p = spearmanr(expected[rated], labels.severity[rated])
            out.update(spearman_severity=float(rho), spearman_p=float(p), rated=int(rated.sum()))
        return out

    everything = np.ones(len(labels), dtype=bool)
    sources, cats = np.asarray(labels.sources, dtype=object), np.asarray([c or "unknown" for c in labels.categories], dtype=object)
    return {
        "overall": summary(everything),
        "by_source": {s: summary(sources == s) for s in sorted(set(labels.sources))},
        "by_category": {c: summary(cats == c) for c in sorted(set(cats))},
    }


def cross_validate(features: np.ndarray, labels: LabelledAnswers, recipe: ProbeRecipe, *, c: float, folds: int, seed: int) -> dict[str, Any]:
    """Held-out quality over prompt-grouped folds: every answer is predicted by a probe that never saw its prompt."""
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(labels.groups, dtype=object)
    n_groups = len(set(labels.groups))
    if n_groups < folds:
        raise InputError(f"cross-validation needs at least {folds} distinct prompts; the labelled answers have {n_groups}")
    probs = np.zeros((len(labels), SEVERITY_LEVELS))
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(features, groups=groups):
        probe = fit_probe(features[train], labels.take(train), recipe, c=c)
        probs[test] = probe.predict(features[test])
    return {"folds": folds, "grouped_by": "normalised prompt", **quality(probs, labels)}


@dataclass
class FitResult:
    """What :func:`judge_fit` wrote and measured."""

    output: Path
    answers: int
    cross_validation: dict[str, Any]
    read: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "answers": self.answers, "cross_validation": self.cross_validation, "read": self.read}


def _claim(output: Path, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite`` and it holds nothing but a probe's two files."""
    if not output.exists():
        return
    names = {p.name for p in output.iterdir()} if output.is_dir() else None
    if names is None or not names <= {INFO_FILE, WEIGHTS_FILE}:
        raise ConfigError(f"{str(output)!r} exists and is not a probe folder sc-data wrote; choose a new output folder")
    if not overwrite:
        raise ConfigError(f"{str(output)!r} already holds a probe; pass --overwrite to replace it")


def judge_fit(
    inputs: Sequence[str | Path], output: str | Path, config: JudgeFitConfig | None = None, *,
    fmt: str = "auto", column_map: dict[str, str] | None = None, assume_chosen_safe: bool = False, overwrite: bool = False,
) -> FitResult:
    """Fit the probe judge on labelled answers, cross-validate it by prompt, and save it to ``output``.

    Args:
        inputs: labelled sets (see :mod:`sc_data.scorers.labelled`): PKU-SafeRLHF files, canonical
            pairs with safety flags, or answer tables with a severity / unsafe column.
        output: the probe folder to write (``probe.json``, ``probe.safetensors``).
        config: the features (default: SmolLM2-135M-Instruct, layer 16, mean over the answer) and
            the fit (regularisation, folds, device).
        fmt, column_map: the inputs' layout and column renames, as for ``sc-data ingest``.
        assume_chosen_safe: label pairs without safety flags chosen = safe, rejected = unsafe.
        overwrite: replace an existing probe folder.

    Returns:
        :class:`FitResult`; the report is also in ``probe.json``.

    Raises:
        InputError: unreadable inputs, no labelled answers, only one class, too few prompts.
        ConfigError: an existing output without ``overwrite``.

    Example:
        >>> judge_fit(["pku.jsonl"], "probe/")  # doctest: +SKIP
    """
    from sc_data.io import sha256_file
    from sc_data.scorers.labelled import read_labelled

    config, output = config or JudgeFitConfig(), Path(output)
    recipe, options = config.recipe, config.fit
    _claim(output, overwrite)
    labels, read = read_labelled(list(inputs), fmt=fmt, column_map=column_map, assume_chosen_safe=assume_chosen_safe)
    encoder = Encoder(recipe, device=options.device, batch_size=options.batch_size).load()
    features = encoder.features(labels.prompts, labels.answers)
    report = cross_validate(features, labels, recipe, c=options.c, folds=options.folds, seed=options.seed)
    probe = fit_probe(features, labels, recipe, c=options.c)
    probe.info = {
        "encoder_ref": encoder.ref,
        "options": options.model_dump(),
        "inputs": [{"path": str(p), "sha256": sha256_file(Path(p)) if Path(p).is_file() else None} for p in inputs],
        "read": read,
        "trained_on": {"answers": len(labels), "unsafe": int(labels.unsafe.sum()),
                       "with_severity": int((~np.isnan(labels.severity)).sum())},
        "cross_validation": report,
    }
    probe.save(output)
    return FitResult(output, len(labels), report, read)
