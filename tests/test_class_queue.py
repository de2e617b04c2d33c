"""A class on one server: fair share across owners, per-owner limits, admin controls, owners who
left, honest queue ETAs and a pool of workers training side by side."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest

from core import experiments, jobs, queue_rules, runs, workers
from tests.helpers.fake_jobs import FakeCfg, fake_run, wait_state


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", str(tmp_path / "runs"))
    for var in ("PLAYGROUND_ADMIN_TOKEN", "PLAYGROUND_MAX_QUEUE", "PLAYGROUND_MAX_RUN_SECONDS",
                "PLAYGROUND_MAX_QUEUED_PER_OWNER", "PLAYGROUND_MAX_RUNS_PER_HOUR", "PLAYGROUND_OWNER_TIMEOUT_S",
                "PLAYGROUND_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    jobs.reset_manager()
    yield tmp_path / "runs"
    jobs.reset_manager()


def recording_run(order: list, gate: threading.Event | None = None, hold: float = 0.0):
    """Records the order runs start in; the first run waits for `gate` so the test can fill the queue."""
    def run(cfg, run_dir, on_event, stop):
        order.append(cfg.name)
        on_event({"type": "progress", "step": 1, "max_steps": 2})
        while gate is not None and not gate.is_set() and not stop.is_set():
            time.sleep(0.005)
        time.sleep(hold)
        return {"name": cfg.name}
    return run


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError("condition not reached in time")


# ----------------------------------------------------------------------------- fair share

def test_a_grid_does_not_wall_off_the_class(managers):
    """Reproduces issue 19: a student queues the 12-run "How much data?" grid, then two others queue
    one run each. FIFO made them wait for all 12; round-robin starts both before the grid's second."""
    gate, order = threading.Event(), []
    mgr = managers(recording_run(order, gate))
    grid = [mgr.submit(FakeCfg(name=f"grid{i}"), owner="student-a") for i in range(12)]
    wait_state(mgr, grid[0], ("running",))
    bob = mgr.submit(FakeCfg(name="bob1"), owner="student-b")
    carol = mgr.submit(FakeCfg(name="carol1"), owner="student-c")
    bob2 = mgr.submit(FakeCfg(name="bob2"), owner="student-b")
    # Places shown while waiting follow the same fair order.
    places = {s["name"]: s["position"] for s in mgr.queue()}
    assert places["bob1"] == 1 and places["carol1"] == 2 and places["grid1"] == 3 and places["bob2"] == 4
    gate.set()
    for job_id in grid + [bob, carol, bob2]:
        wait_state(mgr, job_id, ("completed",))
    assert order[:5] == ["grid0", "bob1", "carol1", "grid1", "bob2"]
    assert order.index("bob1") < order.index("grid1") and order.index("carol1") < order.index("grid1")
    assert order[5:] == [f"grid{i}" for i in range(2, 12)]


def test_fair_order_is_round_robin_and_bumped_runs_go_first():
    queue = ["a1", "a2", "a3", "b1", "c1", "b2"]
    owner = {j: j[0] for j in queue}
    assert queue_rules.fair_order(queue, owner, {}) == ["a1", "b1", "c1", "a2", "b2", "a3"]
    # a was served most recently: the others go first
    assert queue_rules.fair_order(queue, owner, {"a": 5, "b": 3}) == ["c1", "b1", "a1", "b2", "a2", "a3"]
    assert queue_rules.fair_order(queue, owner, {}, front=["b2"]) == ["b2", "a1", "c1", "b1", "a2", "a3"]


def test_every_shipped_grid_fits_the_default_limits():
    sizes = {key: len(experiments.preset_runs(key)) for key in experiments.presets()}
    assert sizes["how_much_data"] == 12
    for key, size in sizes.items():
        assert size <= queue_rules.max_queued_per_owner(), key
        assert size <= queue_rules.max_runs_per_hour(), key
        assert size <= queue_rules.max_queue(), key


# ------------------------------------------------------------------------- per-owner limits

def test_per_owner_queue_limit_stops_only_that_owner(managers, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_QUEUED_PER_OWNER", "2")
    gate, order = threading.Event(), []
    mgr = managers(recording_run(order, gate))
    first = mgr.submit(FakeCfg(name="a0"), owner="a")
    wait_state(mgr, first, ("running",))  # running runs do not count against the limit
    mgr.submit(FakeCfg(name="a1"), owner="a")
    mgr.submit(FakeCfg(name="a2"), owner="a")
    with pytest.raises(jobs.OwnerLimit, match=r"2 runs waiting.*PLAYGROUND_MAX_QUEUED_PER_OWNER=2"):
        mgr.submit(FakeCfg(name="a3"), owner="a")
    assert isinstance(jobs.OwnerLimit("x"), jobs.QueueFull)  # the Experiments page keeps the rest waiting
    mgr.submit(FakeCfg(name="b1"), owner="b")  # someone else is unaffected
    mgr.submit(FakeCfg(name="a3"), owner="teacher", admin=True)  # an admin is not limited
    gate.set()


def test_runs_per_hour_limit_names_when_to_come_back(managers, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_RUNS_PER_HOUR", "3")
    mgr = managers(fake_run(steps=1, delay=0.0))
    ids = [mgr.submit(FakeCfg(name=f"a{i}"), owner="a") for i in range(3)]
    for job_id in ids:
        wait_state(mgr, job_id, ("completed",))
    with pytest.raises(jobs.OwnerLimit, match=r"3 runs in the last hour.*PLAYGROUND_MAX_RUNS_PER_HOUR=3.*in 60 min"):
        mgr.submit(FakeCfg(name="a3"), owner="a")
    mgr.submit(FakeCfg(name="b"), owner="b")


def test_bad_limit_values_fall_back_to_the_defaults(monkeypatch):
    for value in ("lots", "-3", "nan"):
        monkeypatch.setenv("PLAYGROUND_MAX_QUEUED_PER_OWNER", value)
        monkeypatch.setenv("PLAYGROUND_OWNER_TIMEOUT_S", value)
        assert queue_rules.max_queued_per_owner() == queue_rules.DEFAULT_MAX_QUEUED_PER_OWNER
        assert queue_rules.owner_timeout_s() == queue_rules.DEFAULT_OWNER_TIMEOUT_S


# ----------------------------------------------------------------------------------- admin

def test_admin_bumps_pauses_resumes_and_cancels(managers):
    gate, order = threading.Event(), []
    mgr = managers(recording_run(order, gate))
    first = mgr.submit(FakeCfg(name="a0"), owner="a")
    wait_state(mgr, first, ("running",))
    a1 = mgr.submit(FakeCfg(name="a1"), owner="a")
    b1 = mgr.submit(FakeCfg(name="b1"), owner="b")
    c1 = mgr.submit(FakeCfg(name="c1"), owner="c")
    for action in (lambda: mgr.bump(c1, admin=False), lambda: mgr.pause(admin=False),
                   lambda: mgr.resume(admin=False)):
        with pytest.raises(jobs.PermissionDenied, match="only an admin"):
            action()
    mgr.bump(c1, admin=True)
    assert [s["name"] for s in mgr.queue()] == ["c1", "b1", "a1"]
    assert mgr.queue()[0]["bumped"]
    mgr.pause(admin=True)
    assert mgr.paused and all(s["est_start_s"] is None for s in mgr.queue())
    gate.set()
    wait_state(mgr, first, ("completed",))
    time.sleep(0.1)
    assert mgr.snapshot(c1)["state"] == "queued" and mgr.active() is None  # paused: nothing starts
    # An admin cancels someone else's queued run; the owner-less b cannot.
    with pytest.raises(jobs.PermissionDenied):
        mgr.cancel(a1, "b")
    assert mgr.cancel(a1, "teacher", admin=True) == "cancelled"
    mgr.resume(admin=True)
    for job_id in (c1, b1):
        wait_state(mgr, job_id, ("completed",))
    assert order == ["a0", "c1", "b1"]
    with pytest.raises(Exception, match="not waiting"):
        mgr.bump(c1, admin=True)


def test_cancel_a_whole_experiment_in_one_call(managers):
    gate, order = threading.Event(), []
    mgr = managers(recording_run(order, gate))
    cfgs = [FakeCfg(name=f"g{i}") for i in range(4)]
    for cfg in cfgs:
        cfg.experiment = "how_much_data-1234"
    ids = [mgr.submit(cfg, owner="a") for cfg in cfgs]
    other = mgr.submit(FakeCfg(name="b"), owner="b")
    wait_state(mgr, ids[0], ("running",))
    assert mgr.cancel_experiment("how_much_data-1234", "b") == 0  # not b's runs
    assert mgr.cancel_experiment("how_much_data-1234", "a") == 4
    for job_id in ids[1:]:
        assert mgr.snapshot(job_id)["state"] == "cancelled"
    wait_state(mgr, ids[0], ("stopped",))
    wait_state(mgr, other, ("running", "completed"))
    gate.set()


# -------------------------------------------------------------------------- owners who left

def test_queued_runs_of_an_owner_who_left_are_dropped_not_deleted(managers, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_OWNER_TIMEOUT_S", "0.3")
    gate, order = threading.Event(), []
    mgr = managers(recording_run(order, gate))
    first = mgr.submit(FakeCfg(name="t0"), owner="teacher")
    wait_state(mgr, first, ("running",))
    gone = mgr.submit(FakeCfg(name="gone"), owner="left-early")
    stays = mgr.submit(FakeCfg(name="stays"), owner="present")
    deadline = time.time() + 0.6
    while time.time() < deadline:  # "present" keeps a page open, "left-early" closed the tab
        mgr.heartbeat("present")
        mgr.heartbeat("teacher")
        time.sleep(0.05)
    assert [s["name"] for s in mgr.queue()] == ["stays"]
    snap = mgr.snapshot(gone)
    assert snap["state"] == "cancelled" and "PLAYGROUND_OWNER_TIMEOUT_S" in snap["message"]
    assert os.path.isdir(runs.run_dir_for(gone))  # dropped from the queue, not from disk
    assert runs.read_status(runs.run_dir_for(gone))["state"] == "cancelled"
    monkeypatch.setenv("PLAYGROUND_OWNER_TIMEOUT_S", "0")  # 0: never drop (a slow CI box must not drop "stays")
    gate.set()
    wait_state(mgr, stays, ("completed",))


def test_nickname_is_stored_cleaned_and_survives_in_status_json(managers):
    mgr = managers(fake_run(steps=1, delay=0.0))
    mgr.heartbeat("a", nickname="  Ada\u202e <b>L</b>\n\x00 ")
    job_id = mgr.submit(FakeCfg(name="x"), owner="a")
    status = runs.read_status(runs.run_dir_for(job_id))
    assert status["nickname"] == "Ada <b>L</b>"  # control/direction characters gone; escaping is the page's job
    mgr.heartbeat("a", nickname="x" * 100)
    assert len(runs.read_status(runs.run_dir_for(mgr.submit(FakeCfg(), owner="a")))["nickname"]) == queue_rules.NICKNAME_MAX
    assert "nickname" not in runs.read_status(runs.run_dir_for(mgr.submit(FakeCfg(), owner="b")))
    assert mgr.latest_for("a") and mgr.latest_for("nobody") is None


# ---------------------------------------------------------------------------------- the ETA

def test_eta_uses_measured_speed_and_never_says_zero_for_a_slow_run(managers):
    """Reproduces "starts in ~0.0 s": the old estimate was a 120 s constant minus the elapsed time,
    so a run slower than that made every waiting person's ETA 0. Now: the running run's own pace."""
    gate, order = threading.Event(), []
    mgr = managers(recording_run(order, gate))
    a = mgr.submit(FakeCfg(name="a"), owner="a")
    wait_state(mgr, a, ("running",))
    wait_for(lambda: mgr.snapshot(a)["n_events"] == 1)  # its progress event must not land after ours
    b = mgr.submit(FakeCfg(name="b"), owner="b")
    with mgr._lock:
        job = mgr._jobs[a]
        job.started = time.time() - 600  # 10 min in, at step 1 of 4: about 30 min left
        job.progress = {"step": 1, "max_steps": 4}
        mgr._durations.append((("minilm", "lora"), 50.0))
    est = mgr.snapshot(b)["est_start_s"]
    assert est == pytest.approx(1800, rel=0.01)
    with mgr._lock:
        job.progress = {"step": 1, "max_steps": 4, "eta_s": 95.0}  # the trainer's own measurement wins
    assert mgr.snapshot(b)["est_start_s"] == pytest.approx(95.0)
    c = mgr.submit(FakeCfg(name="c"), owner="c")
    assert mgr.snapshot(c)["est_start_s"] == pytest.approx(95.0 + 50.0)  # + the measured minilm/lora time
    gate.set()


def test_sidebar_queue_line_is_honest():
    from pages.classroom import queue_line
    assert "0.0" not in queue_line({"position": 1, "est_start_s": 0.0, "name": "x"})
    assert "any moment" in queue_line({"position": 1, "est_start_s": 0.0, "name": "x"})
    assert "not known yet" in queue_line({"position": 2, "est_start_s": None, "name": "x"})
    assert "2 min" in queue_line({"position": 2, "est_start_s": 125.0, "name": "x"})
    assert "paused" in queue_line({"position": 2, "est_start_s": None, "name": "x", "paused": True})


# ----------------------------------------------------------------------------- worker pool

def writing_run(barrier: threading.Barrier, steps: int = 20, wait: float = 5.0):
    """Writes metrics and a summary of its own; both runs must reach the barrier together."""
    def run(cfg, run_dir, on_event, stop):
        barrier.wait(timeout=wait)  # raises BrokenBarrierError unless the other run is training too
        for step in range(1, steps + 1):
            on_event({"type": "log", "step": step, "max_steps": steps, "loss": float(step), "run": cfg.name})
            time.sleep(0.002)
        summary = {"name": cfg.name, "steps": steps}
        runs.write_summary(run_dir, summary)
        return summary
    return run


def test_two_workers_train_two_runs_at_once_without_mixing_their_folders(managers):
    mgr = managers(writing_run(threading.Barrier(2)), n_workers=2)
    a = mgr.submit(FakeCfg(name="alpha"), owner="a")
    b = mgr.submit(FakeCfg(name="beta"), owner="b")
    wait_for(lambda: len(mgr.running()) == 2 or mgr.snapshot(a)["state"] == "completed")
    for job_id, name in ((a, "alpha"), (b, "beta")):
        snap = wait_state(mgr, job_id, ("completed", "failed"))
        assert snap["state"] == "completed", snap["error"]  # a broken barrier: they did not run at once
        run_dir = runs.run_dir_for(job_id)
        lines = [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"))]
        assert [e["step"] for e in lines] == list(range(1, 21))
        assert {e["run"] for e in lines} == {name}
        assert runs.read_summary(run_dir) == {"name": name, "steps": 20}
        assert runs.read_status(run_dir)["state"] == "completed"


def test_one_worker_runs_one_at_a_time(managers):
    mgr = managers(writing_run(threading.Barrier(2), wait=0.5), n_workers=1)
    a = mgr.submit(FakeCfg(name="alpha"), owner="a")
    mgr.submit(FakeCfg(name="beta"), owner="b")
    snap = wait_state(mgr, a, ("completed", "failed"), timeout=10)
    assert snap["state"] == "failed"  # the barrier never saw a second run: the check above can fail


def test_worker_count_defaults_and_env(monkeypatch):
    assert workers.default_workers(cores=2, gpu_free=0) == 1
    assert workers.default_workers(cores=4, gpu_free=0) == 1
    assert workers.default_workers(cores=16, gpu_free=0) == 4
    gib = 1024 ** 3
    assert workers.default_workers(gpu_free=20 * gib, run_bytes=2 * gib) == workers.GPU_DEFAULT_CAP
    assert workers.default_workers(gpu_free=5 * gib, run_bytes=2 * gib) == 2
    assert workers.default_workers(gpu_free=1 * gib, run_bytes=2 * gib) == 1
    monkeypatch.setenv("PLAYGROUND_WORKERS", "3")
    assert workers.worker_count() == 3
    monkeypatch.setenv("PLAYGROUND_WORKERS", "999")
    assert workers.worker_count() == workers.MAX_WORKERS
    monkeypatch.setenv("PLAYGROUND_WORKERS", "two")
    assert workers.worker_count() == workers.default_workers()
    # side by side, each run gets its share of the cores (torch.set_num_threads is process-wide)
    assert workers.run_threads(8, workers=2, cores=8) == 4
    assert workers.run_threads(8, workers=1, cores=8) == 8


def test_two_real_tiny_trainings_side_by_side(tiny_bert, sentiment_file, managers):
    """The real trainer in two workers at once: both complete, each folder holds only its own metrics,
    and each run used its share of the cores (torch.set_num_threads is process-wide)."""
    from core.config import RunConfig
    from tests.test_faults import run_cfg

    pool = managers(None, n_workers=2)
    ids = {}
    for seed in (1, 2):
        d = run_cfg(tiny_bert, sentiment_file, f"pair{seed}", max_steps=3, seed=seed, torch_threads=0)
        ids[seed] = pool.submit(RunConfig.from_dict(d), owner=f"o{seed}")
    most = 0
    deadline = time.time() + 300
    while any(pool.snapshot(i, events=False)["state"] in ("queued", "running") for i in ids.values()):
        most = max(most, len(pool.running()))
        assert time.time() < deadline, "the two runs did not finish"
        time.sleep(0.02)
    assert most == 2
    for seed, run_id in ids.items():
        snap = pool.snapshot(run_id)
        assert snap["state"] == "completed", snap["error"]
        run_dir = runs.run_dir_for(run_id)
        steps = [e["step"] for e in (json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl")))
                 if e.get("type") == "log" and "loss" in e]
        assert steps == [1, 2, 3], steps  # one run's lines only, in order
        assert json.loads(open(os.path.join(run_dir, "config.json")).read())["name"] == f"pair{seed}"
        assert runs.read_summary(run_dir)["threads"] == workers.run_threads(64, workers=2)


@pytest.fixture
def restored_accelerate_state(monkeypatch):
    """Whatever the test does to accelerate's state classes is undone after it."""
    from accelerate import state
    for name in ("PartialState", "AcceleratorState", "GradientState"):
        cls = getattr(state, name)
        monkeypatch.setattr(cls, "_shared_state", vars(cls)["_shared_state"])
    return state


def _run_starts_beside_a_training_run(state) -> str:
    """A run training in this thread, and another run's TrainingArguments setting up in a second
    thread (it clears accelerate's state, then builds its own): what the first run then reads."""
    from accelerate import Accelerator
    training = Accelerator(cpu=True)
    starting = threading.Thread(target=lambda: state.AcceleratorState._reset_state(reset_partial_state=True))
    starting.start()
    starting.join()
    try:
        return str(training.distributed_type)
    except AttributeError as exc:
        return f"failed: {exc}"


def test_a_run_starting_does_not_pull_the_state_from_under_a_run_training(restored_accelerate_state, monkeypatch):
    state = restored_accelerate_state
    monkeypatch.setattr(workers, "_pool_size", 2)
    assert workers.separate_accelerate_state()
    assert _run_starts_beside_a_training_run(state) == str(state.DistributedType.NO)
    assert workers.separate_accelerate_state()  # a second call changes nothing


def test_without_separate_states_the_starting_run_breaks_the_training_one(restored_accelerate_state):
    """The failure the separation prevents (seen once in CI: two tiny runs side by side)."""
    state = restored_accelerate_state
    for name in ("PartialState", "AcceleratorState", "GradientState"):
        setattr(getattr(state, name), "_shared_state", {})  # one dict for the process, as accelerate ships it
    assert "has no attribute" in _run_starts_beside_a_training_run(state)


def test_one_run_at_a_time_keeps_accelerate_as_it_is(monkeypatch):
    monkeypatch.setattr(workers, "_pool_size", 1)
    assert workers.separate_accelerate_state() is False
