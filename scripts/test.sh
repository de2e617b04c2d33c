#!/usr/bin/env bash
# Set up (if needed) and run the tests; arguments go to pytest. With none, the whole suite (what CI
# runs): unit, app (AppTest), slow (real embedded models), browser end-to-end (Debian chromium) and
# the benchmarks' quick smoke mode. `-m "not slow"` is the fast tier, for while you work.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --dev
. .venv/bin/activate
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PLAYGROUND_CACHE_DIR=${PLAYGROUND_CACHE_DIR:-$PWD/.cache/models}
python -m pytest "$@"
