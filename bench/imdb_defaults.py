"""Tuning script for the IMDb defaults: train examples/lora_imdb.yaml (or variants) on the **dev**
part of ../shared/data/imdb_train_4000.jsonl (bench/splits.py) and score on a validation share of
that same dev part. It never reads the test part: the shipped default is reported on it by
bench/imdb_report.py, which nothing tunes against.

    python bench/imdb_defaults.py                       # the shipped config
    python bench/imdb_defaults.py --set method.params.top_layers=3 --set data.max_length=128

Prints one JSON line: dev-validation accuracy, train time, samples/s.
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

from bench import splits  # noqa: E402

splits.tuning_only()  # before anything else: this process can no longer read a test part


def build_config(config: str, sets: list[str], folder: str):
    """The run config this script trains: the shipped one, its rows taken from the dev part only."""
    from core.config import load_config
    cfg = load_config(config)
    dev = splits.write_imdb_dev(folder)
    # the validation share comes out of dev too (val_share of the shipped config)
    return cfg.with_overrides([f"data.source={dev}", "data.eval_source=''"] + list(sets))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/lora_imdb.yaml")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    from core.train import run
    with tempfile.TemporaryDirectory() as tmp:
        cfg = build_config(args.config, args.set, tmp)
        t0, c0 = time.perf_counter(), time.process_time()
        summary = run(cfg, os.path.join(tmp, "run"))
    out = {"split": "dev", "sets": args.set, "dev_val_accuracy": summary["final"].get("eval_accuracy"),
           "n_dev_val": summary["n_val"], "n_train": summary["n_train"],
           "train_time_s": summary["train_time_s"], "samples_per_second": summary["samples_per_second"],
           "wall_s": round(time.perf_counter() - t0, 1), "process_cpu_s": round(time.process_time() - c0, 1),
           "load_average": os.getloadavg()[0]}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
