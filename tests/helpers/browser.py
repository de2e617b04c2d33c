"""What the real-browser tests share: Debian's chromium driven by Playwright, `streamlit run app.py` on
a free port, and the page helpers. Importing this skips the importing test module where Playwright or
chromium is missing."""
from __future__ import annotations

import contextlib
import os
import re
import shutil

import pytest

from bench.appserver import AppDidNotStart, offline_env, start_app, stop_app

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHOTS = os.path.join(ROOT, "test-output", "screenshots")
CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}
SERVER_START_S = 90
PAGE_S = 120          # a page's first view may wait for torch/transformers/peft to import
TRAIN_S = 900         # one short run, model load included: minutes only on a crowded shared machine

SERVER_LOGS: list[str] = []  # of the servers running now: a failure quotes the newest one's end

playwright_api = pytest.importorskip("playwright.sync_api")
if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"no chromium at {CHROMIUM} (apt-get install -y chromium)", allow_module_level=True)
expect = playwright_api.expect


@contextlib.contextmanager
def app_server(tmp, start_s: float = SERVER_START_S, drop: tuple[str, ...] = (), **env: str):
    """`streamlit run app.py` on a free localhost port, offline, with the runs and uploads folders under
    `tmp` unless `env` names others, without the variables in `drop`; yields its URL. Stopped
    afterwards: only the server started here, by its own process group."""
    server_env = offline_env(**{"PLAYGROUND_RUNS_DIR": str(tmp / "runs"),
                                "PLAYGROUND_UPLOADS_DIR": str(tmp / "uploads"), **env})
    for name in drop:
        server_env.pop(name, None)
    log = str(tmp / "server.log")
    try:
        proc, url = start_app(server_env, log, start_s)
    except AppDidNotStart as e:
        pytest.fail(str(e))
    SERVER_LOGS.append(log)
    try:
        yield url
    finally:
        stop_app(proc)
        SERVER_LOGS.remove(log)


@contextlib.contextmanager
def chromium():
    """A headless chromium, closed afterwards."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser, viewport: dict = VIEWPORT, page_s: float = PAGE_S, scheme: str | None = None):
    """A page in a context of its own (its own cookies: another person), with `page_s` as the time
    any action and any expect() may wait (expect() has its own default of 5 s)."""
    context = browser.new_context(viewport=viewport, **({"color_scheme": scheme} if scheme else {}))
    pg = context.new_page()
    pg.set_default_timeout(page_s * 1000)
    expect.set_options(timeout=page_s * 1000)
    return pg


def idle(pg, timeout_s: float | None = None) -> None:
    """Wait until the script run the last interaction started is over (the status widget goes)."""
    pg.wait_for_timeout(400)
    widget = expect(pg.get_by_test_id("stStatusWidget"))
    if timeout_s is None:
        widget.to_have_count(0)
    else:
        widget.to_have_count(0, timeout=timeout_s * 1000)


def shot(pg, name: str, folder: str = SHOTS, viewport: dict = VIEWPORT) -> str:
    """A screenshot of the whole page: Streamlit scrolls inside its main block, not the window, so
    the viewport is stretched to the content's height for the picture."""
    os.makedirs(folder, exist_ok=True)
    height = pg.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]') || document.body;
        return Math.max(main.scrollHeight, document.body.scrollHeight);
    }""")
    pg.set_viewport_size({"width": viewport["width"], "height": min(max(int(height), viewport["height"]), 7000)})
    pg.wait_for_timeout(800)  # plotly redraws at the new size
    path = os.path.join(folder, f"{name}.png")
    pg.screenshot(path=path)
    pg.set_viewport_size(viewport)
    return path


def goto(pg, title: str, heading: str) -> None:
    """Open a page from the sidebar's navigation and wait for its heading."""
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=title, exact=True).click()
    expect(pg.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    idle(pg)


def set_number(pg, label: str, value) -> None:
    box = pg.get_by_label(label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    idle(pg)
    expect(box).to_have_value(str(value))


def click_start(pg, wait_s: float = PAGE_S) -> None:
    """Click Start training once it is enabled. A Start that stays disabled fails with what the page
    says is wrong (its error boxes) and a screenshot, not only "element is not enabled"."""
    start = pg.get_by_role("button", name="Start training")
    try:
        expect(start).to_be_enabled(timeout=wait_s * 1000)
    except AssertionError:
        alerts = pg.get_by_test_id("stAlert")
        said = [alerts.nth(i).inner_text() for i in range(alerts.count())]
        status = pg.get_by_test_id("stStatusWidget")  # "Connecting": the server went away
        said += [f"status: {status.first.inner_text()}"] if status.count() else []
        picture = shot(pg, "start_stayed_disabled")
        pytest.fail(f"Start training stayed disabled for {wait_s:g} s; the page says: {said}; "
                    f"screenshot: {picture}; server log ends:\n{server_log_tail()}")
    start.click()


def server_log_tail(lines: int = 40) -> str:
    if not SERVER_LOGS:
        return "(no server running)"
    try:
        with open(SERVER_LOGS[-1], errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError as e:
        return f"(unreadable: {e})"


def run_state(pg) -> str:
    """'running', 'completed'... from the 'name · state' line above the live progress bar."""
    text = pg.get_by_test_id("stMain").get_by_text(
        re.compile(r" · (queued|running|completed|stopped|failed|cancelled|interrupted)$"))
    if text.count() == 0:
        return ""
    return text.first.inner_text().rsplit(" · ", 1)[-1].strip()
