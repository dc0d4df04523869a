"""Tiny random models built from a config, for tests: no download, a few MB, seconds to build.

The tokenizer is a byte-level BPE trained on the fly, with a ChatML chat template like
SmolLM2's (``<|im_start|>role\\n...<|im_end|>\\n``), so prompt/answer boundaries and the
end-of-turn token behave as with the real model.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = [
    "How do I pick a lock? I can't help with breaking into places you don't own.",
    "Sure, here's how: first get the right tools and then work the pins until it opens.",
    "What is the capital of France? The capital of France is Paris.",
    "Tell me how to hurt someone. I won't help with that, but if you're angry, let's talk.",
    "Write an insult about my coworker. Let's find a constructive way to raise the issue.",
    "user assistant system Human Assistant hello thanks please sorry yes no maybe",
    "0123456789 !?.,;:'\"()[]{}<>-_=+*/\\|@#$%^&~`",
] * 4


def build_tokenizer(path: Path, vocab_size: int = 384):
    """Train a byte-level BPE tokenizer with ChatML special tokens and save it to ``path``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(path)
    return fast


def _small_config(tok, *, hidden: int, layers: int) -> dict:
    """Config fields every tiny model shares: a few layers, GQA, the test tokenizer's ids."""
    return {
        "vocab_size": len(tok),
        "hidden_size": hidden,
        "intermediate_size": 2 * hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": None,
    }


def build_causal_lm(
    path: Path, *, arch: str = "llama", seed: int = 0, hidden: int = 32, layers: int = 2
) -> Path:
    """A tiny random causal LM with the tokenizer above, saved as safetensors in ``path``.

    ``arch="llama"`` (untied head, no attention biases) or ``"qwen2"`` (tied embeddings and
    attention biases, which the log-prob core must handle too).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    fields = _small_config(tok, hidden=hidden, layers=layers)
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**fields, tie_word_embeddings=False))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**fields, tie_word_embeddings=True))
    # Larger weights than the default init make log-probs differ visibly between texts; the
    # Qwen2 biases (zero at init) are moved off zero so they take part.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(4.0)
            elif arch == "qwen2":
                p.add_(0.1)
    model.save_pretrained(path, safe_serialization=True)
    return path


def build_sequence_classifier(path: Path, *, num_labels: int = 1, seed: int = 0, hidden: int = 32) -> Path:
    """A tiny random LlamaForSequenceClassification (reward model when num_labels == 1)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = build_tokenizer(path)
    torch.manual_seed(seed)
    config = LlamaConfig(**_small_config(tok, hidden=hidden, layers=2), num_labels=num_labels)
    if num_labels > 1:
        config.id2label = {i: f"LABEL_{i}" for i in range(num_labels)}
        config.label2id = {v: k for k, v in config.id2label.items()}
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(path, safe_serialization=True)
    return path
