"""``similarity``: the Staged-Competence paper's difficulty (arXiv 2605.26315).

The unaligned model answers each prompt (ŷ); the pair is easy when ŷ is already much closer to the
chosen answer than to the rejected one in embedding space:
m = cos(e(ŷ), e(chosen)) − cos(e(ŷ), e(rejected)), e = all-MiniLM-L6-v2.

Sampling follows the paper (temperature 0.7; ``max_new_tokens`` 512 by default, smaller values for
quick runs), with top-k 50 and top-p 1.0 (transformers' defaults, which the paper's code left in
place). Each row is sampled alone under its own seed, int(sha256(f"{seed}:{id}")[:8], 16), so its
answer does not depend on which rows share its batch, on resuming or on sharding. The generator
sees the prompt chat-templated with the generation prompt, left-truncated to
``max_prompt_length`` tokens.

With ``backend: openai`` the answers come from an OpenAI-compatible server instead (vLLM, SGLang,
TGI, llama.cpp, `transformers serve`): one chat completion per row with the same temperature,
top-p, ``max_tokens`` = ``max_new_tokens`` and ``seed`` = the row's seed (``top_k`` only when
given: not every server takes it), concurrent, retried and cached by the full request
(:mod:`sc_data.models.served`). Whether a server honours ``seed`` is the server's business; the
cache makes a re-run or a resume return the same answers either way.

MiniLM reads at most 256 word pieces (``encoder_max_tokens`` in :meth:`config`): longer texts are
embedded from their start only, and the row is flagged in ``similarity__truncated``.

Input columns: ``id``, ``prompt``, ``chosen``, ``rejected`` (and ``generated_column`` if given,
which skips generation: re-scoring stored answers).
Output columns: ``similarity__generated`` (string), ``similarity__cos_chosen``,
``similarity__cos_rejected``, ``similarity__margin`` (float64), ``similarity__truncated`` (bool),
``similarity__error``.

Example:
    >>> scorer = SimilarityScorer(max_new_tokens=64, seed=42)  # doctest: +SKIP
    >>> scorer.load(); scorer.score(batch)["similarity__margin"]  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from typing import Any, ClassVar, Literal, cast

import numpy as np
from pydantic import Field, model_validator

from sc_data.errors import ConfigError
from sc_data.models.loading import Device, DType
from sc_data.models.served import EndpointOptions
from sc_data.scorers.base import Batch, Scorer, ScorerOptions

DEFAULT_GENERATOR = "smollm2-135m-instruct"
DEFAULT_ENCODER = "all-minilm-l6-v2"
#: Top-k of local sampling when none is given: transformers' default, which the paper's code kept.
LOCAL_TOP_K = 50


def row_seed(seed: int, row_id: str) -> int:
    """The sampling seed of one row: the first 8 hex digits of sha256(f"{seed}:{id}")."""
    return int(hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()[:8], 16)


def cosine_margins(
    answer: np.ndarray, chosen: np.ndarray, rejected: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise cos(answer, chosen) and cos(answer, rejected) in float64; inputs are (N, D)."""

    def cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = a.astype(np.float64), b.astype(np.float64)
        return np.einsum("nd,nd->n", a, b) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))

    return cos(answer, chosen), cos(answer, rejected)


class SimilarityScorer(Scorer):
    """Embedding margin of the unaligned model's own answer: a large margin means an easy pair.

    Options: see :class:`SimilarityScorer.Options`.
    """

    class Options(ScorerOptions, EndpointOptions):
        """Options of :class:`SimilarityScorer`."""

        backend: Literal["local", "openai"] = Field(
            "local", description="Who generates: local (transformers generate) or openai (a served engine at base_url)."
        )
        model: str = Field(
            DEFAULT_GENERATOR, description="The unaligned model that answers the prompts (openai: its served name)."
        )
        encoder: str = Field(
            DEFAULT_ENCODER, description="Sentence encoder (the paper: all-MiniLM-L6-v2)."
        )
        max_new_tokens: int = Field(
            512, ge=1, description="Tokens generated per answer (the paper: 512)."
        )
        temperature: float = Field(0.7, gt=0, description="Sampling temperature (the paper: 0.7).")
        top_k: int | None = Field(
            None, ge=0, description="Top-k sampling; 0 turns it off. None: 50 locally (transformers' default, kept by the "
            "paper's code), the engine's own default when served (not every server takes top_k).",
        )
        top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling; 1.0 turns it off.")
        seed: int = Field(0, description="Base seed; each row samples under row_seed(seed, id).")
        max_prompt_length: int = Field(512, ge=8, description="local: prompt tokens kept (from the end).")
        generated_column: str | None = Field(
            None, description="Column holding answers already generated: skip generation."
        )
        batch_size: int = Field(32, ge=1, description="Texts per encoder batch.")
        device: Device = Field("auto", description="Where the models run (openai: the encoder only).")
        dtype: DType = Field("auto", description="local: the generator's dtype; auto = bf16 on CUDA.")
        trust_remote_code: bool = Field(False, description="local: run the generator repository's own code.")

        @model_validator(mode="after")
        def _endpoint(self) -> SimilarityScorer.Options:
            if self.backend == "openai" and self.base_url is None:
                raise ValueError("backend 'openai' needs base_url, e.g. base_url=http://localhost:8000/v1 (and model=<served name>)")
            if self.backend == "local" and self.base_url is not None:
                raise ValueError("base_url applies only to backend 'openai'; add backend=openai")
            return self

    name: ClassVar[str] = "similarity"
    fields: ClassVar[dict[str, str]] = {
        "generated": "string",
        "cos_chosen": "float64",
        "cos_rejected": "float64",
        "margin": "float64",
        "truncated": "bool",
    }
    difficulty_field: ClassVar[str] = "margin"
    direction: ClassVar[Literal["larger_is_easier"]] = "larger_is_easier"

    def config(self) -> dict[str, Any]:
        """The options, plus the encoder's token limit once loaded (MiniLM: 256 word pieces)."""
        out = super().config()
        encoder = getattr(self, "_encoder", None)
        out["encoder_max_tokens"] = encoder.max_seq_length if encoder is not None else None
        if "_refs" in vars(self):
            out["model_ref"] = self._refs
        return out

    def _openai_body(self, prompt: list[dict[str, str]], row_id: str) -> dict[str, Any]:
        opts = self._opts
        body: dict[str, Any] = {"messages": list(prompt), "temperature": opts.temperature, "top_p": opts.top_p,
                                "max_tokens": opts.max_new_tokens, "seed": row_seed(opts.seed, row_id)}
        if opts.top_k is not None:
            body["top_k"] = opts.top_k
        return body

    def load(self) -> None:
        """Load the encoder, and the generator unless answers come from ``generated_column``."""
        from sc_data.models.loading import load_causal_lm, load_sentence_encoder

        opts = cast(SimilarityScorer.Options, self.validate())
        self._refs: dict[str, Any] = {}
        if opts.generated_column is None and opts.backend == "openai":
            from sc_data.models.served import ChatEndpoint

            self._endpoint = ChatEndpoint(opts, model=opts.model)
            self._endpoint.open()
            self._refs["generator"] = self._endpoint.describe()
        elif opts.generated_column is None:
            model, tokenizer, ref = load_causal_lm(
                opts.model,
                device=opts.device,
                dtype=opts.dtype,
                trust_remote_code=opts.trust_remote_code,
            )
            if not getattr(tokenizer, "chat_template", None):
                raise ConfigError(
                    f"generator {opts.model!r} has no chat template; pass an instruct/chat model"
                )
            self._generator, self._tokenizer = model, tokenizer
            self._refs["generator"] = ref.as_dict()
        self._encoder, enc_ref = load_sentence_encoder(opts.encoder, device=opts.device)
        self._refs["encoder"] = enc_ref.as_dict()
        self._opts = opts

    def unload(self) -> None:
        """Drop the generator and the encoder."""
        endpoint = self.__dict__.pop("_endpoint", None)
        if endpoint is not None:
            endpoint.close()
        for attr in ("_generator", "_tokenizer", "_encoder"):
            self.__dict__.pop(attr, None)

    def generate(self, prompt: list[dict[str, str]], row_id: str) -> str:
        """Sample the generator's answer to ``prompt`` under the row's own seed (batch-independent)."""
        if "_endpoint" in vars(self):
            from sc_data.models.served import reply_text

            return reply_text(self._endpoint.complete(self._openai_body(prompt, row_id))).strip()
        import torch

        tok, model, opts = self._tokenizer, self._generator, self._opts
        text = tok.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"][-opts.max_prompt_length :]
        device = next(model.parameters()).device
        input_ids = torch.tensor([ids], device=device)  # (1, T)
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.inference_mode():
            torch.manual_seed(row_seed(opts.seed, row_id))
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=True,
                temperature=opts.temperature,
                top_k=(LOCAL_TOP_K if opts.top_k is None else opts.top_k) or None,
                top_p=opts.top_p,
                max_new_tokens=opts.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
        return tok.decode(out[0, len(ids) :], skip_special_tokens=True).strip()

    def _too_long(self, text: str) -> bool:
        limit = self._encoder.max_seq_length
        return (
            len(self._encoder.tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
            > limit
        )

    def score(self, batch: Batch) -> dict[str, list[Any]]:
        """Generate (or read) each row's answer, embed it with both answers, and take the margin."""
        n = len(batch["prompt"])
        out: dict[str, list[Any]] = {c: [None] * n for c in self.output_columns()}
        gen_col = self._opts.generated_column
        if gen_col is not None and gen_col not in batch:
            raise ConfigError(
                f"similarity generated_column {gen_col!r} is not in the table (columns: {sorted(batch)}); "
                "name the column that holds the generated answers, or leave it unset to generate them"
            )
        def row_texts(i: int) -> tuple[str, str, str] | str:
            """(answer, chosen, rejected) of row i, or why it has none: one row's failure stays in that row."""
            try:
                if gen_col is not None:
                    answer = batch[gen_col][i]
                    if not isinstance(answer, str):
                        raise TypeError(f"{gen_col!r} holds {type(answer).__name__}, not a string")
                else:
                    answer = self.generate(batch["prompt"][i], str(batch["id"][i]))
                chosen = "\n\n".join(m["content"] for m in batch["chosen"][i])
                rejected = "\n\n".join(m["content"] for m in batch["rejected"][i])
            except Exception as e:  # noqa: BLE001 - bad messages, a generation or endpoint error
                return f"{type(e).__name__}: {e}"
            return answer, chosen, rejected

        served = "_endpoint" in vars(self) and gen_col is None
        results = self._endpoint.map(row_texts, range(n)) if served else [row_texts(i) for i in range(n)]
        texts: dict[int, tuple[str, str, str]] = {}
        for i, result in enumerate(results):
            if isinstance(result, str):
                out["similarity__error"][i] = result
            else:
                texts[i] = result
        if not texts:
            return out
        rows = list(texts)
        flat = [t for i in rows for t in texts[i]]
        emb = self._encoder.encode(
            flat, batch_size=self._opts.batch_size, convert_to_numpy=True, show_progress_bar=False
        )
        emb = emb.reshape(len(rows), 3, -1)  # (N, [answer, chosen, rejected], D)
        cos_c, cos_r = cosine_margins(emb[:, 0], emb[:, 1], emb[:, 2])
        for k, i in enumerate(rows):
            out["similarity__generated"][i] = texts[i][0]
            out["similarity__cos_chosen"][i] = float(cos_c[k])
            out["similarity__cos_rejected"][i] = float(cos_r[k])
            out["similarity__margin"][i] = float(cos_c[k] - cos_r[k])
            out["similarity__truncated"][i] = any(self._too_long(t) for t in texts[i])
        return out
