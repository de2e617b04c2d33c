"""A real Ray cluster of several nodes on this one machine (`ray start --head` + `ray start --address`),
for tests/test_ray_cluster.py and bench/class_load.py.

Each node gets its own temp dir; its processes are found by that path in their command lines, so
only this cluster is ever killed (never `ray stop`, which ends every Ray on the machine).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile

OBJECT_STORE_BYTES = 80 * 2**20  # Ray's minimum is 75 MB; the default takes 30 % of the RAM per node


def ray_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # The `ray` script of whichever environment holds the package, without relying on PATH.
    return subprocess.run([sys.executable, "-c", "from ray.scripts.scripts import main; main()", *args],
                          env=env or dict(os.environ), capture_output=True, text=True, timeout=180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(nodes: int = 2, cpus_per_node: int = 1) -> dict:
    """Start a head and nodes-1 workers; returns {'address', 'dirs': [head dir, worker dirs...]}."""
    port = free_port()
    # Short paths: Ray's unix sockets live in the temp dir and must fit in 107 characters.
    dirs = [tempfile.mkdtemp(prefix=f"pg-ray-{i}-") for i in range(nodes)]
    # A dead node is noticed in ~3 s instead of ~30 s.
    env = dict(os.environ, RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3",
               RAY_USAGE_STATS_ENABLED="0")
    common = [f"--num-cpus={cpus_per_node}", f"--object-store-memory={OBJECT_STORE_BYTES}", "--disable-usage-stats"]
    cluster = {"address": f"127.0.0.1:{port}", "dirs": dirs}
    try:
        for i, folder in enumerate(dirs):
            role = ["--head", f"--port={port}", "--include-dashboard=false"] if i == 0 else [f"--address=127.0.0.1:{port}"]
            done = ray_cli("start", *role, f"--temp-dir={folder}", *common, env=env)
            if done.returncode != 0:
                raise RuntimeError(f"ray start failed for node {i}: {done.stderr[-2000:]}")
    except BaseException:
        stop(cluster)
        raise
    return cluster


def node_processes(temp_dir: str) -> list:
    """Every process of the node whose temp dir is temp_dir, with all their children (the workers)."""
    import psutil
    found: dict = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in proc.info.get("cmdline") or []):
                found[proc.pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    return list(found.values())


def kill(procs: list) -> None:
    import psutil
    for proc in procs:
        try:
            proc.kill()
        except psutil.Error:
            pass


def kill_node(cluster: dict, index: int) -> None:
    kill(node_processes(cluster["dirs"][index]))


def stop(cluster: dict) -> None:
    for folder in reversed(cluster["dirs"]):
        kill(node_processes(folder))
    for folder in cluster["dirs"]:
        shutil.rmtree(folder, ignore_errors=True)
