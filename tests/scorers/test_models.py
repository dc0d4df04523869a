"""Model resolution (alias, folder, GGUF, hub id) and loading without the Hub."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from sc_data.errors import ConfigError, ModelNotFoundError
from sc_data.io import cache_dir
from sc_data.models.loading import (
    BUILTIN_ALIASES,
    ModelRef,
    load_causal_lm,
    load_sentence_encoder,
    resolve_device,
    resolve_dtype,
    resolve_model_path,
)


class TestResolve:
    def test_local_folder(self, tiny_lm_dir: Path) -> None:
        ref = resolve_model_path(str(tiny_lm_dir))
        assert ref == ModelRef(ref=str(tiny_lm_dir), path=tiny_lm_dir.resolve(), sha256=ref.sha256)
        assert len(ref.sha256) == 64 and ref.sha256 == resolve_model_path(str(tiny_lm_dir)).sha256

    def test_smollm2_alias_is_the_packaged_gguf(self) -> None:
        ref = resolve_model_path("smollm2-135m-instruct")
        assert ref.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
        assert (ref.path / ref.gguf_file).is_file() and len(ref.sha256) == 64
        direct = resolve_model_path(str(ref.path / ref.gguf_file))
        assert direct.sha256 == ref.sha256 and direct.gguf_file == ref.gguf_file

    def test_minilm_alias(self) -> None:
        ref = resolve_model_path("all-minilm-l6-v2")
        assert ref.path.name == "model" and (ref.path / "modules.json").is_file()
        assert set(BUILTIN_ALIASES) == {"smollm2-135m-instruct", "all-minilm-l6-v2"}

    def test_missing_path(self, tmp_path: Path) -> None:
        with pytest.raises(ModelNotFoundError, match=r"model '\./nope\.d' not found: it is not a built-in alias"):
            resolve_model_path("./nope.d")

    def test_hub_id_offline_not_cached(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(ModelNotFoundError, match=r"HF_HUB_OFFLINE is set.*`hf download sc-data-test/not-a-model`"):
            resolve_model_path("sc-data-test/not-a-model")

    def test_pickle_only_folder_refused(self, tmp_path: Path) -> None:
        (tmp_path / "config.json").write_text("{}")
        (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04")
        with pytest.raises(ModelNotFoundError, match=r"has only pickle weights \(\['pytorch_model.bin'\]\)"):
            resolve_model_path(str(tmp_path))

    def test_non_gguf_file(self, tmp_path: Path) -> None:
        (tmp_path / "w.bin").write_bytes(b"x")
        with pytest.raises(ModelNotFoundError, match=r"is not a \.gguf file"):
            resolve_model_path(str(tmp_path / "w.bin"))


class TestDeviceDtype:
    def test_choices(self) -> None:
        assert resolve_device("cpu") == torch.device("cpu")
        assert resolve_dtype("auto", "cpu") == torch.float32
        assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
        with pytest.raises(ConfigError, match=r"device must be one of \['auto', 'cpu', 'cuda', 'mps'\]; got 'gpu'"):
            resolve_device("gpu")
        with pytest.raises(ConfigError, match=r"dtype must be one of \['auto', 'float32', 'bfloat16', 'float16'\]; got 'fp8'"):
            resolve_dtype("fp8", "cpu")

    @pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
    def test_cuda_unavailable(self) -> None:
        with pytest.raises(ConfigError, match="torch sees no CUDA GPU"):
            resolve_device("cuda")
        assert resolve_device("auto").type in {"cpu", "mps"}


class TestLoad:
    def test_tiny_causal_lm(self, tiny_lm_dir: Path) -> None:
        model, tok, ref = load_causal_lm(str(tiny_lm_dir), device="cpu", dtype="float32")
        assert not model.training and model.dtype == torch.float32
        assert tok.eos_token == "<|im_end|>" and tok.pad_token_id == tok.eos_token_id
        assert ref.gguf_file is None

    @pytest.mark.integration
    def test_smollm2_from_cache(self) -> None:
        load_causal_lm("smollm2-135m-instruct", device="cpu")  # converts once if the cache is cold
        t0 = time.perf_counter()
        model, tok, ref = load_causal_lm("smollm2-135m-instruct", device="cpu")
        assert time.perf_counter() - t0 < 10  # safetensors cache, no GGUF de-quantisation
        assert list(cache_dir().joinpath("models").glob(f"smollm2-135m-instruct-q4_1-{ref.sha256[:16]}/model.safetensors"))
        assert type(model).__name__ == "LlamaForCausalLM" and not model.training
        assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
        assert model.generation_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")

    @pytest.mark.integration
    def test_minilm(self) -> None:
        encoder, ref = load_sentence_encoder(device="cpu")
        emb = encoder.encode(["a refusal", "an answer"])
        assert emb.shape == (2, 384) and ref.ref == "all-minilm-l6-v2"
