#!/usr/bin/env bash
# README command 1: set up .venv and run the main job on the bundled examples/ on a CPU:
# fit the probe judge -> score the raw file (ingested on the way in; ref_margin + the probe judge on
# SmolLM2-135M-Instruct) -> stage -> report
# -> short staged_competence LoRA run (scored and trained with the same truncation, so stage 0
# reuses the stored reference log-probs) -> eval. Outputs go to ${SC_DATA_DEMO_OUT:-demo-out}/.
# SC_DATA_DEMO_SKIP_SETUP=1 reuses an existing .venv (the test suite does).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -n "${SC_DATA_DEMO_SKIP_SETUP:-}" ] || bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${SC_DATA_DEMO_OUT:-demo-out}
STEPS=${SC_DATA_DEMO_STEPS:-4}
MODEL=smollm2-135m-instruct
# Score and train with the same truncation, so training's stage 0 reuses the scorer's log-probs.
MAX_LENGTH=256
MAX_PROMPT_LENGTH=128
mkdir -p "$OUT"

echo "== 1/6 judge fit: a probe on $MODEL's hidden states, fitted on the examples' safety labels" >&2
sc-data judge fit examples/pairs.jsonl -o "$OUT/probe" --overwrite --encoder "$MODEL"

echo "== 2/6 score examples/pairs.jsonl (raw, PKU-SafeRLHF layout): reference-model margin and the probe judge" >&2
sc-data score examples/pairs.jsonl -o "$OUT/scored.parquet" --resume --overwrite \
  --scorer ref_margin --scorer judge --option ref_margin.model="$MODEL" \
  --option judge.backend=probe --option judge.probe="$OUT/probe" \
  --option ref_margin.max_length=$MAX_LENGTH --option ref_margin.max_prompt_length=$MAX_PROMPT_LENGTH
sc-data inspect "$OUT/scored.parquet"

echo "== 3/6 stage: 3 equal tiers, 20 % eval split, seed 42 (the paper's recipe)" >&2
sc-data stage "$OUT/scored.parquet" -o "$OUT/staged" --overwrite
sc-data verify "$OUT/staged"

echo "== 4/6 report: plots of difficulty, tiers, categories and scores" >&2
rm -rf "$OUT/report"
sc-data report "$OUT/staged" -o "$OUT/report"

echo "== 5/6 train: staged_competence, LoRA, $STEPS optimizer steps per stage (CPU)" >&2
rm -rf "$OUT/run"
sc-data train "$OUT/staged" -o "$OUT/run" --model "$MODEL" --schedule staged_competence \
  --max-steps-per-stage "$STEPS" --effective-batch 8 --micro-batch 4 --lr 5e-4 \
  --max-length $MAX_LENGTH --max-prompt-length $MAX_PROMPT_LENGTH

echo "== 6/6 eval: held-out accuracy vs the initial model, per tier and category" >&2
sc-data eval "$OUT/run" --data "$OUT/staged" --json > "$OUT/eval.json"

python scripts/demo_summary.py "$OUT"
