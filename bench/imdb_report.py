"""Report the shipped IMDb default on the **test** part (bench/splits.py): train
examples/lora_imdb.yaml as shipped on rows of the dev part, score on the 1,000 test reviews that no
tuning script reads. This is the figure BENCHMARKS.md quotes for "the defaults learn".

    python bench/imdb_report.py [--config examples/lora_imdb.yaml] [--quick]

--quick trains on 64 dev rows and scores 64 test rows at length 32: a smoke test, not a result.
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

from bench import common, splits  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/lora_imdb.yaml")
    ap.add_argument("--quick", action="store_true", help="smoke mode: tiny sizes, output labelled NOT A RESULT")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the engine's default); on a "
                    "crowded machine 1 avoids OpenMP barrier stalls")
    ap.add_argument("--name", default="imdb_report")
    args = ap.parse_args(argv)
    from core.config import load_config
    from core.train import run
    la0 = common.loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        dev, test = splits.write_imdb_dev(tmp), splits.write_imdb_test(tmp)
        if args.quick:
            test = common.write_jsonl(common.read_jsonl(test)[:64], os.path.join(tmp, "test64.jsonl"))
        sets = [f"data.source={dev}", f"data.eval_source={test}"]
        if args.threads:
            sets.append(f"train.torch_threads={args.threads}")
        if args.quick:
            sets += ["data.n_samples=64", "data.max_length=32", "train.eval_max_rows=16"]
        cfg = load_config(args.config).with_overrides(sets)
        t0 = time.perf_counter()
        summary = run(cfg, os.path.join(tmp, "run"))
    row = {"config": args.config, "split": "test", "test_accuracy": summary["final"].get("eval_accuracy"),
           "n_test": summary["n_val"], "n_train": summary["n_train"], "precision": summary.get("precision"),
           "threads": summary.get("threads"), "train_time_s": summary["train_time_s"],
           "wall_s": round(time.perf_counter() - t0, 1), "loadavg": f"{la0}-{common.loadavg()}",
           "dev_fingerprint": splits.fingerprint(splits.imdb_dev()),
           "test_fingerprint": splits.fingerprint(splits.imdb_test())}
    record = common.machine_record()
    md = (common.protocol_header(record, la0, common.loadavg(), quick=args.quick)
          + "Shipped IMDb default on the test part (`python bench/imdb_report.py`)\n\n"
          + common.md_table([row], ["config", "test_accuracy", "n_test", "n_train", "precision", "threads",
                                    "train_time_s", "loadavg", "test_fingerprint"]))
    payload = {"quick": args.quick, "machine": record, "table": [row]}
    common.save(args.name, payload, md)
    print(json.dumps(row), flush=True)
    return payload


if __name__ == "__main__":
    main()
