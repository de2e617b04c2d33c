"""Frozen base + linear head: cached features (method param cache_features) vs the full forward
every epoch. Time per epoch after the first = (T(E epochs) - T(1 epoch)) / (E - 1), each from its
own fresh process, cache on and off alternating.

    python bench/linear_head_cache.py [--rows 300] [--epochs 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import DATA, PY, ROOT, balanced_split, engine_cfg, loadavg, md_table, run_child, save, write_jsonl  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--name", default="linear_head_cache")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-lh-")
    tr, te = balanced_split(os.path.join(DATA, "imdb_train_4000.jsonl"), args.rows, 64)
    paths = write_jsonl(tr, os.path.join(tmp, "tr.jsonl")), write_jsonl(te, os.path.join(tmp, "te.jsonl"))
    res = {}
    for epochs in (1, args.epochs):
        for cache in (True, False) if epochs == 1 else (False, True):
            cfg = engine_cfg(args.model, "linear_head", {"cache_features": cache}, *paths, max_length=args.max_length,
                             batch_size=16, lr=2e-3, epochs=epochs,
                             extra_train={"eval_steps": 1_000_000, "eval_max_rows": 16, "torch_threads": args.threads})
            r = run_child([PY, os.path.join(ROOT, "bench", "engine_worker.py"), json.dumps(cfg)])
            res[(cache, epochs)] = r
            print(json.dumps({"cache": cache, "epochs": epochs, "train_time_s": r.get("train_time_s"),
                              "accuracy": r.get("accuracy"), "rc": r["_rc"], "load": r["_loadavg"]}), file=sys.stderr,
                  flush=True)
    table = []
    for cache in (True, False):
        t1, te_ = res[(cache, 1)].get("train_time_s"), res[(cache, args.epochs)].get("train_time_s")
        if t1 is None or te_ is None:
            continue
        table.append({"cache_features": cache, "first_epoch_s": t1, f"{args.epochs}_epochs_s": te_,
                      "per_later_epoch_s": round((te_ - t1) / (args.epochs - 1), 3),
                      "accuracy": res[(cache, args.epochs)].get("accuracy"),
                      "loadavg": max(max(res[(cache, e)]["_loadavg"]) for e in (1, args.epochs))})
    if len(table) == 2 and table[0]["per_later_epoch_s"] > 0:
        table[1]["speedup"] = round(table[1]["per_later_epoch_s"] / table[0]["per_later_epoch_s"], 1)
    md = (f"linear_head on {args.model}, {args.rows} IMDb rows, max length {args.max_length}, {args.threads} thread(s)\n\n"
          + md_table(table, ["cache_features", "first_epoch_s", f"{args.epochs}_epochs_s", "per_later_epoch_s", "speedup",
                             "accuracy", "loadavg"],
                     ["cache_features", "1 epoch s (incl. feature pass)", f"{args.epochs} epochs s", "s per later epoch",
                      "cache speed-up", "accuracy", "load"]))
    payload = {"args": vars(args), "table": table, "loadavg_end": loadavg()}
    save(args.name, payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
