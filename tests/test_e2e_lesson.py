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

import pytest

from tests.helpers.browser import ROOT, app_server, click_start, chromium, expect, idle, new_page
from tests.helpers.browser import shot as page_shot

SHOTS = os.path.join(ROOT, "test-output", "e2e-lesson")
PAGE_S = 150          # the first view of Train waits for torch/transformers/peft to import
TRAIN_S = 400         # a three-step MiniLM run, model load included, on a busy 2-core machine

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with app_server(tmp_path_factory.mktemp("e2e-lesson")) as url:
        yield url


@pytest.fixture
def page(server):
    os.makedirs(SHOTS, exist_ok=True)
    with chromium() as browser:
        yield new_page(browser, page_s=PAGE_S)


def shot(pg, name: str) -> str:
    return page_shot(pg, name, folder=SHOTS)


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
    click_start(pg)
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
