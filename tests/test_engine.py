"""The run itself: stop within one step, NaN losses end the run, what a run folder records."""
from __future__ import annotations

import json
import os
import threading

import pytest
import torch

from core import runs
from core.config import RunConfig
from core.errors import NonFiniteLoss
from core.train import run

# Every Trainer run ends in accelerate's gc.collect(), which with torch/transformers/peft imported
# walks ~500k long-lived library objects (~0.4 s CPU a run, dozens of runs here). Freezing what is
# loaded now keeps the suite fast; objects the tests make later are collected as usual.
import gc  # noqa: E402

from transformers import Trainer  # noqa: E402,F401  (loaded before the freeze)

gc.freeze()


def make_cfg(model: str, data: str, task: str = "classification", method: str = "lora",
             params: dict | None = None, **train) -> RunConfig:
    t = dict(max_steps=3, batch_size=4, learning_rate=1e-2, eval_steps=100, logging_steps=1, seed=3)
    t.update(train)
    return RunConfig.from_dict({"model": {"name": model},
                                "data": {"source": data, "task": task, "max_length": 32},
                                "method": {"name": method, "params": dict(params or {})}, "train": t})


def _steps(events: list[dict]) -> list[int]:
    return [e["step"] for e in events if e["type"] == "progress" and e["step"] > 0]


# ------------------------------------------------------------------------------------------------
# Stop
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,train", [
    ("lora", {}),
    ("lora", {"grad_accum": 2}),
    ("linear_head", {}),  # the cached-feature path has its own Trainer
], ids=["lora", "lora-grad-accum", "linear-head-cached"])
def test_stop_is_honoured_within_one_step(method, train, tiny_bert, sentiment_file, tmp_path, runs_dir):
    stop = threading.Event()
    events: list[dict] = []

    def on_event(ev):
        events.append(ev)
        if ev["type"] == "progress" and ev["step"] >= 2:
            stop.set()

    cfg = make_cfg(tiny_bert, sentiment_file, method=method, max_steps=40, **train)
    run_dir = str(tmp_path / "run")
    summary = run(cfg, run_dir, on_event=on_event, stop=stop)
    assert summary["state"] == "stopped"
    steps = _steps(events)
    assert steps and max(steps) <= 3, f"optimizer steps after the stop: {steps}"
    assert summary["steps"] == max(steps)
    # a stopped run still records where it got to, and its weights reload
    assert events[-1] == {**events[-1], "type": "end", "state": "stopped"}
    assert runs.read_summary(run_dir)["state"] == "stopped"
    assert os.path.exists(os.path.join(run_dir, "weights.json"))
    assert "eval_accuracy" in summary["final"]


def test_stop_set_before_the_run_trains_at_most_one_step(tiny_llama, facts_file, tmp_path, runs_dir):
    stop = threading.Event()
    stop.set()
    events: list[dict] = []
    summary = run(make_cfg(tiny_llama, facts_file, "sft", max_steps=40), str(tmp_path / "run"),
                  on_event=events.append, stop=stop)
    assert summary["state"] == "stopped"
    assert summary["steps"] <= 1


# ------------------------------------------------------------------------------------------------
# Non-finite losses
# ------------------------------------------------------------------------------------------------
def _nan_loss(monkeypatch):
    real = torch.nn.functional.cross_entropy

    def nan_cross_entropy(*args, **kwargs):
        return real(*args, **kwargs) * float("nan")

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_cross_entropy)


@pytest.mark.parametrize("fixture,data,task,method", [
    ("tiny_bert", "sentiment_file", "classification", "lora"),
    ("tiny_llama", "facts_file", "sft", "lora"),
    ("tiny_bert", "sentiment_file", "classification", "linear_head"),
], ids=["classification", "sft", "cached-head"])
def test_nan_loss_ends_the_run(fixture, data, task, method, request, tmp_path, runs_dir, monkeypatch):
    _nan_loss(monkeypatch)
    cfg = make_cfg(request.getfixturevalue(fixture), request.getfixturevalue(data), task, method, max_steps=6)
    events: list[dict] = []
    with pytest.raises(NonFiniteLoss, match="nan at step 1"):
        run(cfg, str(tmp_path / "run"), on_event=events.append)
    assert max(_steps(events), default=0) <= 1


def test_nan_loss_between_logs_is_caught_at_the_next_log(tiny_bert, sentiment_file, tmp_path, runs_dir,
                                                         monkeypatch):
    """A NaN at a step that is not logged must not be averaged away by the Trainer."""
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def nan_on_second_training_step(*args, **kwargs):
        loss = real(*args, **kwargs)
        if torch.is_grad_enabled():
            calls["n"] += 1
            if calls["n"] == 2:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_on_second_training_step)
    cfg = make_cfg(tiny_bert, sentiment_file, max_steps=8, logging_steps=3)
    with pytest.raises(NonFiniteLoss, match="at step 3"):
        run(cfg, str(tmp_path / "run"))


def test_diverging_learning_rate_ends_the_run(tiny_llama, facts_file, tmp_path, runs_dir):
    cfg = make_cfg(tiny_llama, facts_file, "sft", "full", learning_rate=1.0, max_steps=30, warmup_ratio=0.0,
                   lr_scheduler="constant")
    # learning_rate is capped at 1.0 by the config; scale the optimizer's lr past it the way a
    # broken schedule would, to get a genuine overflow rather than a patched loss
    with pytest.MonkeyPatch.context() as mp:
        import transformers
        real = transformers.Trainer.create_optimizer

        def huge_lr(self, *a, **k):
            opt = real(self, *a, **k)
            for group in opt.param_groups:
                group["lr"] = 1e30
            return opt

        mp.setattr(transformers.Trainer, "create_optimizer", huge_lr)
        with pytest.raises(NonFiniteLoss):
            run(cfg, str(tmp_path / "run"))


# ------------------------------------------------------------------------------------------------
# What a run folder holds
# ------------------------------------------------------------------------------------------------
def test_run_folder_records_events_summary_and_config(tiny_bert, sentiment_file, tmp_path, runs_dir):
    cfg = make_cfg(tiny_bert, sentiment_file, params={"r": 4, "targets": "auto"}, max_steps=4, eval_steps=2)
    run_dir = str(tmp_path / "run")
    seen: list[dict] = []
    summary = run(cfg, run_dir, on_event=seen.append)

    # config.json reproduces the run's config exactly
    with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as fh:
        assert RunConfig.from_dict(json.load(fh)) == cfg
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg

    # metrics.jsonl holds every event the callback saw, in order
    events = runs.read_metrics(run_dir)
    assert events == seen
    types = [e["type"] for e in events]
    for kind in ("phase", "start", "progress", "log", "eval", "final", "anatomy", "end"):
        assert kind in types, f"no {kind} event in metrics.jsonl"
    assert types[-1] == "end" and types.index("start") < types.index("log") < types.index("final")
    times = [e["time"] for e in events]
    assert times == sorted(times)
    logs = [e for e in events if e["type"] == "log"]
    assert [e["step"] for e in logs] == [1, 2, 3, 4]
    assert all(e["loss"] > 0 and "learning_rate" in e and "grad_norm" in e for e in logs)
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["step"] for e in evals] == [0, 2, 4] and all(0 <= e["eval_accuracy"] <= 1 for e in evals)
    start = next(e for e in events if e["type"] == "start")
    assert (start["trainable"], start["total"]) == (summary["trainable_params"], summary["total_params"])
    assert start["n_train"] == summary["n_train"] == 32 and start["n_val"] == summary["n_val"] == 8
    anatomy = [e for e in events if e["type"] == "anatomy"][-1]
    assert {(a["layer"], a["module"]) for a in anatomy["layers"]} == {
        (layer, m) for layer in (0, 1) for m in ("query", "value")}

    # summary.json
    on_disk = runs.read_summary(run_dir)
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["state"] == "completed" and on_disk["steps"] == 4
    assert 0 < on_disk["trainable_params"] < on_disk["total_params"]
    assert on_disk["trainable_percent"] == pytest.approx(
        100 * on_disk["trainable_params"] / on_disk["total_params"], abs=1e-4)
    assert on_disk["train_time_s"] > 0 and on_disk["wall_time_s"] >= on_disk["train_time_s"]
    assert on_disk["latency_ms_per_sample"] > 0
    final = on_disk["final"]
    assert set(final) == {"eval_loss", "eval_accuracy"}
    assert final == {k: v for k, v in events[-1]["final"].items()}
    last = next(e for e in reversed(events) if e["type"] == "final")
    assert last["eval_accuracy"] == final["eval_accuracy"]
    assert on_disk["label_names"] == ["negative", "positive"]

    with open(os.path.join(run_dir, "weights.json"), encoding="utf-8") as fh:
        weights = json.load(fh)
    assert weights["format"] == "peft" and os.path.exists(os.path.join(run_dir, "adapter"))


def test_sft_summary_reports_perplexity(tiny_llama, facts_file, tmp_path, runs_dir):
    summary = run(make_cfg(tiny_llama, facts_file, "sft", "ia3", max_steps=2), str(tmp_path / "run"))
    final = summary["final"]
    assert set(final) == {"eval_loss", "eval_perplexity"}
    assert final["eval_perplexity"] == pytest.approx(min(torch.tensor(final["eval_loss"]).exp().item(), 1e30),
                                                     rel=1e-5)


def test_zero_shot_summary_has_accuracy_and_no_steps(tiny_bert, sentiment_file, tmp_path, runs_dir):
    summary = run(make_cfg(tiny_bert, sentiment_file, method="zero_shot"), str(tmp_path / "run"))
    assert summary["state"] == "completed" and summary["steps"] == 0
    assert summary["trainable_params"] == 0 and summary["trainable_percent"] == 0
    assert 0 <= summary["final"]["eval_accuracy"] <= 1


@pytest.mark.parametrize("task", ["classification", "sft"])
def test_run_without_validation_rows(task, tiny_llama, sentiment_file, facts_file, tmp_path, runs_dir):
    """val_share 0 leaves no validation rows: the run trains, evaluates nothing and still saves."""
    cfg = make_cfg(tiny_llama, sentiment_file if task == "classification" else facts_file, task, "ia3",
                   max_steps=2)
    cfg = cfg.with_overrides(["data.val_share=0"])
    events: list[dict] = []
    summary = run(cfg, str(tmp_path / "run"), on_event=events.append)
    assert summary["state"] == "completed" and summary["n_val"] == 0 and summary["final"] == {}
    assert not [e for e in events if e["type"] in ("eval", "final")]
    assert summary["latency_ms_per_sample"] > 0  # measured on training rows instead
