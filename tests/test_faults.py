"""Faults: a server killed with SIGKILL mid-run, an exception inside the training loop, an OOM.

The kill test runs a real job manager with real tiny-model training in a child process (what
`streamlit run app.py` holds, minus the web server), kills it with SIGKILL once the victim run has
logged some metrics and saved a checkpoint, then "restarts" in this process: the victim shows
`interrupted`, the earlier run and its adapter are intact and still load, every metrics line
written before the kill is there and parses, and the victim resumes from its checkpoint.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from core import cli, jobs, runs
from core.config import RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cfg(model: str, data_file: str, name: str, **train) -> dict:
    return {"name": name, "model": {"name": model},
            "data": {"source": data_file, "task": "classification", "max_length": 32},
            "method": {"name": "lora", "params": {"r": 4}},
            "train": {"batch_size": 8, "logging_steps": 1, "eval_steps": 1000, "torch_threads": 1, **train}}


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server died before {what}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def wait_done(mgr: jobs.JobManager, run_id: str, timeout: float = 240.0) -> dict:
    wait_for(lambda: mgr.snapshot(run_id, events=False)["state"] not in ("queued", "running"), timeout,
             f"{run_id} to finish")
    return mgr.snapshot(run_id)


@pytest.fixture
def fresh_manager(runs_dir, monkeypatch):
    for var in ("PLAYGROUND_MAX_STEPS", "PLAYGROUND_MAX_QUEUE", "PLAYGROUND_MODEL_ALLOW", "PLAYGROUND_MAX_RUN_SECONDS"):
        monkeypatch.delenv(var, raising=False)
    jobs.reset_manager()
    yield runs_dir
    jobs.reset_manager()


# ------------------------------------------------------------------------------ kill -9 mid-run

SERVER = textwrap.dedent('''
    """A stand-in for the app's process: the job manager training real runs, nothing else."""
    import json, sys, time
    sys.path.insert(0, {root!r})
    from core import jobs
    from core.config import RunConfig

    configs = json.loads(sys.argv[1])
    slow = float(sys.argv[2])

    def run_fn(cfg, run_dir, on_event, stop):
        def slowed(event):
            on_event(event)  # recorded (fsync'd) first, then the step is held up a little
            if cfg.name == "victim" and event.get("type") == "progress":
                time.sleep(slow)
        return jobs._default_run_fn(cfg, run_dir, slowed, stop)

    manager = jobs.get_manager(run_fn)
    ids = {{c["name"]: manager.submit(RunConfig.from_dict(c), "alice-session") for c in configs}}
    print(json.dumps(ids), flush=True)
    while True:
        time.sleep(1)
''')


def _complete_lines(path: str) -> list[bytes]:
    with open(path, "rb") as fh:
        raw = fh.read()
    return raw.split(b"\n")[:-1]  # whatever follows the last newline may be a line being written


@pytest.mark.slow  # a server subprocess trains 30 steps, is killed and restarted
def test_sigkill_mid_run_then_restart_recovers_and_resumes(tiny_bert, sentiment_file, fresh_manager, tmp_path):
    runs_dir = fresh_manager
    configs = [run_cfg(tiny_bert, sentiment_file, "survivor", max_steps=2),
               run_cfg(tiny_bert, sentiment_file, "victim", max_steps=30, save_steps=3),
               run_cfg(tiny_bert, sentiment_file, "waiting", max_steps=4)]
    script = tmp_path / "server.py"
    script.write_text(SERVER.format(root=ROOT))
    env = {**os.environ, "PLAYGROUND_RUNS_DIR": runs_dir, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(configs), "0.3"], cwd=str(tmp_path), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, f"the server printed nothing: {proc.stderr.read()[-3000:]}"
        ids = json.loads(line)
        survivor, victim, waiting = (runs.run_dir_for(ids[n]) for n in ("survivor", "victim", "waiting"))
        victim_metrics = os.path.join(victim, "metrics.jsonl")

        def victim_midway():
            return (runs.read_status(survivor).get("state") == "completed"
                    and runs.latest_checkpoint(victim) is not None
                    and os.path.exists(victim_metrics) and len(_complete_lines(victim_metrics)) >= 12)
        wait_for(victim_midway, 240, "the victim to log metrics and save a checkpoint", proc)
        before = _complete_lines(victim_metrics)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    # The state the killed process left: still "running"/"queued" on disk.
    assert runs.read_status(victim)["state"] == "running"
    after = _complete_lines(victim_metrics)
    assert after[:len(before)] == before, "metrics lines written before the kill changed or vanished"
    parsed = [json.loads(b) for b in before]
    assert len(parsed) >= 12 and all(isinstance(e, dict) and e.get("type") for e in parsed)
    assert len(runs.read_metrics(victim)) >= len(before)

    # Restart: a fresh manager in this process recovers what the dead one left behind.
    mgr = jobs.get_manager()
    states = {info.name: info for info in runs.list_runs()}
    assert states["survivor"].state == "completed" and states["survivor"].has_weights
    assert states["victim"].state == "interrupted"
    assert states["victim"].resumable
    assert "can resume from its last checkpoint" in states["victim"].status["message"]
    assert states["waiting"].state == "interrupted" and not states["waiting"].resumable
    assert "submit it again" in states["waiting"].status["message"]
    assert mgr.snapshot(ids["victim"])["state"] == "interrupted"

    # The completed run is intact: summary, every metrics line, and an adapter that still loads.
    from core.infer import RunModel
    assert runs.read_summary(survivor)["steps"] == 2
    assert all(isinstance(e, dict) for e in runs.read_metrics(survivor))
    model = RunModel(survivor)
    probs = model.classify("a wonderful joyful film")
    assert set(probs) == {"negative", "positive"} and abs(sum(probs.values()) - 1) < 1e-4
    del model

    # Resume: the owner queues it again from its checkpoint; it continues, not restarts.
    ckpt = runs.latest_checkpoint(victim)
    ckpt_step = int(ckpt.rsplit("-", 1)[1])
    with pytest.raises(jobs.PermissionDenied):
        mgr.submit(RunConfig.from_dict(configs[1]), "bob-session", resume_from=ids["victim"])
    resumed = mgr.submit(RunConfig.from_dict(configs[1]), "alice-session", resume_from=ids["victim"])
    snap = wait_done(mgr, resumed)
    assert snap["state"] == "completed", (snap["error"], snap["hint"])
    steps = [e["step"] for e in snap["events"] if e.get("type") == "progress"]
    assert steps and steps[0] >= ckpt_step > 0, steps[:5]
    assert max(steps) == 30
    assert runs.read_metrics(runs.run_dir_for(resumed)) == snap["events"]
    assert runs.get_run(resumed).has_weights


def test_half_written_checkpoint_is_not_resumed_from(runs_dir):
    run_dir = runs.create_run(RunConfig().to_dict(), owner="a")
    for step, complete in ((6, True), (9, False)):  # killed while checkpoint-9 was being written
        folder = os.path.join(run_dir, "checkpoints", f"checkpoint-{step}")
        os.makedirs(folder)
        with open(os.path.join(folder, "adapter_model.safetensors"), "wb") as fh:
            fh.write(b"\0" * 8)
        if complete:
            with open(os.path.join(folder, "trainer_state.json"), "w") as fh:
                fh.write("{}")
    assert runs.latest_checkpoint(run_dir).endswith("checkpoint-6")


# ------------------------------------------------------------------- exceptions inside the loop

def _faults():
    import torch
    return {
        "boom": lambda: RuntimeError("injected fault in the training loop"),
        "torch-oom": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        "cuda-oom": lambda: RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 4.00 GiB total)"),
    }


def test_loop_exception_and_oom_fail_in_plain_words_and_the_queue_goes_on(tiny_bert, sentiment_file,
                                                                           fresh_manager, monkeypatch):
    import core.loop

    faults = _faults()
    real = core.loop.make_callback
    raised: list[str] = []

    def faulty_callback(*args, **kwargs):
        callback = real(*args, **kwargs)
        original = callback.on_step_end

        def on_step_end(targs, state, control, **kw):
            # output_dir is <run>/checkpoints; the run's config names the fault to inject.
            with open(os.path.join(os.path.dirname(targs.output_dir), "config.json")) as fh:
                name = json.load(fh).get("name")
            if name in faults and state.global_step >= 2:
                raised.append(name)
                raise faults[name]()
            return original(targs, state, control, **kw)
        callback.on_step_end = on_step_end
        return callback
    monkeypatch.setattr(core.loop, "make_callback", faulty_callback)
    monkeypatch.setenv("PLAYGROUND_MAX_STEPS", "100")

    mgr = jobs.get_manager()
    names = ["boom", "torch-oom", "cuda-oom", "too-many-steps", "good"]
    ids = {}
    for name in names:
        extra = {"epochs": 20, "batch_size": 1} if name == "too-many-steps" else {"max_steps": 4}
        ids[name] = mgr.submit(RunConfig.from_dict(run_cfg(tiny_bert, sentiment_file, name, **extra)), "s-" + name)
    assert [s["name"] for s in mgr.queue()] + ([mgr.active()["name"]] if mgr.active() else []) != []
    snaps = {name: wait_done(mgr, ids[name]) for name in names}

    assert raised == ["boom", "torch-oom", "cuda-oom"]
    boom = snaps["boom"]
    assert boom["state"] == "failed"
    assert boom["error"] == "training failed: RuntimeError: injected fault in the training loop"
    assert boom["hint"] == cli.GENERIC_HINT
    for name in ("torch-oom", "cuda-oom"):
        snap = snaps[name]
        assert snap["state"] == "failed", name
        assert snap["error"] == "out of memory: the model, batch and sequence length did not fit", snap["error"]
        assert snap["hint"] == "lower batch size or max length, or use QLoRA"
    steps = snaps["too-many-steps"]
    assert steps["state"] == "failed"
    assert "this server allows at most 100 per run (PLAYGROUND_MAX_STEPS)" in steps["error"], steps["error"]
    assert snaps["good"]["state"] == "completed", snaps["good"]["error"]
    assert snaps["good"]["summary"]["steps"] == 4

    # Started one after the other, in the order submitted, and on disk as in memory.
    started = [runs.read_status(runs.run_dir_for(ids[n]))["started"] for n in names]
    assert started == sorted(started)
    for name in names:
        status = runs.read_status(runs.run_dir_for(ids[name]))
        assert status["state"] == snaps[name]["state"]
        assert status.get("message", "") == snaps[name]["message"]
        assert "Traceback" not in status.get("message", "")
        assert runs.read_metrics(runs.run_dir_for(ids[name])) == snaps[name]["events"]
    assert mgr._worker is not None and mgr._worker.is_alive()  # the worker outlived every fault

    # The Runs page tells the student what happened and what to do.
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    st.cache_data.clear()
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=120)
    at.session_state["_playground_owner_id"] = "s-torch-oom"
    at.run()
    at.switch_page("pages/runs.py").run()
    at.selectbox(key="runs_detail").set_value(ids["torch-oom"]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("out of memory" in e.value and "lower batch size" in e.value for e in at.error)
    st.cache_data.clear()
