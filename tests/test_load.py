"""A class at once: 20 sessions browse every page while one job trains and three wait.

The scenario lives in bench/load_test.py (which prints p50/p95 page times for BENCHMARKS.md);
here it runs with tiny models and its outcome is asserted: every page renders for every session,
jobs run one at a time in the order submitted, all complete, and no metrics line is lost or
duplicated (the events in memory equal metrics.jsonl, line by line). Then the Compare page's model
cache: bounded, one load per run however many sessions ask, and evicted models really freed.
"""
from __future__ import annotations

import gc
import importlib.util
import json
import os
import threading
import weakref

import pytest

from core import jobs, model_cache, runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SESSIONS = 20
# 20 AppTest sessions and four trainings share the machine: far more than a few seconds
pytestmark = pytest.mark.slow
N_JOBS = 4


def _bench():
    spec = importlib.util.spec_from_file_location("playground_load_test", os.path.join(ROOT, "bench", "load_test.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def load_result(tiny_bert, tmp_path_factory):
    import streamlit as st
    bench = _bench()
    folder = tmp_path_factory.mktemp("load")
    data_file = bench.make_sentiment_file(str(folder / "sentiment.jsonl"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLAYGROUND_RUNS_DIR", str(folder / "runs"))
        for var in ("PLAYGROUND_MAX_QUEUE", "PLAYGROUND_MAX_STEPS", "PLAYGROUND_MODEL_ALLOW", "PLAYGROUND_MODEL_CACHE_SIZE"):
            mp.delenv(var, raising=False)
        model_cache.clear()
        try:
            result = bench.run_load(SESSIONS, tiny_bert, data_file, n_jobs=N_JOBS, steps=4, timeout=300)
            yield result, str(folder / "runs")
        finally:
            jobs.reset_manager()
            model_cache.clear()
            st.cache_data.clear()
            st.cache_resource.clear()


def test_every_session_renders_every_page_while_jobs_train(load_result):
    result, _ = load_result
    print("\nload:", json.dumps({k: result[k] for k in ("sessions", "page_views", "p50_s", "p95_s", "max_s",
                                                       "browse_wall_s", "per_page")}))
    assert not result["errors"], result["errors"][:3]
    assert not result["hung_sessions"]
    assert result["page_views"] == SESSIONS * 5  # Learn, Train, Experiments, Compare, Runs
    assert set(result["per_page"]) == {"pages/learn.py", "pages/train.py", "pages/experiments.py",
                                       "pages/compare.py", "pages/runs.py"}
    assert all(page["n"] == SESSIONS for page in result["per_page"].values()), result["per_page"]
    # The sessions started while one job trained and three waited.
    busy = result["busy_at_start"]
    assert busy["active"] == result["ids"][0]
    assert busy["queued"] == result["ids"][1:]


def test_jobs_ran_in_fifo_order_and_all_completed(load_result):
    result, runs_dir = load_result
    assert result["job_states"] == ["completed"] * N_JOBS, result["job_errors"]
    assert result["fifo"]
    # One at a time: each started after the previous one finished.
    statuses = [runs.read_status(os.path.join(runs_dir, run_id)) for run_id in result["ids"]]
    for before, after in zip(statuses, statuses[1:]):
        assert after["started"] >= before["finished"] - 0.01


def test_no_metrics_line_lost_or_duplicated(load_result):
    result, _ = load_result
    for m in result["metrics"]:
        assert m["equal"], m          # same events, same order, same content, in memory and on disk
        assert m["duplicates"] == 0, m
        assert m["disk"] == m["memory"] > 0
    for run_id, m in zip(result["ids"], result["metrics"]):
        with open(os.path.join(load_result[1], run_id, "metrics.jsonl"), encoding="utf-8") as fh:
            lines = [line for line in fh.read().split("\n") if line]
        assert len(lines) == m["disk"]
        assert all(isinstance(json.loads(line), dict) for line in lines)
        steps = [json.loads(line)["step"] for line in lines if json.loads(line).get("type") == "log"]
        assert steps == sorted(set(steps)), steps  # each logged step once, in order


def test_compare_page_keeps_at_most_two_models_loaded(load_result, monkeypatch):
    """The Compare page loads through core.model_cache: opening four runs keeps two in memory."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    result, runs_dir = load_result
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", runs_dir)
    assert model_cache.stats()["loaded"] <= model_cache.DEFAULT_SIZE  # after 20 sessions browsed
    model_cache.clear()
    before = model_cache.stats()
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=120)
    at.run()
    at.session_state["compare_run"] = result["ids"][0]  # as the Train page's "Compare" button does
    at.switch_page("pages/compare.py").run()
    probes = []
    for run_id in result["ids"]:
        at.selectbox(key="compare_pick").set_value(run_id).run()
        assert not at.exception, [e.value for e in at.exception]
        loaded = model_cache.shared()._models.get(os.path.realpath(os.path.join(runs_dir, run_id)))
        assert loaded is not None
        probes.append(weakref.ref(loaded))
        del loaded
        assert model_cache.stats()["loaded"] <= 2
    gc.collect()
    stats = model_cache.stats()
    assert stats["loads"] - before["loads"] == N_JOBS and stats["evictions"] - before["evictions"] == N_JOBS - 2
    assert [p() is None for p in probes] == [True, True, False, False]  # the two evicted are gone
    st.cache_data.clear()


def test_model_cache_is_bounded_loads_once_and_frees_evicted(load_result, monkeypatch):
    result, runs_dir = load_result
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", runs_dir)
    dirs = [os.path.join(runs_dir, run_id) for run_id in result["ids"]]
    cache = model_cache.ModelCache(size=2)

    first = cache.get(dirs[0])
    probe = weakref.ref(first)
    params = weakref.ref(next(first.model.parameters()))
    assert set(first.classify("a wonderful joyful film")) == {"negative", "positive"}
    del first
    assert cache.get(dirs[0]) is probe()  # a hit, not a second load
    cache.get(dirs[1])
    cache.get(dirs[2])  # over the bound: dirs[0], the least recently used, goes
    gc.collect()
    assert probe() is None and params() is None, "an evicted model is still in memory"
    assert cache.loaded() == [os.path.realpath(d) for d in dirs[1:3]]
    assert cache.stats()["evictions"] == 1

    # Ten sessions ask for the same new run at once: it is loaded once.
    got, errors = [], []

    def ask():
        try:
            got.append(cache.get(dirs[3]))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(got) == 10 and all(m is got[0] for m in got)
    assert cache.stats()["loads"] == 4  # dirs 0, 1, 2, 3: never one twice
    assert len(cache.loaded()) == 2
    del got

    # The process-wide cache takes its bound from the environment; discard frees a deleted run's model.
    monkeypatch.setenv("PLAYGROUND_MODEL_CACHE_SIZE", "1")
    model_cache.clear()
    one = weakref.ref(model_cache.get(dirs[0]))
    model_cache.get(dirs[1])
    gc.collect()
    assert one() is None and model_cache.stats()["loaded"] == 1
    assert model_cache.discard(dirs[1]) is True and model_cache.stats()["loaded"] == 0
    cache.clear()
