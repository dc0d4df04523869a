#!/usr/bin/env bash
# The reproduction's device call: the five schedules x 3 seeds on SmolLM2 (gpu/config.yaml), π₀ and
# every run measured, RESULTS.md; experiments/reproduce/gpu/README.md has the plan and its sizing.
#
#   experiments/reproduce/gpu/run.sh            # on the device (call 2; call 1 copied model part 1 to /root/repro/parts)
#   experiments/reproduce/gpu/run.sh --dry-run  # the same phases on the CPU: tiny model, synthetic data (seconds)
#
# Phases and their time budgets (each under `timeout`; resumable: the same command again continues,
# finished runs are skipped, a run cut by the timeout restarts):
#   1. setup     30 s  wheels, model pieces joined and checked (carry.py assemble), the work folder prepared
#                      here (steps 1-4) and earlier results copied in (dry run: builds them, gpu/dry.py)
#   2. coverage  15 s  run.py --coverage: every planned run draws every training pair, else no runs
#   3. pi0       40 s  π₀'s log-probs on the eval and OOD pairs, its XSTest answers (step 5)
#   4. runs     205 s  the planned runs in order, each writing results/<run>.json when done
#   5. report    15 s  RESULTS.md and plots from every result present
#   6. collect    5 s  $OUT/results.tar.gz (results/, RESULTS.md, plots, prep.json), $OUT/RESULTS.md
# Phase total 310 s. Device budget 900 s: start 120 s + call 1 30 s + 2 x (gap 15 s + transfer 30 s + 310 s) (call 2 and
# one retry) + close 30 s = 890 s. Runs estimate: 0.16 s a step (32 pairs, 5 % MFU) x the config's steps + 4 s a run
# (load, save, measure) + 35 s first-run warm-up, at most 75 % of the runs budget (gpu/README.md: the plan).
# The dry run gives each phase 4x its budget (the CPU is shared and slow to import torch).
# $OUT also gets phases.jsonl (rc, seconds, budget per phase) and phases.log (every phase's output).
set -uo pipefail
cd "$(dirname "$0")/../../.."
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  -h|--help) sed -n '2,/^[^#]/{/^#/p}' "$0"; exit 0 ;;
  "") ;;
  *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
esac
OUT="${OUT:-$PWD/gpu-repro-out}"
mkdir -p "$OUT"
PY="${PYTHON:-python3}"
CARRY=.carry/gpu
if [ "$DRY" = 1 ]; then ROOT="${REPRO_ROOT:-$OUT/dry-root}"; else ROOT="${REPRO_ROOT:-/root/repro}"; fi
mkdir -p "$ROOT/out/results" "$ROOT/parts"
export PYTHONPATH="/tmp/site:$PWD:${PYTHONPATH:-}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false SC_DATA_CACHE="$ROOT/cache" PYTHONUNBUFFERED=1
CONFIG=experiments/reproduce/gpu/config.yaml
HOME_RESULTS=experiments/reproduce/gpu/results

phase() {  # phase NAME BUDGET_S COMMAND...: run under timeout, record rc and seconds, output to phases.log
  local name=$1 budget=$2; shift 2
  [ "$DRY" = 1 ] && budget=$(( budget * 4 ))  # a shared CPU imports torch slowly; the device gets the budgets above
  local start; start=$(date +%s)
  echo "=== $name ($budget s)" >> "$OUT/phases.log"
  timeout "$budget" "$@" >> "$OUT/phases.log" 2>&1
  local rc=$?
  echo "{\"phase\": \"$name\", \"rc\": $rc, \"seconds\": $(( $(date +%s) - start )), \"budget_s\": $budget}" >> "$OUT/phases.jsonl"
  return $rc
}

setup_device() {  # the carried pieces, wheels and work folder into $ROOT; the model's --set into $ROOT/sets
  set -e
  if ls "$CARRY"/whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$CARRY"/whl/*.whl
  fi
  cp -r "$CARRY"/model/2/. "$ROOT/parts/"
  [ -f "$ROOT/sets" ] || "$PY" -m experiments.reproduce.carry assemble "$ROOT/parts" "$ROOT/models" > "$ROOT/sets"
  [ -f "$ROOT/work/prep.json" ] || cp -r "$CARRY/work" "$ROOT/work"
  cp -n "$HOME_RESULTS"/*.json "$ROOT/out/results/" 2>/dev/null || true  # carried back from earlier calls
  cat "$ROOT/sets"
}

if [ "$DRY" = 1 ]; then
  phase setup 30 "$PY" -m experiments.reproduce.gpu.dry "$ROOT"
else
  phase setup 30 bash -c "CARRY=$CARRY ROOT=$ROOT PY=$PY HOME_RESULTS=$HOME_RESULTS; $(declare -f setup_device); setup_device"
fi
read -r -a SETS < <(cat "$ROOT/sets" 2>/dev/null)
RUN=("$PY" -m experiments.reproduce.run --config "$CONFIG" --work "$ROOT/work" --out "$ROOT/out" "${SETS[@]}")
if phase coverage 15 "${RUN[@]}" --coverage; then
  phase pi0 40 "${RUN[@]}" --stop-after pi0 \
    && phase runs 205 "${RUN[@]}" --note "GPU cut (experiments/reproduce/gpu/config.yaml) by experiments/reproduce/gpu/run.sh$([ "$DRY" = 1 ] && echo ' --dry-run')"
fi
phase report 15 "${RUN[@]}" --report-only --note "GPU cut (experiments/reproduce/gpu/config.yaml) by experiments/reproduce/gpu/run.sh$([ "$DRY" = 1 ] && echo ' --dry-run')"
phase collect 5 bash -c "tar czf '$OUT/results.tar.gz' -C '$ROOT/out' . -C '$ROOT/work' prep.json && cp '$ROOT/out/RESULTS.md' '$OUT/'"
