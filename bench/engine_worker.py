"""Child process: run one engine job (core.train.run) from a JSON config and print one JSON line with
the summary plus a profile: time per phase, time spent in evaluations inside train(), first-loss time.

    python bench/engine_worker.py '<json config>'   (or a path to a .json file)
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
    arg = sys.argv[1]
    cfg_dict = json.load(open(arg)) if os.path.exists(arg) else json.loads(arg)
    import torch
    from transformers import Trainer

    from core.config import RunConfig
    from core.train import run
    t_import = time.perf_counter() - t_proc
    eval_time = [0.0, 0]
    orig = Trainer.evaluate

    def timed(self, *a, **kw):  # profile only: how much of train() goes to evaluations
        t0 = time.perf_counter()
        try:
            return orig(self, *a, **kw)
        finally:
            if kw.get("metric_key_prefix", "eval") == "eval":
                eval_time[0] += time.perf_counter() - t0
                eval_time[1] += 1

    Trainer.evaluate = timed
    if os.environ.get("BENCH_NO_OWN_WEIGHTS") == "1":  # measure the "before" of that QLoRA fix
        import core.methods.qlora as q
        q.own_unquantized_weights = lambda model: None
    cfg = RunConfig.from_dict(cfg_dict)
    events = []
    import psutil
    proc = psutil.Process()
    rss_at = {}

    def on_event(e):
        events.append((time.perf_counter(), e))
        if e["type"] in ("phase", "start"):  # RSS when each phase begins: what loading cost
            rss_at[e.get("phase", "start")] = round(proc.memory_info().rss / 2**20, 1)

    t_run = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(cfg, os.path.join(tmp, "run"), on_event)
    phases = {}
    last = None
    for t, e in events:
        if e["type"] in ("phase", "start"):
            if last:
                phases[last[0]] = round(t - last[1], 3)
            last = (e.get("phase", "training"), t)
    first_log = next((t - t_run for t, e in events if e["type"] == "log"), None)
    out = {k: summary.get(k) for k in ("method", "model", "trainable_params", "total_params", "n_train", "n_val",
                                       "threads", "train_time_s", "wall_time_s", "samples_per_second", "steps",
                                       "peak_rss_mb", "latency_ms_per_sample", "precision")}
    out.update({"accuracy": summary["final"].get("eval_accuracy"), "eval_loss": summary["final"].get("eval_loss"),
                "torch_threads": torch.get_num_threads(), "import_s": round(t_import, 2), "phases_s": phases,
                "evals_in_train": eval_time[1], "eval_in_train_s": round(eval_time[0], 2),
                "first_log_s": None if first_log is None else round(first_log, 2),
                "rss_at_phase_mb": rss_at, "timeline": [(round(t - t_run, 2), e["type"], e.get("phase"))
                                                        for t, e in events if e["type"] != "progress"][:40]})
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
