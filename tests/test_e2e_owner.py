"""In a real browser: you keep what you started. A reload used to take a run away from the person
who started it (ownership was the Streamlit session): Stop vanished, and when the run ended its
result card and downloads were gone for them. Now the owner token lives in a cookie.

Also takes 1280x720 screenshots of the sidebar (queue, nickname) and the Runs page for a human.
Run: python -m pytest tests/test_e2e_owner.py -q -m e2e
"""
from __future__ import annotations

import json
import os
import re
import time

import pytest

from tests.helpers.browser import PAGE_S, SHOTS, TRAIN_S, app_server, click_start, chromium, expect, idle, run_state, set_number

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
VIEWPORT = {"width": 1280, "height": 720}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e_owner")
    with app_server(tmp, drop=("PLAYGROUND_ADMIN_TOKEN",)) as url:
        yield {"url": url, "runs": tmp / "runs"}


def open_train(pg, url: str) -> None:
    pg.goto(f"{url}/train")
    expect(pg.get_by_role("heading", name="Train", exact=True)).to_be_visible(timeout=PAGE_S * 1000)
    idle(pg)


def stop_button(pg):
    return pg.get_by_test_id("stMain").get_by_role("button", name=re.compile(r"^(Stop|Cancel)$"))


def test_reload_keeps_stop_and_result_card_for_the_owner_only(server):
    os.makedirs(SHOTS, exist_ok=True)
    with chromium() as browser:
        owner = browser.new_context(viewport=VIEWPORT)
        other = browser.new_context(viewport=VIEWPORT)  # another person: a separate cookie jar
        for ctx in (owner, other):
            ctx.set_default_timeout(PAGE_S * 1000)
        expect.set_options(timeout=PAGE_S * 1000)
        pg = owner.new_page()
        open_train(pg, server["url"])
        nick = pg.get_by_label("Your name, shown beside your runs", exact=True)
        nick.fill("Ada <b>x</b>")
        nick.press("Enter")
        idle(pg)
        set_number(pg, "N samples (0 = all)", 400)  # long enough to reload while it trains
        set_number(pg, "Max length (tokens)", 64)
        box = pg.get_by_label("Run name (optional)", exact=True)
        box.fill("kept after reload")
        box.press("Enter")
        idle(pg)
        click_start(pg)
        expect(stop_button(pg)).to_be_visible()
        cookies = {c["name"]: c["value"] for c in owner.cookies()}
        assert re.fullmatch(r"[0-9a-f]{48}", cookies.get("peft_playground_owner", "")), cookies

        # F5: a new Streamlit session, same browser. Before the fix: "belongs to another session".
        pg.reload()
        expect(pg.get_by_role("heading", name="Train", exact=True)).to_be_visible()
        idle(pg)
        main = pg.get_by_test_id("stMain")
        expect(main.get_by_text("kept after reload · ", exact=False).first).to_be_visible()
        if run_state(pg) in ("queued", "running"):
            expect(stop_button(pg)).to_be_visible()
            expect(main.get_by_text("belongs to another session", exact=False)).to_have_count(0)
            # The nickname came back from its cookie and is shown as text, not as HTML.
            expect(pg.get_by_label("Your name, shown beside your runs", exact=True)).to_have_value("Ada <b>x</b>")
            pg.screenshot(path=os.path.join(SHOTS, "owner_1280_train_after_reload.png"))

            # Someone else sees the run training but cannot stop it.
            them = other.new_page()
            open_train(them, server["url"])
            if run_state(them) == "running":
                expect(them.get_by_test_id("stMain").get_by_text("belongs to another session",
                                                                 exact=False)).to_be_visible()
                expect(stop_button(them)).to_have_count(0)
            them.close()

        deadline = time.monotonic() + TRAIN_S
        while run_state(pg) in ("queued", "running", ""):
            assert time.monotonic() < deadline, "the run did not finish"
            pg.wait_for_timeout(1000)
        assert run_state(pg) == "completed", pg.get_by_test_id("stAlert").all_inner_texts()
        expect(pg.get_by_role("button", name="Compare base vs tuned")).to_be_visible()

        # Reload after the end: the result card, Compare and the download are still there for the owner.
        pg.reload()
        expect(pg.get_by_role("heading", name="Train", exact=True)).to_be_visible()
        idle(pg)
        expect(pg.get_by_role("button", name="Compare base vs tuned")).to_be_visible()
        expect(pg.get_by_role("button", name="Download weights (zip)")).to_be_visible()
        expect(pg.get_by_text("Result", exact=True)).to_be_visible()
        run_dir = next(server["runs"].iterdir())
        status = json.loads((run_dir / "status.json").read_text())
        assert status["nickname"] == "Ada <b>x</b>" and status["state"] == "completed"

        # The other person has no result card of it.
        them = other.new_page()
        open_train(them, server["url"])
        expect(them.get_by_role("button", name="Compare base vs tuned")).to_have_count(0)

        # Runs page, 1280x720: "My runs only" keeps the owner's run; the nickname shows as text.
        pg.get_by_test_id("stSidebarNav").get_by_role("link", name="Runs", exact=True).click()
        expect(pg.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
        idle(pg)
        pg.get_by_text("My runs only", exact=True).click()
        idle(pg)
        expect(pg.get_by_text("1 run(s), newest first", exact=False)).to_be_visible()
        pg.screenshot(path=os.path.join(SHOTS, "owner_1280_runs_mine.png"))
        them.get_by_test_id("stSidebarNav").get_by_role("link", name="Runs", exact=True).click()
        expect(them.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
        idle(them)
        them.get_by_text("My runs only", exact=True).click()
        idle(them)
        expect(them.get_by_text("You have no runs yet", exact=False)).to_be_visible()
        # No admin token configured: the Admin box tells the host how to set one.
        sidebar = them.get_by_test_id("stSidebar")
        sidebar.get_by_text("Admin", exact=True).click()
        expect(sidebar.get_by_text("PLAYGROUND_ADMIN_TOKEN", exact=False)).to_be_visible()
        them.screenshot(path=os.path.join(SHOTS, "owner_1280_sidebar_admin.png"))
