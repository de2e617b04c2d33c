"""Presentation mode in a real browser at 1280x720, the size of a classroom projector (issue 23).

`streamlit run app.py` on a free port with its own runs folder, driven by Playwright through Debian's
chromium: computed font sizes (body >= 20 px, chart ticks >= 16 px), tables that need no sideways
scrolling, Start in the first screen of a lesson and the run's progress and charts in view after
it, the theme following the system and switchable. Screenshots of every page, light and dark, go to
test-output/present/ (gitignored) for a human to look at.

Run: python -m pytest tests/test_e2e_present.py -q -m e2e   (3-6 minutes on 2 busy CPU cores)
"""
from __future__ import annotations

import os

import pytest

from tests.helpers.browser import ROOT, app_server, chromium, click_start, expect, playwright_api
from tests.helpers.browser import new_page as new_browser_page

SHOTS = os.path.join(ROOT, "test-output", "present")
VIEWPORT = {"width": 1280, "height": 720}
PAGE_S = 180
TRAIN_S = 600
# A lesson link with a class-sized budget cut to seconds: 48 rows, 32 tokens, one epoch.
SHORT_RUN = "n=48&len=32&bs=16&ep=1.0&evs=1&emr=16&logs=1"
PAGES = {"learn": "", "train": "train?lesson=lora_sentiment", "experiments": "experiments?lesson=which_method",
         "compare": "compare", "runs": "runs"}

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with app_server(tmp_path_factory.mktemp("e2e-present")) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    os.makedirs(SHOTS, exist_ok=True)
    with chromium() as b:
        yield b


def new_page(browser, scheme: str = "light"):
    return new_browser_page(browser, VIEWPORT, PAGE_S, scheme)


def settle(pg) -> None:
    """Wait for the script run and any spinner to finish (the status widget is hidden, not gone)."""
    pg.wait_for_selector("h1", timeout=PAGE_S * 1000)
    pg.wait_for_timeout(500)
    pg.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]') && "
                         "!document.querySelector('[data-testid=stSpinner]')", timeout=PAGE_S * 1000)
    pg.wait_for_timeout(1200)  # plotly draws after the script run


def open_page(pg, server: str, path: str) -> None:
    sep = "&" if "?" in path else "?"
    pg.goto(f"{server}/{path}{sep}present=1")
    settle(pg)
    # The style sheet arrives with the script run; a rerun the browser asks for at load time (its
    # theme, its size) can redraw the page once more just after the first one settled.
    pg.wait_for_function("() => getComputedStyle(document.documentElement).fontSize === '20px'",
                         timeout=30_000)


def font_px(pg, selector: str) -> list[float]:
    return pg.evaluate("""(sel) => Array.from(document.querySelectorAll(sel))
        .filter(e => e.getClientRects().length && (e.textContent || '').trim())
        .map(e => parseFloat(getComputedStyle(e).fontSize))""", selector)


def sideways_overflow(pg) -> list[str]:
    """Tables (and the main block) whose content is wider than the box they sit in."""
    return pg.evaluate("""() => {
        const out = [];
        for (const t of document.querySelectorAll('[data-testid="stTable"], [data-testid="stDataFrame"]')) {
            if (t.scrollWidth > t.clientWidth + 1) out.push(t.getAttribute('data-testid') + ' ' + t.scrollWidth + '>' + t.clientWidth);
            const table = t.querySelector('table');
            if (table && table.getBoundingClientRect().right > t.getBoundingClientRect().right + 1) out.push('table wider than its box');
        }
        const main = document.querySelector('[data-testid="stMain"]');
        if (main && main.scrollWidth > main.clientWidth + 1) out.push('main ' + main.scrollWidth + '>' + main.clientWidth);
        return out;
    }""")


def shot(pg, name: str) -> None:
    pg.screenshot(path=os.path.join(SHOTS, f"{name}.png"))


def background_is_dark(pg) -> bool:
    return pg.evaluate("""() => {
        const c = getComputedStyle(document.querySelector('.stApp')).backgroundColor.match(/\\d+/g).map(Number);
        return (0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]) < 100;
    }""")


def in_first_screen(pg, locator) -> bool:
    box = locator.bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"]


# ------------------------------------------------------------------------------------------- tests

def test_learn_text_and_chart_fonts_are_large(browser, server):
    pg = new_page(browser)
    open_page(pg, server, "")
    body = font_px(pg, '[data-testid="stMain"] [data-testid="stMarkdownContainer"] p')
    assert body and min(body) >= 20, body
    charts = pg.locator(".stPlotlyChart")
    expect(charts.first).to_be_attached()
    for i in range(charts.count()):  # Streamlit draws a chart when it scrolls into view
        charts.nth(i).scroll_into_view_if_needed()
        pg.wait_for_timeout(800)
    ticks = font_px(pg, ".stPlotlyChart .xtick text, .stPlotlyChart .ytick text")
    assert ticks and min(ticks) >= 16, ticks
    assert not sideways_overflow(pg)
    # One chart per row: every chart spans (nearly) the main block's width.
    widths = pg.evaluate("""() => { const main = document.querySelector('[data-testid="stMainBlockContainer"]');
        return Array.from(document.querySelectorAll('.stPlotlyChart')).map(c =>
            c.getBoundingClientRect().width / main.getBoundingClientRect().width); }""")
    assert widths and min(widths) > 0.85, widths
    pg.context.close()


def test_lesson_start_is_in_the_first_screen_and_the_run_comes_into_view(browser, server):
    pg = new_page(browser)
    open_page(pg, server, f"train?lesson=lora_sentiment&{SHORT_RUN}")
    start = pg.get_by_role("button", name="Start training")
    expect(start).to_have_count(1)
    assert in_first_screen(pg, start), start.bounding_box()
    shot(pg, "train_lesson_before_start")
    click_start(pg)
    run = pg.locator(".st-key-tr_current_run")
    expect(run).to_be_visible()
    pg.wait_for_timeout(800)
    box = run.bounding_box()
    assert box and 0 <= box["y"] < VIEWPORT["height"] / 2, box
    chart = run.locator(".stPlotlyChart").first
    expect(chart).to_be_visible(timeout=TRAIN_S * 1000)
    cbox = chart.bounding_box()
    assert cbox and cbox["y"] < VIEWPORT["height"], cbox   # the first chart starts on screen
    ticks = font_px(pg, ".st-key-tr_current_run .xtick text")
    assert ticks and min(ticks) >= 16, ticks
    shot(pg, "train_lesson_after_start")
    expect(pg.get_by_role("button", name="Compare base vs tuned")).to_be_visible(timeout=TRAIN_S * 1000)
    pg.context.close()


def test_tables_wrap_and_every_page_in_both_themes(browser, server):
    """Runs lists the run of the test above (or none); every page is captured light and dark."""
    for scheme in ("light", "dark"):
        pg = new_page(browser, scheme)
        for name, path in PAGES.items():
            open_page(pg, server, path)
            shot(pg, f"{name}_{scheme}")
            assert background_is_dark(pg) is (scheme == "dark"), (name, scheme)
            body = font_px(pg, '[data-testid="stMain"] [data-testid="stMarkdownContainer"] p')
            assert body and min(body) >= 20, (name, scheme, body)
            assert not sideways_overflow(pg), (name, sideways_overflow(pg))
        pg.context.close()


def test_theme_can_be_switched_against_the_system(browser, server):
    pg = new_page(browser, "light")
    open_page(pg, server, "")
    assert not background_is_dark(pg)
    box = pg.get_by_role("combobox", name="Theme", exact=True)
    for _ in range(5):  # a rerun arriving meanwhile (the sidebar's poll) can close the list
        box.click()
        try:
            pg.get_by_role("option", name="Dark").click(timeout=5000)
            break
        except playwright_api.TimeoutError:
            pg.keyboard.press("Escape")
            settle(pg)
    pg.wait_for_timeout(1500)   # the choice is stored and the page reloads once
    settle(pg)
    assert background_is_dark(pg)
    assert "theme=dark" in pg.url and "present=1" in pg.url
    pg.context.close()
