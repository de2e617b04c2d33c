"""The class board (every finished run in one chart, teacher can hide runs) and the read-only
follow view (?follow=<run id>), with run folders written directly: no training needed."""
from __future__ import annotations

import json
import os
import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from core import board, jobs, runs
from core.config import RunConfig
from tests.helpers.apptest import APP, OWNER_KEY, TIMEOUT

ADMIN_KEY = "_playground_admin_token"

pytestmark = pytest.mark.usefixtures("clean_app")


def _cfg(method: str = "lora", name: str = "", task: str = "classification", **params) -> RunConfig:
    return RunConfig.from_dict({"name": name, "model": {"name": "minilm"},
                                "data": {"source": "builtin:sentiment", "task": task},
                                "method": {"name": method, "params": params},
                                "train": {"epochs": 1, "learning_rate": 1e-3}})


def finished_run(method: str, accuracy: float | None, trainable: int, nickname: str, name: str = "",
                 state: str = "completed", owner: str = "someone", task: str = "classification") -> str:
    run_dir = runs.create_run(_cfg(method, name, task), owner)
    final = {"eval_loss": 0.5} if accuracy is None else {"eval_accuracy": accuracy, "eval_loss": 0.5}
    runs.write_summary(run_dir, {"state": state, "method": method, "model": "prajjwal1/bert-tiny",
                                 "trainable_params": trainable, "total_params": 4_400_000,
                                 "train_time_s": 12.5, "n_train": 64, "final": final})
    runs.write_status(run_dir, state, nickname=nickname)
    return os.path.basename(run_dir)


def three_owners() -> dict[str, str]:
    return {"teacher": finished_run("lora", 0.81, 12_000, "Ms <b>Lee</b> & co", name="teacher lora"),
            "ana": finished_run("ia3", 0.74, 900, "ana", name="ana ia3"),
            "ben": finished_run("full", 0.86, 4_400_000, "ben", name="ben full")}


# ------------------------------------------------------------------------------------- core

def test_board_rows_hold_finished_runs_with_accuracy_and_hiding_persists(runs_dir):
    ids = three_owners()
    finished_run("lora", None, 5000, "sft person", task="classification")  # no held-out accuracy
    failed = finished_run("lora", 0.5, 5000, "x", state="failed")
    rows = board.rows()
    assert [r["id"] for r in rows] == [ids["teacher"], ids["ana"], ids["ben"]]
    teacher = rows[0]
    assert (teacher["method"], teacher["accuracy"], teacher["trainable_params"]) == ("lora", 0.81, 12_000)
    assert teacher["nickname"] == "Ms <b>Lee</b> & co" and teacher["settings"]["learning_rate"] == 1e-3
    assert failed not in [r["id"] for r in rows]

    board.set_hidden(ids["ana"], True)
    assert ids["ana"] not in [r["id"] for r in board.rows()]
    # on disk: a fresh read (another session, a restart) sees it hidden; the run itself is untouched
    with open(os.path.join(runs_dir, board.HIDDEN_FILE)) as fh:
        assert json.load(fh) == {"hidden": [ids["ana"]]}
    assert [r["hidden"] for r in board.rows(include_hidden=True)] == [False, True, False]
    assert runs.get_run(ids["ana"]).state == "completed"
    board.set_hidden(ids["ana"], False)
    assert len(board.rows()) == 3
    with pytest.raises(runs.NotFound):
        board.set_hidden("../etc", True)


def test_a_damaged_hidden_file_hides_nothing(runs_dir):
    three_owners()
    with open(os.path.join(runs_dir, board.HIDDEN_FILE), "w") as fh:
        fh.write("{not json")
    assert len(board.rows()) == 3


# -------------------------------------------------------------------------------------- page

def _board_app(query: dict | None = None, **state) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/board.py")
    for key, value in (query or {}).items():
        at.query_params[key] = value
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def test_board_page_draws_one_colour_per_method_with_escaped_hover(runs_dir):
    ids = three_owners()
    at = _board_app()
    specs = _chart_specs(at)
    assert len(specs) == 2  # against trainable parameters and against training time
    traces = specs[0]["data"]
    assert sorted(t["name"] for t in traces) == ["full", "ia3", "lora"]
    assert len({t["marker"]["color"] for t in traces}) == 3
    lora = next(t for t in traces if t["name"] == "lora")
    assert lora["x"] == [12_000] and lora["y"] == [0.81] and lora["customdata"] == [ids["teacher"]]
    hover = lora["text"][0]
    assert "Ms &lt;b&gt;Lee&lt;/b&gt; &amp; co" in hover and "<b>Lee" not in hover
    assert "learning_rate=0.001" in hover
    table = " ".join(m.value for m in at.markdown)
    assert f"board?follow={ids['ben']}" in table
    assert not [e for e in at.expander if "hide runs" in e.label]  # not the teacher: no hide box


def test_teacher_hides_a_run_from_the_board(runs_dir, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_ADMIN_TOKEN", "teacher-secret")
    ids = three_owners()
    at = _board_app(**{ADMIN_KEY: "teacher-secret"})
    at.multiselect(key="board_hidden").select(ids["ana"]).run()
    at.button(key="board_hide_save").click().run()
    assert not at.exception
    assert board.hidden_ids() == {ids["ana"]}
    names = sorted(t["name"] for t in _chart_specs(at)[0]["data"])
    assert names == ["full", "lora"]


def test_follow_view_shows_live_progress_of_anothers_run_without_stop(runs_dir):
    release = threading.Event()

    def slow_run(cfg, run_dir, on_event, stop):
        on_event({"type": "start", "max_steps": 10, "step": 0})
        for step in (1, 2, 3):
            on_event({"type": "log", "step": step, "max_steps": 10, "loss": 1.0 / step, "learning_rate": 1e-3})
            on_event({"type": "progress", "step": step, "max_steps": 10})
        release.wait(30)
        return {"state": "completed"}

    manager = jobs.get_manager(run_fn=slow_run)
    run_id = manager.submit(_cfg(name="teacher demo"), "teacher-owner")
    deadline = time.time() + 10
    while manager.snapshot(run_id)["progress"]["step"] != 3 and time.time() < deadline:
        time.sleep(0.05)
    try:
        at = _board_app({"follow": run_id}, **{OWNER_KEY: "student-owner"})
        assert any(t.value == "Following a run" for t in at.title)
        assert any("**running**" in m.value for m in at.markdown)
        bars = at.get("progress")
        assert bars and "step 3/10" in bars[0].proto.text
        assert _chart_specs(at)  # the training-loss chart
        labels = [b.label for b in at.button]
        assert not [lab for lab in labels if lab in ("Stop", "Cancel", "Delete")], labels
        assert manager.snapshot(run_id)["state"] == "running"  # looking did not touch it
    finally:
        release.set()


def test_follow_view_refuses_a_bad_id(runs_dir):
    at = _board_app({"follow": "../../etc/passwd"})
    assert any("is not a run id" in e.value for e in at.error)
