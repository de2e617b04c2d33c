"""Page render time while a run trains (issue 5 item 3): how long a visitor waits for a page.

    python bench/page_render.py [--rounds 3]
    python bench/page_render.py --cold [--rounds 3] [--before DIR]   # issue 22: a fresh server's first page

Starts the app on a free port (not timed), opens it in a real browser (Playwright + Debian's
chromium) and times clicks on the sidebar's Learn, Runs and Train links until the page's last
section is drawn: first with nothing training, then while the "Fix a hallucination" preset trains
(started from the Train page with its defaults, in the same server). Prints one JSON object with
the median and worst seconds per page in each state, and the run's training seconds.

--cold: per round, two fresh servers (Chromium already open, so only the app is cold): one opened at
Learn, one at Train. The clock starts when the server answers its health check; the page is read
every 50 ms until the first text in the main area, Learn's content, the "Loading the engine" note
and a visible, enabled Start training button. Prints the median and range of each; with --before
DIR, the same for the app in DIR, each fresh start alternating with one of this checkout.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import appserver  # noqa: E402
from bench.appserver import ROOT, AppDidNotStart, offline_env, prepare_model_cache, start_app, stop_app  # noqa: E402
from bench.newcomer_time import CHROMIUM_ARGS, VIEWPORT, choose_preset, idle  # noqa: E402

OUT = os.path.join(ROOT, "bench", "out")
# page -> what is drawn last on it (its script has run to the end)
PAGES = {
    "Learn": ("heading", "Calculator: parameters and memory"),
    "Runs": ("heading", "Runs"),
    "Train": ("combobox", "Base model"),
}


def visit(pg, expect, name: str, timeout_s: float) -> float:
    role, label = PAGES[name]
    t0 = time.monotonic()
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=name, exact=True).click()
    expect(pg.get_by_role(role, name=label, exact=True)).to_be_visible(timeout=timeout_s * 1000)
    return time.monotonic() - t0


def start_preset_run(pg, expect, timeout_s: float) -> None:
    choose_preset(pg, expect, timeout_s)
    idle(pg, expect, timeout_s)
    pg.get_by_role("button", name="Start training").click()
    expect(pg.get_by_role("heading", name="Current run")).to_be_visible()


def measure(url: str, chromium: str, rounds: int, timeout_s: float) -> dict:
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=timeout_s * 1000)
    times: dict[str, dict[str, list[float]]] = {"idle": {}, "training": {}}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport=VIEWPORT)
            pg.goto(url)
            expect(pg.get_by_role("heading", name="Fine-tuning, and doing it cheaply")).to_be_visible()
            for name in ("Train", "Runs", "Learn"):  # first visits import torch & co: not counted
                visit(pg, expect, name, timeout_s)
                idle(pg, expect, timeout_s)
            for _ in range(rounds):
                for name in PAGES:
                    times["idle"].setdefault(name, []).append(visit(pg, expect, name, timeout_s))
                    idle(pg, expect, timeout_s)
            visit(pg, expect, "Train", timeout_s)
            idle(pg, expect, timeout_s)
            start_preset_run(pg, expect, timeout_s)
            t_start = time.monotonic()
            pg.wait_for_timeout(15_000)  # past model loading: the steps are running
            for _ in range(rounds):
                for name in ("Learn", "Runs", "Train"):
                    times["training"].setdefault(name, []).append(visit(pg, expect, name, timeout_s))
                    pg.wait_for_timeout(1000)
            compare = pg.get_by_role("button", name="Compare base vs tuned")
            expect(compare).to_be_visible(timeout=timeout_s * 1000)
            train_wall = time.monotonic() - t_start
        finally:
            browser.close()
    summary = {state: {name: {"median_s": round(statistics.median(v), 2), "max_s": round(max(v), 2), "n": len(v)}
                       for name, v in pages.items()} for state, pages in times.items()}
    return {"pages": summary, "run_wall_s_from_click": round(train_wall, 1)}


# What the main area shows now, read in the page itself (cheaper and finer-grained than locators).
PAGE_STATE_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const text = main ? main.innerText.trim() : '';
  const side = document.querySelector('[data-testid="stSidebarUserContent"]');
  const start = [...document.querySelectorAll('[data-testid="stMain"] button')]
      .find(b => b.innerText.trim() === 'Start training');
  const headings = [...document.querySelectorAll('[data-testid="stMain"] h1, [data-testid="stMain"] h2')]
      .map(h => h.innerText.trim());
  return {main: text.length > 0, sidebar: !!(side && side.innerText.trim()),
          learn: headings.some(h => h.startsWith('Fine-tuning, and doing it cheaply')),
          note: /loading the engine/i.test(text),
          start: !!(start && !start.disabled && start.offsetParent !== null)};
}"""
COLD_MILESTONES = {"/": ("main", "sidebar", "learn"), "/train": ("main", "sidebar", "note", "start")}


def cold_start(browser, env: dict, root: str, path: str, log_path: str, timeout_s: float) -> dict:
    """Seconds from 'server healthy' to each milestone of COLD_MILESTONES[path] (None: never seen),
    for the app in the checkout `root`."""
    pg = browser.new_page(viewport=VIEWPORT)
    appserver.ROOT = root  # start_app runs `streamlit run app.py` there
    try:
        proc, url = start_app(env, log_path)
    finally:
        appserver.ROOT = ROOT
    t0 = time.monotonic()
    seen: dict[str, float | None] = dict.fromkeys(COLD_MILESTONES[path])
    try:
        pg.goto(url + path, wait_until="commit")
        goal = "learn" if path == "/" else "start"
        while seen[goal] is None and time.monotonic() - t0 < timeout_s:
            try:
                state = pg.evaluate(PAGE_STATE_JS)
            except Exception:  # the document is being replaced (first load): read again
                state = {}
            now = round(time.monotonic() - t0, 2)
            for key in seen:
                if seen[key] is None and state.get(key):
                    seen[key] = now
            pg.wait_for_timeout(50)
    finally:
        stop_app(proc)
        pg.close()
    return seen


def measure_cold(env: dict, tmp: str, chromium: str, rounds: int, timeout_s: float, roots: dict[str, str]) -> dict:
    """{label: {"Learn.learn": {...}, ...}} for each checkout in `roots`, taken in alternation."""
    from playwright.sync_api import sync_playwright
    samples: dict[str, dict[str, list]] = {label: {} for label in roots}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            for i in range(rounds):
                for path in COLD_MILESTONES:
                    for label, root in roots.items():
                        log = os.path.join(tmp, f"server-cold-{label}-{i}{path.replace('/', '-')}.log")
                        page = "Learn" if path == "/" else "Train"
                        for key, value in cold_start(browser, env, root, path, log, timeout_s).items():
                            samples[label].setdefault(f"{page}.{key}", []).append(value)
        finally:
            browser.close()
    summary: dict[str, dict] = {}
    for label, keys in samples.items():
        for key, values in keys.items():
            got = [v for v in values if v is not None]
            summary.setdefault(label, {})[key] = {
                "median_s": round(statistics.median(got), 2) if got else None,
                "range_s": [min(got), max(got)] if got else None, "all_s": values}
    return summary


def run_summary(runs_dir: str) -> dict:
    """The trained run's throughput as its summary recorded it (compare with bench/facts_probe.py)."""
    for name in sorted(os.listdir(runs_dir)) if os.path.isdir(runs_dir) else []:
        path = os.path.join(runs_dir, name, "summary.json")
        if os.path.exists(path):
            with open(path) as f:
                s = json.load(f)
            return {k: s.get(k) for k in ("samples_per_second", "train_time_s", "threads", "precision")}
    return {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chromium", default=os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--cold", action="store_true", help="time a fresh server's first Learn and Train views")
    ap.add_argument("--before", metavar="DIR", help="with --cold: also time the app of another checkout "
                    "(e.g. `git archive main | tar -x -C DIR`, with DIR/.venv), alternating with this one")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="page-render-")
    env = offline_env(PLAYGROUND_RUNS_DIR=os.path.join(tmp, "runs"),
                      PLAYGROUND_CACHE_DIR=os.environ.get("PLAYGROUND_CACHE_DIR") or os.path.join(ROOT, ".cache", "models"))
    prepare_model_cache(env)
    if args.cold:
        return cold_main(env, tmp, args)
    try:
        proc, url = start_app(env, os.path.join(tmp, "server.log"))
    except AppDidNotStart as e:
        raise SystemExit(str(e)) from None
    try:
        load_before = [round(x, 2) for x in os.getloadavg()]
        result = measure(url, args.chromium, args.rounds, args.timeout)
    finally:
        stop_app(proc)
    result["run"] = run_summary(os.path.join(tmp, "runs"))
    result.update(loadavg_before=load_before, loadavg_after=[round(x, 2) for x in os.getloadavg()],
                  cores=os.cpu_count(), date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    print(json.dumps(result))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "page_render.json"), "w") as f:
        json.dump(result, f, indent=1)


def cold_main(env: dict, tmp: str, args) -> None:
    load_before = [round(x, 2) for x in os.getloadavg()]
    try:
        roots = {"this": ROOT, **({"before": os.path.abspath(args.before)} if args.before else {})}
        result = {"cold": measure_cold(env, tmp, args.chromium, args.rounds, min(args.timeout, 180), roots)}
    except AppDidNotStart as e:
        raise SystemExit(str(e)) from None
    result.update(rounds=args.rounds, loadavg_before=load_before,
                  loadavg_after=[round(x, 2) for x in os.getloadavg()], cores=os.cpu_count(),
                  date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    print(json.dumps(result, indent=1))
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "page_render_cold.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
