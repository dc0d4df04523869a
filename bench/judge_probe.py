"""Probe judge quality: in distribution (PKU-SafeRLHF, folds grouped by prompt) and across sources.

Labelled sources, each with how it was labelled:

* ``pku``: the PKU-SafeRLHF sample (human safety labels and severity levels 0-3 per answer);
* ``examples``: the bundled ``examples/pairs.jsonl`` (written by us from templates; labels and
  severities by construction);
* ``paper``: a seeded sample of the Staged-Competence release (filtered with GPT so that chosen is
  safe and rejected unsafe: weak binary labels, no severity).

For every feature recipe (hidden-state layers of the LM in one forward pass, and a sentence
encoder) it reports (a) grouped cross-validation within ``pku``, (b) for each source, a probe
fitted on the other sources and tested on it (a source it never saw: answers differ in style
between sources), and (c) grouped cross-validation over all sources together. AUROC is of
``p_unsafe`` against the safe/unsafe label; Spearman of the expected severity against the given
severity where there is one.

    python -m bench.judge_probe --shared ../shared/data --output probe.md       # from the repository root
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from sc_data.scorers.labelled import read_labelled
from sc_data.scorers.probe import (
    Encoder,
    LabelledAnswers,
    ProbeRecipe,
    cross_validate,
    fit_probe,
    quality,
)


def _sources(shared: Path, examples: Path, paper_pairs: int, tmp: Path) -> dict[str, LabelledAnswers]:
    rows = (shared / "paper" / "hh_rlhf_clean_gpt.jsonl").read_text("utf-8").splitlines()
    random.Random(0).shuffle(rows)
    paper = tmp / "paper_sample.jsonl"
    paper.write_text("\n".join(rows[:paper_pairs]) + "\n", encoding="utf-8")
    out = {
        "pku": read_labelled([shared / "pku-saferlhf" / "alpaca7b_test_head.jsonl"])[0],
        "examples": read_labelled([examples])[0],
        "paper": read_labelled([paper], assume_chosen_safe=True)[0],
    }
    for name, labels in out.items():
        labels.sources = [name] * len(labels)
    return out


def _features(sources: dict[str, LabelledAnswers], recipes: dict[str, ProbeRecipe], layers: list[int], device: str) -> dict[str, dict[str, np.ndarray]]:
    """recipe name -> source -> (N, D) features; the LM's layers come from one forward pass per source."""
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in recipes}
    lm = next(r for r in recipes.values() if r.kind == "lm")
    encoder = Encoder(lm, device=device).load()
    for source, labels in sources.items():
        by_layer = encoder.layer_features(labels.prompts, labels.answers, layers)
        for name, recipe in recipes.items():
            if recipe.kind == "lm":
                out[name][source] = by_layer[recipe.layer]
    for name, recipe in recipes.items():
        if recipe.kind == "sentence":
            sentence = Encoder(recipe, device=device).load()
            for source, labels in sources.items():
                out[name][source] = sentence.features(labels.prompts, labels.answers)
    return out


def _measure(sources: dict[str, LabelledAnswers], feats: dict[str, np.ndarray], recipe: ProbeRecipe, c: float, folds: int) -> dict[str, Any]:
    names = list(sources)
    result: dict[str, Any] = {"in_distribution_pku": cross_validate(feats["pku"], sources["pku"], recipe, c=c, folds=folds, seed=0)["overall"]}
    result["cross_source"] = {}
    for held in names:
        train = [n for n in names if n != held]
        labels = LabelledAnswers.concat([sources[n] for n in train])
        probe = fit_probe(np.concatenate([feats[n] for n in train]), labels, recipe, c=c)
        result["cross_source"][held] = {"trained_on": train, **quality(probe.predict(feats[held]), sources[held])["overall"]}
    everything = LabelledAnswers.concat([sources[n] for n in names])
    result["pooled"] = cross_validate(np.concatenate([feats[n] for n in names]), everything, recipe, c=c, folds=folds, seed=0)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("SC_DATA_SHARED_DATA", "../shared/data")))
    ap.add_argument("--examples", type=Path, default=Path("examples/pairs.jsonl"))
    ap.add_argument("--paper-pairs", type=int, default=300, help="Pairs sampled (seed 0) from the paper's release.")
    ap.add_argument("--encoder", default="smollm2-135m-instruct")
    ap.add_argument("--layers", default="4,8,12,16,20,24,30")
    ap.add_argument("--sentence-encoder", default="all-minilm-l6-v2")
    ap.add_argument("--c", type=float, default=0.01)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--output", type=Path, default=None, help="Also write the JSON report here.")
    args = ap.parse_args()
    layers = [int(x) for x in args.layers.split(",")]
    recipes = {f"{args.encoder} layer {k}": ProbeRecipe(encoder=args.encoder, kind="lm", layer=k) for k in layers}
    recipes[args.sentence_encoder] = ProbeRecipe(encoder=args.sentence_encoder, kind="sentence")
    started, load = time.time(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        sources = _sources(args.shared, args.examples, args.paper_pairs, Path(tmp))
        feats = _features(sources, recipes, layers, args.device)
    report = {
        "command": "python -m bench.judge_probe " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_start": round(load, 2), "seconds": None,
        "sources": {n: {"answers": len(s), "unsafe": int(s.unsafe.sum()), "with_severity": int((~np.isnan(s.severity)).sum())}
                    for n, s in sources.items()},
        "recipes": {name: _measure(sources, feats[name], recipe, args.c, args.folds) for name, recipe in recipes.items()},
    }
    report["seconds"] = round(time.time() - started, 1)
    text = json.dumps(report, indent=2)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
