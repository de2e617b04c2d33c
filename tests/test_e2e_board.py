"""A real browser, two people: the teacher starts a run on Train; a student opens its follow link from
the class board in their own browser context, sees it progress live and no Stop button; when it has
finished, the class board shows the runs of three owners (the teacher's and two students' runs
already on the server).

Run: python -m pytest tests/test_e2e_board.py -q   (1-3 minutes on 2 cores)
"""
from __future__ import annotations

import json
import re
import time

import pytest

from tests.helpers.browser import TRAIN_S, app_server, click_start, chromium, expect, idle, new_page, shot
from tests.helpers.finished_runs import runs_folder

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The teacher's run, through the Train page's URL state: MiniLM, 64 built-in rows, 24 short steps.
TEACHER_RUN = "train?n=64&len=32&bs=4&ms=24&evs=12&logs=1&name=teacher+demo"


def _student_run(runs_dir: str, method: str, accuracy: float, trainable: int, nickname: str, owner: str) -> None:
    from core import runs
    from core.config import RunConfig
    cfg = RunConfig.from_dict({"name": f"{nickname} {method}", "model": {"name": "minilm"},
                               "data": {"source": "builtin:sentiment", "task": "classification"},
                               "method": {"name": method, "params": {}}, "train": {"epochs": 1}})
    run_dir = runs.create_run(cfg, owner)
    runs.write_summary(run_dir, {"state": "completed", "method": method, "model": "minilm",
                                 "trainable_params": trainable, "total_params": 22_700_000,
                                 "train_time_s": 30.0, "final": {"eval_accuracy": accuracy}})
    runs.write_status(run_dir, "completed", nickname=nickname)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-board")
    runs_dir = str(tmp / "runs")
    with runs_folder(runs_dir):
        _student_run(runs_dir, "ia3", 0.71, 40_000, "ana", "owner-ana")
        _student_run(runs_dir, "full", 0.83, 22_700_000, "ben", "owner-ben")
    with app_server(tmp, PLAYGROUND_RUNS_DIR=runs_dir) as url:
        yield {"url": url}


@pytest.fixture
def browser(server):
    with chromium() as b:
        yield b


def _page(browser):
    return new_page(browser)  # a context each: separate sessions


def _follow_step(pg) -> int:
    bar = pg.get_by_test_id("stMain").get_by_test_id("stProgress")
    if bar.count() == 0:
        return -1
    match = re.search(r"step (\d+)/", bar.first.inner_text())
    return int(match.group(1)) if match else 0


def _board_points(pg) -> int:
    return pg.evaluate("""() => { const d = document.querySelector('.js-plotly-plot');
        return d ? (d.data || []).reduce((n, t) => n + (t.y || []).length, 0) : 0; }""")


def test_student_follows_the_teachers_run_and_the_board_shows_three_owners(server, browser):
    teacher, student = _page(browser), _page(browser)
    teacher.goto(f"{server['url']}/{TEACHER_RUN}")
    expect(teacher.get_by_role("heading", name="Train", exact=True)).to_be_visible()
    idle(teacher)
    click_start(teacher)
    expect(teacher.get_by_test_id("stMain").get_by_text("teacher demo · ", exact=False).first).to_be_visible()

    # The student finds the run on the board's "Training now" list and opens its follow link.
    student.goto(f"{server['url']}/board")
    expect(student.get_by_role("heading", name="Class board")).to_be_visible()
    link = student.get_by_role("link", name=re.compile("^teacher demo"))
    expect(link).to_be_visible(timeout=30_000)
    href = link.get_attribute("href")
    assert re.search(r"board\?follow=[\w.-]+$", href), href
    # The teacher's Train page offers the same link to share.
    expect(teacher.get_by_role("link", name="a live, read-only view of this run")).to_have_attribute("href", href)
    student.goto(f"{server['url']}/{href.lstrip('./')}")
    expect(student.get_by_role("heading", name="Following a run")).to_be_visible()

    # Live: the step in the student's progress bar moves on while the teacher's run trains.
    deadline = time.monotonic() + TRAIN_S
    first = -1
    while first <= 0:
        assert time.monotonic() < deadline, "the followed run never showed a step"
        student.wait_for_timeout(500)
        first = _follow_step(student)
    expect(student.get_by_text("State: running")).to_be_visible()
    shot(student, "board_01_follow_running")
    later = first
    while later == first and student.get_by_text("State: running").count():
        assert time.monotonic() < deadline, "the followed run's step did not move"
        student.wait_for_timeout(500)
        later = _follow_step(student)
    assert later > first or student.get_by_text("State: completed").count()
    for label in ("Stop", "Cancel", "Delete"):
        expect(student.get_by_role("button", name=label, exact=True)).to_have_count(0)
    # The teacher, on their own page, does have Stop (or the run has already finished).
    assert teacher.get_by_role("button", name="Stop", exact=True).count() or \
        teacher.get_by_text(re.compile(r"teacher demo · completed")).count()

    expect(student.get_by_text("State: completed")).to_be_visible(timeout=TRAIN_S * 1000)
    student.goto(f"{server['url']}/board")
    expect(student.get_by_role("heading", name="Class board")).to_be_visible()
    idle(student)
    deadline = time.monotonic() + 60
    while _board_points(student) < 3:
        assert time.monotonic() < deadline, f"{_board_points(student)} points on the board"
        student.wait_for_timeout(500)
    table = student.get_by_test_id("stMain").inner_text()
    for name in ("teacher demo", "ana ia3", "ben full"):
        assert name in table, table[-2000:]
    assert re.search(r"\b3 people\b|\b2 people\b", table)  # the teacher has no nickname (yet)
    shot(student, "board_02_three_owners")
    traces = json.loads(student.evaluate("() => JSON.stringify(document.querySelector('.js-plotly-plot').data"
                                         ".map(t => t.name))"))
    assert sorted(traces) == ["full", "ia3", "lora"]
