"""The engine's typed contracts: the events the training callback writes (core.events) and what
fit() hands back (core.loop.FitResult); and the engine modules' import boundaries."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import pytest

from core import events, runs
from core.callback import make_callback
from core.config import RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The key order metrics.jsonl has always had (pages, the board and exported CSVs read these lines).
STEP_KEYS = ["step", "max_steps", "epoch", "elapsed_s", "eta_s", "samples_per_second", "peak_rss_mb"]


def _drive_callback(anatomy=None):
    """The callback through one short training: begin, two steps, a log, a mid-run evaluation."""
    seen: list[dict] = []
    cb = make_callback(seen.append, threading.Event(), batch_rows=8, anatomy=anatomy, anatomy_every=2 if anatomy else 0)
    state, control = SimpleNamespace(global_step=0, max_steps=4, epoch=0.0), SimpleNamespace()
    cb.on_train_begin(None, state, control)
    for step in (1, 2):
        state.global_step, state.epoch = step, step / 4
        cb.on_step_end(None, state, control)
    cb.on_log(None, state, control, logs={"loss": 0.7, "learning_rate": 1e-3, "grad_norm": 2.0, "epoch": 0.5})
    cb.on_evaluate(None, state, control, metrics={"eval_loss": 0.6, "eval_accuracy": 0.75, "eval_runtime": 1.0,
                                                  "epoch": 0.5})
    return seen


def test_callback_events_keep_their_on_disk_key_order(tmp_path, monkeypatch):
    monkeypatch.setattr("core.callback.cuda_peak_mb", lambda: None)  # a CPU box: no peak_cuda_mb key
    seen = _drive_callback(anatomy=lambda: [{"layer": 0, "module": "query"}])
    assert [e["type"] for e in seen] == ["progress", "progress", "progress", "anatomy", "log", "eval"]
    assert list(seen[0]) == ["type", *STEP_KEYS]
    assert list(seen[3]) == ["type", *STEP_KEYS, "layers"]
    assert list(seen[4]) == ["type", *STEP_KEYS, "loss", "learning_rate", "grad_norm"]
    assert list(seen[5]) == ["type", *STEP_KEYS, "eval_loss", "eval_accuracy"]
    assert seen[4]["loss"] == 0.7 and seen[5]["eval_accuracy"] == 0.75

    # through metrics.jsonl and back: the same dicts, one JSON object per line, in the same order
    run_dir = str(tmp_path)
    for ev in seen:
        runs.append_metric(run_dir, ev)
    assert runs.read_metrics(run_dir) == seen
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    assert lines == [json.dumps(ev, ensure_ascii=False) for ev in seen]


def test_every_key_an_event_carries_is_declared_by_its_type(monkeypatch):
    monkeypatch.setattr("core.callback.cuda_peak_mb", lambda: 512.0)  # and the CUDA key where there is one
    for ev in _drive_callback(anatomy=lambda: []):
        declared = set(events.BY_TYPE[ev["type"]].__annotations__)
        assert set(ev) <= declared, (ev["type"], set(ev) - declared)
        assert ev["peak_cuda_mb"] == 512.0


def test_a_sft_evaluation_adds_perplexity_and_an_empty_one_is_not_sent():
    seen: list[dict] = []
    cb = make_callback(seen.append, threading.Event(), batch_rows=4, anatomy=None, anatomy_every=0)
    state = SimpleNamespace(global_step=2, max_steps=4, epoch=0.5)
    cb.on_evaluate(None, state, SimpleNamespace(), metrics={"eval_runtime": 0.1})  # nothing to show
    cb.on_evaluate(None, state, SimpleNamespace(), metrics={"eval_loss": 1.0})
    assert len(seen) == 1 and seen[0]["eval_perplexity"] == pytest.approx(2.718281828)


def test_engine_modules_import_without_torch_and_cli_without_the_job_manager():
    """A page imports core.train (the shown command, the precision label) and the CLI guard; torch
    and the job manager must load only where a run needs them."""
    code = ("import sys; import core.train, core.cli, core.events, core.build, core.trainer_setup, core.callback; "
            "heavy = [m for m in ('torch', 'transformers', 'peft', 'core.jobs', 'core.loop') if m in sys.modules]; "
            "assert not heavy, heavy")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------------
# FitResult: what fit() returns, on the Trainer path and the zero-shot path
# ------------------------------------------------------------------------------------------------
def _prepared(model: str, data: str, method: str, **train):
    from core.train import prepare, tokenize_rows
    t = dict(max_steps=2, batch_size=4, learning_rate=1e-2, eval_steps=100, logging_steps=1, seed=3, **train)
    cfg = RunConfig.from_dict({"model": {"name": model}, "data": {"source": data, "max_length": 32},
                               "method": {"name": method}, "train": t})
    p = prepare(cfg)
    return p, tokenize_rows(p, p.train_rows), tokenize_rows(p, p.val_rows)


def test_fit_returns_a_fit_result_with_the_steps_taken(tiny_bert, sentiment_file, tmp_path, runs_dir):
    from core.loop import FitResult, fit
    p, train_set, val_set = _prepared(tiny_bert, sentiment_file, "lora")
    seen: list[dict] = []
    result = fit(p, train_set, val_set, str(tmp_path), seen.append, threading.Event())
    assert isinstance(result, FitResult)
    assert result.steps == 2 and result.train_time_s > 0
    assert result.samples_per_second > 0 and result.peak_rss_mb > 0
    assert set(result.final) == {"eval_loss", "eval_accuracy"} and result.initial == {}
    assert result.feature_time_s is None and result.eval_time_s is None
    final = [e for e in seen if e["type"] == events.FINAL]
    assert final == [{"type": "final", "step": 2, **result.final}]


def test_zero_shot_fit_only_evaluates(tiny_bert, sentiment_file, tmp_path, runs_dir):
    from core.loop import fit
    p, train_set, val_set = _prepared(tiny_bert, sentiment_file, "zero_shot")
    result = fit(p, train_set, val_set, str(tmp_path), lambda e: None, threading.Event())
    assert (result.steps, result.train_time_s, result.samples_per_second) == (0, 0.0, None)
    assert result.final == result.initial and 0 <= result.final["eval_accuracy"] <= 1
    assert result.eval_time_s is not None and result.eval_time_s >= 0
