"""A shared lesson link in a real browser, and the LoRA anatomy of a short run.

`streamlit run app.py` on a free port with its own runs folder, driven by Playwright through
Debian's chromium: a teacher's link (/train?lesson=lora_sentiment&r=4) opens Train with the
lesson's preset, the link's own change and the guidance; an Experiments lesson link highlights its
preset; then a three-step MiniLM LoRA run, and its anatomy view. Screenshots go to
test-output/e2e-lesson/ (gitignored).

Run: python -m pytest tests/test_e2e_lesson.py -q -m e2e   (1-3 minutes on 2 CPU cores)
"""
from __future__ import annotations

import os
import re
import shutil

import pytest

from bench.appserver import AppDidNotStart, offline_env, start_app, stop_app

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "test-output", "e2e-lesson")
CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}
SERVER_START_S = 90
PAGE_S = 150          # the first view of Train waits for torch/transformers/peft to import
TRAIN_S = 400         # a three-step MiniLM run, model load included, on a busy 2-core machine

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

playwright_api = pytest.importorskip("playwright.sync_api")
if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)
expect = playwright_api.expect


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e-lesson")
    env = offline_env(PLAYGROUND_RUNS_DIR=str(tmp / "runs"), PLAYGROUND_UPLOADS_DIR=str(tmp / "uploads"))
    try:
        proc, url = start_app(env, str(tmp / "server.log"), SERVER_START_S)
    except AppDidNotStart as e:
        pytest.fail(str(e))
    try:
        yield url
    finally:
        stop_app(proc)  # only the server this fixture started, by its own process group


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport=VIEWPORT)
            pg.set_default_timeout(PAGE_S * 1000)
            expect.set_options(timeout=PAGE_S * 1000)
            yield pg
        finally:
            browser.close()


def idle(pg, timeout_s: float = PAGE_S) -> None:
    pg.wait_for_timeout(400)
    expect(pg.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=timeout_s * 1000)


def shot(pg, name: str) -> str:
    """The whole page: Streamlit scrolls inside its main block, so the viewport is stretched first."""
    height = pg.evaluate("""() => {
        const main = document.querySelector('[data-testid="stMain"]') || document.body;
        return Math.max(main.scrollHeight, document.body.scrollHeight);
    }""")
    pg.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(int(height), VIEWPORT["height"]), 7000)})
    pg.wait_for_timeout(800)
    path = os.path.join(SHOTS, f"{name}.png")
    pg.screenshot(path=path)
    pg.set_viewport_size(VIEWPORT)
    return path


def slider_value(pg, label: str) -> str:
    slider = pg.get_by_test_id("stSlider").filter(has_text=label).first
    return slider.get_by_test_id("stSliderThumbValue").first.inner_text().strip()


def selectbox_text(pg, label: str) -> str:
    """The option a selectbox shows (its combobox input's value)."""
    return pg.get_by_role("combobox", name=label, exact=True).input_value()


def charts(pg) -> list[str]:
    return pg.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d =>
        String((d.layout && d.layout.title && (d.layout.title.text || d.layout.title)) || '')
            .replace(/<[^>]*>/g, ''))""")


def test_shared_lesson_link_opens_its_preset(page, server):
    pg = page
    pg.goto(f"{server}/train?lesson=lora_sentiment&r=4")
    expect(pg.get_by_role("heading", name="Train", exact=True)).to_be_visible()
    idle(pg)
    expect(pg.get_by_text("Lesson: LoRA on sentiment")).to_be_visible()
    expect(pg.get_by_text("What to notice:")).to_be_visible()
    assert slider_value(pg, "Rank r") == "4"            # the link's own change
    assert "LoRA" in selectbox_text(pg, "Method")       # the lesson's preset
    assert "MiniLM" in selectbox_text(pg, "Base model")
    assert "sentiment" in selectbox_text(pg, "Built-in dataset")
    assert slider_value(pg, "Dropout") == "0.05"
    expect(pg.get_by_text("Warmup ratio")).to_have_count(0)   # lesson mode hides the advanced controls
    assert re.search(r"lesson=lora_sentiment", pg.url) and re.search(r"[?&]r=4", pg.url)
    shot(pg, "lesson_lora_sentiment_train")

    # The Learn page offers the lessons as cards; an Experiments lesson link highlights its preset.
    pg.goto(f"{server}/")
    expect(pg.get_by_text("Lessons for a class")).to_be_visible()
    expect(pg.get_by_role("button", name="Open lesson")).to_have_count(4)
    idle(pg)
    shot(pg, "lesson_cards_learn")
    pg.goto(f"{server}/experiments?lesson=which_method")
    expect(pg.get_by_text("Lesson: Which method wins?")).to_be_visible()
    expect(pg.get_by_text("← this lesson")).to_be_visible()
    idle(pg)
    shot(pg, "lesson_which_method_experiments")


def test_short_lora_run_shows_its_anatomy(page, server):
    pg = page
    # A shared link with a tiny budget: 48 rows, 32 tokens, anatomy sampled every step.
    pg.goto(f"{server}/train?n=48&len=32&bs=16&ep=1.0&evs=1&anat=1&emr=16&r=4&name=anatomy-demo")
    expect(pg.get_by_role("heading", name="Train", exact=True)).to_be_visible()
    idle(pg)
    assert slider_value(pg, "Rank r") == "4"
    pg.get_by_role("button", name="Start training").click()
    expect(pg.get_by_role("button", name="Compare base vs tuned")).to_be_visible(timeout=TRAIN_S * 1000)
    idle(pg)
    expander = pg.get_by_test_id("stExpander").filter(has_text="LoRA anatomy").first
    expander.locator("summary").click()
    expect(pg.get_by_text(re.compile(r"top-1 direction holds"))).to_be_visible()
    expect(pg.get_by_text("Sample (training step)")).to_be_visible()
    pg.wait_for_timeout(1500)
    titles = charts(pg)
    assert "How much LoRA changed each weight matrix" in titles, titles
    assert any(t.startswith("Energy of ΔW") for t in titles), titles
    expander.scroll_into_view_if_needed()
    path = os.path.join(SHOTS, "anatomy_train.png")
    expander.screenshot(path=path)
    shot(pg, "anatomy_train_page")
    assert os.path.getsize(path) > 10_000
