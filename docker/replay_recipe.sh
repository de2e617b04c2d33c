#!/usr/bin/env bash
# CI: replay the Dockerfile without Docker, and fail if the image would not come up.
#   1. a fresh virtual environment (the image's /opt/venv), with the Dockerfile's ENV;
#   2. the Dockerfile's install step: docker/install.sh (the very script the image runs);
#   3. the Dockerfile's cache step: python -m core.models --prepare (and its probe step,
#      python -m core.probe_prepare, with a fresh HOME);
#   4. the Dockerfile's ENTRYPOINT + CMD (docker/start.sh streamlit run app.py ...), on a free port
#      of 127.0.0.1 instead of 0.0.0.0:7860, with a writable stand-in for /data;
#   5. poll /_stcore/health until it answers "ok" (timeout REPLAY_TIMEOUT, default 120 s), then stop.
# Exits non-zero on any failure and prints the server log. Extra env: PYTHON (the interpreter
# the venv is made from), KEEP=1 (keep the work folder), TORCH_SPEC/TORCH_INDEX_URL (install.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DOCKERFILE="$ROOT/Dockerfile"
TIMEOUT=${REPLAY_TIMEOUT:-120}
PY=${PYTHON:-$(command -v python3.11 || command -v python3)}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/replay-recipe.XXXXXX")
SERVER_PID=""

say() { echo "replay: $*" >&2; }
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -f "$WORK/server.log" ]; then
    say "server log (last 60 lines):"; tail -n 60 "$WORK/server.log" >&2
  fi
  if [ "${KEEP:-0}" = "1" ] || [ "$rc" -ne 0 ]; then say "work folder kept: $WORK"; else rm -rf "$WORK"; fi
  exit "$rc"
}
trap cleanup EXIT

# The Dockerfile must still run the shared scripts this replays.
grep -Eq '^RUN .*bash docker/install\.sh' "$DOCKERFILE" || { say "Dockerfile no longer runs docker/install.sh"; exit 1; }
grep -Eq '^RUN python -m core\.models --prepare' "$DOCKERFILE" || { say "Dockerfile no longer runs the cache step"; exit 1; }

# ENV, ARG defaults, ENTRYPOINT and CMD, read from the Dockerfile itself.
"$PY" - "$DOCKERFILE" "$WORK" > "$WORK/recipe.sh" <<'PYEOF'
import json, re, shlex, sys
dockerfile, work = sys.argv[1], sys.argv[2]
text = re.sub(r"\\\n", " ", open(dockerfile, encoding="utf-8").read())
lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
# Image paths become folders of the replay; PATH/VIRTUAL_ENV are the fresh venv's.
skip = {"PATH", "VIRTUAL_ENV", "HOME"}
override = {"PLAYGROUND_CACHE_DIR": f"{work}/cache"}
out = []
for line in lines:
    word, _, rest = line.partition(" ")
    word = word.upper()
    if word in ("ENV", "ARG"):
        for item in shlex.split(rest):
            if "=" not in item:
                continue
            key, value = item.split("=", 1)
            if key in skip:
                continue
            value = override.get(key, value)
            if word == "ARG":  # a build argument given from outside wins over the default
                out.append(f'export {key}="${{{key}-{value}}}"')
            else:
                out.append(f"export {key}={shlex.quote(value)}")
    elif word in ("ENTRYPOINT", "CMD"):
        argv = json.loads(rest)
        out.append(f"{word}=({' '.join(shlex.quote(a) for a in argv)})")
print("\n".join(out))
PYEOF
# shellcheck disable=SC1091
. "$WORK/recipe.sh"
[ "${#CMD[@]}" -gt 0 ] && [ "${#ENTRYPOINT[@]}" -gt 0 ] || { say "no ENTRYPOINT/CMD in the Dockerfile"; exit 1; }

say "fresh venv from $PY in $WORK/venv"
"$PY" -m venv "$WORK/venv"
export VIRTUAL_ENV="$WORK/venv" PATH="$WORK/venv/bin:$PATH"
unset PYTHONHOME PYTHONPATH

say "install step: docker/install.sh"
started=$(date +%s)
bash "$ROOT/docker/install.sh"
say "installed in $(( $(date +%s) - started )) s"

say "cache step: python -m core.models --prepare"
(cd "$ROOT" && python -m core.models --prepare)
grep -Eq '^RUN python -m core\.probe_prepare' "$DOCKERFILE" && {
  say "probe step: python -m core.probe_prepare"
  (cd "$ROOT" && HOME="$WORK/home" python -m core.probe_prepare)
}

PORT=$(python -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1]); s.close()")
argv=()
for a in "${CMD[@]}"; do
  case "$a" in
    7860) argv+=("$PORT") ;;
    0.0.0.0) argv+=("127.0.0.1") ;;
    *) argv+=("$a") ;;
  esac
done
entry=()
for a in "${ENTRYPOINT[@]}"; do
  entry+=("${a//\/home\/user\/app/$ROOT}")
done
mkdir -p "$WORK/data"
export PLAYGROUND_DATA_DIR="$WORK/data"  # stands in for a Space's persistent storage at /data
unset PLAYGROUND_RUNS_DIR HF_HOME
say "start step: ${entry[*]} ${argv[*]}"
"${entry[@]}" "${argv[@]}" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!

deadline=$(( $(date +%s) + TIMEOUT ))
health="http://127.0.0.1:$PORT/_stcore/health"
until [ "$(python -c "import urllib.request, sys
try:
    print(urllib.request.urlopen('$health', timeout=3).read().decode().strip())
except Exception:
    print('')" 2>/dev/null)" = "ok" ]; do
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then say "the app exited before it was healthy"; exit 1; fi
  if [ "$(date +%s)" -ge "$deadline" ]; then say "no 'ok' from $health within $TIMEOUT s"; exit 1; fi
  sleep 2
done
say "healthy: $health answered ok"

[ -d "$WORK/data/runs" ] || { say "start.sh did not choose the persistent runs folder $WORK/data/runs"; exit 1; }
grep -q "runs are kept in $WORK/data/runs" "$WORK/server.log" || { say "start.sh did not report the runs folder"; exit 1; }
python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/', timeout=5).read()" \
  || { say "the page itself does not load"; exit 1; }
say "OK: install, cache, start and health check passed"
