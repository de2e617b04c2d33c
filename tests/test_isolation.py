"""No visitor reaches what is not theirs: session B cannot stop, cancel, delete, download or resume
session A's run, through the very calls the pages make (pages.ui.manager() + JobManager methods,
and the Runs/Train pages in AppTest); with the admin token (PLAYGROUND_ADMIN_TOKEN) it can."""
from __future__ import annotations

import io
import json
import os
import threading
import time
import zipfile

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, queue_rules, runs
from core.config import RunConfig
from tests.helpers.apptest import OWNER_KEY, open_app

ADMIN_KEY = "_playground_admin_token"   # pages.ui.ADMIN_TOKEN_KEY: the sidebar's token field
TOKEN = "teacher-secret-7f3a"
ALICE, BOB = "alice-session-0001", "bob-session-0002"
CFG = {"model": {"name": "minilm"}, "data": {"source": "builtin:sentiment", "task": "classification"},
       "method": {"name": "lora", "params": {"r": 4}}, "train": {"epochs": 1}}


def cfg(name: str) -> RunConfig:
    return RunConfig.from_dict({**CFG, "name": name})


class FakeTrainer:
    """A run_fn: runs named 'hold*' wait for the gate (or a stop); every run saves an adapter."""

    def __init__(self):
        self.gate = threading.Event()

    def __call__(self, cfg, run_dir, on_event, stop):
        on_event({"type": "progress", "step": 1, "max_steps": 10})
        while cfg.name.startswith("hold") and not self.gate.is_set() and not stop.is_set():
            time.sleep(0.01)
        os.makedirs(os.path.join(run_dir, "adapter"), exist_ok=True)
        with open(os.path.join(run_dir, "adapter", "adapter_model.safetensors"), "wb") as fh:
            fh.write(b"\0" * 32)
        return {"steps": 1}


@pytest.fixture
def server(clean_app, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_ADMIN_TOKEN", TOKEN)
    monkeypatch.delenv("PLAYGROUND_MAX_QUEUE", raising=False)
    trainer = FakeTrainer()
    jobs.get_manager(run_fn=trainer)
    from pages import ui
    yield ui.manager(), trainer  # the page helper returns the process-wide manager made above
    trainer.gate.set()


def wait(mgr, run_id, states, timeout=10.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = mgr.snapshot(run_id, events=False)
        if snap["state"] in states:
            return snap
        time.sleep(0.01)
    raise AssertionError(f"{run_id} is {mgr.snapshot(run_id)['state']}, wanted {states}")


def session(page: str | None = None, owner: str = BOB, token: str | None = None) -> AppTest:
    state = {OWNER_KEY: owner} if token is None else {OWNER_KEY: owner, ADMIN_KEY: token}
    return open_app(page, state=state, timeout=120)


def texts(at: AppTest) -> str:
    return "\n".join([e.value for e in at.info] + [e.value for e in at.caption] + [e.value for e in at.markdown])


def download_labels(at: AppTest) -> list[str]:
    return [getattr(e, "proto", None).label for e in at.get("download_button")]


# ----------------------------------------------------------------------------- the manager

def test_other_session_cannot_stop_cancel_delete_download_or_resume(server):
    mgr, trainer = server
    running = mgr.submit(cfg("hold-a"), ALICE)
    queued = mgr.submit(cfg("a-second"), ALICE)
    wait(mgr, running, ("running",))
    for verb, call in (("stop", lambda: mgr.stop(running, BOB)),
                       ("cancel", lambda: mgr.cancel(queued, BOB)),
                       ("stop", lambda: mgr.stop(queued, BOB)),
                       ("delete", lambda: mgr.delete(queued, BOB)),
                       ("download", lambda: mgr.weights_zip(running, BOB)),
                       ("resume from", lambda: mgr.submit(cfg("b"), BOB, resume_from=running))):
        with pytest.raises(jobs.PermissionDenied, match=f"you cannot {verb} run .*belongs to another session"):
            call()
    # A wrong or empty token is no token; B's attempts changed nothing.
    for bad in ("", "teacher", TOKEN + "x", None):
        assert not queue_rules.is_admin(bad)
        assert not mgr.can_access(running, BOB, queue_rules.is_admin(bad))
    assert mgr.snapshot(running)["state"] == "running" and not mgr.snapshot(running)["stopping"]
    assert [s["id"] for s in mgr.queue()] == [queued]

    trainer.gate.set()
    wait(mgr, queued, ("completed",))
    done = running
    assert mgr.snapshot(done)["state"] == "completed"
    with pytest.raises(jobs.PermissionDenied):
        mgr.weights_zip(done, BOB)
    with pytest.raises(jobs.PermissionDenied):
        mgr.delete(done, BOB)
    assert os.path.isdir(runs.run_dir_for(done))
    # The owner can; so can the teacher, from any session.
    assert zipfile.ZipFile(io.BytesIO(mgr.weights_zip(done, ALICE))).namelist()
    admin = queue_rules.is_admin(TOKEN)
    assert admin
    assert zipfile.ZipFile(io.BytesIO(mgr.weights_zip(queued, BOB, admin))).namelist()
    assert mgr.delete(done, BOB, admin) is True
    assert not os.path.exists(os.path.join(os.environ["PLAYGROUND_RUNS_DIR"], done))


def test_admin_token_stops_and_cancels_for_another_session(server):
    mgr, trainer = server
    running = mgr.submit(cfg("hold-a"), ALICE)
    queued = mgr.submit(cfg("hold-a2"), ALICE)
    wait(mgr, running, ("running",))
    admin = queue_rules.is_admin(TOKEN)
    assert mgr.cancel(queued, BOB, admin) == "cancelled"
    assert "by an admin" in mgr.snapshot(queued)["message"]
    mgr.stop(running, BOB, admin)
    snap = wait(mgr, running, ("stopped",))
    assert snap["message"] == "stopped by an admin"


def test_no_token_configured_means_no_admin(server, monkeypatch):
    mgr, _ = server
    monkeypatch.delenv("PLAYGROUND_ADMIN_TOKEN")
    run_id = mgr.submit(cfg("a"), ALICE)
    wait(mgr, run_id, ("completed",))
    for token in ("", TOKEN, None):
        assert not queue_rules.is_admin(token)
    with pytest.raises(jobs.PermissionDenied):
        mgr.delete(run_id, BOB, queue_rules.is_admin(""))


def test_owner_ids_are_stored_hashed_and_a_hash_is_no_key(server):
    mgr, _ = server
    run_id = mgr.submit(cfg("a"), ALICE)
    wait(mgr, run_id, ("completed",))
    folder = runs.run_dir_for(run_id)
    on_disk = "".join(open(os.path.join(folder, f), encoding="utf-8").read()
                      for f in ("status.json", "config.json", "metrics.jsonl") if os.path.exists(os.path.join(folder, f)))
    assert ALICE not in on_disk
    tag = json.loads(open(os.path.join(folder, "status.json")).read())["owner"]
    assert tag == runs.owner_tag(ALICE)
    # B reads the tag from the listing and presents it as its own id: still refused.
    with pytest.raises(jobs.PermissionDenied):
        mgr.delete(run_id, tag)
    with pytest.raises(jobs.PermissionDenied):
        mgr.weights_zip(run_id, "")


# ------------------------------------------------------------------------------- the pages

def test_runs_page_hides_delete_and_download_from_another_session(server):
    mgr, _ = server
    run_id = mgr.submit(cfg("alices run"), ALICE)
    wait(mgr, run_id, ("completed",))

    bob = session("pages/runs.py", BOB)
    assert not [b for b in bob.button if b.key == "runs_delete"]
    assert "Download weights (zip)" not in download_labels(bob)
    assert "Only the session that started this run can download its weights." in texts(bob)

    alice = session("pages/runs.py", ALICE)
    assert [b for b in alice.button if b.key == "runs_delete"]
    assert "Download weights (zip)" in download_labels(alice)

    wrong = session("pages/runs.py", BOB, token="guess")
    assert not [b for b in wrong.button if b.key == "runs_delete"]

    teacher = session("pages/runs.py", BOB, token=TOKEN)
    assert "Download weights (zip)" in download_labels(teacher)
    teacher.checkbox(key="runs_confirm_delete").check().run()
    teacher.button(key="runs_delete").click().run()
    assert not teacher.exception
    assert any(f"Deleted run {run_id}" in s.value for s in teacher.success)
    assert not os.path.exists(os.path.join(os.environ["PLAYGROUND_RUNS_DIR"], run_id))


def test_train_page_offers_stop_only_to_the_owner_or_admin(server):
    mgr, trainer = server
    run_id = mgr.submit(cfg("hold-alice"), ALICE)
    wait(mgr, run_id, ("running",))

    bob = session("pages/train.py", BOB)  # a new session sees the running job, read-only
    assert not [b for b in bob.button if b.key == "tr_stop"]
    assert "This run belongs to another session" in texts(bob)

    alice = session("pages/train.py", ALICE, )
    alice.session_state["_train_job"] = run_id
    alice.run()
    stop = [b for b in alice.button if b.key == "tr_stop"]
    assert stop, [b.key for b in alice.button]
    assert mgr.snapshot(run_id)["state"] == "running"  # seeing the button changed nothing

    teacher = session("pages/train.py", BOB, token=TOKEN)
    teacher.button(key="tr_stop").click().run()
    assert not teacher.exception
    assert wait(mgr, run_id, ("stopped",))["message"] == "stopped by an admin"


def test_resume_button_only_for_the_owner_or_admin(server):
    mgr, _ = server
    # A run Alice started before the server restarted, with a checkpoint on disk.
    old = runs.create_run(cfg("alice before restart"), owner=ALICE)
    runs.write_status(old, "running")
    os.makedirs(os.path.join(old, "checkpoints", "checkpoint-4"))
    open(os.path.join(old, "checkpoints", "checkpoint-4", "trainer_state.json"), "w").close()
    runs.recover_on_startup()
    old_id = os.path.basename(old)
    assert runs.get_run(old_id).resumable

    bob = session("pages/runs.py", BOB)
    assert not [b for b in bob.button if b.key == "runs_resume"]
    assert "only the session that started it or an admin can resume it" in texts(bob)
    with pytest.raises(jobs.PermissionDenied):
        mgr.submit(cfg("x"), BOB, resume_from=old_id)

    alice = session("pages/runs.py", ALICE)
    alice.button(key="runs_resume").click().run()
    assert not alice.exception, [e.value for e in alice.exception]
    new_id = alice.session_state["_train_job"]
    assert new_id != old_id
    wait(mgr, new_id, ("completed",))
    assert runs.get_run(new_id).status["resume_from"] == old_id
    assert runs.resume_checkpoint(runs.run_dir_for(new_id)).endswith("checkpoint-4")

    teacher = session("pages/runs.py", BOB, token=TOKEN)
    teacher.selectbox(key="runs_detail").set_value(old_id).run()
    assert [b for b in teacher.button if b.key == "runs_resume"]
