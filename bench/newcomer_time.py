"""How long a newcomer waits, with the defaults, from opening the app to a side-by-side answer.

    python bench/newcomer_time.py --url http://localhost:8501   # a server you started (scripts/start.sh)
    python bench/newcomer_time.py                               # starts its own server first (not timed)

A real browser (Python Playwright, Debian's chromium) does what the README tells a newcomer to do:
open the app, go to Train, pick the "Fix a hallucination" dataset (builtin:facts-mini, which loads
examples/lora_facts.yaml: SmolLM2, LoRA r=16, 3 epochs), click Start training without touching any
setting, wait for the result, click "Compare base vs tuned", click the first example prompt and wait
until both panes have answered. Prints one JSON object: the total seconds, each phase, the load
average before and after (the machine is shared: absolute times are noisy), and the two answers.
The clock starts when the browser opens the app; starting the server is not counted.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.appserver import ROOT, AppDidNotStart, offline_env, prepare_model_cache, start_app, stop_app  # noqa: E402

OUT = os.path.join(ROOT, "bench", "out")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1400, "height": 900}
PRESET = "facts-mini"          # the 'Fix a hallucination' lesson's dataset
STEP_RE = re.compile(r"step (\d+)/(\d+)")


# ------------------------------------------------------------------------------ the server

def start_server(runs_dir: str, log_path: str) -> tuple[subprocess.Popen, str]:
    env = offline_env(PLAYGROUND_RUNS_DIR=runs_dir, PLAYGROUND_CACHE_DIR=os.environ.get("PLAYGROUND_CACHE_DIR")
                      or os.path.join(ROOT, ".cache", "models"))
    prepare_model_cache(env)  # once per machine (scripts/start.sh does the same): not a newcomer cost
    try:
        return start_app(env, log_path)
    except AppDidNotStart as e:
        raise SystemExit(str(e)) from None


# ----------------------------------------------------------------------------- the newcomer

def idle(pg, expect, timeout_s: float) -> None:
    """Until the script run the last click started is over (Streamlit's running indicator goes)."""
    pg.wait_for_timeout(300)
    expect(pg.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=timeout_s * 1000)


def choose_preset(pg, expect, timeout_s: float) -> None:
    """On Train, pick the 'Fix a hallucination' dataset in the built-in list (its preset loads)."""
    from playwright.sync_api import TimeoutError as PwTimeout
    box = pg.get_by_role("combobox", name="Built-in dataset", exact=True)
    option = pg.get_by_role("option", name=re.compile(rf"^{re.escape(PRESET)}\b")).first
    for _ in range(5):  # a rerun from elsewhere may close the list under the mouse
        box.click()
        try:
            option.click(timeout=5000)
            break
        except PwTimeout:
            pg.keyboard.press("Escape")
            idle(pg, expect, timeout_s)
    expect(box).to_have_value(re.compile(rf"^{re.escape(PRESET)}\b"))


def newcomer(url: str, chromium: str, timeout_s: float, shot: str | None) -> dict:
    from playwright.sync_api import sync_playwright
    from playwright.sync_api import expect

    expect.set_options(timeout=timeout_s * 1000)
    phases: dict[str, float] = {}
    marks: dict[str, float] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport=VIEWPORT)
            pg.set_default_timeout(timeout_s * 1000)
            t0 = last = time.monotonic()

            def lap(name: str) -> None:
                nonlocal last
                now = time.monotonic()
                phases[name] = round(now - last, 1)
                last = now

            # 1. open the app: the Learn page is drawn
            pg.goto(url)
            expect(pg.get_by_role("heading", name="Fine-tuning, and doing it cheaply")).to_be_visible()
            idle(pg, expect, timeout_s)
            lap("open_app")

            # 2. go to Train: the model picker is there (the first visit waits for torch to import)
            pg.get_by_test_id("stSidebarNav").get_by_role("link", name="Train", exact=True).click()
            expect(pg.get_by_role("combobox", name="Base model", exact=True)).to_be_visible()
            idle(pg, expect, timeout_s)
            lap("open_train")

            # 3. pick the 'Fix a hallucination' dataset: its preset (SmolLM2, lora_facts.yaml) loads
            choose_preset(pg, expect, timeout_s)
            expect(pg.get_by_role("combobox", name="Base model", exact=True)).to_have_value(re.compile("SmolLM2"))
            idle(pg, expect, timeout_s)
            lap("choose_preset")

            # 4. Start training with the defaults; the first optimizer step, then the result card
            start = pg.get_by_role("button", name="Start training")
            expect(start).to_be_enabled()
            start.click()
            expect(pg.get_by_role("heading", name="Current run")).to_be_visible()
            main = pg.get_by_test_id("stMain")
            deadline = time.monotonic() + timeout_s
            compare = pg.get_by_role("button", name="Compare base vs tuned")
            max_steps = None
            while True:
                if compare.count():
                    break
                texts = main.get_by_test_id("stProgress").all_inner_texts()
                m = next((STEP_RE.search(t) for t in texts if STEP_RE.search(t)), None)
                if m and int(m.group(1)) >= 1 and "first_step" not in marks:
                    marks["first_step"] = time.monotonic()
                    max_steps = int(m.group(2))
                failed = main.get_by_text(re.compile(r" · (failed|cancelled|interrupted)$"))
                if failed.count():
                    raise RuntimeError(f"the run ended: {main.get_by_test_id('stAlert').all_inner_texts()}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"training did not finish in {timeout_s} s")
                pg.wait_for_timeout(500)
            now = time.monotonic()
            phases["train_until_first_step"] = round(marks.get("first_step", now) - last, 1)
            phases["train_steps"] = round(now - marks.get("first_step", now), 1)
            last = now
            train_text = main.get_by_test_id("stProgress").first.inner_text()
            idle(pg, expect, timeout_s)
            lap("train_result_shown")

            # 5. Compare base vs tuned: the model loads, example prompts appear
            compare.click()
            expect(pg.get_by_role("heading", name="Compare base and fine-tuned")).to_be_visible()
            example = pg.locator(".st-key-cmp_ex_0 button")
            expect(example).to_be_visible()
            idle(pg, expect, timeout_s)
            lap("open_compare")

            # 6. one example prompt, both panes answer (default max new tokens and temperature)
            prompt_label = example.inner_text().strip()
            example.click()
            expect(pg.get_by_role("button", name="Clear both chats")).to_be_visible()
            idle(pg, expect, timeout_s)
            lap("both_answers")
            total = round(time.monotonic() - t0, 1)

            columns = pg.get_by_test_id("stColumn").filter(has=pg.get_by_test_id("stChatMessage"))
            answers = {}
            for i, pane in enumerate(("base", "tuned")):
                msgs = columns.nth(i).get_by_test_id("stChatMessage")
                answers[pane] = msgs.nth(msgs.count() - 1).inner_text().strip()
            if shot:
                pg.screenshot(path=shot)
        finally:
            browser.close()
    return {"total_s": total, "phases_s": phases, "optimizer_steps": max_steps, "final_progress": train_text,
            "example_prompt": prompt_label, "answers": answers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running app (default: start one on a free port, not timed)")
    ap.add_argument("--chromium", default=os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed for any one phase")
    ap.add_argument("--out", default=os.path.join(OUT, "newcomer_time.json"), help="also write the JSON here")
    args = ap.parse_args()

    os.makedirs(OUT, exist_ok=True)
    proc, tmp = None, None
    url = args.url
    if not url:
        tmp = tempfile.mkdtemp(prefix="newcomer-")
        proc, url = start_server(os.path.join(tmp, "runs"), os.path.join(tmp, "server.log"))
    try:
        load_before = [round(x, 2) for x in os.getloadavg()]
        result = newcomer(url.rstrip("/"), args.chromium, args.timeout, os.path.join(OUT, "newcomer_compare.png"))
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        if proc is not None:
            stop_app(proc)
    result = {"total_s": result.pop("total_s"), **result, "loadavg_before": load_before,
              "loadavg_after": load_after, "cores": os.cpu_count(), "own_server": proc is not None,
              "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    print(json.dumps(result, ensure_ascii=False))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
