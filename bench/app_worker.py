"""Child process: run jobs through the app's JobManager (its background thread), as the Train page
does, and print one JSON line: per job samples/s, threads, submit -> first "log" event (first loss
point) and submit -> "start" event. With --repeat 2 the second job finds the model files warm in
the page cache and the libraries imported (the app's steady state).

    python bench/app_worker.py '<json config>' [--repeat 2]
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    t_proc = time.perf_counter()
    cfg_dict = json.loads(sys.argv[1])
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 1
    os.environ.setdefault("PLAYGROUND_RUNS_DIR", tempfile.mkdtemp(prefix="bench-app-runs-"))
    from core.config import RunConfig
    from core.jobs import JobManager
    t_import = time.perf_counter() - t_proc
    mgr = JobManager()
    out = {"import_s": round(t_import, 2), "jobs": []}
    for _ in range(repeat):
        t0 = time.perf_counter()
        job_id = mgr.submit(RunConfig.from_dict(cfg_dict), owner="bench")
        first_log = start = None
        seen = 0
        while True:
            snap = mgr.snapshot(job_id, since=seen)
            for ev in snap.get("events", []):
                if ev.get("type") == "log" and first_log is None:
                    first_log = time.perf_counter() - t0
                if ev.get("type") == "start" and start is None:
                    start = time.perf_counter() - t0
                    threads = ev.get("threads")
            seen = snap.get("n_events", seen)
            if snap["state"] in ("completed", "failed", "stopped", "cancelled"):
                break
            time.sleep(0.05)
        summary = snap.get("summary") or {}
        out["jobs"].append({"state": snap["state"], "error": snap.get("error"), "threads": summary.get("threads"),
                            "samples_per_second": summary.get("samples_per_second"),
                            "train_time_s": summary.get("train_time_s"),
                            "accuracy": (summary.get("final") or {}).get("eval_accuracy"),
                            "submit_to_start_s": None if start is None else round(start, 2),
                            "submit_to_first_loss_s": None if first_log is None else round(first_log, 2),
                            "wall_s": round(time.perf_counter() - t0, 2)})
    mgr.shutdown()
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
