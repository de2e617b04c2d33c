#!/usr/bin/env bash
# Container entrypoint: choose where runs are kept, then run the command given (the Dockerfile's
# CMD: streamlit run app.py ...).
#
#   PLAYGROUND_RUNS_DIR  kept when set. Otherwise <data>/runs when the persistent-storage folder
#                        (PLAYGROUND_DATA_DIR, default /data: a Space's persistent storage) exists
#                        and is writable, else runs/ inside the app folder (lost on restart).
# With persistent storage, Hugging Face downloads (HF_HOME) go there too unless HF_HOME is set.
set -euo pipefail
APP_DIR=$(cd "$(dirname "$0")/.." && pwd)
DATA_DIR=${PLAYGROUND_DATA_DIR:-/data}

writable() {  # writable DIR: create it if needed and prove a file can be written there
  mkdir -p "$1" 2>/dev/null || return 1
  local probe="$1/.write-probe-$$"
  (: > "$probe") 2>/dev/null || return 1
  rm -f "$probe"
}

if [ -z "${PLAYGROUND_RUNS_DIR:-}" ]; then
  if [ -d "$DATA_DIR" ] && writable "$DATA_DIR/runs"; then
    export PLAYGROUND_RUNS_DIR="$DATA_DIR/runs"
    if [ -z "${HF_HOME:-}" ] && writable "$DATA_DIR/.huggingface"; then
      export HF_HOME="$DATA_DIR/.huggingface"
    fi
  else
    export PLAYGROUND_RUNS_DIR="$APP_DIR/runs"
  fi
fi
if ! writable "$PLAYGROUND_RUNS_DIR"; then
  echo "start.sh: the runs folder $PLAYGROUND_RUNS_DIR is not writable by uid $(id -u)" >&2
  exit 1
fi
echo "start.sh: runs are kept in $PLAYGROUND_RUNS_DIR" >&2

cd "$APP_DIR"
if [ "$#" -eq 0 ]; then
  set -- streamlit run app.py --server.port 7860 --server.address 0.0.0.0 --server.headless true
fi
exec "$@"
