"""The class features on the pages (AppTest): the Admin box, the nickname, one-click cancel of an
experiment, the waiting person's place in the sidebar."""
from __future__ import annotations

import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, runs
from tests.helpers.apptest import open_app

GATE = threading.Event()


def gated_trainer(cfg, run_dir, on_event, stop):
    on_event({"type": "progress", "step": 1, "max_steps": 4})
    while not GATE.is_set() and not stop.is_set():
        time.sleep(0.01)
    return {"final": {"eval_accuracy": 0.7}, "train_time_s": 1.0}


@pytest.fixture
def page_env(clean_app, monkeypatch):
    for var in ("PLAYGROUND_MAX_QUEUE", "PLAYGROUND_WORKERS"):
        monkeypatch.delenv(var, raising=False)
    GATE.clear()
    jobs.get_manager(run_fn=gated_trainer)
    yield
    GATE.set()  # before clean_app's reset, which waits for the worker


def _page(path: str) -> AppTest:
    return open_app(path, direct=True, timeout=90)


def _sidebar_script():
    # What app.py draws in the sidebar for the class, drawn in the main area: in AppTest the real
    # sidebar is empty after the process's first app run (on main too), so it cannot be clicked.
    from core import jobs
    from pages.classroom import admin_box, queue_lines, sidebar_class
    sidebar_class()
    queue_lines(jobs.get_manager().queue())
    admin_box()


def _sidebar(**state) -> AppTest:
    at = AppTest.from_function(_sidebar_script, default_timeout=60)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def _text(at: AppTest) -> str:
    return " ".join([m.value for m in at.markdown] + [c.value for c in at.caption])


def test_admin_box_without_a_token_tells_the_host_how_to_set_one(page_env):
    at = _sidebar()
    assert "PLAYGROUND_ADMIN_TOKEN" in _text(at) and "README" in _text(at)
    assert not [t for t in at.text_input if t.label == "Admin token"]


def test_admin_pauses_bumps_and_cancels_from_the_sidebar(page_env, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_ADMIN_TOKEN", "teacher-secret")
    mgr = jobs.get_manager()
    from tests.helpers.fake_jobs import FakeCfg
    first = mgr.submit(FakeCfg(name="first"), owner="a")
    while mgr.snapshot(first)["state"] != "running":
        time.sleep(0.01)
    a2 = mgr.submit(FakeCfg(name="a-second"), owner="a")
    b1 = mgr.submit(FakeCfg(name="b-first"), owner="b")
    at = _sidebar(_playground_admin_token="guess")
    assert "not the admin token" in _text(at) and not [b for b in at.button if b.key == "adm_pause"]
    at.text_input(key="_playground_admin_token").input("teacher-secret").run()
    at.button(key="adm_pause").click().run()
    assert mgr.paused and "paused" in _text(at)
    at.selectbox(key="adm_pick").set_value(a2).run()
    at.button(key="adm_bump").click().run()
    assert [s["id"] for s in mgr.queue()] == [a2, b1]
    at.selectbox(key="adm_pick").set_value(b1).run()
    at.button(key="adm_cancel").click().run()
    assert mgr.snapshot(b1)["state"] == "cancelled"
    assert at.button(key="adm_pause").label == "Resume the queue"
    at.button(key="adm_pause").click().run()
    assert not mgr.paused
    assert not at.exception, at.exception


def test_nickname_goes_into_status_json_and_is_escaped_in_the_queue(page_env):
    at = _sidebar()
    at.text_input(key="_playground_nickname").input("**Eve** [x](http://evil)").run()
    mgr = jobs.get_manager()
    from tests.helpers.fake_jobs import FakeCfg
    owner = at.session_state["_playground_owner_id"]
    running = mgr.submit(FakeCfg(name="someone's"), owner="someone")
    while mgr.snapshot(running)["state"] != "running":
        time.sleep(0.01)
    mine = mgr.submit(FakeCfg(name="mine"), owner=owner)
    assert runs.read_status(runs.run_dir_for(mine))["nickname"] == "**Eve** [x](http://evil)"
    at.run()
    line = next(c.value for c in at.caption if "mine" in c.value)
    assert "\\*\\*Eve\\*\\*" in line and "\\[x\\]\\(http" in line, line
    assert "(yours)" in line and line.startswith("1. "), line


def test_cancel_the_rest_of_an_experiment_in_one_click(page_env):
    at = _page("pages/experiments.py")
    at.button(key="exp_preset_how_much_data").click().run()
    assert not at.exception, at.exception
    mgr = jobs.get_manager()
    wanted = at.session_state["_exp_wanted"]
    at.run()
    cancel = at.button(key=f"exp_cancel_{wanted}")
    cancel.click().run()
    assert not at.exception, at.exception
    assert any("Cancelled 12 run(s)" in s.value for s in at.success), [s.value for s in at.success]
    deadline = time.time() + 10
    while mgr.active() is not None and time.time() < deadline:
        time.sleep(0.05)
    assert mgr.queue() == [] and mgr.active() is None
    states = {info.state for info in runs.list_runs()}
    assert states <= {"cancelled", "stopped"}, states
