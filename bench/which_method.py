"""The "Which method wins?" lesson, headless: where its time goes per method, what each run scores,
and whether it was still improving at its end (core.experiments.still_rising).

    python bench/which_method.py                         # the preset as shipped, scored on its validation rows
    python bench/which_method.py --dev                   # tuning: a dev split carved out of the TRAINING rows only
    python bench/which_method.py --dev --methods lora --sweep train.learning_rate=1e-3,2e-3 --set train.epochs=4

Runs train one after another in this one process, as the app's single CPU worker trains a queued
experiment (so whatever one process shares across runs, this measures too). --dev never reads the
lesson's validation rows: it splits the lesson's training rows 75/25 (seed 7) into dev-train and dev.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bench.common import evaluation_clock, loadavg, md_table, save  # noqa: E402


def dev_files(cfg, tmp: str) -> tuple[str, str]:
    """(dev-train, dev) jsonl files made of the lesson's training rows only."""
    from core import data
    from core.data.rows import split_rows
    loaded = data.load_rows(cfg.data, seed=cfg.train.seed)
    rows = [{"text": r["text"], "label": loaded.label_names[r["label"]]} for r in loaded.train]
    dev_train, dev = split_rows(rows, 0.25, 7, "label")
    paths = []
    for name, part in (("dev_train", dev_train), ("dev", dev)):
        path = os.path.join(tmp, f"{name}.jsonl")
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in part)
        paths.append(path)
    return paths[0], paths[1]


def parse_value(text: str):
    import yaml
    return yaml.safe_load(text)


def configs(args, tmp: str) -> list:
    from core import experiments
    from core.config import RunConfig
    base = experiments.preset_runs("which_method")
    wanted = args.methods.split(",") if args.methods else [c.method.name for c in base]
    out = []
    dev = dev_files(base[0], tmp) if args.dev else None
    sweep_path, sweep_values = (args.sweep.split("=", 1)[0], args.sweep.split("=", 1)[1].split(",")) \
        if args.sweep else (None, [None])
    for cfg in base:
        if cfg.method.name not in wanted:
            continue
        for value in sweep_values:
            sets = list(args.set) + ([f"{sweep_path}={value}"] if sweep_path else [])
            c = cfg.with_overrides(sets) if sets else cfg
            if dev:
                d = c.to_dict()
                d["data"].update({"source": dev[0], "eval_source": dev[1], "val_share": 0.0})
                c = RunConfig.from_dict(d)
            out.append((c, " ".join(sets)))
    return out


def measure(cfg, label: str) -> dict:
    from core import experiments
    from core.train import run
    events = []
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp, evaluation_clock(time.process_time) as evals:
        summary = run(cfg, os.path.join(tmp, "run"),
                      lambda e: events.append((time.process_time() - c0, e)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    # CPU seconds, not wall: on a shared machine they measure the work (with one torch thread they
    # barely move with the load), and a quiet 2-core machine does it in about cpu / 1.7 seconds.
    marks = [(t, e.get("phase") or e["type"]) for t, e in events if e["type"] in ("phase", "start", "final", "end")]
    phases = {}
    for (t, name), (t_next, _) in zip(marks, marks[1:] + [(cpu, "")]):
        phases[name] = round(phases.get(name, 0.0) + t_next - t, 2)
    curve = [e.get("eval_accuracy") for _, e in events if e["type"] == "eval"]
    steps = [e.get("step") for _, e in events if e["type"] == "eval"]
    return {"method": cfg.method.name, "settings": label, "lr": cfg.train.learning_rate, "epochs": cfg.train.epochs,
            "steps": summary.get("steps"), "n_train": summary.get("n_train"), "n_val": summary.get("n_val"),
            "accuracy": summary["final"].get("eval_accuracy"), "curve": [round(a, 3) for a in curve if a is not None],
            "still_rising": experiments.still_rising(curve, steps=steps), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "train_s": summary.get("train_time_s"), "phases_s": phases,
            "eval_cpu_s": round(evals[0], 2), "evaluations": evals[1], "loadavg": loadavg()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dev", action="store_true", help="tune on a dev split of the training rows")
    ap.add_argument("--methods", default="", help="comma-separated subset of the preset's methods")
    ap.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override for every run")
    ap.add_argument("--sweep", default="", metavar="PATH=V1,V2", help="one run per value")
    ap.add_argument("--name", default=None)
    args = ap.parse_args(argv)
    from core.train import quiet_library_logs
    quiet_library_logs()
    load0 = loadavg()
    t0, c0 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        table = []
        for cfg, label in configs(args, tmp):
            row = measure(cfg, label)
            print(json.dumps(row), file=sys.stderr, flush=True)
            table.append(row)
    total, total_cpu = round(time.perf_counter() - t0, 1), round(time.process_time() - c0, 1)
    split = "dev split of the training rows" if args.dev else "the lesson's validation rows"
    md = (f"Which method wins? headless, scored on {split}; total {total} s wall, {total_cpu} CPU s, load {load0} -> {loadavg()}\n\n"
          + md_table(table, ["method", "settings", "lr", "epochs", "steps", "accuracy", "still_rising", "curve",
                             "wall_s", "cpu_s", "eval_cpu_s", "train_s", "phases_s"]))
    payload = {"args": vars(args), "table": table, "total_s": total, "total_cpu_s": total_cpu}
    save(args.name or ("which_method_dev" if args.dev else "which_method"), payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
