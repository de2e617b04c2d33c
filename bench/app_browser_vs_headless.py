"""App in a browser vs headless (issue 5 item 3): the same run, started from the Train page with a
real browser showing its live charts, and by `python -m core.train --config` on that run's own
config.json, alternating.

    python bench/app_browser_vs_headless.py [--pairs 5] [--query ep=10] [--app-env KEY=VALUE] [--quick]

The app side opens the Train page (the app's defaults, plus `--query`, the page's shareable-URL
keys), clicks Start training and then leaves the page alone: the benchmark watches the run's
status.json on disk, not the page, so its own polling costs the browser nothing. Reports each
run's samples/s from its summary, the ratio, and the CPU seconds the server process and Chromium
used while the app trained (Chromium shares the two cores with the trainer, as it would on a
laptop running both).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.appserver import ROOT, AppDidNotStart, offline_env, prepare_model_cache, start_app, stop_app  # noqa: E402
from bench.common import (PY, MIN_PAIRS, check_pairs, check_same_setting, loadavg, machine_record, md_table,  # noqa: E402
                          pair_order, protocol_header, save, spread, spread_text)
from bench.newcomer_time import CHROMIUM_ARGS, VIEWPORT, idle  # noqa: E402

SUMMARY_KEYS = ("samples_per_second", "train_time_s", "threads", "precision", "steps")


def _cpu_seconds(pids: list[int]) -> dict[int, float]:
    import psutil
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return out


def _chromium_pids() -> list[int]:
    import psutil
    return [p.pid for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]


def _used(before: dict[int, float], after: dict[int, float]) -> float:
    return round(sum(after[p] - before[p] for p in after if p in before), 1)


def _wait_for_run(runs_dir: str, known: set[str], timeout_s: float, tick=lambda: None) -> str:
    """The new run's folder, once its status says it ended; tick() once a second meanwhile."""
    deadline = time.monotonic() + timeout_s
    run_id = None
    while time.monotonic() < deadline:
        tick()
        if run_id is None:
            new = sorted(set(os.listdir(runs_dir)) - known)
            run_id = new[0] if new else None
        if run_id:
            try:
                with open(os.path.join(runs_dir, run_id, "status.json")) as f:
                    state = json.load(f).get("state")
            except (OSError, ValueError):
                state = None
            if state in ("completed", "failed", "cancelled", "interrupted"):
                if state != "completed":
                    raise RuntimeError(f"run {run_id} ended {state}")
                return run_id
        time.sleep(1.0)
    raise TimeoutError(f"no finished run within {timeout_s} s")


def app_run(url: str, server_pid: int, runs_dir: str, chromium: str, query: str, timeout_s: float) -> dict:
    from playwright.sync_api import expect, sync_playwright
    expect.set_options(timeout=timeout_s * 1000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport=VIEWPORT)
            pg.goto(f"{url}/train" + (f"?{query}" if query else ""))
            start = pg.get_by_role("button", name="Start training")
            expect(start).to_be_enabled()
            idle(pg, expect, timeout_s)
            known = set(os.listdir(runs_dir))
            pids = [server_pid] + _chromium_pids()
            before, t0 = _cpu_seconds(pids), time.monotonic()
            chromium = [p for p in pids if p != server_pid]
            timeline: list[tuple[float, float]] = []  # (seconds since the click, Chromium CPU seconds)

            def tick() -> None:
                now = _cpu_seconds(chromium)
                timeline.append((round(time.monotonic() - t0, 1), _used(before, now)))

            start.click()
            run_id = _wait_for_run(runs_dir, known, timeout_s, tick)
            after, wall = _cpu_seconds(pids), time.monotonic() - t0
            chromium_used = _used({p: v for p, v in before.items() if p != server_pid},
                                  {p: v for p, v in after.items() if p != server_pid})
            server_used = round(after.get(server_pid, 0) - before.get(server_pid, 0), 1)
        finally:
            browser.close()
    with open(os.path.join(runs_dir, run_id, "summary.json")) as f:
        summary = json.load(f)
    return {**{k: summary.get(k) for k in SUMMARY_KEYS}, "run_id": run_id, "wall_s": round(wall, 1),
            "server_cpu_s": server_used, "chromium_cpu_s": chromium_used,
            "chromium_cores": round(chromium_used / wall, 3) if wall else None, "chromium_timeline": timeline}


def headless_run(config_path: str, env: dict, timeout_s: float) -> dict:
    out = tempfile.mkdtemp(prefix="headless-")
    t0 = time.monotonic()
    proc = subprocess.run([PY, "-m", "core.train", "--config", config_path, "--output-dir", out], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        raise RuntimeError(f"headless run failed: {proc.stderr[-1500:]}")
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    return {**{k: summary.get(k) for k in SUMMARY_KEYS}, "wall_s": round(time.monotonic() - t0, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pairs", type=int, default=MIN_PAIRS)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer pairs allowed, labelled NOT A RESULT")
    ap.add_argument("--query", default="ep=10", help="Train page URL keys on top of the app's defaults "
                    "(ep=10: 240 steps, long enough that the page's one-off reruns weigh little)")
    ap.add_argument("--chromium", default=os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--app-env", action="append", default=[], metavar="KEY=VALUE",
                    help="an environment variable for the app's server only (a variant to compare)")
    ap.add_argument("--name", default="app_browser_vs_headless")
    args = ap.parse_args(argv)
    check_pairs(args.pairs, args.quick)
    record, load_before = machine_record(), loadavg()
    tmp = tempfile.mkdtemp(prefix="app-browser-")
    runs_dir = os.path.join(tmp, "runs")
    os.makedirs(runs_dir)
    env = offline_env(PLAYGROUND_RUNS_DIR=runs_dir,
                      PLAYGROUND_CACHE_DIR=os.environ.get("PLAYGROUND_CACHE_DIR") or os.path.join(ROOT, ".cache", "models"))
    prepare_model_cache(env)
    try:
        app_env = dict(kv.split("=", 1) for kv in args.app_env)
        proc, url = start_app({**env, **app_env}, os.path.join(tmp, "server.log"))
    except AppDidNotStart as e:
        raise SystemExit(str(e)) from None
    rows = []
    config_path = None
    try:
        for i in range(args.pairs):
            # pair 0 starts with the app: its run's config.json is the job both sides then run
            for side in pair_order(i, ["app", "headless"]):
                if side == "app":
                    r = app_run(url, proc.pid, runs_dir, args.chromium, args.query, args.timeout)
                    config_path = config_path or os.path.join(runs_dir, r["run_id"], "config.json")
                else:
                    r = headless_run(config_path, env, args.timeout)
                rows.append({"side": side, "pair": i, **r, "loadavg": loadavg()})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        stop_app(proc)
    sps = {side: [r["samples_per_second"] for r in rows if r["side"] == side and r["samples_per_second"]]
           for side in ("app", "headless")}
    ratios = []
    for i in range(args.pairs):
        a = next(r for r in rows if r["side"] == "app" and r["pair"] == i)
        h = next(r for r in rows if r["side"] == "headless" and r["pair"] == i)
        check_same_setting(a, h)  # the headless side reruns the app's config.json: same threads, precision
        if a["samples_per_second"] and h["samples_per_second"]:
            ratios.append(a["samples_per_second"] / h["samples_per_second"])
    result = {"pairs": args.pairs, "query": args.query, "app_env": args.app_env, "rows": rows,
              "app_sps_median": statistics.median(sps["app"]) if sps["app"] else None,
              "headless_sps_median": statistics.median(sps["headless"]) if sps["headless"] else None,
              "ratios": [round(x, 3) for x in ratios],
              "ratio_median": round(statistics.median(ratios), 3) if ratios else None,
              "ratio_spread": spread(ratios), "machine": record,
              "chromium_cores_median": statistics.median([r["chromium_cores"] for r in rows if r["side"] == "app"])
              if sps["app"] else None}
    md = (protocol_header(record, load_before, loadavg(), "train_call", args.pairs, args.quick)
          + f"App in Chromium vs headless (`--query {args.query}`"
          f"{''.join(f' --app-env {kv}' for kv in args.app_env)}): app/headless "
          f"samples/s {spread_text(result['ratio_spread'])} (per pair {result['ratios']})\n\n"
          + md_table(rows, ["pair", "side", "samples_per_second", "train_time_s", "threads", "precision",
                            "server_cpu_s", "chromium_cpu_s", "chromium_cores", "wall_s", "loadavg"],
                     ["pair", "side", "samples/s", "train s", "threads", "precision", "server CPU s",
                      "Chromium CPU s", "Chromium cores", "wall s", "load"]))
    save(args.name, result, md)
    print(md)
    return result


if __name__ == "__main__":
    main()
