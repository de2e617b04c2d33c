"""A class on one server: N students each open Train, submit a short run and poll their page until it ends.

    python bench/class_load.py --quick                       # 3 students, 1 browser, 1 worker (smoke)
    python bench/class_load.py --students 30 --browsers 3 --modes 1worker,2workers,ray2

Every student talks to a real `streamlit run app.py` over its real websocket (/_stcore/stream):
`--browsers` of them through Playwright + Debian chromium (a real browser context each, which also
runs the page's live fragments), the rest through a light client that speaks Streamlit's protobuf
protocol (BackMsg rerun_script with the page and query string; a widget trigger to press "Start
training"), i.e. exactly what a browser sends, without drawing anything.

Each student's run is a tiny random BERT (2 layers, 32 wide) on 32 built-in rows, set through the
Train page's URL state, so a run costs seconds and the queue, not the model, is measured.
Reported per mode (JSON on the last line of stdout, and a markdown table with --md):
  per student: wait (queued -> started) and finish (submitted -> finished) time, final state;
  p50/p95/max page response while runs trained (a full rerun of the student's Train page);
  errors (page exceptions, failed submits, runs not completed: must be 0); runs per hour.
Modes: 1worker (PLAYGROUND_WORKERS=1), 2workers (PLAYGROUND_WORKERS=2), ray2 (PLAYGROUND_RAY_ADDRESS
at a two-node Ray cluster started on this machine, bench/raycluster.py; needs ray installed).
The machine's load average is printed with the figures: on a shared box they move with it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import appserver  # noqa: E402

CHROMIUM = os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
FINAL = ("completed", "failed", "stopped", "interrupted", "cancelled")
START_LABEL = "Start training"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 3)


def train_query(model: str, name: str, steps: int) -> str:
    # The Train page's URL state (core.urlstate): model, data size, steps, the run's name.
    return urllib.parse.urlencode({"m": model, "n": 32, "len": 32, "bs": 8, "ms": steps, "evs": steps,
                                   "logs": 1, "th": 1, "name": name})


# ------------------------------------------------------------------------ the websocket client

class WsStudent:
    """One Streamlit session over the websocket, as a browser would hold it."""

    def __init__(self, url: str, page: str, query: str):
        from websockets.sync.client import connect
        ws_url = url.replace("http://", "ws://") + "/_stcore/stream"
        # Entered by hand: websockets 17 warns about a connection not opened as a context manager.
        self._connection = connect(ws_url, subprotocols=["streamlit"], origin=url, max_size=None, open_timeout=60)
        self.ws = self._connection.__enter__()
        self.page, self.query = page, query
        self.buttons: dict[str, str] = {}
        self.exceptions: list[str] = []
        self.texts: list[str] = []

    def close(self) -> None:
        try:
            self._connection.__exit__(None, None, None)
        except Exception:  # already closed by the server
            pass

    def rerun(self, trigger: str | None = None, timeout: float = 300) -> float:
        """A full script run of the page (pressing `trigger`, a widget id, if given); seconds until it finished."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.page_name = self.page
        if trigger:
            widget = state.widget_states.widgets.add()
            widget.id = trigger
            widget.trigger_value = True
        t0 = time.perf_counter()
        self.ws.send(msg.SerializeToString())
        self._read_until_finished(t0 + timeout)
        return time.perf_counter() - t0

    def _read_until_finished(self, deadline: float) -> None:
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
        self.buttons, self.texts = {}, []
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError("the page did not finish its script run")
            fwd = ForwardMsg()
            fwd.ParseFromString(self.ws.recv(timeout=left))
            kind = fwd.WhichOneof("type")
            if kind == "delta" and fwd.delta.WhichOneof("type") == "new_element":
                element = fwd.delta.new_element
                which = element.WhichOneof("type")
                if which == "button":
                    self.buttons[element.button.label] = element.button.id
                elif which == "exception":
                    self.exceptions.append(f"{element.exception.type}: {element.exception.message}"[:300])
                elif which == "markdown":
                    self.texts.append(element.markdown.body)
                elif which == "progress":
                    self.texts.append(element.progress.text)
            elif kind == "script_finished":
                # A fragment's timer run, or a run cut short for a rerun the app asked for itself,
                # is not the end of the full run we asked for.
                if fwd.script_finished not in (ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY,
                                               ForwardMsg.FINISHED_EARLY_FOR_RERUN):
                    return


def ws_student(url: str, name: str, query: str, out: dict, poll_s: float, timeout: float, runs_dir: str) -> None:
    client = None
    try:
        client = WsStudent(url, "train", query)
        client.rerun()
        button = client.buttons.get(START_LABEL)
        if not button:
            raise RuntimeError(f"no {START_LABEL!r} button on Train (buttons: {sorted(client.buttons)})")
        out["submitted"] = time.time()
        client.rerun(trigger=button)
        _poll(lambda: client.rerun(), name, out, poll_s, timeout, runs_dir)
        out["errors"].extend(client.exceptions)
    except Exception as exc:  # noqa: BLE001 - counted, reported
        out["errors"].append(f"{type(exc).__name__}: {exc}"[:300])
    finally:
        if client:
            client.close()


def browser_student(url: str, name: str, query: str, out: dict, poll_s: float, timeout: float, runs_dir: str) -> None:
    from playwright.sync_api import expect, sync_playwright
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
                page.set_default_timeout(timeout * 1000)

                def load() -> float:
                    t0 = time.perf_counter()
                    page.goto(f"{url}/train?{query}")
                    page.get_by_role("heading", name="Train", exact=True).wait_for()
                    page.wait_for_timeout(200)
                    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=timeout * 1000)
                    return time.perf_counter() - t0 - 0.2

                load()
                start = page.get_by_role("button", name=START_LABEL)
                expect(start).to_be_enabled(timeout=timeout * 1000)
                out["submitted"] = time.time()
                start.click()
                page.get_by_text(f"{name} · ", exact=False).first.wait_for()
                _poll(load, name, out, poll_s, timeout, runs_dir)
                alerts = page.get_by_test_id("stException")
                out["errors"].extend(alerts.all_inner_texts())
            finally:
                browser.close()
    except Exception as exc:  # noqa: BLE001
        out["errors"].append(f"{type(exc).__name__}: {str(exc)[:300]}")


def _find_run(runs_dir: str, name: str) -> dict | None:
    for entry in os.scandir(runs_dir) if os.path.isdir(runs_dir) else ():
        try:
            with open(os.path.join(entry.path, "status.json"), encoding="utf-8") as fh:
                status = json.load(fh)
        except (OSError, ValueError):
            continue
        if status.get("name") == name:
            return status
    return None


def _poll(load, name: str, out: dict, poll_s: float, timeout: float, runs_dir: str) -> None:
    """Re-render the page every poll_s until this student's run has ended; record response times."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = _find_run(runs_dir, name)
        if status and status.get("state") in FINAL:
            out["status"] = status
            return
        elapsed = load()
        out["responses"].append({"t": time.time(), "s": round(elapsed, 3)})
        time.sleep(max(0.0, poll_s - elapsed))
    out["errors"].append(f"run {name} did not end within {timeout:.0f} s")
    out["status"] = _find_run(runs_dir, name) or {}


# ------------------------------------------------------------------------------------ one mode

def run_mode(mode: str, students: int, browsers: int, steps: int, poll_s: float, timeout: float,
             model: str, log_dir: str) -> dict:
    tmp = tempfile.mkdtemp(prefix=f"class-load-{mode}-")
    runs_dir = os.path.join(tmp, "runs")
    extra = {"PLAYGROUND_RUNS_DIR": runs_dir, "PLAYGROUND_UPLOADS_DIR": os.path.join(tmp, "uploads"),
             "PLAYGROUND_MAX_QUEUE": str(students + 5), "PLAYGROUND_TRAIN_THREADS": "1"}
    cluster = None
    if mode == "1worker":
        extra["PLAYGROUND_WORKERS"] = "1"
    elif mode == "2workers":
        extra["PLAYGROUND_WORKERS"] = "2"
    elif mode == "ray2":
        from bench import raycluster
        cluster = raycluster.start(nodes=2, cpus_per_node=1)
        extra["PLAYGROUND_RAY_ADDRESS"] = cluster["address"]
        extra["PLAYGROUND_WORKERS"] = "2"  # two runs in flight, one per node
    else:
        raise SystemExit(f"unknown mode {mode!r}: one of 1worker, 2workers, ray2")
    env = appserver.offline_env(**extra)
    proc = None
    try:
        proc, url = appserver.start_app(env, os.path.join(log_dir, f"class_load_{mode}.log"), 180)
        results = [{"name": f"student-{i:02d}", "browser": i < browsers, "errors": [], "responses": []}
                   for i in range(students)]
        threads = []
        t0 = time.time()
        for i, out in enumerate(results):
            fn = browser_student if out["browser"] else ws_student
            thread = threading.Thread(target=fn, args=(url, out["name"], train_query(model, out["name"], steps), out,
                                                       poll_s, timeout, runs_dir), daemon=True)
            thread.start()
            threads.append(thread)
            time.sleep(0.3)  # a class arrives within seconds, not within one millisecond
        for thread in threads:
            thread.join(timeout + 120)
        wall = time.time() - t0
    finally:
        if proc is not None:
            appserver.stop_app(proc)
        if cluster is not None:
            from bench import raycluster
            raycluster.stop(cluster)
        shutil.rmtree(tmp, ignore_errors=True)
    return summarise(mode, results, wall)


def summarise(mode: str, results: list[dict], wall: float) -> dict:
    per_student, errors, responses = [], [], []
    created, finished = [], []
    for r in results:
        status = r.get("status") or {}
        c, s, f = status.get("created"), status.get("started"), status.get("finished")
        row = {"name": r["name"], "browser": r["browser"], "state": status.get("state", "missing"),
               "wait_s": round(s - c, 2) if c and s else None,
               "finish_s": round(f - r["submitted"], 2) if f and r.get("submitted") else None}
        per_student.append(row)
        errors += [f"{r['name']}: {e}" for e in r["errors"]]
        if row["state"] != "completed":
            errors.append(f"{r['name']}: run ended {row['state']}: {status.get('message', '')}"[:300])
        # page responses while some run trains: between the first start and the last finish
        responses += [x["s"] for x in r["responses"]]
        if c and f:
            created.append(c)
            finished.append(f)
    completed = sum(1 for row in per_student if row["state"] == "completed")
    span = (max(finished) - min(created)) if created else None
    waits = [row["wait_s"] for row in per_student if row["wait_s"] is not None]
    finishes = [row["finish_s"] for row in per_student if row["finish_s"] is not None]
    return {
        "mode": mode, "students": len(results), "browsers": sum(r["browser"] for r in results),
        "completed": completed, "errors": errors, "n_errors": len(errors),
        "runs_per_hour": round(completed / span * 3600, 1) if span else None,
        "wait_s": {"p50": percentile(waits, 0.5), "p95": percentile(waits, 0.95), "max": max(waits, default=None)},
        "finish_s": {"p50": percentile(finishes, 0.5), "p95": percentile(finishes, 0.95),
                     "max": max(finishes, default=None)},
        "page_s": {"p50": percentile(responses, 0.5), "p95": percentile(responses, 0.95),
                   "max": max(responses, default=None), "n": len(responses)},
        "wall_s": round(wall, 1), "load_avg": [round(x, 2) for x in os.getloadavg()],
        "per_student": per_student,
    }


def markdown(reports: list[dict]) -> str:
    lines = ["| mode | students (browsers) | completed | errors | runs/hour | wait p50/p95 s | finish p50/p95 s "
             "| page p50/p95 s | load avg |", "|---|---|---|---|---|---|---|---|---|"]
    for r in reports:
        lines.append(f"| {r['mode']} | {r['students']} ({r['browsers']}) | {r['completed']} | {r['n_errors']} "
                     f"| {r['runs_per_hour']} | {r['wait_s']['p50']} / {r['wait_s']['p95']} "
                     f"| {r['finish_s']['p50']} / {r['finish_s']['p95']} | {r['page_s']['p50']} / {r['page_s']['p95']} "
                     f"| {r['load_avg'][0]} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", type=int, default=30)
    ap.add_argument("--browsers", type=int, default=3, help="students in a real Playwright browser context")
    ap.add_argument("--modes", default="1worker,2workers,ray2")
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per student's run")
    ap.add_argument("--poll", type=float, default=3.0, help="seconds between a student's page views")
    ap.add_argument("--timeout", type=float, default=3600.0, help="per student, submit to finish")
    ap.add_argument("--quick", action="store_true", help="3 students, 1 browser, 1worker: a smoke run")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "out"))
    ap.add_argument("--md", action="store_true", help="print a markdown table too")
    args = ap.parse_args(argv)
    if args.quick:
        args.students, args.browsers, args.modes, args.steps = 3, 1, "1worker", 4
        args.timeout = min(args.timeout, 900)
    if args.browsers and not os.path.exists(CHROMIUM):
        print(f"no chromium at {CHROMIUM}: all students use the websocket client", file=sys.stderr)
        args.browsers = 0
    os.makedirs(args.out, exist_ok=True)
    from bench.load_test import make_tiny_bert
    model_dir = tempfile.mkdtemp(prefix="class-load-model-")
    model = make_tiny_bert(os.path.join(model_dir, "tiny-bert"))
    reports = []
    try:
        for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
            if mode == "ray2":
                import importlib.util
                if importlib.util.find_spec("ray") is None:
                    reports.append({"mode": mode, "skipped": "ray is not installed (pip install -r requirements-ray.txt)"})
                    continue
            reports.append(run_mode(mode, args.students, min(args.browsers, args.students), args.steps, args.poll,
                                    args.timeout, model, args.out))
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)
    done = [r for r in reports if "skipped" not in r]
    if args.md:
        print(markdown(done))
    result = {"quick": args.quick, "reports": reports}
    with open(os.path.join(args.out, "class_load" + ("_quick" if args.quick else "") + ".json"), "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result))
    return 0 if all(r["n_errors"] == 0 for r in done) else 1


if __name__ == "__main__":
    sys.exit(main())
