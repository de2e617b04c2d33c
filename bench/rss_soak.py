"""Does a long-lived server leak? N consecutive runs through the JobManager in one process.

    python bench/rss_soak.py                  # 20 runs of a tiny random BERT (about a minute)
    python bench/rss_soak.py --real           # 20 runs of the embedded MiniLM on builtin:sentiment
    python bench/rss_soak.py --runs 40 --no-compare

After each run (and, as the Compare page would, after loading its model through core.model_cache
and classifying one sentence) the process's RSS is measured with psutil, after gc. Prints one
JSON object (last line of stdout): the RSS series in MB, the growth from run 5 to the last run
(runs 1-4 warm up allocators, caches and lazy imports), and what the manager still holds. Exits
1 when the growth is 5 % or more.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GROWTH_LIMIT_PCT = 5.0


def rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def soak(n_runs: int, model: str, data_source: str, steps: int, compare: bool, n_samples: int = 0) -> dict:
    from core import jobs, model_cache
    from core.config import RunConfig
    jobs.reset_manager()
    mgr = jobs.get_manager()
    series, durations, states = [], [], []
    for i in range(n_runs):
        cfg = RunConfig.from_dict({
            "name": f"soak-{i}", "model": {"name": model},
            "data": {"source": data_source, "task": "classification", "max_length": 64, "n_samples": n_samples},
            "method": {"name": "lora", "params": {"r": 4}},
            "train": {"max_steps": steps, "batch_size": 8, "logging_steps": 1, "seed": i}})
        t0 = time.perf_counter()
        run_id = mgr.submit(cfg, "soak-session")
        while mgr.snapshot(run_id, events=False)["state"] in ("queued", "running"):
            time.sleep(0.02)
        snap = mgr.snapshot(run_id, events=False)
        states.append(snap["state"])
        if snap["state"] != "completed":
            raise SystemExit(f"run {i} ended {snap['state']}: {snap['error']}")
        if compare:
            from core import runs
            model_cache.get(runs.run_dir_for(run_id)).classify("a wonderful film")
        durations.append(round(time.perf_counter() - t0, 2))
        gc.collect()
        series.append(round(rss_mb(), 1))
        print(f"run {i + 1:2d}: rss {series[-1]:7.1f} MB  ({durations[-1]:.1f} s)", file=sys.stderr, flush=True)
    base = series[4] if len(series) >= 5 else series[0]
    growth = 100.0 * (series[-1] - base) / base
    held = {"jobs_in_memory": len(mgr._jobs), "events_in_memory": sum(len(j.events) for j in mgr._jobs.values()),
            "models_cached": model_cache.stats()["loaded"], "threads": threading.active_count()}
    jobs.reset_manager()
    model_cache.clear()
    return {"runs": n_runs, "steps_per_run": steps, "rss_mb": series, "run_s": durations,
            "growth_run5_to_last_pct": round(growth, 2), "growth_run5_to_last_mb": round(series[-1] - base, 1),
            "limit_pct": GROWTH_LIMIT_PCT, "ok": growth < GROWTH_LIMIT_PCT, "held_at_end": held}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--steps", type=int, default=8, help="optimizer steps per run")
    ap.add_argument("--real", action="store_true", help="the embedded MiniLM on builtin:sentiment")
    ap.add_argument("--no-compare", dest="compare", action="store_false",
                    help="do not load each run's model through core.model_cache after it")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="playground-soak-") as tmp:
        os.environ["PLAYGROUND_RUNS_DIR"] = os.path.join(tmp, "runs")
        if args.real:
            model, source, n_samples = "minilm", "builtin:sentiment", 64
        else:
            from load_test import make_sentiment_file, make_tiny_bert
            model = make_tiny_bert(os.path.join(tmp, "tiny-bert"))
            source, n_samples = make_sentiment_file(os.path.join(tmp, "sentiment.jsonl")), 0
        result = soak(args.runs, model, source, args.steps, args.compare, n_samples)
    result["model"] = "minilm" if args.real else "tiny-bert (2 layers, 32 wide)"
    result["compare"] = args.compare
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
