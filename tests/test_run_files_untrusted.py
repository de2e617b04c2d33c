"""Every run file is untrusted input: a malformed run folder is listed as "unreadable" with the
reason on Runs, never a traceback, and never breaks the page (Runs, Compare, Train,
Experiments) for the other runs and visitors."""
from __future__ import annotations

import json
import os

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, runs
from tests.helpers.apptest import OWNER_KEY, open_app
from tests.helpers.finished_runs import make_run

pytestmark = pytest.mark.usefixtures("clean_app")


def _patch(run_dir: str, file: str, update: dict) -> None:
    path = os.path.join(run_dir, file)
    with open(path) as fh:
        data = json.load(fh)
    data.update(update)
    with open(path, "w") as fh:
        json.dump(data, fh)


def _write(run_dir: str, file: str, text: str | bytes) -> None:
    with open(os.path.join(run_dir, file), "wb") as fh:
        fh.write(text.encode() if isinstance(text, str) else text)


# (id, how to break a run folder, a fragment of the reason shown)
MALFORMED = [
    ("owner-not-text", lambda d: _patch(d, "status.json", {"owner": 12345}), "status.json: owner is a number"),
    ("owner-object", lambda d: _patch(d, "status.json", {"owner": {"$ne": ""}}), "status.json: owner is an object"),
    ("final-not-object", lambda d: _patch(d, "summary.json", {"final": "0.99"}),
     "summary.json: final is a text, not an object"),
    ("final-accuracy-text", lambda d: _patch(d, "summary.json", {"final": {"eval_accuracy": "99%"}}),
     "summary.json: final.eval_accuracy='99%' is not a number"),
    ("summary-number-text", lambda d: _patch(d, "summary.json", {"trainable_percent": "lots"}),
     "trainable_percent='lots' is not a number"),
    ("config-a-list", lambda d: _write(d, "config.json", "[1, 2, 3]"), "config.json holds a list, not an object"),
    ("config-method-text", lambda d: _patch(d, "config.json", {"method": "lora"}),
     "config.json: method is a text, not an object"),
    ("status-not-json", lambda d: _write(d, "status.json", "{not json"), "status.json is not valid JSON"),
    ("status-missing", lambda d: os.unlink(os.path.join(d, "status.json")), "status.json is missing"),
    ("name-a-list", lambda d: _patch(d, "status.json", {"name": ["a", "b"]}), "status.json: name is a list"),
    ("summary-huge", lambda d: _write(d, "summary.json", b" " * (runs.MAX_RUN_JSON_BYTES + 1) + b"{}"),
     "summary.json is 4.2 MB, more than a run file may hold"),
    ("summary-deep", lambda d: _write(d, "summary.json", "[" * 100000 + "]" * 100000),
     "summary.json"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_run_is_listed_unreadable_with_its_reason(case):
    _, breaks, reason = case
    good = make_run(name="the good one")
    bad = make_run(name="the bad one")
    breaks(bad)
    listed = {i.id: i for i in runs.list_runs()}
    assert set(listed) == {os.path.basename(good), os.path.basename(bad)}
    broken = listed[os.path.basename(bad)]
    assert broken.state == runs.UNREADABLE and reason in broken.problem, broken.problem
    assert broken.config == {} and broken.summary == {}
    assert listed[os.path.basename(good)].state == "completed"
    # Ownership checks on it answer instead of raising (hmac.compare_digest on a number did).
    assert jobs.get_manager().can_access(broken.id, "someone-else") is False


def test_metrics_garbage_and_huge_lines_are_skipped(monkeypatch):
    run_dir = make_run()
    with open(os.path.join(run_dir, "metrics.jsonl"), "ab") as fh:
        fh.write(b"\x00\xff garbage\n[1, 2]\n\"text\"\n{\"type\": \"log\", \"step\": 3, \"loss\": 0.6}\n")
        fh.write(b"{\"pad\": \"" + b"x" * (runs.MAX_METRIC_LINE_BYTES + 10) + b"\"}\n")
        fh.write(b"{\"type\": \"log\", \"step\": 4, \"loss\": 0.5}\n{\"torn")
    events = runs.read_metrics(run_dir)
    assert [e.get("step") for e in events] == [1, 2, 3, 4]
    monkeypatch.setattr(runs, "MAX_METRICS_BYTES", 200)  # a huge file: only its end is read
    tail = runs.read_metrics(run_dir)
    assert tail and tail[-1]["step"] == 4 and len(tail) < 4


def _app(page: str, owner: str = "owner-b") -> AppTest:
    return open_app(page, state={OWNER_KEY: owner})


def _all_text(at: AppTest) -> str:
    from tests.page_text import page_text
    return page_text(at)


def test_the_three_reported_defects_leave_every_page_working():
    """status owner not a string, summary final not an object, non-numeric final.eval_accuracy: each
    broke the Runs page for every visitor with a traceback (issue 25)."""
    good = make_run(name="the good one")
    for breaks in (lambda d: _patch(d, "status.json", {"owner": 7}),
                   lambda d: _patch(d, "summary.json", {"final": [0.9]}),
                   lambda d: _patch(d, "summary.json", {"final": {"eval_accuracy": "high"}})):
        breaks(make_run(owner="owner-b", name="broken"))
    for page in ("pages/runs.py", "pages/compare.py", "pages/train.py", "pages/experiments.py"):
        at = _app(page)
        assert not at.exception, (page, [e.value for e in at.exception])
    at = _app("pages/runs.py")
    table = at.dataframe[0].value
    assert sorted(table["Status"]) == ["completed", "unreadable", "unreadable", "unreadable"]
    warning = " ".join(w.value for w in at.warning)
    assert "3 run folder(s) could not be read" in warning
    assert "owner is a number" in warning and "final is a list" in warning
    assert "eval" in warning and "is not a number" in warning
    # Picking a broken run shows its reason, not a traceback; the good run still shows its numbers.
    broken_id = next(i.id for i in runs.list_runs() if i.state == runs.UNREADABLE)
    at.selectbox(key="runs_detail").set_value(broken_id).run()
    assert not at.exception
    assert any("unreadable" in w.value for w in at.warning)
    at.selectbox(key="runs_detail").set_value(os.path.basename(good)).run()
    assert not at.exception and "75.0%" in [m.value for m in at.metric]


def test_the_owner_of_an_unreadable_run_can_delete_it():
    run_dir = make_run(owner="owner-b")
    _patch(run_dir, "summary.json", {"final": "x"})
    at = _app("pages/runs.py", owner="owner-b")
    at.checkbox(key="runs_confirm_delete").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception and not os.path.exists(run_dir)
