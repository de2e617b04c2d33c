"""App vs headless: the same job through the app's JobManager thread (every core, the trainer at
nice 10, as in the app) and through the engine directly, alternating. Also a host's alternative:
the app keeping a core free for its pages (PLAYGROUND_TRAIN_THREADS = cores - 1). Reports samples/s
ratios, threads, and the click -> first loss point latency (JobManager.submit -> first "log"
event), cold (first job of a fresh process) and warm (second job in the same process).

    python bench/app_vs_headless.py [--rows 160] [--pairs 5] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import (DATA, MIN_PAIRS, PY, ROOT, balanced_split, check_pairs, engine_cfg, loadavg,  # noqa: E402
                          machine_record, md_table, pair_order, protocol_header, run_child, save, spread, spread_text,
                          write_jsonl)
from core.jobs import OPENMP_SPINCOUNT  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=160)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--pairs", type=int, default=MIN_PAIRS)
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer pairs allowed, labelled NOT A RESULT")
    ap.add_argument("--name", default="app_vs_headless")
    args = ap.parse_args(argv)
    check_pairs(args.pairs, args.quick)
    record, load_before = machine_record(), loadavg()
    tmp = tempfile.mkdtemp(prefix="bench-app-")
    tr, te = balanced_split(os.path.join(DATA, "imdb_train_4000.jsonl"), args.rows, 64)
    cfg = engine_cfg("minilm", "lora", {"r": 8, "alpha": 16, "targets": "all-linear"},
                     write_jsonl(tr, os.path.join(tmp, "tr.jsonl")), write_jsonl(te, os.path.join(tmp, "te.jsonl")),
                     max_length=args.max_length, batch_size=16, extra_train={"eval_max_rows": 32})
    cores = os.cpu_count() or 1
    app_env = {"GOMP_SPINCOUNT": OPENMP_SPINCOUNT}  # what pages.ui sets for the app's process
    sides = [("headless", lambda: run_child([PY, os.path.join(ROOT, "bench", "engine_worker.py"), json.dumps(cfg)])),
             ("app (as shipped)", lambda: run_child([PY, os.path.join(ROOT, "bench", "app_worker.py"), json.dumps(cfg),
                                                     "--repeat", "2"], env=app_env)),
             ("app, a core kept free", lambda: run_child([PY, os.path.join(ROOT, "bench", "app_worker.py"),
                                                          json.dumps(cfg)],
                                                         env={**app_env, "PLAYGROUND_TRAIN_THREADS": str(max(1, cores - 1))}))]
    runs = []
    for i in range(args.pairs):
        for name, fn in pair_order(i, sides):
            r = fn()
            job = (r.get("jobs") or [r])[0]
            rec = {"side": name, "pair": i, "sps": job.get("samples_per_second"), "threads": job.get("threads"),
                   "accuracy": job.get("accuracy"), "first_loss_cold_s": job.get("submit_to_first_loss_s"),
                   "first_loss_warm_s": (r.get("jobs") or [{}, {}])[1].get("submit_to_first_loss_s")
                   if len(r.get("jobs") or []) > 1 else None,
                   "sps_warm": (r.get("jobs") or [{}, {}])[1].get("samples_per_second") if len(r.get("jobs") or []) > 1 else None,
                   "loadavg": r["_loadavg"], "rc": r["_rc"], "err": r.get("_stderr_tail", "")[-300:] if r["_rc"] else ""}
            runs.append(rec)
            print(json.dumps(rec), file=sys.stderr, flush=True)
    head = [r for r in runs if r["side"] == "headless" and r["sps"]]
    table = []
    for name, _ in sides:
        mine = [r for r in runs if r["side"] == name and r["sps"]]
        if not mine:
            continue
        ratios = [m["sps"] / h["sps"] for m, h in zip(mine, head)]
        table.append({"side": name, "threads": mine[0]["threads"], "samples_per_s": statistics.median(m["sps"] for m in mine),
                      "ratio_vs_headless": spread_text(spread(ratios)), "ratios": [round(x, 3) for x in ratios],
                      "first_loss_cold_s": mine[0]["first_loss_cold_s"], "first_loss_warm_s": mine[0]["first_loss_warm_s"],
                      "loadavg": f"{min(min(r['loadavg']) for r in mine):.1f}-{max(max(r['loadavg']) for r in mine):.1f}"})
    md = (protocol_header(record, load_before, loadavg(), "train_call", args.pairs, args.quick)
          + f"App (JobManager thread) vs headless, minilm LoRA, {args.rows} rows\n\n"
          + md_table(table, ["side", "threads", "samples_per_s", "ratio_vs_headless", "ratios", "first_loss_cold_s",
                             "first_loss_warm_s", "loadavg"],
                     ["side", "torch threads", "samples/s", "ratio vs headless", "per round", "submit->first loss, cold s",
                      "warm s", "load"]))
    payload = {"args": vars(args), "machine": record, "runs": runs, "table": table, "loadavg_end": loadavg()}
    save(args.name, payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
