"""Accuracy by method on real data, and the data-size study (seed 002's N x V tables), each run a
fresh subprocess of the engine (bench/engine_worker.py).

    python bench/accuracy_by_method.py methods  [--models minilm,smollm2-135m-instruct] [--budget full|quick]
    python bench/accuracy_by_method.py datasize [--budget full|quick]

Data (../shared/data): IMDb sample -> a fixed test set (last rows of one shuffle) and N training rows
from the rest; SST-2 -> train on rt_polarity_train.jsonl (SST-2 dev sentences already removed),
test on all 872 rows of sst2_dev.jsonl. Mid-run evaluation only at the start on 50 rows (the
budget goes to training); the final evaluation uses every test row.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import DATA, PY, ROOT, balanced_split, engine_cfg, loadavg, md_table, read_jsonl, run_child, save, write_jsonl  # noqa: E402

# method -> (params, learning rate, epochs multiplier)
METHODS = {
    "zero_shot": ({}, 1e-3, 1),
    "linear_head": ({"cache_features": True}, 2e-3, 10),
    "full": ({}, 5e-5, 1),
    "lora": ({"r": 8, "alpha": 16, "dropout": 0.05, "targets": "all-linear"}, 1e-3, 1),
    "qlora": ({"r": 8, "alpha": 16, "dropout": 0.05, "targets": "all-linear"}, 1e-3, 1),
    "prompt_tuning": ({"num_virtual_tokens": 20}, 1e-2, 1),
    "ia3": ({}, 5e-3, 1),
}
BUDGETS = {
    # per model: {dataset: (n_train, n_test, max_length, epochs, batch)}; sized for a shared 2-core CPU
    "full": {"minilm": {"sst2": (400, 400, 48, 1, 16), "imdb": (200, 200, 128, 1, 16)},
             "smollm2-135m-instruct": {"sst2": (160, 200, 48, 1, 8), "imdb": (64, 100, 128, 1, 8)}},
    "quick": {"minilm": {"imdb": (24, 24, 32, 1, 8), "sst2": (24, 24, 32, 1, 8)},
              "smollm2-135m-instruct": {"imdb": (8, 8, 32, 1, 4)}},
}
DATASIZE = {"full": dict(ns=(50, 150, 500, 2500), n_test=400, max_length=48, epochs=2, batch=16),
            "quick": dict(ns=(16, 32), n_test=24, max_length=32, epochs=1, batch=8)}


def files(tmp: str, dataset: str, n_train: int, n_test: int) -> tuple[str, str]:
    if dataset == "imdb":
        tr, te = balanced_split(os.path.join(DATA, "imdb_train_4000.jsonl"), n_train, n_test)
    else:
        import random
        tr = read_jsonl(os.path.join(DATA, "rt_polarity_train.jsonl"))
        random.Random(0).shuffle(tr)
        tr = tr[:n_train]
        te = read_jsonl(os.path.join(DATA, "sst2_dev.jsonl"))[:n_test]
    tag = f"{dataset}-{n_train}-{n_test}"
    return (write_jsonl(tr, os.path.join(tmp, f"{tag}-train.jsonl")),
            write_jsonl(te, os.path.join(tmp, f"{tag}-test.jsonl")))


def one(job: dict, threads: int) -> dict:
    cfg = engine_cfg(job["model"], job["method"], job["params"], job["train_path"], job["test_path"],
                     max_length=job["max_length"], batch_size=job["batch"], lr=job["lr"], epochs=job["epochs"],
                     extra_train={"eval_steps": 1_000_000, "eval_max_rows": 50, "torch_threads": threads,
                                  "logging_steps": 10},
                     extra_data={"truncation": "head_tail"} if job["dataset"] == "imdb" else None)
    r = run_child([PY, os.path.join(ROOT, "bench", "engine_worker.py"), json.dumps(cfg)], timeout=3600)
    row = {k: job[k] for k in ("model", "dataset", "method", "label", "n_train", "n_test", "epochs", "lr")}
    row.update({"accuracy": r.get("accuracy"), "trainable_params": r.get("trainable_params"),
                "train_time_s": r.get("train_time_s"), "peak_rss_mb": r["_peak_rss_mb"],
                "latency_ms": r.get("latency_ms_per_sample"), "threads": r.get("torch_threads"),
                "loadavg": r["_loadavg"][1], "rc": r["_rc"]})
    if r["_rc"] != 0:
        row["error"] = (r.get("_stderr_tail") or "")[-600:]
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("study", choices=("methods", "datasize"))
    ap.add_argument("--budget", choices=("full", "quick"), default="full")
    ap.add_argument("--models", default="minilm,smollm2-135m-instruct")
    ap.add_argument("--datasets", default="imdb,sst2")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--jobs", type=int, default=1, help="runs in parallel (each with --threads torch threads)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per run (1: on a shared 2-core machine, no OpenMP barrier stalls)")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-acc-")
    jobs = []
    if args.study == "methods":
        for model in args.models.split(","):
            for dataset, (n_train, n_test, max_len, epochs, batch) in BUDGETS[args.budget].get(model, {}).items():
                if dataset not in args.datasets.split(","):
                    continue
                train_path, test_path = files(tmp, dataset, n_train, n_test)
                for method in args.methods.split(","):
                    if method == "qlora" and model == "minilm" and args.budget == "quick":
                        continue
                    params, lr, mult = METHODS[method]
                    jobs.append(dict(model=model, dataset=dataset, method=method, label=method, params=params, lr=lr,
                                     epochs=epochs * mult, n_train=n_train, n_test=n_test, max_length=max_len,
                                     batch=batch, train_path=train_path, test_path=test_path))
    else:
        d = DATASIZE[args.budget]
        for n in d["ns"]:
            train_path, test_path = files(tmp, "sst2", n, d["n_test"])
            for label, method, params, lr in (
                    ("LoRA r=8", "lora", {"r": 8, "alpha": 16, "dropout": 0.1, "targets": "auto"}, 1e-3),
                    ("PT V=8", "prompt_tuning", {"num_virtual_tokens": 8}, 1e-2),
                    ("PT V=25", "prompt_tuning", {"num_virtual_tokens": 25}, 1e-2)):
                # small N: more epochs so every run sees at least ~40 optimizer steps
                epochs = (1 if n >= 2500 else max(d["epochs"], min(12, -(-40 * d["batch"] // n)))) \
                    if args.budget == "full" else d["epochs"]
                jobs.append(dict(model="minilm", dataset="sst2", method=method, label=label, params=params, lr=lr,
                                 epochs=epochs, n_train=n, n_test=d["n_test"], max_length=d["max_length"],
                                 batch=d["batch"], train_path=train_path, test_path=test_path))
    with ThreadPoolExecutor(args.jobs) as pool:
        table = list(pool.map(lambda j: one(j, args.threads), jobs))
    name = args.name or f"accuracy_{args.study}" + ("_quick" if args.budget == "quick" else "")
    if args.study == "methods":
        md = ("Accuracy by method (test rows never seen in training)\n\n" + md_table(
            table, ["model", "dataset", "method", "n_train", "n_test", "epochs", "lr", "accuracy", "trainable_params",
                    "train_time_s", "peak_rss_mb", "latency_ms", "threads", "loadavg"],
            ["model", "data", "method", "N train", "N test", "epochs", "lr", "accuracy", "trainable", "train s",
             "peak RSS MB", "latency ms/sample", "threads", "load"]))
    else:
        pivot = {}
        for r in table:
            pivot.setdefault(r["n_train"], {"N": r["n_train"]})[r["label"]] = (
                f"{100 * r['accuracy']:.1f}%" if r.get("accuracy") is not None else "failed")
        md = (f"Data-size study, minilm, train on N rt_polarity rows, test on {DATASIZE[args.budget]['n_test']} SST-2 dev rows\n\n"
              + md_table(list(pivot.values()), ["N", "LoRA r=8", "PT V=8", "PT V=25"]) + "\n\nAll runs:\n\n"
              + md_table(table, ["label", "n_train", "epochs", "accuracy", "train_time_s", "loadavg"]))
    payload = {"args": vars(args), "table": table, "loadavg_end": loadavg()}
    save(name, payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
