"""PLAYGROUND_RAY_ADDRESS pointing at no cluster (or Ray not installed): the app starts anyway, on the
local manager, and its sidebar says why in words. Needs no Ray: without it, the reason is that."""
from __future__ import annotations

import os

import streamlit as st
from streamlit.testing.v1 import AppTest

from bench.raycluster import free_port
from core import jobs, ray_backend

APP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "app.py")


def test_unreachable_cluster_is_said_on_the_sidebar_and_runs_stay_local(runs_dir, monkeypatch):
    monkeypatch.setenv(ray_backend.ADDRESS_ENV, f"127.0.0.1:{free_port()}")
    monkeypatch.setattr(ray_backend, "CONNECT_TIMEOUT_S", 5.0)
    st.cache_resource.clear()
    jobs.reset_manager()
    try:
        at = AppTest.from_file(APP, default_timeout=90)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        errors = [e.value for e in at.sidebar.error]
        assert any(e.startswith("Ray cluster not used: ") and "Runs train here, on this machine, instead" in e
                   for e in errors), errors
        assert any("could not connect to the Ray cluster" in e or "did not answer" in e
                   or "Ray is not installed" in e for e in errors), errors
        assert jobs.get_manager()._run_fn is jobs._default_run_fn
    finally:
        jobs.reset_manager()
        st.cache_resource.clear()


def test_a_run_no_node_can_take_is_refused_in_words():
    import pytest

    from core.config import ConfigError
    nodes = [{"CPU": 4.0, "memory": 8 * 2**30}, {"CPU": 2.0, "GPU": 1.0, "memory": 4 * 2**30}]
    ray_backend.check_fits({"num_cpus": 2, "num_gpus": 1, "memory": 3 * 2**30}, nodes)  # the second fits
    with pytest.raises(ConfigError, match=r"needs 1 CPU, 1 GPU, 6\.0 GB memory on one node, and no node has all of it"):
        ray_backend.check_fits({"num_cpus": 1, "num_gpus": 1, "memory": 6 * 2**30}, nodes)
    with pytest.raises(ConfigError, match=r"needs 16 CPU; the largest node has 4 CPU"):
        ray_backend.check_fits({"num_cpus": 16, "num_gpus": 0}, nodes)


def test_a_run_whose_machine_went_away_ends_interrupted_with_its_metrics_and_the_queue_goes_on(runs_dir):
    import time

    from core import runs
    from core.config import RunConfig
    from core.errors import RunInterrupted

    def run_fn(cfg, run_dir, on_event, stop):
        for step in (1, 2):
            on_event({"type": "log", "step": step, "loss": 1.0})
        if cfg.name == "lost":
            raise RunInterrupted("interrupted on the Ray cluster: its cluster node went away")
        return {"state": "completed"}

    cfg = {"model": {"name": "minilm"}, "data": {"source": "builtin:sentiment", "task": "classification"}}
    manager = jobs.JobManager(run_fn)
    try:
        lost = manager.submit(RunConfig.from_dict({**cfg, "name": "lost"}), "a")
        fine = manager.submit(RunConfig.from_dict({**cfg, "name": "fine"}), "b")
        deadline = time.time() + 20
        while manager.snapshot(fine)["state"] != "completed" and time.time() < deadline:
            time.sleep(0.05)
        snap = manager.snapshot(lost)
        assert snap["state"] == "interrupted" and "node went away" in snap["message"]
        assert "submit it again" in snap["hint"]
        assert [e["step"] for e in runs.read_metrics(runs.run_dir_for(lost))] == [1, 2]
        assert runs.read_status(runs.run_dir_for(lost))["state"] == "interrupted"
        assert manager.snapshot(fine)["state"] == "completed"
    finally:
        manager.shutdown()
