"""Our sigmoid DPO loss equals TRL's DPOTrainer on an exported tier loaded with `datasets` unchanged.

TRL 1.16 keeps the newline after the end-of-turn token in the answer; the shared core does not
(docs/ARCHITECTURE.md, "The log-prob core"). The test checks that this is the only tokenisation difference, then computes our
log-probs and loss on TRL's exact tokens and compares the losses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("trl")


def test_sigmoid_loss_matches_trl(staged_dir: Path, tiny_lm_dir: Path, tmp_path: Path) -> None:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from sc_data.models.logprob import PairTokenizer, TokenizedPair, TruncationConfig, pair_logprobs
    from sc_data.train.data import load_staged, tokenize_table
    from sc_data.train.losses import build_loss
    from tests.tiny_models import build_causal_lm

    ref_dir = build_causal_lm(tmp_path / "ref", seed=1)
    ds = datasets.load_dataset(str(staged_dir), "tier_0", split="train", cache_dir=str(tmp_path / "hf_cache"))
    assert ds["id"] == [r["id"] for r in load_staged(staged_dir).train.to_pylist() if r["tier"] == 0]
    n = len(ds)
    policy = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    ref = AutoModelForCausalLM.from_pretrained(ref_dir)
    tok = AutoTokenizer.from_pretrained(tiny_lm_dir)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"), beta=0.1, per_device_train_batch_size=n, max_steps=1, learning_rate=0.0,
        report_to=[], disable_dropout=True, max_length=1024, use_cpu=True, logging_steps=1, save_strategy="no",
        bf16=False, dataloader_drop_last=False,
    )
    trainer = DPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=ds, processing_class=tok)
    batch = next(iter(trainer.get_train_dataloader()))  # the whole tier: the mean is order-free
    with torch.no_grad():
        trl_loss = trainer.compute_loss(trainer.model, batch).item()

    # TRL keeps the newline the template writes after <|im_end|>; the shared core stops at the
    # end-of-turn token (docs/ARCHITECTURE.md, "The log-prob core"). Apart from that token the tokenisations agree exactly:
    ours = tokenize_table(PairTokenizer(tok, truncation=TruncationConfig(max_length=1024, max_prompt_length=512)), ds.data.table)
    newline = tok("\n", add_special_tokens=False)["input_ids"]
    half = batch["input_ids"].shape[0] // 2  # TRL's batch is [chosen rows; rejected rows]
    trl_pairs = []
    for i in range(half):
        ids_c, ids_r = batch["input_ids"][i], batch["input_ids"][half + i]
        cm_c, cm_r = batch["completion_mask"][i].bool(), batch["completion_mask"][half + i].bool()
        prompt = ids_c[batch["attention_mask"][i].bool() & ~cm_c].tolist()
        trl_pairs.append(TokenizedPair(prompt_ids=prompt, chosen_ids=ids_c[cm_c].tolist(), rejected_ids=ids_r[cm_r].tolist(), flags=()))
    by_prompt = {tuple(p.prompt_ids): p for p in ours}
    for tp in trl_pairs:
        mine = by_prompt[tuple(tp.prompt_ids)]
        assert tp.chosen_ids == mine.chosen_ids + newline and tp.rejected_ids == mine.rejected_ids + newline
    with torch.no_grad():
        pol = pair_logprobs(policy.eval(), trl_pairs, pad_token_id=tok.pad_token_id)
        rf = pair_logprobs(ref.eval(), trl_pairs, pad_token_id=tok.pad_token_id)
    loss, _, _ = build_loss("sigmoid", beta=0.1)(pol.chosen_sum, pol.rejected_sum, rf.chosen_sum, rf.rejected_sum)
    assert not np.isclose(loss.mean().item(), np.log(2), atol=1e-3)  # policy and reference differ
    assert loss.mean().item() == pytest.approx(trl_loss, rel=1e-4, abs=1e-5)
