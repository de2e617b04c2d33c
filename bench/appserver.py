"""`streamlit run app.py` on a free localhost port, for the browser tests and the browser benchmarks.

The server gets its own process group, so stopping it also ends a training thread it started, and
only the server this module started is ever signalled.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AppDidNotStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
            return resp.read().decode().strip() == "ok"
    except OSError:
        return False


def offline_env(**extra: str) -> dict:
    """This environment, offline, plus `extra`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           **extra}
    return env


def start_app(env: dict, log_path: str, timeout_s: float = 120) -> tuple[subprocess.Popen, str]:
    """Start the app and wait for its health check; returns (process, url)."""
    port = free_port()
    url = f"http://localhost:{port}"
    log = open(log_path, "w")  # noqa: SIM115 - the child writes to it for as long as it lives
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "localhost", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()  # the child holds its own copy of the descriptor
    deadline = time.monotonic() + timeout_s
    while not healthy(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_app(proc)
            with open(log_path, encoding="utf-8", errors="replace") as f:
                tail = f.read()[-3000:]
            raise AppDidNotStart(f"streamlit did not start within {timeout_s:.0f} s:\n{tail}")
        time.sleep(0.5)
    return proc, url


def stop_app(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=15)


def prepare_model_cache(env: dict, timeout_s: float = 1800) -> None:
    """Build the SmolLM2 safetensors cache once (scripts/start.sh does the same), before any clock starts."""
    subprocess.run([sys.executable, "-m", "core.models", "--prepare"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout_s)
