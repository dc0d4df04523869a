#!/usr/bin/env bash
# README command 1: set up .venv and run the main job on the bundled examples/.
# Outputs go to ${SC_DATA_DEMO_OUT:-demo-out}/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${SC_DATA_DEMO_OUT:-demo-out}
mkdir -p "$OUT"
sc-data ingest examples/pairs.jsonl -o "$OUT/pairs.parquet"
sc-data inspect "$OUT/pairs.parquet"
