"""Run store and job manager: queue order, stop/cancel, failures, ownership, crash safety."""
from __future__ import annotations

import io
import os
import threading
import time
import zipfile

import pytest

from core import cli, jobs, queue_rules, runs
from core.errors import NonFiniteLoss
from core.config import ConfigError
from tests.helpers.fake_jobs import FakeCfg, fake_run, gated_run, wait_state


@pytest.fixture(autouse=True)
def runs_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("PLAYGROUND_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("PLAYGROUND_MAX_QUEUE", raising=False)
    monkeypatch.delenv("PLAYGROUND_MAX_RUN_SECONDS", raising=False)
    jobs.reset_manager()
    yield tmp_path / "runs"
    jobs.reset_manager()


# ------------------------------------------------------------------------------------ run store

def test_run_ids_are_safe_sortable_and_validated():
    rid = runs.new_run_id(FakeCfg(model="Some-Org/All-MiniLM_L6.v2", method="LoRA"))
    assert runs.is_valid_run_id(rid)
    assert set(rid) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert "-lora-all-minilm-l6-v2-" in rid
    assert runs.run_dir_for(rid) == os.path.join(runs.runs_root(), rid)
    bad = ["..", "../etc", "20261122-031501-lora/../../x", "20261122-031501-lora\0", "/etc/passwd",
           "20261122-031501-lora\n", "my run", "", "20261122-031501", "20261122-031501-LoRA",
           "20261122-031501-lora..x", None, 123, "a" * 200]
    for b in bad:
        with pytest.raises(ConfigError):
            runs.run_dir_for(b)


def test_runs_root_read_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert runs.runs_root() == str(tmp_path / "elsewhere")


def test_create_run_writes_config_and_status_atomically(runs_dir):
    cfg = FakeCfg(name="my ../../ first run")
    run_dir = runs.create_run(cfg, owner="alice")
    assert os.path.dirname(run_dir) == str(runs_dir)
    assert runs.read_config(run_dir) == cfg.to_dict()
    status = runs.read_status(run_dir)
    assert status["state"] == "queued" and status["name"] == "my ../../ first run"
    assert status["owner"] and status["owner"] != "alice"  # a digest, not the session id
    assert isinstance(status["created"], float)
    runs.write_status(run_dir, "running", started=1.0)
    runs.write_status(run_dir, "completed", message="ok")
    status = runs.read_status(run_dir)
    assert status["state"] == "completed" and status["started"] == 1.0 and status["message"] == "ok"
    with pytest.raises(ValueError):
        runs.write_status(run_dir, "exploded")
    # No temp file or temp folder survives a normal write.
    leftovers = [n for n in os.listdir(runs_dir) if n.startswith(".")]
    leftovers += [n for n in os.listdir(run_dir) if n.startswith(".") or n.endswith(".tmp")]
    assert leftovers == []


def test_atomic_write_keeps_old_file_when_writing_fails(runs_dir, monkeypatch):
    run_dir = runs.create_run(FakeCfg(), owner="alice")

    def broken_replace(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(runs.os, "replace", broken_replace)
    with pytest.raises(OSError):
        runs.write_status(run_dir, "running")
    monkeypatch.undo()
    assert runs.read_status(run_dir)["state"] == "queued"
    assert [n for n in os.listdir(run_dir) if n.endswith(".tmp")] == []


def test_metrics_append_and_torn_last_line(runs_dir):
    run_dir = runs.create_run(FakeCfg(), owner="alice")
    assert runs.read_metrics(run_dir) == []
    runs.append_metric(run_dir, {"type": "log", "step": 1, "loss": 0.5})
    runs.append_metric(run_dir, {"type": "log", "step": 2, "loss": float("nan")})
    with open(os.path.join(run_dir, "metrics.jsonl"), "a", encoding="utf-8") as fh:
        fh.write('{"type": "log", "step": 3, "lo')  # the process died mid-line
    got = runs.read_metrics(run_dir)
    assert [e["step"] for e in got] == [1, 2]
    # Appending after the crash must not glue the new event to the torn line.
    runs.append_metric(run_dir, {"type": "log", "step": 4})
    assert [e["step"] for e in runs.read_metrics(run_dir)] == [1, 2, 4]


def test_list_runs_newest_first_and_skips_junk(runs_dir):
    a = runs.create_run(FakeCfg(name="a"), owner="alice")
    time.sleep(0.01)
    b = runs.create_run(FakeCfg(name="b"), owner="bob")
    os.makedirs(runs_dir / "not-a-run")
    os.makedirs(runs_dir / ".tmp-junk")
    (runs_dir / "stray.txt").write_text("x")
    infos = runs.list_runs()
    assert [i.dir for i in infos] == [b, a]
    assert infos[0].name == "b" and infos[0].state == "queued" and not infos[0].has_weights
    assert infos[0].owned_by("bob") and not infos[0].owned_by("alice") and not infos[0].owned_by("")
    assert runs.delete_run(os.path.basename(a)) is True
    assert runs.delete_run(os.path.basename(a)) is False
    assert [i.dir for i in runs.list_runs()] == [b]


def test_recover_on_startup_marks_running_and_queued_interrupted(runs_dir):
    queued = runs.create_run(FakeCfg(name="q"), owner="a")
    running = runs.create_run(FakeCfg(name="r"), owner="a")
    runs.write_status(running, "running", started=time.time())
    with_ckpt = runs.create_run(FakeCfg(name="c"), owner="a")
    runs.write_status(with_ckpt, "running")
    for n in (9, 10):  # a complete checkpoint: the Trainer writes trainer_state.json last
        os.makedirs(os.path.join(with_ckpt, "checkpoints", f"checkpoint-{n}"))
        open(os.path.join(with_ckpt, "checkpoints", f"checkpoint-{n}", "trainer_state.json"), "w").close()
    os.makedirs(os.path.join(with_ckpt, "checkpoints", "checkpoint-11"))  # killed mid-save: not resumable
    done = runs.create_run(FakeCfg(name="d"), owner="a")
    runs.write_status(done, "completed")

    recovered = runs.recover_on_startup()
    assert sorted(r.dir for r in recovered) == sorted([queued, running, with_ckpt])
    states = {i.dir: i for i in runs.list_runs()}
    assert states[queued].state == states[running].state == "interrupted"
    assert "restarted" in states[running].status["message"]
    assert states[done].state == "completed"
    assert states[with_ckpt].resumable and not states[running].resumable
    assert runs.latest_checkpoint(with_ckpt).endswith("checkpoint-10")  # numeric, not text order
    assert runs.recover_on_startup() == []  # idempotent


def test_get_manager_recovers_once(runs_dir):
    r = runs.create_run(FakeCfg(), owner="a")
    runs.write_status(r, "running")
    m1 = jobs.get_manager(fake_run())
    assert runs.read_status(r)["state"] == "interrupted"
    assert jobs.get_manager() is m1
    snap = m1.snapshot(os.path.basename(r))
    assert snap["state"] == "interrupted" and snap["in_memory"] is False


def test_zip_weights_and_config_yaml(runs_dir):
    run_dir = runs.create_run(FakeCfg(name="z"), owner="a")
    with pytest.raises(ConfigError):
        runs.zip_weights(run_dir)
    os.makedirs(os.path.join(run_dir, "adapter", "sub"))
    with open(os.path.join(run_dir, "adapter", "adapter_config.json"), "w") as fh:
        fh.write("{}")
    with open(os.path.join(run_dir, "adapter", "sub", "w.bin"), "wb") as fh:
        fh.write(b"123")
    os.symlink("/etc/passwd", os.path.join(run_dir, "adapter", "leak"))
    names = zipfile.ZipFile(io.BytesIO(runs.zip_weights(run_dir))).namelist()
    assert sorted(names) == ["adapter/adapter_config.json", "adapter/sub/w.bin"]
    assert "name: z" in runs.config_yaml(run_dir)


# ------------------------------------------------------------------------------------ job manager

def test_fifo_queue_positions_and_estimates(managers):
    gate, order = threading.Event(), []
    mgr = managers(gated_run(gate, order))
    ids = [mgr.submit(FakeCfg(name=f"job{i}"), owner="alice") for i in range(4)]
    wait_state(mgr, ids[0], ("running",))
    while mgr.snapshot(ids[0])["n_events"] == 0:  # the ETA arrives with the first event
        time.sleep(0.005)
    assert mgr.active()["id"] == ids[0]
    assert [q["id"] for q in mgr.queue()] == ids[1:]
    snaps = [mgr.snapshot(i) for i in ids]
    assert [s["position"] for s in snaps] == [None, 1, 2, 3]
    assert snaps[0]["est_start_s"] == 0.0
    # Running job says 30 s left: the next one starts then. No run has finished on this server, so
    # how long job1 takes is not known: the later ones say "unknown", never a made-up constant.
    assert snaps[1]["est_start_s"] == pytest.approx(30.0)
    assert snaps[2]["est_start_s"] is None and snaps[3]["est_start_s"] is None
    gate.set()
    for i in ids:
        wait_state(mgr, i, ("completed",))
    assert order == ["job0", "job1", "job2", "job3"]
    assert mgr.active() is None and mgr.queue() == []
    assert mgr.mean_duration() < 5  # finished runs now drive the estimate


def test_queue_limit(managers, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_QUEUE", "2")
    gate = threading.Event()
    mgr = managers(gated_run(gate, []))
    first = mgr.submit(FakeCfg(), owner="a")
    wait_state(mgr, first, ("running",))
    mgr.submit(FakeCfg(), owner="a")
    mgr.submit(FakeCfg(), owner="b")
    before = len(runs.list_runs())
    with pytest.raises(jobs.QueueFull, match="queue is full"):
        mgr.submit(FakeCfg(), owner="c")
    assert isinstance(jobs.QueueFull("x"), ConfigError)
    assert len(runs.list_runs()) == before  # no orphan folder
    gate.set()


def test_cancel_queued(managers):
    gate, order = threading.Event(), []
    mgr = managers(gated_run(gate, order))
    a = mgr.submit(FakeCfg(name="a"), owner="alice")
    b = mgr.submit(FakeCfg(name="b"), owner="alice")
    c = mgr.submit(FakeCfg(name="c"), owner="alice")
    wait_state(mgr, a, ("running",))
    assert mgr.cancel(b, "alice") == "cancelled"
    assert mgr.snapshot(c)["position"] == 1
    assert runs.read_status(runs.run_dir_for(b))["state"] == "cancelled"
    gate.set()
    wait_state(mgr, c, ("completed",))
    assert order == ["a", "c"]
    assert mgr.cancel(b, "alice") == "cancelled"  # a second click is harmless


def test_stop_running_ends_stopped_quickly(managers):
    mgr = managers(fake_run(steps=10_000, delay=0.005))
    a = mgr.submit(FakeCfg(), owner="alice")
    b = mgr.submit(FakeCfg(), owner="alice")
    wait_state(mgr, a, ("running",))
    assert mgr.stop(b, "alice") == "cancelled"  # queued: stop means cancel
    time.sleep(0.03)
    t0 = time.time()
    assert mgr.stop(a, "alice") == "running"
    assert mgr.snapshot(a)["stopping"] is True
    snap = wait_state(mgr, a, ("stopped",), timeout=2)
    assert time.time() - t0 < 1.0
    assert snap["message"] == "stopped by its owner"
    assert runs.read_status(runs.run_dir_for(a))["state"] == "stopped"
    assert mgr.snapshot(b)["state"] == "cancelled" and mgr.active() is None


@pytest.mark.parametrize("exc, words, hint", [
    (RuntimeError("boom"), "training failed: RuntimeError: boom", cli.GENERIC_HINT),
    (MemoryError(), "out of memory", cli.OOM_HINT),
    (RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "out of memory", cli.OOM_HINT),
    (RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"), "out of memory", cli.OOM_HINT),
    (NonFiniteLoss("loss is nan at step 2"), "NaN", cli.NAN_HINT),
    (ConfigError("data.text_column='txt' is not a column"), "data.text_column='txt' is not a column", ""),
    (SystemExit(3), "training failed: SystemExit", cli.GENERIC_HINT),
])
def test_failure_is_explained_and_next_job_runs(managers, exc, words, hint):
    calls = []
    failing = fake_run(fail=exc)
    ok = fake_run()

    def run(cfg, run_dir, on_event, stop):
        calls.append(cfg.name)
        return (failing if cfg.name == "bad" else ok)(cfg, run_dir, on_event, stop)
    mgr = managers(run)
    bad = mgr.submit(FakeCfg(name="bad"), owner="alice")
    good = mgr.submit(FakeCfg(name="good"), owner="alice")
    snap = wait_state(mgr, bad, ("failed",))
    assert words in snap["error"] and snap["hint"] == hint
    status = runs.read_status(runs.run_dir_for(bad))
    assert status["state"] == "failed" and words in status["message"] and status["hint"] == hint
    assert wait_state(mgr, good, ("completed",))["summary"]["final_loss"] == 0.1
    assert calls == ["bad", "good"]


def test_explain_failure_torch_oom_by_type_name():
    class OutOfMemoryError(RuntimeError):  # what torch.OutOfMemoryError looks like from here
        pass
    assert cli.explain_failure(OutOfMemoryError("x"))[1] == cli.OOM_HINT
    assert cli.explain_failure(ValueError("finance data"))[1] == cli.GENERIC_HINT  # 'nan' inside a word


def test_ownership_and_admin(managers, monkeypatch):
    gate = threading.Event()
    mgr = managers(gated_run(gate, []))
    a_run = mgr.submit(FakeCfg(), owner="session-a")
    a_queued = mgr.submit(FakeCfg(), owner="session-a")
    wait_state(mgr, a_run, ("running",))
    for action in (mgr.stop, mgr.cancel, mgr.delete, mgr.weights_zip):
        with pytest.raises(jobs.PermissionDenied):
            action(a_run, "session-b")
        with pytest.raises(jobs.PermissionDenied):
            action(a_queued, "session-b", admin=queue_rules.is_admin("anything"))  # no token set: no admin
    assert not mgr.can_access(a_run, "session-b") and mgr.can_access(a_run, "session-a")
    assert not mgr.can_access(a_run, "") and not mgr.can_access("../etc", "session-a")

    monkeypatch.setenv("PLAYGROUND_ADMIN_TOKEN", "s3cret")
    assert not queue_rules.is_admin("wrong") and not queue_rules.is_admin("") and not queue_rules.is_admin(None)
    admin = queue_rules.is_admin("s3cret")
    assert admin and mgr.can_access(a_run, "teacher", admin=admin)
    assert mgr.cancel(a_queued, "teacher", admin=admin) == "cancelled"
    assert "admin" in mgr.snapshot(a_queued)["message"]
    mgr.stop(a_run, "teacher", admin=admin)
    assert wait_state(mgr, a_run, ("stopped",))["message"] == "stopped by an admin"
    assert mgr.delete(a_queued, "teacher", admin=admin) is True
    with pytest.raises(runs.NotFound):
        mgr.snapshot(a_queued)


def test_delete_running_is_refused_and_download_works(managers):
    gate = threading.Event()
    mgr = managers(gated_run(gate, []))
    r = mgr.submit(FakeCfg(), owner="a")
    wait_state(mgr, r, ("running",))
    with pytest.raises(ConfigError, match="stop it first"):
        mgr.delete(r, "a")
    gate.set()
    wait_state(mgr, r, ("completed",))
    with pytest.raises(ConfigError, match="no saved weights"):
        mgr.weights_zip(r, "a")
    mgr2 = managers(fake_run())
    r2 = mgr2.submit(FakeCfg(), owner="a")
    wait_state(mgr2, r2, ("completed",))
    assert zipfile.ZipFile(io.BytesIO(mgr2.weights_zip(r2, "a"))).namelist() == ["adapter/adapter_model.safetensors"]
    assert mgr2.delete(r2, "a") is True and not os.path.exists(runs.run_dir_for(r2))


def test_events_in_memory_match_disk(managers):
    mgr = managers(fake_run(steps=25, delay=0.001))
    ids = [mgr.submit(FakeCfg(name=str(i)), owner="a") for i in range(3)]
    for i in ids:
        snap = wait_state(mgr, i, ("completed",))
        disk = runs.read_metrics(runs.run_dir_for(i))
        assert snap["events"] == disk
        assert len(disk) == 26 and [e["step"] for e in disk[1:]] == list(range(1, 26))
        assert snap["progress"]["step"] == 25 and snap["progress"]["fraction"] == 1.0
        assert snap["n_events"] == 26 and mgr.snapshot(i, since=20)["events"] == disk[20:]
    # A manager that never saw the job (after a restart) reads the same history from disk.
    fresh = managers(fake_run())
    again = fresh.snapshot(ids[0])
    assert again["events"] == runs.read_metrics(runs.run_dir_for(ids[0]))
    assert again["state"] == "completed" and again["summary"]["steps"] == 25


def test_snapshot_events_are_copies(managers):
    mgr = managers(fake_run())
    r = mgr.submit(FakeCfg(), owner="a")
    snap = wait_state(mgr, r, ("completed",))
    snap["events"][0]["type"] = "tampered"
    snap["events"].clear()
    assert mgr.snapshot(r)["events"][0]["type"] == "status"


def test_resume_from_interrupted_run(managers, runs_dir):
    old = runs.create_run(FakeCfg(), owner="alice")
    runs.write_status(old, "running")
    os.makedirs(os.path.join(old, "checkpoints", "checkpoint-5"))
    open(os.path.join(old, "checkpoints", "checkpoint-5", "trainer_state.json"), "w").close()
    runs.recover_on_startup()
    seen = {}

    def run(cfg, run_dir, on_event, stop):
        seen["ckpt"] = runs.resume_checkpoint(run_dir)
        return {}
    mgr = managers(run)
    with pytest.raises(jobs.PermissionDenied):
        mgr.submit(FakeCfg(), owner="bob", resume_from=os.path.basename(old))
    new = mgr.submit(FakeCfg(), owner="alice", resume_from=os.path.basename(old))
    wait_state(mgr, new, ("completed",))
    assert seen["ckpt"] == os.path.join(old, "checkpoints", "checkpoint-5")
    plain = runs.create_run(FakeCfg(), owner="alice")
    with pytest.raises(ConfigError, match="no checkpoint"):
        mgr.submit(FakeCfg(), owner="alice", resume_from=os.path.basename(plain))


def test_time_limit_stops_a_run(managers, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_RUN_SECONDS", "0.05")
    mgr = managers(fake_run(steps=10_000, delay=0.005))
    r = mgr.submit(FakeCfg(), owner="a")
    snap = wait_state(mgr, r, ("stopped",), timeout=3)
    assert "time limit" in snap["message"]


def test_shutdown_interrupts_queue(managers):
    gate = threading.Event()
    mgr = managers(gated_run(gate, []))
    a = mgr.submit(FakeCfg(), owner="a")
    b = mgr.submit(FakeCfg(), owner="a")
    wait_state(mgr, a, ("running",))
    mgr.shutdown(timeout=2)
    assert mgr.snapshot(a)["state"] == "stopped"
    assert mgr.snapshot(b)["state"] == "interrupted"
    with pytest.raises(ConfigError, match="shutting down"):
        mgr.submit(FakeCfg(), owner="a")


def test_many_sessions_submit_concurrently(managers, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_QUEUE", "10")
    gate = threading.Event()
    mgr = managers(gated_run(gate, []))
    results: list = []

    def student(i):
        try:
            results.append(mgr.submit(FakeCfg(name=f"s{i}"), owner=f"student-{i}"))
        except jobs.QueueFull:
            results.append("full")
    threads = [threading.Thread(target=student, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = [r for r in results if r != "full"]
    # One may already be running, so 10 or 11 were accepted; never more.
    assert 10 <= len(accepted) <= 11 and len(set(accepted)) == len(accepted)
    assert len(runs.list_runs()) == len(accepted)
    gate.set()
    for r in accepted:
        wait_state(mgr, r, ("completed",))
