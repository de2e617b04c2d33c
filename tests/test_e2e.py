"""End to end in a real browser: `streamlit run app.py` driven by Playwright through Debian's chromium.

One test walks the path a student takes: Learn (move the rank slider, the trainable count changes),
Train (an embedded MiniLM classifier on a little of the built-in sentiment set: the loss chart
draws points, the summary card appears), then a three-step SmolLM2 run on the "Fix a hallucination"
facts, Compare (one prompt, both panes answer) and Runs. Screenshots of every page go to
test-output/screenshots/ (gitignored) for a human to look at.

Run: python -m pytest tests/test_e2e.py -q -m e2e   (about 2-4 minutes on 2 CPU cores)
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.helpers.browser import (ROOT, SHOTS, TRAIN_S, app_server, click_start, chromium, expect, goto, idle, new_page,
                                   playwright_api, run_state, set_number, shot)
# After the browser helpers, which skip this module where Playwright or chromium is missing.
from bench.lesson_app import CHAT_OBSERVER  # the stamps bench/lesson_speed.py times a chat turn with

ANSWER_S = 600        # two generations of up to 32 tokens

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# ------------------------------------------------------------------------------------ the server

@pytest.fixture(scope="module")
def cache_dir() -> str:
    """The SmolLM2 safetensors cache, built once before the clock starts (reused when it exists)."""
    folder = os.environ.get("PLAYGROUND_CACHE_DIR") or os.path.join(ROOT, ".cache", "models")
    env = {**os.environ, "PLAYGROUND_CACHE_DIR": folder, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "core.models", "--prepare"], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=900)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir):
    """`streamlit run app.py` on a free localhost port with its own runs folder; killed afterwards."""
    tmp = tmp_path_factory.mktemp("e2e")
    with app_server(tmp, PLAYGROUND_CACHE_DIR=cache_dir) as url:
        yield {"url": url, "log": tmp / "server.log"}


@pytest.fixture
def page(server):
    os.makedirs(SHOTS, exist_ok=True)
    with chromium() as browser:
        yield new_page(browser)


# ----------------------------------------------------------------------------------- helpers


def metric_value(pg, label: str) -> str:
    metric = pg.get_by_test_id("stMetric").filter(has_text=label).first
    return metric.get_by_test_id("stMetricValue").inner_text().strip()


def choose(pg, label: str, option: str) -> None:
    """Pick an option of a Streamlit selectbox by (the start of) its shown text."""
    box = pg.get_by_role("combobox", name=label, exact=True)
    wanted = pg.get_by_role("option", name=re.compile(rf"^{re.escape(option)}\b")).first
    for _ in range(5):  # a rerun arriving from elsewhere (the sidebar's poll) may close the list
        box.click()
        try:
            wanted.click(timeout=5000)
            break
        except playwright_api.TimeoutError:
            pg.keyboard.press("Escape")
            idle(pg)
    else:
        raise AssertionError(f"could not pick {option!r} in {label!r}")
    idle(pg)
    expect(box).to_have_value(re.compile(rf"^{re.escape(option)}\b"))


def open_expander_with(pg, label: str) -> None:
    widget = pg.get_by_label(label, exact=True)
    if not widget.is_visible():
        pg.get_by_test_id("stExpander").filter(has=widget).locator("summary").click()
        expect(widget).to_be_visible()


def charts(pg) -> list[dict]:
    """Every plotly chart on the page: its title and how many points each trace holds."""
    return pg.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => ({
        // Streamlit's plotly theme wraps titles in <b>: compare the plain text
        title: String((d.layout && d.layout.title && (d.layout.title.text || d.layout.title)) || '')
               .replace(/<[^>]*>/g, ''),
        points: (d.data || []).map(t => (t.y || []).length)}))""")


def loss_points(pg) -> int:
    return max((sum(c["points"]) for c in charts(pg) if c["title"] == "Training loss"), default=0)


def eased_progress_bars(pg) -> int:
    """How many parts of a progress bar still animate to a new value (app.py turns that off)."""
    return pg.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stProgress"] *'))
        .filter(e => getComputedStyle(e).transitionDuration.split(',').some(d => parseFloat(d) > 0)).length""")


def wait_for_run(pg, during_shot: str | None) -> None:
    """Wait for the loss chart's first point, snap the page mid-run if it still runs, then wait for
    the summary card."""
    deadline = time.monotonic() + TRAIN_S
    while loss_points(pg) == 0:
        state = run_state(pg)
        assert state not in ("failed", "cancelled", "interrupted"), pg.get_by_test_id("stAlert").all_inner_texts()
        assert time.monotonic() < deadline, f"no training loss plotted after {TRAIN_S} s (state {state!r})"
        pg.wait_for_timeout(500)
    if during_shot and run_state(pg) == "running":
        shot(pg, during_shot)
    # Each eased bar update cost Chromium more than the rest of the live update, on the trainer's cores
    assert eased_progress_bars(pg) == 0
    # The sidebar leaves the followed run's progress to this page: no second, frozen bar there
    # (whether the run is still going or has just ended and the page redrew).
    sidebar = pg.get_by_test_id("stSidebar")
    expect(sidebar.get_by_text(re.compile(r"^(Its progress and charts are on this page|No job is training)\.$"))
           ).to_be_visible()
    expect(sidebar.get_by_test_id("stProgress")).to_have_count(0)
    remaining = max(deadline - time.monotonic(), 30)
    expect(pg.get_by_role("button", name="Compare base vs tuned")).to_be_visible(timeout=remaining * 1000)
    expect(pg.get_by_text("Result", exact=True)).to_be_visible()
    assert run_state(pg) == "completed", run_state(pg)
    # The sidebar polls while a job trains and asks for one full rerun once the queue is empty:
    # let that happen before the next click, or it may close a dropdown under the mouse.
    expect(pg.get_by_test_id("stSidebar").get_by_text("No job is training.")).to_be_visible()
    idle(pg)


# -------------------------------------------------------------------------------------- the test

def learn(pg, server) -> None:
    """Learn: one step of the rank slider moves the trainable-parameter count, linearly."""
    pg.goto(server["url"])
    expect(pg.get_by_role("heading", name="Fine-tuning, and doing it cheaply")).to_be_visible()
    expect(pg.get_by_text("Trainable parameters")).to_be_visible()
    idle(pg)
    before = metric_value(pg, "Trainable parameters")
    rank = pg.get_by_role("slider", name="LoRA rank r")
    rank_before = int(rank.get_attribute("aria-valuetext"))
    rank.focus()
    rank.press("ArrowRight")
    expect(rank).to_have_attribute("aria-valuetext", str(rank_before + 1))
    idle(pg)
    expect(pg.get_by_test_id("stMetric").filter(has_text="Trainable parameters")
           .get_by_test_id("stMetricValue")).not_to_have_text(before)
    after = metric_value(pg, "Trainable parameters")
    # LoRA's count is linear in r: r+1 adds exactly one r's worth.
    n_before, n_after = (int(v.replace(",", "")) for v in (before, after))
    assert n_after * rank_before == n_before * (rank_before + 1), (before, after)
    shot(pg, "01_learn")


def start_run(pg, name: str) -> None:
    box = pg.get_by_label("Run name (optional)", exact=True)
    box.fill(name)
    box.press("Enter")
    idle(pg)
    click_start(pg)
    expect(pg.get_by_test_id("stMain").get_by_text(f"{name} · ", exact=False).first).to_be_visible()


def train_classifier(pg, server) -> None:
    """Train: the embedded MiniLM on 64 built-in sentiment rows, one epoch, 64 tokens."""
    goto(pg, "Train", "Train")
    expect(pg.get_by_role("combobox", name="Base model")).to_have_value(re.compile("MiniLM"))
    expect(pg.get_by_text("embedded (works offline)").first).to_be_visible()
    expect(pg.get_by_role("combobox", name="Built-in dataset")).to_have_value(re.compile("^sentiment"))
    set_number(pg, "N samples (0 = all)", 64)
    set_number(pg, "Max length (tokens)", 64)
    open_expander_with(pg, "Eval steps")
    set_number(pg, "Eval steps", 4)  # score before and after, not after every one of the 4 steps
    start_run(pg, "e2e minilm")
    wait_for_run(pg, "02_train_running")
    assert loss_points(pg) >= 1
    titles = [c["title"] for c in charts(pg)]
    assert "Validation accuracy" in titles, titles
    expect(pg.get_by_test_id("stMetric").filter(has_text="Validation accuracy")).to_be_visible()
    shot(pg, "03_train_finished")


def train_chat_model(pg) -> None:
    """Three steps of SmolLM2 LoRA on the 'Fix a hallucination' facts, the loss logged every step."""
    choose(pg, "Built-in dataset", "facts-mini")
    expect(pg.get_by_text("Task: Instruction tuning (SFT)")).to_be_visible()
    expect(pg.get_by_role("combobox", name="Base model")).to_have_value(re.compile("SmolLM2"))
    open_expander_with(pg, "Max steps")
    set_number(pg, "Max steps", 3)
    set_number(pg, "Logging steps", 1)
    start_run(pg, "e2e smollm2")
    wait_for_run(pg, "02b_train_running_smollm2")
    assert loss_points(pg) >= 2
    shot(pg, "03b_train_finished_smollm2")


def compare(pg) -> None:
    """Compare: one typed prompt, an answer in the base pane and in the fine-tuned pane."""
    pg.get_by_role("button", name="Compare base vs tuned").click()
    expect(pg.get_by_role("heading", name="Compare base and fine-tuned")).to_be_visible()
    prompt = pg.get_by_label("Prompt", exact=True)
    expect(prompt).to_be_visible(timeout=TRAIN_S * 1000)  # the model loads first
    idle(pg)
    expect(pg.get_by_role("combobox", name="Finished run")).to_have_value(re.compile("^e2e smollm2"))
    tokens = pg.get_by_role("slider", name="Max new tokens")
    tokens.focus()
    tokens.press("Home")
    for _ in range(3):
        tokens.press("ArrowRight")  # 8 -> 32 tokens: short answers on a slow CPU
    expect(tokens).to_have_attribute("aria-valuetext", "32")
    idle(pg)
    prompt.fill("Who founded the city of Quillmere?")
    pg.evaluate(CHAT_OBSERVER)  # stamps every change of each pane's answer from now on
    pg.get_by_role("button", name="Send").click()
    expect(pg.get_by_role("button", name="Clear both chats")).to_be_visible(timeout=ANSWER_S * 1000)
    idle(pg)
    assert_streamed(pg.evaluate("window.__lessonStop()"))
    columns = pg.get_by_test_id("stColumn").filter(has=pg.get_by_test_id("stChatMessage"))
    expect(columns).to_have_count(2)
    for i, pane in enumerate(("Base model", "Fine-tuned")):
        col = columns.nth(i)
        expect(col.get_by_role("heading", name=pane)).to_be_visible()
        messages = col.get_by_test_id("stChatMessage")
        expect(messages).to_have_count(2)
        question = messages.nth(0).inner_text().strip()
        answer = messages.nth(1).inner_text().strip()
        assert "Quillmere" in question
        # A model answer: not the placeholder for an empty generation, not the prompt echoed back.
        assert re.search(r"[A-Za-z]{2}", answer), f"{pane} gave no words: {answer!r}"
        assert "no answer" not in answer and answer != question, f"{pane} gave no answer: {answer!r}"
    shot(pg, "04_compare")


def assert_streamed(seen: dict) -> None:
    """Each pane's answer reached the page in pieces (issue 22: first words within a second, not the
    whole answer at the end), and the base pane had words before the tuned pane was done."""
    lengths = {pane: [n for _, p, n in seen["rec"] if p == pane and n] for pane in ("base", "tuned")}
    for pane, grown in lengths.items():
        assert len(set(grown)) >= 2, f"the {pane} answer arrived in one piece: lengths seen {grown}"
    first_base = min(t for t, p, n in seen["rec"] if p == "base" and n)
    last_tuned = max(t for t, p, n in seen["rec"] if p == "tuned" and n)
    assert first_base < last_tuned, seen["rec"]


def runs_page(pg, server) -> None:
    goto(pg, "Runs", "Runs")
    # The table is a canvas (st.dataframe): read the run names from the widgets around it.
    expect(pg.get_by_text("2 run(s), newest first", exact=False)).to_be_visible()
    expect(pg.get_by_role("combobox", name="Run", exact=True)).to_have_value(re.compile("^e2e smollm2 · lora on"))
    overlay = pg.get_by_test_id("stMultiSelect").filter(has_text="Runs to overlay")
    expect(overlay).to_contain_text("e2e minilm · lora on minilm · completed")
    expect(overlay).to_contain_text("e2e smollm2 · lora on smollm2-135m-instruct · completed")
    titles = [c["title"] for c in charts(pg)]
    assert any(t.startswith("Loss") for t in titles), titles
    shot(pg, "05_runs")


def test_learn_train_compare_runs(page, server):
    pg = page
    page_errors: list[str] = []
    pg.on("pageerror", lambda exc: page_errors.append(str(exc)))
    timings: dict[str, float] = {"loadavg_start": round(os.getloadavg()[0], 2)}
    steps = (("learn", lambda: learn(pg, server)), ("train_minilm", lambda: train_classifier(pg, server)),
             ("train_smollm2", lambda: train_chat_model(pg)), ("compare", lambda: compare(pg)),
             ("runs", lambda: runs_page(pg, server)))
    try:
        for name, step in steps:
            t0 = time.monotonic()
            step()
            timings[name] = round(time.monotonic() - t0, 1)
    except BaseException:
        try:
            shot(pg, "zz_failure")
        except Exception:
            pass
        raise
    finally:
        timings["loadavg_end"] = round(os.getloadavg()[0], 2)
        with open(os.path.join(SHOTS, "..", "e2e_timings.json"), "w") as f:
            json.dump(timings, f, indent=1)
        print("e2e timings (s):", json.dumps(timings))

    assert not pg.get_by_test_id("stException").count(), pg.get_by_test_id("stException").all_inner_texts()
    assert "Traceback" not in server["log"].read_text(), server["log"].read_text()[-3000:]
    assert not page_errors, page_errors
