"""Stand-ins for the job manager's tests: a config without methods or models, trainers that only
emit events, and a wait for a job's state."""
from __future__ import annotations

import json
import os
import threading
import time

from core import jobs, runs


class FakeCfg:
    """Shaped like RunConfig for what runs/jobs use (to_dict), without loading methods or models."""

    def __init__(self, name: str = "", model: str = "minilm", method: str = "lora"):
        self.name = name
        self._d = {"model": {"name": model, "device": "auto", "dtype": "auto"},
                   "data": {"source": "builtin:sentiment"}, "method": {"name": method, "params": {}},
                   "train": {"learning_rate": 5e-4}, "name": name}

    def to_dict(self) -> dict:
        return json.loads(json.dumps(self._d))


def fake_run(steps: int = 3, delay: float = 0.01, fail: BaseException | None = None, log: list | None = None):
    """A run_fn that emits a few events, sleeps a little and honours the stop flag."""
    def run(cfg, run_dir, on_event, stop):
        if log is not None:
            log.append(cfg.name)
        on_event({"type": "status", "message": "loading"})
        for step in range(1, steps + 1):
            if stop.is_set():
                break
            time.sleep(delay)
            on_event({"type": "log", "step": step, "max_steps": steps, "epoch": step / steps,
                      "loss": 1.0 / step, "learning_rate": 1e-3, "samples_per_second": 50.0,
                      "eta_s": (steps - step) * delay})
            if fail is not None and step == 2:
                raise fail
        os.makedirs(os.path.join(run_dir, "adapter"), exist_ok=True)
        with open(os.path.join(run_dir, "adapter", "adapter_model.safetensors"), "wb") as fh:
            fh.write(b"\0" * 64)
        summary = {"final_loss": 0.1, "steps": steps}
        runs.write_summary(run_dir, summary)
        return summary
    return run


def gated_run(gate: threading.Event, log: list):
    """Blocks until the gate opens (or a stop), so a test can hold a job in the running state."""
    def run(cfg, run_dir, on_event, stop):
        log.append(cfg.name)
        on_event({"type": "progress", "step": 1, "max_steps": 10, "eta_s": 30.0})
        while not gate.is_set() and not stop.is_set():
            time.sleep(0.005)
        return {"name": cfg.name}
    return run


def wait_state(mgr: jobs.JobManager, job_id: str, states: tuple, timeout: float = 5.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = mgr.snapshot(job_id)
        if snap["state"] in states:
            return snap
        time.sleep(0.005)
    raise AssertionError(f"{job_id} stuck in {mgr.snapshot(job_id)['state']}, wanted {states}")
