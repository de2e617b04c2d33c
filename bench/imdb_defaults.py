"""Do the app's defaults learn? Train examples/lora_imdb.yaml (or variants) on part of
../shared/data/imdb_train_4000.jsonl and test on 1,000 reviews the run never saw.

    python bench/imdb_defaults.py                       # the shipped config
    python bench/imdb_defaults.py --set method.params.top_layers=3 --set data.max_length=128

Prints one JSON line: accuracy on the held-out reviews, train time, samples/s.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/lora_imdb.yaml")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args()
    from core.config import load_config
    from core.train import run
    cfg = load_config(args.config)
    if args.set:
        cfg = cfg.with_overrides(args.set)
    t0 = time.perf_counter()
    c0 = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(cfg, os.path.join(tmp, "run"))
    print(json.dumps({"sets": args.set, "heldout_accuracy": summary["final"].get("eval_accuracy"),
                      "n_heldout": summary["n_val"], "n_train": summary["n_train"],
                      "train_time_s": summary["train_time_s"], "samples_per_second": summary["samples_per_second"],
                      "wall_s": round(time.perf_counter() - t0, 1),
                      "process_cpu_s": round(time.process_time() - c0, 1),
                      "load_average": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
