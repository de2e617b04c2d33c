"""A run trained outside the job queue (core.train.run called directly, as the benches and notebooks
do; python -m core.train goes through it too) records its state in status.json like a queued one:
running while it trains, then completed (or stopped), or failed naming the error. Left "queued", the
Runs page listed it as waiting forever (and a restart called it interrupted)."""
from __future__ import annotations

import os

import pytest

from core import runs, train
from core.config import RunConfig


def _cfg(tiny_bert: str, sentiment_file: str) -> RunConfig:
    return RunConfig.from_dict({"model": {"name": tiny_bert},
                                "data": {"source": sentiment_file, "task": "classification", "max_length": 32},
                                "method": {"name": "lora", "params": {"r": 4}},
                                "train": {"max_steps": 2, "batch_size": 8, "eval_steps": 100, "logging_steps": 1}})


def _only_run(runs_dir: str) -> str:
    made = [d for d in os.listdir(runs_dir) if runs.is_valid_run_id(d)]
    assert len(made) == 1, made
    return os.path.join(runs_dir, made[0])


def test_a_run_called_directly_records_running_then_completed(tiny_bert, sentiment_file, runs_dir):
    seen = []
    summary = train.run(_cfg(tiny_bert, sentiment_file),
                        on_event=lambda ev: seen.append(runs.read_status(_only_run(runs_dir))["state"]))
    assert summary["state"] == "completed"
    status = runs.read_status(_only_run(runs_dir))
    assert status["state"] == "completed", status
    assert set(seen) == {"running"}, seen  # every event of the run saw it running
    assert status["finished"] >= status["started"] and status["process"] == runs.process_token()
    assert runs.get_run(os.path.basename(_only_run(runs_dir))).state == "completed"  # as the Runs page lists it


def test_a_run_into_a_folder_made_for_it_records_its_state(tiny_bert, sentiment_file, runs_dir):
    cfg = _cfg(tiny_bert, sentiment_file)
    run_dir = runs.create_run(cfg, owner="")
    train.run(cfg, run_dir)
    assert runs.read_status(run_dir)["state"] == "completed"


def test_a_run_that_fails_records_failed_with_the_error(tiny_bert, sentiment_file, runs_dir, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("the disk is on fire")
    monkeypatch.setattr(train, "prepare", broken)
    with pytest.raises(RuntimeError):
        train.run(_cfg(tiny_bert, sentiment_file))
    status = runs.read_status(_only_run(runs_dir))
    assert status["state"] == "failed", status
    assert "the disk is on fire" in status["message"]


def test_the_job_manager_keeps_writing_its_runs_status_itself(tiny_bert, sentiment_file, runs_dir, monkeypatch):
    # The manager (and Ray) write metrics.jsonl and status.json themselves: run() must not race them.
    monkeypatch.setattr(train, "prepare", lambda *_a, **_k: (_ for _ in ()).throw(RuntimeError("x")))
    cfg = _cfg(tiny_bert, sentiment_file)
    run_dir = runs.create_run(cfg, owner="")
    with pytest.raises(RuntimeError):
        train.run(cfg, run_dir, write_metrics=False)
    assert runs.read_status(run_dir)["state"] == "queued"
