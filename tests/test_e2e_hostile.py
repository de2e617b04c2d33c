"""Hostile visitor text in a real browser (issue 25): run names, an experiment title and uploaded
prompts made of link/image/HTML payloads never become an <a> or <img> in another visitor's page,
and the browser never asks the attacker's hosts for anything.

Runs with payload names (and an SFT run trained on an upload of payload prompts) are written before
the server starts; an attacker's browser queues an experiment with a payload title (the sidebar of
every visitor lists it); a visitor then looks at Runs, the sidebar and Compare. Screenshots at
1280x720 go to test-output/screenshots/hostile-*.png.

Run: python -m pytest tests/test_e2e_hostile.py -q -m e2e   (about 2-3 minutes on 2 CPU cores)
"""
from __future__ import annotations

import json
import os
import re

import pytest

from tests.helpers.browser import SHOTS, app_server, chromium, expect, goto, idle, new_page
from tests.helpers.finished_runs import make_run, runs_folder, trained_run

VIEWPORT = {"width": 1280, "height": 720}
PAGE_S = 180
ADMIN_TOKEN = "teacher-token-for-the-test"
MARKERS = ("evil.example", "2130706433", "127.0.0.1:9")  # the attacker's hosts: never a link, never fetched

NAMES = [
    "http://2130706433:8701/login?x=1",
    "www.evil.example/path",
    "thief@evil.example",
    "=HYPERLINK(\"http://evil.example\",\"x\")",
    "[click me](http://evil.example/a)",
    "![pixel](http://evil.example/pixel.png)",
    "<a href='http://evil.example/b' target=_blank>legend link</a>",
    "<img src=http://evil.example/i.png>",
]
EXPERIMENT_TITLE = "![i](http://127.0.0.1:9/i.png) http://2130706433:8701/ <a href=//x>y</a>"  # max 80
PROMPTS = ["![pixel](http://evil.example/prompt.png)", "<img src=http://evil.example/p2.png> hi",
           "see http://2130706433:8701/login?x=1 now", "[free](http://evil.example/c) www.evil.example"]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _hostile_runs(runs_dir: str, uploads: str, tiny_llama: str) -> None:
    os.makedirs(uploads, exist_ok=True)
    upload = os.path.join(uploads, "0123456789abcdef0123456789abcdef.jsonl")
    with open(upload, "w") as fh:
        fh.write("\n".join(json.dumps({"prompt": p, "response": "ok"}) for p in PROMPTS * 3) + "\n")
    trained_run({"name": NAMES[5], "model": {"name": tiny_llama},
                 "data": {"source": upload, "task": "sft", "max_length": 32, "val_share": 0.5},
                 "method": {"name": "lora"}, "train": {"max_steps": 1, "batch_size": 4}}, owner="the-attacker")
    for name in NAMES:  # the newest (the last made) are the three the Runs chart overlays first
        make_run(owner="the-attacker", name=name, weights=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_llama):
    tmp = tmp_path_factory.mktemp("e2e-hostile")
    runs_dir, uploads = str(tmp / "runs"), str(tmp / "uploads")
    with runs_folder(runs_dir):  # only for writing them here; the server gets its own env
        _hostile_runs(runs_dir, uploads, tiny_llama)
    with app_server(tmp, 120, PLAYGROUND_RUNS_DIR=runs_dir, PLAYGROUND_UPLOADS_DIR=uploads,
                    PLAYGROUND_ADMIN_TOKEN=ADMIN_TOKEN) as url:
        yield {"url": url}


@pytest.fixture(scope="module")
def browser(server):
    os.makedirs(SHOTS, exist_ok=True)
    with chromium() as b:
        yield b


def _page(browser, requested: list[str]):
    pg = new_page(browser, VIEWPORT, PAGE_S)
    pg.on("request", lambda r: requested.append(r.url))
    return pg


def hostile_elements(pg) -> list[str]:
    """Every <a> (HTML or SVG, as Plotly draws legends) and <img>/<image> pointing at the attacker."""
    found = pg.evaluate("""() => [...document.querySelectorAll('a, img, image, iframe, source')].map(e =>
        e.tagName + ' ' + (e.getAttribute('href') || e.getAttribute('xlink:href') || e.getAttribute('src') || ''))""")
    return [f for f in found if any(m in f for m in MARKERS)]


def assert_clean(pg, requested: list[str], where: str) -> None:
    assert not hostile_elements(pg), (where, hostile_elements(pg))
    fetched = [u for u in requested if any(m in u for m in MARKERS)]
    assert not fetched, (where, fetched)


def test_payloads_are_inert_in_the_browser(server, browser):
    requested: list[str] = []
    # The attacker queues an experiment whose title is a payload: it goes into every sidebar.
    attacker = _page(browser, requested)
    attacker.goto(server["url"] + "/experiments")
    expect(attacker.get_by_role("heading", name="Experiments", exact=True)).to_be_visible()
    idle(attacker)
    box = attacker.get_by_label("Experiment name")
    box.fill(EXPERIMENT_TITLE)
    box.press("Enter")
    idle(attacker)
    attacker.get_by_role("button", name=re.compile(r"^Queue \d+ runs$")).click()
    idle(attacker)

    visitor = _page(browser, requested)
    visitor.goto(server["url"] + "/runs")
    expect(visitor.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
    idle(visitor)
    sidebar = visitor.get_by_test_id("stSidebar")
    expect(sidebar).to_contain_text("2130706433")  # the queued names are listed, as text
    expect(visitor.locator(".js-plotly-plot .legend").first).to_contain_text("legend link")
    visitor.wait_for_timeout(1500)  # let plotly finish drawing every chart
    assert_clean(visitor, requested, "Runs + sidebar")
    visitor.screenshot(path=os.path.join(SHOTS, "hostile-runs.png"))
    visitor.get_by_test_id("stMain").evaluate("m => m.scrollTo(0, m.scrollHeight)")
    visitor.wait_for_timeout(800)
    visitor.screenshot(path=os.path.join(SHOTS, "hostile-runs-bottom.png"))

    # Compare, as a visitor: the attacker's uploaded prompts are not shown at all.
    goto(visitor, "Compare", "Compare base and fine-tuned")
    expect(visitor.get_by_text("General:", exact=False).first).to_be_visible()
    assert "prompt.png" not in visitor.content() and "free" not in visitor.get_by_test_id("stMain").inner_text()
    assert_clean(visitor, requested, "Compare (visitor)")
    visitor.screenshot(path=os.path.join(SHOTS, "hostile-compare-visitor.png"))

    # Compare, as a teacher (admin): the rows are shown, as plain text on the buttons.
    visitor.get_by_test_id("stSidebar").get_by_text("Admin", exact=True).click()
    token = visitor.get_by_label("Admin token", exact=True)
    token.fill(ADMIN_TOKEN)
    token.press("Enter")
    idle(visitor)
    main = visitor.get_by_test_id("stMain")
    expect(main.get_by_role("button").filter(has_text="http").first).to_be_visible()
    assert main.get_by_role("button").filter(has_text="evil.example").count() >= 2
    assert_clean(visitor, requested, "Compare (admin)")
    main.get_by_role("button").filter(has_text="evil.example").first.click()  # sends it: echoed in both panes
    idle(visitor)
    expect(visitor.get_by_test_id("stChatMessage").first).to_be_visible()
    assert_clean(visitor, requested, "Compare chat")
    visitor.screenshot(path=os.path.join(SHOTS, "hostile-compare-admin.png"))
    assert_clean(attacker, requested, "the attacker's own page")
