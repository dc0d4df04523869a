#!/usr/bin/env bash
# One device call that proves the GPU path; everything lands under $OUT (default ./gpu-out).
#
#   bench/gpu/run.sh            # on the lent GPU machine (at most ~8 minutes)
#   bench/gpu/run.sh --dry-run  # the same phases on the CPU with tiny settings (seconds; in the test suite)
#
# Phases and their time budgets (each runs under `timeout`; a phase that fails or runs out is
# recorded in summary.json and the next one still runs):
#   1. cuda-tests   90 s  pytest -m cuda tests/gpu: bf16 log-prob core vs float64 two-pass, LoRA and full
#                         steps with a hard reference update (log 2 at the next stage), FlexAttention vs
#                         dense, FSDP launch (dry run: collected only; the suite runs them on the CPU)
#   2. score       150 s  bench/score.py --gpu: ref_margin vs TRL's warm precompute and a plain sorted pass,
#                         Qwen2-0.5B-shaped random bf16 model, ../shared/gpu's length distribution
#   3. train-gc    120 s  bench/train.py: steps/s, tokens/s, peak memory vs TRL DPOTrainer, checkpointing on
#   4. train-nogc  120 s  the same with gradient checkpointing off on both sides
#   5. summary      10 s  summary.json (every figure) and summary.md (a table for bench/RESULTS.md)
# The dry run skips phase 4 (phase 3's code with one flag changed).
# On the device, carry the TRL wheels as ../shared/gpu/README.md says (.whl/) and BENCH_TOKENIZER
# (a Qwen2 tokenizer folder) if scoring should be timed against TRL too.
set -uo pipefail
cd "$(dirname "$0")/../.."
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
esac
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false

phase() {  # phase NAME BUDGET_S OUTPUT COMMAND...
  local name=$1 budget=$2 output=$3; shift 3
  local start; start=$(date +%s)
  timeout "$budget" "$@" > "$OUT/$output" 2> "$OUT/$name.log"
  local rc=$?
  echo "{\"phase\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - start )), \"budget_s\": $budget, \"output\": \"$output\"}" >> "$OUT/phases.jsonl"
}

: > "$OUT/phases.jsonl"
if [ "$DRY" = 1 ]; then
  phase cuda-tests 90 cuda-tests.txt "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/gpu --collect-only
  phase score 150 score.json "$PY" -m bench.score --pairs 2 --no-trl
  phase train-gc 120 train-gc.json "$PY" -m bench.train --cpu --steps 1 --repeats 1 --variants trl --gradient-checkpointing on
else
  phase cuda-tests 90 cuda-tests.txt "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/gpu
  phase score 150 score.json "$PY" -m bench.score --gpu
  phase train-gc 120 train-gc.json "$PY" -m bench.train --steps 10 --repeats 2 --variants trl,trl_precompute,trl_padding_free --gradient-checkpointing on
  phase train-nogc 120 train-nogc.json "$PY" -m bench.train --steps 10 --repeats 2 --variants trl,trl_precompute --gradient-checkpointing off
fi
phase summary 10 summary.md "$PY" -m bench.gpu.summarize "$OUT"
cat "$OUT/summary.md"
