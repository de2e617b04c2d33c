"""A real two-node Ray cluster on this machine (`ray start --head` + `ray start --address`): runs
go through the Ray backend and the normal job manager; metrics stream live, Stop works, killing the
worker node's processes leaves that run `interrupted` with its metrics, and the queue goes on.

Skipped when ray is not installed (pip install -r requirements-ray.txt -c constraints.txt).
"""
from __future__ import annotations

import importlib.util
import json
import os
import time

import pytest

from bench import raycluster
from core import jobs, runs
from core.config import RunConfig

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="ray is not installed (optional: pip install -r requirements-ray.txt)"),
]

@pytest.fixture
def cluster(monkeypatch, runs_dir):
    monkeypatch.setenv("PLAYGROUND_MAX_STEPS", "100000")  # forwarded to the tasks at connect
    started = raycluster.start(nodes=2, cpus_per_node=1)
    try:
        yield started
    finally:
        try:
            import ray
            ray.shutdown()
        except Exception:
            pass
        raycluster.stop(started)


def _cfg(model: str, data: str, steps: int, name: str) -> RunConfig:
    return RunConfig.from_dict({
        "name": name, "model": {"name": model, "device": "cpu"},
        "data": {"source": data, "task": "classification", "max_length": 32},
        "method": {"name": "lora", "params": {}},
        "train": dict(max_steps=steps, batch_size=4, learning_rate=1e-2, eval_steps=max(steps // 2, 1),
                      logging_steps=1, seed=3, torch_threads=1)})


def _wait(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _logged_steps(manager, run_id: str) -> list[int]:
    return [e["step"] for e in manager.snapshot(run_id)["events"] if e.get("type") == "log"]


def _node_of(manager, run_id: str) -> str | None:
    for event in manager.snapshot(run_id)["events"]:
        if event.get("ray_node"):
            return event["ray_node"]
    return None


def test_two_node_cluster_streams_stops_and_survives_a_dead_node(cluster, tiny_bert, sentiment_file):
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from core import ray_backend
    t0 = time.time()
    described = ray_backend.connect(cluster["address"], timeout=60)
    assert ray_backend.wait_for_nodes(2) == 2, described
    head_node = ray.get_runtime_context().get_node_id()
    manager = jobs.JobManager(ray_backend.run_on_ray)
    try:
        # 1. Stop: a long run streams metrics live, then stops at the next step when asked.
        a = manager.submit(_cfg(tiny_bert, sentiment_file, 20000, "stopped"), "alice")
        _wait(lambda: len(_logged_steps(manager, a)) >= 3, 120, "run A's first logged steps")
        assert manager.snapshot(a)["state"] == "running"
        manager.stop(a, "alice")
        _wait(lambda: manager.snapshot(a)["state"] == "stopped", 60, "run A to stop")
        steps_a = _logged_steps(manager, a)
        assert 3 <= len(steps_a) < 20000
        on_disk = [e["step"] for e in runs.read_metrics(runs.run_dir_for(a)) if e.get("type") == "log"]
        assert on_disk == steps_a  # through the manager's on_event into metrics.jsonl

        # 2. A node dies mid-run. The head's only CPU is held, so the run must go to the worker node.
        @ray.remote(num_cpus=1)
        def hold() -> None:
            time.sleep(600)
        holder = hold.options(scheduling_strategy=NodeAffinitySchedulingStrategy(head_node, soft=False)).remote()
        b = manager.submit(_cfg(tiny_bert, sentiment_file, 20000, "node dies"), "bob")
        _wait(lambda: len(_logged_steps(manager, b)) >= 3, 120, "run B's first logged steps")
        assert _node_of(manager, b) not in (None, head_node)
        raycluster.kill_node(cluster, 1)
        _wait(lambda: manager.snapshot(b)["state"] == "interrupted", 90, "run B to be marked interrupted")
        snap_b = manager.snapshot(b)
        assert "interrupted on the Ray cluster" in snap_b["message"]
        kept = [e for e in runs.read_metrics(runs.run_dir_for(b)) if e.get("type") == "log"]
        assert len(kept) >= 3, "the metrics run B sent before its node died are kept"
        assert runs.read_status(runs.run_dir_for(b))["state"] == "interrupted"
        ray.cancel(holder, force=True)

        # 3. The queue goes on: one run fails on its own (bad data), the next two still finish.
        bad = manager.submit(_cfg(tiny_bert, sentiment_file + ".missing", 3, "bad data"), "carol")
        c = manager.submit(_cfg(tiny_bert, sentiment_file, 4, "short c"), "carol")
        d = manager.submit(_cfg(tiny_bert, sentiment_file, 4, "short d"), "dave")
        _wait(lambda: all(manager.snapshot(r)["state"] not in ("queued", "running") for r in (bad, c, d)),
              150, "the last three runs")
        bad_snap = manager.snapshot(bad)
        assert bad_snap["state"] == "failed" and "Traceback" not in bad_snap["message"], bad_snap["message"]
        for run_id in (c, d):
            snap = manager.snapshot(run_id)
            assert snap["state"] == "completed", (run_id, snap["message"])
            assert _logged_steps(manager, run_id) == [1, 2, 3, 4]
            assert snap["summary"].get("final", {}).get("eval_accuracy") is not None
            assert os.path.exists(os.path.join(runs.run_dir_for(run_id), "summary.json"))
        print(f"\nRay cluster test: {time.time() - t0:.0f} s after the cluster started ({described})")
    finally:
        manager.shutdown(timeout=30)


def test_unreachable_cluster_falls_back_to_the_local_manager(monkeypatch, runs_dir):
    from core import ray_backend
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, f"127.0.0.1:{raycluster.free_port()}")
    monkeypatch.setenv("RAY_gcs_rpc_server_connect_timeout_s", "2")
    monkeypatch.setattr(ray_backend, "CONNECT_TIMEOUT_S", 5.0)
    jobs.reset_manager()
    try:
        manager = jobs.get_manager()
        assert manager._run_fn is jobs._default_run_fn
        status = ray_backend.status()
        assert status["error"].startswith("could not connect to the Ray cluster at") or "did not answer" in status["error"]
        assert json.dumps(status)  # plain data for the sidebar
    finally:
        jobs.reset_manager()
