"""The app side of bench/lesson_speed.py: a lecturer in Chromium (1280x720) on a fresh server.

Each measurement starts its own `streamlit run app.py` (bench/appserver.py; not timed) with an empty
runs folder, opens the shipped lesson link and clicks what the lesson says to click. Clocks:
  lesson run     Start training clicked -> the result card's "Compare base vs tuned" is on the page
  probe          "Run the hallucination probe" clicked -> its scores are on the page; then again,
                 the run's probe.json removed and the page reloaded (the base answers' cache warm)
  chat           the first example prompt clicked -> the base pane's first words / the last change
                 of the tuned pane's answer (a MutationObserver in the page stamps every change)
  which          "Queue: Which method wins?" clicked -> "n of n finished"
  cold start     the server's health check answers -> Learn's title / an enabled Start training
The run's own figures (accuracy, phases, threads) are read from its folder afterwards.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import time

from bench import lesson_speed as bench
from bench.appserver import ROOT, offline_env, prepare_model_cache, start_app, stop_app
from bench.newcomer_time import CHROMIUM_ARGS, idle

VIEWPORT = {"width": 1280, "height": 720}      # a projector's size (issue 22)
# The URL form of lesson_speed.QUICK_TRAIN (core/urlstate.py keys): a smoke run of a lesson link.
QUICK_QUERY = "&ms=2&n=32&emr=16"
LEARN_TITLE = "Fine-tuning, and doing it cheaply"
COLD_TRAIN_PATH = "train?lesson=lora_sentiment"  # what a lecturer opens first
ENDED_BADLY = re.compile(r" · (failed|cancelled|interrupted)$")
POLL_MS = 200

# Stamps every change of the newest assistant answer in each chat pane (the columns headed "Base
# model" and "Fine-tuned"), in page time, until window.__lessonStop() is called.
CHAT_OBSERVER = """() => {
  const titles = [["Base model", "base"], ["Fine-tuned", "tuned"]];
  const rec = [], last = {};
  const paneOf = (col) => {
    for (const h of col.querySelectorAll('h3')) {
      const t = h.innerText.trim();
      for (const [title, pane] of titles) if (t.startsWith(title)) return pane;
    }
    return null;
  };
  const sample = () => {
    const now = performance.now();
    for (const col of document.querySelectorAll('[data-testid="stColumn"]')) {
      const pane = paneOf(col);
      if (!pane) continue;
      const answers = [...col.querySelectorAll('[data-testid="stChatMessage"]')]
        .filter(m => m.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
      const box = answers.length ? answers[answers.length - 1] : null;
      const text = box ? (box.querySelector('[data-testid="stChatMessageContent"]') || box).innerText.trim() : "";
      if (text !== last[pane]) { last[pane] = text; rec.push([now, pane, text.length]); }
    }
  };
  const obs = new MutationObserver(sample);
  obs.observe(document.body, {subtree: true, childList: true, characterData: true});
  window.__lessonStop = () => { obs.disconnect(); sample(); return {rec, chars: {base: (last.base || "").length,
                                                                           tuned: (last.tuned || "").length}}; };
  return performance.now();
}"""

COLD_STATE = """(title) => {
  const main = document.querySelector('[data-testid="stMain"]');
  const text = main ? main.innerText.trim() : "";
  const start = [...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Start training');
  return {chars: text.length, note: /loading the engine/i.test(document.body ? document.body.innerText : ""),
          learn: [...document.querySelectorAll('h1')].some(h => h.innerText.trim().startsWith(title)),
          start: !!start && !start.disabled && start.getAttribute('aria-disabled') !== 'true'};
}"""


class App:
    def __init__(self, tmp: str, chromium: str, timeout_s: float, quick: bool):
        self.tmp, self.chromium, self.timeout_s, self.quick = tmp, chromium, timeout_s, quick
        self.env = offline_env(PLAYGROUND_CACHE_DIR=os.environ.get("PLAYGROUND_CACHE_DIR")
                               or os.path.join(ROOT, ".cache", "models"))
        self.servers, self.prepared = 0, False

    def prepare_smollm2(self) -> None:
        """The SmolLM2 cache, once per machine (scripts/start.sh builds it too): never a lesson's cost."""
        if not self.prepared:
            prepare_model_cache(self.env)
            self.prepared = True

    # -------------------------------------------------------------------------------- plumbing
    @contextlib.contextmanager
    def server(self, name: str):
        self.servers += 1
        folder = os.path.join(self.tmp, f"app-{self.servers:02d}-{name}")
        runs_dir = os.path.join(folder, "runs")
        os.makedirs(runs_dir)
        env = {**self.env, "PLAYGROUND_RUNS_DIR": runs_dir, "PLAYGROUND_UPLOADS_DIR": os.path.join(folder, "uploads"),
               "PLAYGROUND_CACHE_DIR": server_cache(folder, self.env["PLAYGROUND_CACHE_DIR"])}
        self.log = os.path.join(folder, "server.log")
        proc, url = start_app(env, self.log)
        try:
            yield url, runs_dir
        finally:
            stop_app(proc)

    @contextlib.contextmanager
    def page(self):
        from playwright.sync_api import expect, sync_playwright
        expect.set_options(timeout=self.timeout_s * 1000)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=self.chromium, args=CHROMIUM_ARGS)
            try:
                pg = browser.new_context(viewport=VIEWPORT).new_page()
                pg.set_default_timeout(self.timeout_s * 1000)
                yield pg, expect
            finally:
                browser.close()

    def measure(self, row: str, group: list[str], rep: int) -> dict:
        """{row: figures} for every row of the group; a failure is recorded, not raised."""
        try:
            return getattr(self, f"_{row}")(group, rep)
        except Exception as exc:  # one broken row must not lose the others' figures
            tail = ""
            with contextlib.suppress(OSError, AttributeError):
                with open(self.log, errors="replace") as fh:
                    tail = "".join(fh.readlines()[-15:])
            return {r: {"error": f"{type(exc).__name__}: {str(exc)[:800]}\nserver log ends:\n{tail}"} for r in group}

    # -------------------------------------------------------------------------------- lessons
    def lesson_run(self, pg, expect, url: str, runs_dir: str, key: str) -> dict:
        """Open the lesson link, wait until Start can be clicked, click it, time the result card."""
        from core import lessons
        pg.goto(f"{url}/{lessons.get(key).url}" + (QUICK_QUERY if self.quick else ""))
        expect(pg.get_by_text(f"Lesson: {lessons.get(key).title}")).to_be_visible()
        start = pg.get_by_role("button", name="Start training")
        expect(start).to_be_enabled()
        idle(pg, expect, self.timeout_s)
        clicked_at, t0 = time.time(), time.monotonic()
        start.click()
        compare = pg.get_by_role("button", name="Compare base vs tuned")
        main = pg.get_by_test_id("stMain")
        while not compare.count():
            if main.get_by_text(ENDED_BADLY).count():
                raise RuntimeError(f"the run ended badly: {main.get_by_test_id('stAlert').all_inner_texts()}")
            if time.monotonic() - t0 > self.timeout_s:
                raise TimeoutError(f"no result card within {self.timeout_s:.0f} s")
            pg.wait_for_timeout(POLL_MS)
        seconds = time.monotonic() - t0
        run_dir = newest_run(runs_dir)
        out = {"start_to_result_s": round(seconds, 2), "run_dir": run_dir, **bench.run_facts(run_dir)}
        first = first_event_time(run_dir)
        if first is not None:
            out["queue_s"] = round(first - clicked_at, 2)  # click -> the worker's first event
        return out

    def _sentiment(self, group, rep):
        with self.server("sentiment") as (url, runs_dir), self.page() as (pg, expect):
            return {"sentiment": self.lesson_run(pg, expect, url, runs_dir, bench.LESSONS["sentiment"])}

    def _facts(self, group, rep):
        """The whole "Fix a hallucination" lecture on one server: train, Compare, probe, chat."""
        out = {}
        self.prepare_smollm2()
        with self.server("facts") as (url, runs_dir), self.page() as (pg, expect):
            run = self.lesson_run(pg, expect, url, runs_dir, bench.LESSONS["facts"])
            out["facts"] = run
            if not ({"probe", "chat"} & set(group)):
                return out
            t0 = time.monotonic()
            pg.get_by_role("button", name="Compare base vs tuned").click()
            expect(pg.get_by_role("heading", name="Compare base and fine-tuned")).to_be_visible()
            ready = (pg.get_by_role("button", name="Run the hallucination probe") if "probe" in group
                     else pg.locator(".st-key-cmp_ex_0 button"))
            expect(ready).to_be_visible()
            idle(pg, expect, self.timeout_s)
            opened = round(time.monotonic() - t0, 2)
            shared = {k: run[k] for k in ("threads", "run_dir") if k in run}
            if "probe" in group:
                t0 = time.monotonic()
                ready.click()
                expect(pg.get_by_text("Facts recalled (held-out)").first).to_be_visible()
                probe = {**shared, "probe_s": round(time.monotonic() - t0, 2), "open_compare_s": opened}
                idle(pg, expect, self.timeout_s)
                probe.update(saved_probe(run["run_dir"]))
                probe.update(self.warm_probe(pg, expect, run["run_dir"]))
                out["probe"] = probe
                if "probe_scores" in probe:
                    run["probe_scores"] = probe["probe_scores"]
            if "chat" in group:
                out["chat"] = {**shared, "open_compare_s": opened, "chat": self.chat_turn(pg, expect)}
        return {r: out[r] for r in group if r in out}

    def warm_probe(self, pg, expect, run_dir: str) -> dict:
        """A later probe on this server: the run's saved result removed and the page reloaded, its
        base answers now come from the server's cache (core.probe.BaseAnswerCache), as for another
        student's run on the same base."""
        os.remove(os.path.join(run_dir, "probe.json"))
        pg.reload()
        button = pg.get_by_role("button", name="Run the hallucination probe")
        expect(button).to_be_visible()
        idle(pg, expect, self.timeout_s)
        t0 = time.monotonic()
        button.click()
        expect(pg.get_by_text("Facts recalled (held-out)").first).to_be_visible()
        seconds = round(time.monotonic() - t0, 2)
        idle(pg, expect, self.timeout_s)
        saved = saved_probe(run_dir)
        return {"probe_warm_s": seconds, "probe_warm_server_s": saved.get("probe_server_s"),
                "probe_warm_base_cached": saved.get("base_answers_cached")}

    def chat_turn(self, pg, expect) -> dict:
        slider = pg.get_by_test_id("stSlider").filter(has_text="Max new tokens").first
        tokens = slider.get_by_test_id("stSliderThumbValue").first.inner_text().strip()
        toggle = pg.locator(".st-key-cmp_short input").first  # the "Short answers" toggle as shown
        short_answers = toggle.is_checked() if toggle.count() else None
        clear = pg.get_by_role("button", name="Clear both chats")
        if clear.count():
            clear.click()
            idle(pg, expect, self.timeout_s)
        example = pg.locator(".st-key-cmp_ex_0 button")
        prompt = example.inner_text().strip()
        pg.evaluate(CHAT_OBSERVER)
        t_click = pg.evaluate("performance.now()")
        example.click()
        expect(clear).to_be_visible()
        idle(pg, expect, self.timeout_s)
        seen = pg.evaluate("window.__lessonStop()")
        stamps = {p: [(t - t_click) / 1000 for t, pane, n in seen["rec"] if pane == p and n > 0] for p in ("base", "tuned")}
        panes = {p: {"first_words_s": round(s[0], 3) if s else None, "done_s": round(s[-1], 3) if s else None,
                     "chars": seen["chars"][p]} for p, s in stamps.items()}
        return {"prompt": prompt, "max_new_tokens": int(tokens) if tokens.isdigit() else tokens,
                "short_answers": short_answers,
                "first_words_s": panes["base"]["first_words_s"],
                # the answer is full when the later pane ends (in one batch, either may end last)
                "full_answer_s": max((p["done_s"] for p in panes.values() if p["done_s"] is not None), default=None),
                "panes": panes}

    def _which(self, group, rep):
        from core import experiments
        preset = experiments.presets()[bench.LESSONS["which"]]
        n = len(experiments.preset_runs(preset.key))
        with self.server("which") as (url, runs_dir), self.page() as (pg, expect):
            pg.goto(f"{url}/experiments?lesson={bench.LESSONS['which']}")
            button = pg.get_by_role("button", name=f"Queue: {preset.title}")
            expect(button).to_be_enabled()
            idle(pg, expect, self.timeout_s)
            t0 = time.monotonic()
            button.click()
            done = pg.get_by_test_id("stMain").get_by_text(re.compile(rf"\b{n} of {n} finished"))
            while not done.count():
                ended = [r for r in all_runs(runs_dir) if r["state"] in ("failed", "cancelled", "interrupted")]
                if ended:
                    raise RuntimeError(f"{len(ended)} run(s) ended badly: {[r['method'] for r in ended]}")
                if time.monotonic() - t0 > self.timeout_s:
                    raise TimeoutError(f"the experiment did not finish within {self.timeout_s:.0f} s")
                pg.wait_for_timeout(1000)
            total = round(time.monotonic() - t0, 2)
        return {"which": {"total_s": total, "runs": all_runs(runs_dir)}}

    # -------------------------------------------------------------------------------- cold start
    def _cold(self, group, rep):
        from bench.common import pair_order
        out = {}
        for page in pair_order(rep, ["learn", "train"]):
            out.update(self.cold_start(page))
        return {"cold": out}

    def cold_start(self, which: str) -> dict:
        path = "" if which == "learn" else COLD_TRAIN_PATH
        with self.page() as (pg, _), self.server(f"cold-{which}") as (url, _):
            t0 = time.monotonic()  # start_app returns when the health check answers
            pg.goto(f"{url}/{path}", wait_until="commit")
            first_paint, note = None, False
            while True:
                with contextlib.suppress(Exception):  # a navigation in flight: sample again
                    state = pg.evaluate(COLD_STATE, LEARN_TITLE)
                    now = time.monotonic() - t0
                    note = note or state["note"]
                    if first_paint is None and state["chars"]:
                        first_paint = now
                    if state["learn" if which == "learn" else "start"]:
                        break
                if time.monotonic() - t0 > self.timeout_s:
                    raise TimeoutError(f"{which} not ready within {self.timeout_s:.0f} s of the server's start")
                pg.wait_for_timeout(50)
        paint = None if first_paint is None else round(first_paint, 2)
        out = {f"{which}_s": round(now, 2), f"{which}_first_paint_s": paint, f"{which}_engine_note_seen": note,
               f"{which}_path": "/" + path}
        # the row's headline: when Learn first shows anything; whether Train said it was loading the engine
        out.update({"first_paint_s": paint} if which == "learn" else {"engine_note_seen": note})
        return out


# ------------------------------------------------------------------------------------ run folders

def server_cache(folder: str, models_cache: str) -> str:
    """A cache folder of the server's own (so the probe's kept base answers start cold on every
    server) that links to the machine's converted models (never rebuilt per server)."""
    mine = os.path.join(folder, "cache")
    os.makedirs(mine, exist_ok=True)
    with contextlib.suppress(OSError):
        for name in os.listdir(models_cache):
            if name != "probe-base":
                os.symlink(os.path.join(models_cache, name), os.path.join(mine, name))
    return mine


def _read(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def newest_run(runs_dir: str) -> str:
    folders = [os.path.join(runs_dir, d) for d in os.listdir(runs_dir)
               if os.path.isfile(os.path.join(runs_dir, d, "summary.json"))]
    if not folders:
        raise RuntimeError(f"the result card is shown but no run in {runs_dir} has a summary")
    return max(folders, key=os.path.getmtime)


def first_event_time(run_dir: str) -> float | None:
    from core import runs
    with contextlib.suppress(Exception):
        times = [e["time"] for e in runs.read_metrics(run_dir) if isinstance(e.get("time"), (int, float))]
        return min(times) if times else None
    return None


def saved_probe(run_dir: str) -> dict:
    """The probe's scores as the page saved them with the run (pages/shared/probe_card.py: probe.json)."""
    saved = _read(os.path.join(run_dir, "probe.json"))
    result = saved.get("result")
    try:
        return {"probe_scores": bench.probe_scores(result), "probe_server_s": saved.get("seconds"),
                "base_answers_cached": saved.get("base_answers_cached"),
                "probe_questions": 2 * (result["base"]["facts"]["n"] + result["base"]["general"]["n"])}
    except (KeyError, TypeError):
        return {}


def all_runs(runs_dir: str) -> list[dict]:
    """Every run of the server, as lesson_speed.which_run reads a headless one, plus its state."""
    out = []
    for d in sorted(os.listdir(runs_dir)):
        folder = os.path.join(runs_dir, d)
        cfg = _read(os.path.join(folder, "config.json"))
        if not cfg:
            continue
        state = _read(os.path.join(folder, "status.json")).get("state")
        out.append({**bench.which_run((cfg.get("method") or {}).get("name"), folder), "state": state})
    return out
