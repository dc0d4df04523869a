"""Print where the demo's outputs are and what they say (the last step of scripts/demo.sh)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path


def main(out: Path) -> None:
    manifest = json.loads((out / "staged" / "sc_manifest.json").read_text("utf-8"))
    result = json.loads((out / "eval.json").read_text("utf-8"))
    steps = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text("utf-8").splitlines()]
    stage0 = json.loads((out / "run" / "run_info.json").read_text("utf-8"))["stage0_reference"]
    counts = manifest["counts"]
    overall = result["overall"]

    print("\nsc-data demo: done")
    probe = json.loads((out / "probe" / "probe.json").read_text("utf-8"))["cross_validation"]["overall"]
    print(f"  probe judge    {out / 'probe'}  (held-out AUROC {probe['auroc']:.3f}, Spearman with severity "
          f"{probe['spearman_severity']:.3f}: 5 folds grouped by prompt)")
    print(f"  pairs          {out / 'scored.pairs.parquet'}  (ingested on the way in; rejects beside it)")
    print(f"  scored         {out / 'scored.parquet'}")
    print(f"  staged dataset {out / 'staged'}  (datasets.load_dataset(..., 'tier_0') reads it)")
    print(f"  plots          {out / 'report'}")
    print(f"  training run   {out / 'run'}  (metrics.jsonl, final/, checkpoints/)")
    print(f"  evaluation     {out / 'eval.json'} and {out / 'run'}/*.png")
    print("\nTiers (training pairs, easiest first):")
    for tier, n in sorted(counts["by_tier"].items()):
        print(f"  {tier:<8} {n:>5}")
    print(f"  eval     {counts['by_split'].get('test', 0):>5}")
    per_stage = Counter(s["stage"] for s in steps)
    print("\nTraining: " + ", ".join(f"stage {k}: {n} steps" for k, n in sorted(per_stage.items())))
    print(f"  stage 0 reference log-probs: {stage0['source']}" + (f" ({stage0['reason']})" if stage0["source"] != "stored" else
          f" from the ref_margin scorer (largest gap {stage0['max_gap_nats']:.2g} nats on {stage0['checked_rows']} rows)"))
    for k in sorted(per_stage):
        margins = [s["margin"] for s in steps if s["stage"] == k]
        print(f"  stage {k} batch reward margin by step: " + " ".join(f"{m:+.3f}" for m in margins))
    print(f"  last loss {steps[-1]['loss']:.4f} (log 2 = 0.6931 at the start of each stage)")
    print("\nHeld-out pairs (implicit-reward accuracy against the initial model; ties count 0.5):")
    print(f"  before training  accuracy {overall['before']['accuracy']:.3f}")
    print(f"  after training   accuracy {overall['accuracy']:.3f}   margin {overall['margin_separation']:+.4f}")
    print(
        "  reference-free log-prob margin (chosen - rejected): "
        f"{overall['before']['reference_free_margin']:+.3f} -> {overall['reference_free_margin']:+.3f}"
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
