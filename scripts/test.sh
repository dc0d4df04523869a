#!/usr/bin/env bash
# Set up .venv and run the whole test suite: lint, import every module, pytest (demo and notebook included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ruff check .
python -c "import importlib, pkgutil, sc_data, sc_data.cli.main
for m in pkgutil.walk_packages(sc_data.__path__, 'sc_data.'): importlib.import_module(m.name)
print('imported every sc_data module')"
python -m pytest -q --timeout=1800 --durations=15 "$@"
