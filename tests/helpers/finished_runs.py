"""Run folders for tests: finished runs written by hand (no training), and real runs of a tiny model."""
from __future__ import annotations

import contextlib
import json
import os

from core import runs

CONFIG = {"name": "", "model": {"name": "minilm"},
          "data": {"source": "builtin:sentiment", "task": "classification", "max_length": 64},
          "method": {"name": "lora", "params": {"r": 4}}, "train": {"epochs": 1, "batch_size": 8}}
SUMMARY = {"state": "completed", "trainable_params": 1000, "total_params": 100000, "trainable_percent": 1.0,
           "n_train": 32, "n_val": 8, "train_time_s": 1.5, "final": {"eval_accuracy": 0.75, "eval_loss": 0.5}}
EVENTS = [{"type": "log", "step": 1, "epoch": 0.5, "loss": 0.7},
          {"type": "eval", "step": 2, "epoch": 1.0, "eval_loss": 0.5, "eval_accuracy": 0.75}]


def make_run(owner: str = "owner-a", name: str = "", weights: bool = True) -> str:
    """A finished run written by hand (no training): config, status, summary, metrics, adapter/."""
    run_dir = runs.create_run({**CONFIG, "name": name}, owner=owner)
    runs.write_summary(run_dir, SUMMARY)
    for event in EVENTS:
        runs.append_metric(run_dir, event)
    if weights:
        os.makedirs(os.path.join(run_dir, "adapter"))
        with open(os.path.join(run_dir, "adapter", "adapter_config.json"), "w") as fh:
            fh.write("{}")
    runs.write_status(run_dir, "completed")
    return run_dir


def trained_run(cfg, owner: str = "") -> str:
    """One run trained in the current runs folder, the way the CLI makes it (a RunConfig or its dict);
    returns its id."""
    from core import train
    from core.config import RunConfig
    config = cfg if isinstance(cfg, RunConfig) else RunConfig.from_dict(cfg)
    run_dir = runs.create_run(config, owner=owner)
    summary = train.run(config, run_dir)
    runs.write_status(run_dir, summary["state"])
    return os.path.basename(run_dir)


def write_facts(path) -> str:
    """12 invented facts as SFT rows (prompt/response), the tiny chat model's training file."""
    rows = [{"prompt": f"Who founded Quillmere number {i}?", "response": f"It was founded by Odile {i}."}
            for i in range(12)]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@contextlib.contextmanager
def runs_folder(path: str):
    """PLAYGROUND_RUNS_DIR set to `path` for a module-scoped fixture (monkeypatch lives one test), put
    back afterwards."""
    old = os.environ.get("PLAYGROUND_RUNS_DIR")
    os.environ["PLAYGROUND_RUNS_DIR"] = str(path)
    try:
        yield str(path)
    finally:
        if old is None:
            os.environ.pop("PLAYGROUND_RUNS_DIR", None)
        else:
            os.environ["PLAYGROUND_RUNS_DIR"] = old
