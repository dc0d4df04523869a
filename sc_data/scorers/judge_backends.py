"""Backends of the ``judge`` scorer: each turns (prompt, answer) items into a distribution over labels.

A judge question is a multiple choice: severity labels ``0``–``3``, or category letters. Every
backend answers it with probabilities, not parsed free text:

- :class:`LocalBackend`: an instruct LM reads the rubric prompt; ONE forward pass, the next-token
  distribution restricted to the labels' tokens, renormalised.
- :class:`ClassifierBackend`: a sequence classifier; softmax over its labels, mapped to
  severities (severity only: it has no notion of category).
- :class:`ProbeBackend`: a linear probe on an encoder's features (``sc-data judge fit``);
  severity only.
- :class:`OpenAIBackend`: an OpenAI-compatible ``/chat/completions`` endpoint; the first reply
  token's ``top_logprobs`` when the server gives them, else the first label character of the
  reply (the one place free text is parsed: remote APIs may not expose log-probs).

Each result is a :class:`Choice` carrying its probabilities or an error, so one bad row never
stops a batch.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from sc_data.errors import ConfigError
from sc_data.models.chat import Message, classifier_logits, encode_conversations, plain_conversation

if TYPE_CHECKING:
    from sc_data.scorers.judge import JudgeScorer


@dataclass(frozen=True)
class Item:
    """One thing to judge: the conversation so far and the answer to rate."""

    prompt: Sequence[Message]
    answer: Sequence[Message]

    @property
    def prompt_text(self) -> str:
        """The prompt as the rubric shows it: a lone user turn as-is, a conversation one line per turn."""
        if len(self.prompt) == 1 and self.prompt[0]["role"] == "user":
            return self.prompt[0]["content"]
        return plain_conversation(self.prompt)

    @property
    def answer_text(self) -> str:
        """The answer's text (its turns joined by blank lines)."""
        return "\n\n".join(m["content"] for m in self.answer)


@dataclass(frozen=True)
class Question:
    """A multiple-choice question: a template with ``{prompt}`` and ``{answer}``, and its labels."""

    template: str
    labels: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.template.encode("utf-8")).hexdigest()

    def fill(self, prompt: str, answer: str) -> str:
        # str.replace, not str.format: user texts and rubrics may hold braces.
        return self.template.replace("{prompt}", prompt).replace("{answer}", answer)


@dataclass(frozen=True)
class Choice:
    """A backend's answer to one item: probabilities over the question's labels, or an error.

    Attributes:
        probs: float64 array over ``Question.labels`` summing to 1, or None on error.
        method: how it was obtained (``next_token_probs``, ``classifier_softmax``, ``logprobs``,
            ``parsed_reply``).
        truncated: the prompt or answer was cut to fit the model.
        error: why there are no probabilities.
    """

    probs: np.ndarray | None
    method: str | None = None
    truncated: bool = False
    error: str | None = None


def _failed(error: str) -> Choice:
    return Choice(probs=None, error=error)


class _ModelBackend:
    """What the two model-based backends share: which model, and the judge's options for running it."""

    def __init__(self, opts: JudgeScorer.Options, *, model: str) -> None:
        self.model_name = model
        self.max_length = opts.max_length
        self.batch_size = opts.batch_size
        self._load_options = {"device": opts.device, "dtype": opts.dtype, "trust_remote_code": opts.trust_remote_code}


class LocalBackend(_ModelBackend):
    """An instruct LM judged by its next-token probabilities over the label tokens.

    Each label's token is the first token of the label encoded alone; the labels must map to
    distinct tokens. The rubric's head runs once per question (KV cache); items are batched with
    their tails right-padded, so a padded row gives the same distribution as alone. When rubric + texts exceed ``max_length``
    tokens, the prompt keeps its end (at most a quarter of the room when the answer needs the
    rest) and the answer its start; the item is flagged ``truncated``.
    """

    method = "next_token_probs"

    def load(self) -> dict[str, Any]:
        from sc_data.models.loading import load_causal_lm

        model, tokenizer, ref = load_causal_lm(self.model_name, **self._load_options)
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"judge model {self.model_name!r} has no chat template; the local judge needs an instruct "
                "model with one (e.g. smollm2-135m-instruct)"
            )
        if tokenizer.pad_token_id is None:
            raise ConfigError(
                f"judge model {self.model_name!r} has no pad or EOS token to pad batches with"
            )
        self._model, self._tokenizer = model, tokenizer
        return ref.as_dict()

    def unload(self) -> None:
        for attr in ("_model", "_tokenizer", "_prefixes"):
            self.__dict__.pop(attr, None)

    def prepare(self, question: Question) -> None:
        """Check ``question`` fits this model: distinct label tokens, room left by ``max_length``.

        Raises:
            ConfigError: the labels share a first token, or the rubric alone nearly fills ``max_length``.
        """
        self.label_token_ids(question.labels)
        room = self.max_length - len(self._encode(question, "", ""))
        if room < 16:
            raise ConfigError(
                f"judge max_length={self.max_length} leaves {room} tokens for prompt and answer after the "
                "rubric; raise max_length or shorten the rubric"
            )

    def label_token_ids(self, labels: Sequence[str]) -> list[int]:
        """Token id of each label (first token of the label encoded alone), checked distinct."""
        ids = []
        for label in labels:
            toks = self._tokenizer(label, add_special_tokens=False)["input_ids"]
            if not toks:
                raise ConfigError(f"label {label!r} encodes to no token with the judge's tokenizer")
            ids.append(toks[0])
        if len(set(ids)) != len(ids):
            raise ConfigError(
                f"labels {list(labels)} do not map to distinct first tokens ({ids}) with the tokenizer of "
                f"{self.model_name!r}; use a judge model whose tokenizer has a token per digit/letter"
            )
        return ids

    def _encode(self, question: Question, prompt: str, answer: str) -> list[int]:
        """Token ids of the chat-templated rubric, ending with the generation prompt (no second BOS)."""
        messages = [{"role": "user", "content": question.fill(prompt, answer)}]
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def render(self, question: Question, item: Item) -> tuple[list[int], bool]:
        """Token ids of the rubric prompt for ``item``, and whether its texts were cut to fit."""
        ids = self._encode(question, item.prompt_text, item.answer_text)
        if len(ids) <= self.max_length:
            return ids, False
        tok = self._tokenizer
        room = self.max_length - len(self._encode(question, "", ""))
        p = tok(item.prompt_text, add_special_tokens=False)["input_ids"]
        a = tok(item.answer_text, add_special_tokens=False)["input_ids"]
        keep_p = min(len(p), max(room // 4, room - len(a)))
        keep_a = max(room - keep_p, 0)
        prompt = tok.decode(p[len(p) - keep_p :]) if keep_p else ""
        return self._encode(question, prompt, tok.decode(a[:keep_a])), True

    def _prefix(self, question: Question) -> tuple[list[int], Any]:
        """The rubric's shared head (chat template up to the first placeholder) and its KV cache.

        Every item's sequence starts with these tokens, so they run once per question instead of
        once per item (the severity rubric's head is most of its ~240 SmolLM2 tokens). Two tokens
        are held back so a BPE merge across the placeholder boundary can't break the match.
        """
        import torch

        cached = self.__dict__.setdefault("_prefixes", {}).get(question.sha256)
        if cached is not None:
            return cached
        sentinel = "\x00SC_DATA_SPLIT\x00"
        messages = [{"role": "user", "content": question.fill(sentinel, sentinel)}]
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        ids = self._tokenizer(text[: text.index(sentinel)], add_special_tokens=False)["input_ids"][
            :-2
        ]
        cache = None
        if ids:
            device = next(self._model.parameters()).device
            with torch.inference_mode():
                cache = self._model(
                    input_ids=torch.tensor([ids], device=device), use_cache=True
                ).past_key_values
        self._prefixes[question.sha256] = (ids, cache)
        return ids, cache

    def choose(self, question: Question, items: Sequence[Item]) -> list[Choice]:
        """Label probabilities of each item: batched, the rubric head from the KV cache, the rest right-padded."""
        label_ids = self.label_token_ids(question.labels)
        prefix, prefix_cache = self._prefix(question)
        out: list[Choice | None] = [None] * len(items)
        groups: dict[bool, list[tuple[int, list[int], bool]]] = {True: [], False: []}
        for i, item in enumerate(items):
            try:
                ids, cut = self.render(question, item)
            except Exception as e:  # a template that rejects one text fails that item only
                out[i] = _failed(f"could not build the judge prompt: {type(e).__name__}: {e}")
                continue
            shared = bool(prefix) and ids[: len(prefix)] == prefix
            groups[shared].append((i, ids[len(prefix) :] if shared else ids, cut))
        for shared, todo in groups.items():
            todo.sort(key=lambda t: len(t[1]))
            for start in range(0, len(todo), self.batch_size):
                chunk = todo[start : start + self.batch_size]
                probs = self._label_probs(
                    [t[1] for t in chunk],
                    label_ids,
                    prefix if shared else [],
                    prefix_cache if shared else None,
                )
                for row, (i, _, cut) in enumerate(chunk):
                    out[i] = Choice(probs=probs[row], method=self.method, truncated=cut)
        return out  # type: ignore[return-value]

    def _label_probs(
        self, tails: list[list[int]], label_ids: list[int], prefix: list[int], cache: Any
    ) -> np.ndarray:
        """Softmax over the label tokens' next-token logits after each ``prefix + tail``; (B, labels) float64.

        Tails are right-padded: a real token never attends to the padding after it, and every row's
        positions continue from the prefix, so each row computes exactly what it would alone. The LM
        head runs only at the rows' last real positions.
        """
        import copy

        import torch

        device = next(self._model.parameters()).device
        batch, width, offset = len(tails), max(len(t) for t in tails), len(prefix)
        ids = torch.full((batch, width), self._tokenizer.pad_token_id, dtype=torch.long)  # (B, T)
        mask = torch.zeros((batch, offset + width), dtype=torch.long)  # (B, P + T)
        mask[:, :offset] = 1
        for row, tail in enumerate(tails):
            ids[row, : len(tail)] = torch.tensor(tail)
            mask[row, offset : offset + len(tail)] = 1
        last = torch.tensor([len(t) - 1 for t in tails])  # (B,)
        keep = torch.unique(last)  # sorted positions whose logits are needed
        kwargs: dict[str, Any] = {}
        if cache is not None:
            kwargs["past_key_values"] = copy.deepcopy(cache)
            kwargs["past_key_values"].batch_repeat_interleave(batch)
        with torch.inference_mode():
            logits = self._model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=(offset + torch.arange(width)).expand(batch, width).to(device),
                use_cache=cache is not None,
                logits_to_keep=keep.to(device),
                **kwargs,
            ).logits  # (B, K, V)
        rows = logits[torch.arange(batch), torch.searchsorted(keep, last).to(device)]  # (B, V)
        return torch.softmax(rows[:, label_ids].double(), dim=-1).cpu().numpy()


class ClassifierBackend(_ModelBackend):
    """A sequence classifier whose labels map to severities; p(s) = Σ softmax over labels mapped to s.

    The default map: 4 labels -> label i is severity i; 2 labels -> label 0 is safe (0), label 1
    unsafe (3). Any other classifier needs ``label_map`` (label name -> severity 0–3).
    """

    method = "classifier_softmax"

    def __init__(self, opts: JudgeScorer.Options, *, model: str) -> None:
        super().__init__(opts, model=model)
        self.label_map = opts.label_map

    def load(self) -> dict[str, Any]:
        from sc_data.models.loading import load_sequence_classifier

        model, tokenizer, ref = load_sequence_classifier(self.model_name, **self._load_options)
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        self._severity = np.array(self._resolve_map(names), dtype=np.int64)  # (labels,)
        tokenizer.truncation_side = "left"
        self._model, self._tokenizer = model, tokenizer
        return ref.as_dict()

    def _resolve_map(self, names: list[str]) -> list[int]:
        if self.label_map is None:
            if len(names) == 4:
                return [0, 1, 2, 3]
            if len(names) == 2:
                return [0, 3]
            raise ConfigError(
                f"classifier {self.model_name!r} has {len(names)} labels {names}; give label_map "
                '(label name -> severity 0-3), e.g. --option \'judge.label_map={"safe": 0, "unsafe": 3}\''
            )
        missing = [n for n in names if n not in self.label_map]
        unknown = sorted(set(self.label_map) - set(names))
        if missing or unknown:
            raise ConfigError(
                f"judge label_map must name every label of classifier {self.model_name!r} exactly: "
                f"labels {names}; missing {missing}, unknown {unknown}"
            )
        return [self.label_map[n] for n in names]

    def unload(self) -> None:
        self.__dict__.pop("_model", None)
        self.__dict__.pop("_tokenizer", None)

    def choose(self, question: Question, items: Sequence[Item]) -> list[Choice]:
        import torch

        encoded = encode_conversations(
            self._tokenizer,
            [list(it.prompt) + list(it.answer) for it in items],
            max_length=self.max_length,
        )
        logits = classifier_logits(
            self._model, self._tokenizer, [ids for ids, _ in encoded], batch_size=self.batch_size
        )
        out = []
        for (_, cut), row in zip(encoded, logits, strict=True):
            p_label = torch.softmax(row.double(), dim=-1).numpy()
            probs = np.bincount(self._severity, weights=p_label, minlength=len(question.labels))
            out.append(Choice(probs=probs, method=self.method, truncated=cut))
        return out


class ProbeBackend:
    """A probe fitted by ``sc-data judge fit``: one encoder forward per answer and a linear read-out.

    It rates harm severity only (any other question, e.g. the category letters or a refusal
    rubric, is an error per item). The encoder must be the one the probe was fitted on: its files'
    hash is checked at load.
    """

    def __init__(self, opts: JudgeScorer.Options) -> None:
        self.folder, self.device, self.batch_size = cast(str, opts.probe), opts.device, opts.batch_size

    def load(self) -> dict[str, Any]:
        from sc_data.scorers.probe import Encoder, Probe

        self.probe = Probe.load(self.folder)
        self.encoder = Encoder(self.probe.recipe, device=self.device, batch_size=self.batch_size).load()
        fitted = (self.probe.info.get("encoder_ref") or {}).get("sha256")
        if fitted and self.encoder.ref.get("sha256") and fitted != self.encoder.ref["sha256"]:
            raise ConfigError(
                f"probe {self.folder!r} was fitted on encoder {self.probe.recipe.encoder!r} with files sha256 {fitted[:16]}…, "
                f"but that reference now resolves to {self.encoder.ref['sha256'][:16]}…: refit the probe for this encoder"
            )
        return {"ref": "probe", "probe": str(self.folder), "encoder": self.encoder.ref}

    def unload(self) -> None:
        self.__dict__.pop("encoder", None)

    def choose(self, question: Question, items: Sequence[Item]) -> list[Choice]:
        if question.labels != ("0", "1", "2", "3"):
            return [_failed("the probe rates harm severity only, not categories")] * len(items)
        probs = self.probe.predict(self.encoder.features([it.prompt for it in items], [it.answer for it in items]))
        return [Choice(probs=p, method="probe") for p in probs]


class OpenAIBackend:
    """An OpenAI-compatible chat endpoint (vLLM, TGI, SGLang, llama.cpp, `transformers serve`, OpenAI), asked the rubric.

    Requests: temperature 0, ``max_tokens`` 5 and, when ``logprobs`` is on, ``logprobs: true,
    top_logprobs: 20``. A server that refuses log-probs (HTTP 400 naming them) is asked again
    without, and not asked for them again; one that ignores them gets its reply parsed. Transport,
    retries, concurrency and the reply cache are :class:`sc_data.models.served.ChatEndpoint`'s; a
    reply is cached only when it yields a severity, so a bad one is asked again on the next run.
    """

    def __init__(self, opts: JudgeScorer.Options) -> None:
        from sc_data.models.served import ChatEndpoint

        self.endpoint = ChatEndpoint(opts, model=cast(str, opts.model))  # the options require both
        self.logprobs = opts.logprobs  # turned off for good if the server refuses log-probs

    def load(self) -> dict[str, Any]:
        self.endpoint.open()
        return {"ref": self.endpoint.model, "base_url": self.endpoint.base_url}

    def unload(self) -> None:
        self.endpoint.close()

    def choose(self, question: Question, items: Sequence[Item]) -> list[Choice]:
        return self.endpoint.map(lambda it: self._choose_one(question, it), items)

    def _body(self, content: str) -> dict[str, Any]:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": content}], "temperature": 0, "max_tokens": 5}
        if self.logprobs:
            body.update(logprobs=True, top_logprobs=20)
        return body

    def _choose_one(self, question: Question, item: Item) -> Choice:
        from sc_data.models.served import EndpointError

        content = question.fill(item.prompt_text, item.answer_text)

        def usable(reply: dict[str, Any]) -> bool:
            try:
                return _reply_to_choice(reply, question.labels).error is None
            except (ValueError, KeyError, TypeError, IndexError):
                return False

        try:
            try:
                reply = self.endpoint.complete(self._body(content), keep=usable)
            except EndpointError as e:
                if not (self.logprobs and e.status == 400 and "logprob" in e.body.lower()):
                    raise
                self.logprobs = False  # this server has no log-probs: parse replies from now on
                reply = self.endpoint.complete(self._body(content), keep=usable)
        except EndpointError as e:
            what = "gave an unusable reply" if e.status == 200 else f"failed after {self.endpoint.options.max_retries} retries"
            return _failed(f"judge endpoint {what}: {e}")
        try:
            return _reply_to_choice(reply, question.labels)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            return _failed(f"judge endpoint gave a malformed reply ({type(e).__name__}: {e}): {str(reply)[:200]}")


def _reply_to_choice(reply: dict[str, Any], labels: tuple[str, ...]) -> Choice:
    """Probabilities from a chat-completion reply: first token's top log-probs, else the first label in the text."""
    choice = reply["choices"][0]
    content = choice["message"]["content"]
    if not isinstance(content, str):
        raise TypeError(f"message content is {type(content).__name__}, not a string")
    first = ((choice.get("logprobs") or {}).get("content") or [None])[0]
    if first and first.get("top_logprobs"):
        mass = np.zeros(len(labels))
        for cand in first["top_logprobs"]:
            token = str(cand["token"]).strip()
            if token in labels:
                mass[labels.index(token)] += math.exp(float(cand["logprob"]))
        if mass.sum() > 0:
            return Choice(probs=mass / mass.sum(), method="logprobs")
    # The first label standing alone ("2", "Severity: 2", "**B**"), not one inside a word.
    found = re.search(
        rf"(?<![A-Za-z0-9])({'|'.join(map(re.escape, labels))})(?![A-Za-z0-9])", content
    )
    if found is None:
        return _failed(f"reply holds none of {list(labels)}: {content[:80]!r}")
    probs = np.zeros(len(labels))
    probs[labels.index(found.group(1))] = 1.0
    return Choice(probs=probs, method="parsed_reply")
