#!/usr/bin/env bash
# Set up (if needed) and start the app on http://localhost:8501, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} HF_DATASETS_OFFLINE=${HF_DATASETS_OFFLINE:-1}
python -m core.models --prepare >/dev/null 2>&1 || echo "note: SmolLM2 cache will be built on first use"
echo "probe: the base model's answers (the first start only takes ~20 s)"
python -m core.probe_prepare 2>/dev/null || true
exec streamlit run app.py --server.headless true --server.port "${PORT:-8501}" "$@"
