"""Experiments: grids are checked before anything is queued, the presets build valid runs, a real
2-run grid of tiny models completes and results() lists both, and the page queues and shows them."""
from __future__ import annotations

import json
import time

import pytest
from streamlit.testing.v1 import AppTest

from core import experiments, jobs, limits, presets, runs
from core.config import ConfigError, RunConfig
from tests.helpers.apptest import open_app


# ------------------------------------------------------------------------------ grid validation

@pytest.mark.parametrize("axes,message", [
    ({}, "at least one"),
    ({"r": [2], "alpha": [4], "dropout": [0.1]}, "at most two"),
    ({"colour": [1]}, "cannot vary"),
    ({"r": []}, "at least one value"),
    ({"r": list(range(1, 6)), "alpha": [1.0, 2.0, 3.0, 4.0, 5.0]}, "24 or fewer"),
    ({"virtual_tokens": [4, 8]}, "virtual_tokens=4"),     # LoRA has no virtual tokens: named in the error
    ({"r": [0, 4]}, "r=0"),                               # out of range, caught before queueing
    ({"method": ["lora", "no_such_method"]}, "no_such_method"),
])
def test_grid_refuses_bad_grids_with_a_clear_message(axes, message):
    with pytest.raises(ConfigError, match=message):
        experiments.grid(presets.app_defaults(), axes)


def test_grid_varies_only_the_chosen_settings():
    base = presets.app_defaults()
    configs = experiments.grid(base, {"r": [2, 8], "dropout": [0.0, 0.1]}, title="Rank study")
    assert len(configs) == 4
    assert len({c.experiment for c in configs}) == 1 and configs[0].experiment.startswith("exp-")
    assert [(c.method.params["r"], c.method.params["dropout"]) for c in configs] == [
        (2, 0.0), (2, 0.1), (8, 0.0), (8, 0.1)]
    assert configs[0].name == "Rank study: r=2, dropout=0.0"
    for c in configs:
        d, b = c.to_dict(), base.to_dict()
        for section in ("model", "data", "train"):
            assert d[section] == b[section]
        assert {k: v for k, v in d["method"]["params"].items() if k not in ("r", "dropout")} == {
            k: v for k, v in b["method"]["params"].items() if k not in ("r", "dropout")}


def test_method_axis_brings_each_methods_defaults_and_budget():
    configs = experiments.grid(presets.app_defaults(), {"method": ["full", "prompt_tuning"]})
    full, prompt = configs
    assert full.method.name == "full" and full.train.learning_rate == 5e-5
    assert prompt.method.params["num_virtual_tokens"] == 20 and prompt.train.learning_rate == 1e-2


@pytest.mark.parametrize("axis,text,expected", [
    ("r", "4, 8,16", [4, 8, 16]), ("dropout", "0, 0.1", [0.0, 0.1]), ("learning_rate", "1e-4,1e-3", [1e-4, 1e-3]),
    ("method", "lora , prompt_tuning", ["lora", "prompt_tuning"]), ("n_samples", "50,", [50]),
])
def test_parse_axis_values(axis, text, expected):
    assert experiments.parse_axis_values(axis, text) == expected


@pytest.mark.parametrize("axis,text,message", [
    ("r", "four", "not a number"), ("r", "2.5", "whole number"), ("r", "", "at least one value"),
    ("dropout", "0.1, 0.1", "twice"), ("size", "1", "cannot vary"),
])
def test_parse_axis_values_errors(axis, text, message):
    with pytest.raises(ConfigError, match=message):
        experiments.parse_axis_values(axis, text)


# ------------------------------------------------------------------------------ presets

def test_presets_build_valid_runs_within_the_server_limits():
    which = experiments.preset_runs("which_method")
    assert [c.method.name for c in which] == ["full", "linear_head", "lora", "qlora", "prompt_tuning"]
    data = experiments.preset_runs("how_much_data")
    assert len(data) == 12
    lora = [c for c in data if c.method.name == "lora"]
    prompt = [c for c in data if c.method.name == "prompt_tuning"]
    assert sorted({(c.data.n_samples, c.method.params["dropout"]) for c in lora}) == [
        (50, 0.0), (50, 0.1), (150, 0.0), (150, 0.1), (300, 0.0), (300, 0.1)]
    assert sorted({(c.data.n_samples, c.method.params["num_virtual_tokens"]) for c in prompt}) == [
        (50, 8), (50, 25), (150, 8), (150, 25), (300, 8), (300, 25)]
    for configs in (which, data):
        assert len({c.experiment for c in configs}) == 1
        assert len({c.name for c in configs}) == len(configs)
        for c in configs:
            assert isinstance(c, RunConfig) and RunConfig.from_dict(c.to_dict()) == c
            limits.check_run(c)
            assert c.model.name == "minilm" and c.data.source == "builtin:sentiment"
            assert c.train.seed == 42 and c.data.val_share == 0.25  # same data and seed: a fair race
    with pytest.raises(ConfigError, match="unknown experiment preset"):
        experiments.preset_runs("nope")


# ------------------------------------------------------------------------------ a real grid

@pytest.fixture
def fresh_manager(runs_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    jobs.reset_manager()
    yield jobs.get_manager()
    jobs.reset_manager()


def _wait(ids: list[str], timeout: float = 600) -> None:
    end = time.time() + timeout
    while time.time() < end:
        states = [jobs.get_manager().snapshot(i, events=False)["state"] for i in ids]
        if all(s not in ("queued", "running") for s in states):
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out: {states}")


def test_two_run_grid_of_tiny_runs_completes_and_results_lists_both(fresh_manager, tiny_bert, sentiment_file):
    base = RunConfig.from_dict({"model": {"name": tiny_bert},
                                "data": {"source": sentiment_file, "max_length": 32, "val_share": 0.25},
                                "method": {"name": "lora", "params": {"r": 2}},
                                "train": {"max_steps": 2, "batch_size": 8, "logging_steps": 1, "seed": 1}})
    configs = experiments.grid(base, {"r": [2, 4]}, title="Tiny")
    ids = [fresh_manager.submit(c, "owner-a") for c in configs]
    _wait(ids)
    exp = configs[0].experiment
    rows = experiments.results(exp)
    assert [r["run"] for r in rows] == ids
    assert [r["state"] for r in rows] == ["completed", "completed"]
    assert [r["r"] for r in rows] == [2, 4]
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and r["trainable_params"] > 0 and r["train_time_s"] > 0
        assert r["latency_ms"] > 0 and r["method"] == "lora" and r["name"].startswith("Tiny: r=")
    assert rows[1]["trainable_params"] > rows[0]["trainable_params"]  # a larger rank trains more weights
    assert exp in experiments.list_experiments()
    assert experiments.results("no-such-experiment") == []


# ------------------------------------------------------------------------------ the page

def fake_trainer(cfg, run_dir, on_event, stop):
    n = cfg.data.n_samples or 400
    return {"final": {"eval_accuracy": min(0.95, 0.5 + n / 1000), "eval_loss": 0.5},
            "trainable_params": 100_000 if cfg.method.name == "full" else 1_000, "trainable_percent": 1.0,
            "train_time_s": 1.0, "latency_ms_per_sample": 2.0, "n_train": n}


@pytest.fixture
def page_env(clean_app):
    jobs.get_manager(run_fn=fake_trainer)


def _experiments_page(**params) -> AppTest:
    return open_app("pages/experiments.py", query=params, direct=True, timeout=90)


def _until(at: AppTest, text: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        at.run()  # what the run_every fragment would do
        assert not at.exception, at.exception
        if text in " ".join(m.value for m in at.markdown):
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} never shown; {[m.value for m in at.markdown]}")


def test_page_queues_a_preset_past_a_full_queue_and_shows_results(page_env, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_QUEUE", "3")
    at = _experiments_page(lesson="how_much_data")
    at.button(key="exp_preset_how_much_data").click().run()
    assert not at.exception, at.exception
    assert any("queue is full" in w.value and "wait here" in w.value for w in at.warning)
    _until(at, "12 of 12 finished")
    df = at.dataframe[0].value
    assert len(df) == 12 and set(df["Status"]) == {"completed"}
    assert {"Training rows N", "Adapter dropout", "Virtual tokens V"} <= set(df.columns)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"]
              for c in at.get("plotly_chart")]
    assert any("vs trainable parameters" in t for t in titles)
    assert any("vs training rows N" in t for t in titles)
    assert any("Training time" in t for t in titles) and any("latency" in t for t in titles)
    assert any("What to notice" in i.value for i in at.info)
    # ordinary runs: the Runs page lists them, with their experiment
    at.switch_page("pages/runs.py")
    at.run()
    assert not at.exception, at.exception
    table = at.dataframe[0].value
    assert table["Experiment"].str.startswith("How much data? · how_much_data-").sum() == 12


def test_page_custom_grid_on_the_defaults(page_env):
    at = _experiments_page()
    at.selectbox(key="exp_axis1").set_value("r").run()
    at.text_input(key="exp_values1_r").input("2, 4").run()
    at.selectbox(key="exp_axis2").set_value("learning_rate").run()
    at.text_input(key="exp_values2_learning_rate").input("0.001, 0.0001").run()
    at.text_input(key="exp_title").input("Rank and rate").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    button = at.button(key="exp_queue_grid")
    assert button.label == "Queue 4 runs" and not button.disabled
    button.click().run()
    assert any("Queued all 4 runs" in s.value for s in at.success), ([w.value for w in at.warning], [e.value for e in at.error], [s.value for s in at.success])
    _until(at, "4 of 4 finished")
    assert "Rank and rate" in " ".join(m.value for m in at.markdown)


def test_page_bad_grid_values_disable_queueing(page_env):
    at = _experiments_page()
    at.text_input(key="exp_values1_r").input("2, lots").run()
    assert any("not a number" in e.value for e in at.error)
    assert at.button(key="exp_queue_grid").disabled


# ------------------------------------------------------------------------------ under-trained runs

@pytest.mark.parametrize("curve, rising", [
    ([0.5, 0.6, 0.7], True),             # last evaluation the best by far: still learning
    ([0.5, 0.8, 0.805], False),          # a plateau: within the margin
    ([0.5, 0.8, 0.7], False),            # past its best
    ([0.5, 0.9], False),                 # too few evaluations to tell
    ([0.5, None, float("nan"), 0.6, 0.7], True),
])
def test_still_rising_reads_the_runs_own_curve(curve, rising):
    assert experiments.still_rising(curve) is rising


def rising_or_flat_trainer(cfg, run_dir, on_event, stop):
    """LoRA still climbs at its last evaluation; the others have levelled off."""
    curve = [0.5, 0.6, 0.7] if cfg.method.name == "lora" else [0.5, 0.7, 0.7]
    for step, acc in enumerate(curve, 1):
        on_event({"type": "eval", "step": step, "epoch": step / 3, "eval_accuracy": acc, "eval_loss": 1 - acc})
    return {"final": {"eval_accuracy": curve[-1], "eval_loss": 1 - curve[-1]}, "trainable_params": 1_000,
            "trainable_percent": 1.0, "train_time_s": 1.0, "latency_ms_per_sample": 2.0, "n_train": 100}


def test_page_says_which_runs_were_still_improving(clean_app):
    jobs.get_manager(run_fn=rising_or_flat_trainer)
    at = _experiments_page(lesson="which_method")
    at.button(key="exp_preset_which_method").click().run()
    assert not at.exception, at.exception
    _until(at, "5 of 5 finished")
    df = at.dataframe[0].value
    flagged = set(df.loc[df["Converged?"] != "", "Method"])
    assert flagged == {"lora"}, df[["Method", "Converged?"]]
    assert any("1 run(s) were still improving" in c.value for c in at.caption)
