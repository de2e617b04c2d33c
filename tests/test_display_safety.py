"""Nothing a visitor types is ever markup for another (issue 25).

PAYLOADS go through the three escaping functions (core.textsafe) and through every place the app
shows a run name, a label, a prompt or a dataset row: the sidebar, Runs (table, charts, details),
Compare (example buttons, caption, class bars), Experiments. The real-browser check of the same
payloads is tests/test_e2e_hostile.py.
"""
from __future__ import annotations

import json
import os
import re
import threading

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, runs
from core.config import RunConfig
from core.textsafe import FORMULA_PREFIXES, JOINER, csv_cell, md_text, plotly_text
from tests.helpers.apptest import OWNER_KEY, open_app
from tests.helpers.finished_runs import make_run, trained_run
from tests.page_text import page_text


PAYLOADS = [
    "http://2130706433:8701/login?x=1",
    "https://evil.example/steal?c=1",
    "HTTP://EVIL.EXAMPLE",
    "www.evil.example/path",
    "thief@evil.example",
    "mailto:thief@evil.example",
    "[click me](http://evil.example)",
    "![pixel](http://evil.example/pixel.png)",
    "<a href='http://evil.example' target=_blank>x</a>",
    "<img src=http://evil.example/i.png>",
    "<b>bold</b><br>next",
    "=HYPERLINK(\"http://evil.example\",\"x\")",
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    ":red[big] :material/home: :smile:",
    "**bold** _it_ `code` $x^2$ # head",
    "line one\n# heading\n- item",
]
# What must never survive in a markdown body: the raw starts of a link, an autolink, an image or HTML.
MD_FORBIDDEN = [re.compile(p, re.I) for p in (
    r"://", r"\]\(", r"(?<!\\)<(a|img|b)\b", r"\bwww\.", r"[\w.+-]@\w", r":red\[", r":material/", r":smile:",
    r"\n#")]


def md_is_inert(body: str) -> list[str]:
    """The patterns found in a markdown body that would become a link, image, HTML or styling."""
    return [p.pattern for p in MD_FORBIDDEN if p.search(body)]


# ----------------------------------------------------------------------------------- the functions

@pytest.mark.parametrize("payload", PAYLOADS)
def test_md_text_leaves_no_markup(payload):
    out = md_text(payload)
    assert not md_is_inert(out), (payload, out)
    assert "\n" not in out
    # Shown literally: unescaping gives back the visitor's characters (newlines as spaces).
    shown = re.sub(r"\\(.)", r"\1", out).replace(JOINER, "")
    assert shown == re.sub(r"[\t\n]", " ", payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_plotly_text_leaves_no_tag(payload):
    out = plotly_text(payload)
    assert "<" not in out and ">" not in out
    assert out.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&") == re.sub(r"[\t\n]", " ", payload)


@pytest.mark.parametrize("payload", PAYLOADS)
def test_csv_cell_never_starts_a_formula(payload):
    assert not str(csv_cell(payload)).startswith(FORMULA_PREFIXES)
    assert csv_cell(-3.5) == -3.5 and csv_cell(None) is None


def test_md_text_keeps_line_breaks_for_chat_and_shortens():
    assert md_text("a\n![x](http://e/x.png)", multiline=True) == "a  \n" + md_text("![x](http://e/x.png)")
    assert len(md_text("x" * 5000)) == 300


# ------------------------------------------------------------------------------------ the pages

def _hand_made_run(name: str, owner: str, method: str = "lora") -> str:
    run_dir = make_run(owner=owner, name=name, weights=False)
    path = os.path.join(run_dir, "config.json")
    with open(path) as fh:
        cfg = json.load(fh)
    cfg["method"]["name"] = method
    with open(path, "w") as fh:
        json.dump(cfg, fh)
    return run_dir


def _markdown_bodies(at: AppTest) -> list[str]:
    """Every text the browser renders as markdown: markdown, captions, alerts, button and chat text."""
    out = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title", "header", "subheader"):
        out += [e.value for e in at.get(kind)]
    out += [b.label for b in at.button]
    for side in (at.sidebar,):
        out += [e.value for e in side.markdown] + [e.value for e in side.caption]
    return out


def _plotly_texts(at: AppTest) -> str:
    return "\n".join(chart.proto.spec for chart in at.get("plotly_chart"))


def _assert_inert(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    bad = {body[:120]: md_is_inert(body) for body in _markdown_bodies(at) if md_is_inert(body)}
    assert not bad, bad
    spec = _plotly_texts(at)
    for tag in ("<a", "<img", "<b>", "<br>"):
        assert tag not in spec.lower(), tag


def test_payload_run_names_are_inert_on_runs_experiments_and_in_the_csv(clean_app):
    for i, payload in enumerate(PAYLOADS):
        _hand_made_run(payload, owner="attacker", method=("lora", "ia3", "full")[i % 3])
    at = open_app("pages/runs.py", state={OWNER_KEY: "visitor"})
    at.multiselect(key="runs_curves").set_value([i.id for i in runs.list_runs()]).run()
    _assert_inert(at)
    assert len(at.get("plotly_chart")) >= 3  # curves, accuracy, methods: the legends held the names
    names = list(at.dataframe[0].value["Run"])
    assert all(not n.startswith(FORMULA_PREFIXES) for n in names), names
    assert "'=HYPERLINK(\"http://evil.example\",\"x\")" in names  # still readable, as text
    for run_id in [i.id for i in runs.list_runs()][:6]:
        at.selectbox(key="runs_detail").set_value(run_id).run()
        _assert_inert(at)
    at.switch_page("pages/experiments.py").run()
    _assert_inert(at)


def test_payload_names_in_the_sidebar_queue_are_inert(clean_app):
    release = threading.Event()

    def blocked(cfg, run_dir, on_event, stop):  # holds the worker so the runs stay active/queued
        release.wait(60)
        return {"state": "completed"}

    mgr = jobs.get_manager(run_fn=blocked)
    base = {"model": {"name": "minilm"}, "data": {"source": "builtin:sentiment", "task": "classification"},
            "method": {"name": "lora"}, "train": {"max_steps": 1}}
    try:
        for payload in PAYLOADS[:8]:
            mgr.submit(RunConfig.from_dict({**base, "name": payload}), "attacker")
        at = open_app(state={OWNER_KEY: "visitor"})
        sidebar = [e.value for e in at.sidebar.markdown] + [e.value for e in at.sidebar.caption]
        assert len(sidebar) >= 8, sidebar
        bad = {b: md_is_inert(b) for b in sidebar if md_is_inert(b)}
        assert not bad, bad
        assert any("evil" in b for b in sidebar)  # the names are there, only inert
    finally:
        release.set()


def _sft_run_on_upload(tiny_llama: str, tmp_path, owner: str) -> str:
    upload = tmp_path / "hostile.jsonl"
    rows = [{"prompt": p, "response": "ok"} for p in PAYLOADS[:8] * 2]
    upload.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return trained_run({"model": {"name": tiny_llama},
                        "data": {"source": str(upload), "task": "sft", "max_length": 32, "val_share": 0.5},
                        "method": {"name": "lora"}, "train": {"max_steps": 1, "batch_size": 4}}, owner=owner)


def test_compare_examples_are_the_owners_only_and_inert(clean_app, tiny_llama, tmp_path):
    run_id = _sft_run_on_upload(tiny_llama, tmp_path, owner="attacker")
    # Another visitor: no row of the attacker's upload, only the general question.
    at = open_app("pages/compare.py", state={OWNER_KEY: "visitor", "compare_run": run_id}, timeout=90)
    _assert_inert(at)
    labels = [b.label for b in at.button if (b.key or "").startswith("cmp_ex_")]
    assert labels and all(label.startswith("General") for label in labels), labels
    assert "evil" not in page_text(at).lower()
    # The owner sees rows of their own upload, inert.
    at = open_app("pages/compare.py", state={OWNER_KEY: "attacker", "compare_run": run_id}, timeout=90)
    _assert_inert(at)
    labels = [b.label for b in at.button if (b.key or "").startswith("cmp_ex_")]
    assert len(labels) >= 2 and any("evil" in label.lower() for label in labels), labels
    # Sending one: the prompt echoed in both panes is inert too.
    at.slider(key="cmp_max_new").set_value(8)
    next(b for b in at.button if b.key == "cmp_ex_0").click().run()
    _assert_inert(at)
