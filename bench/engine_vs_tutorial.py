"""Engine vs the hand-written recipe (bench/tutorial_recipe.py), same job, alternating subprocesses.

Same rows (the tutorial's 1,000/1,000 split of the IMDb sample, written to temp jsonl files and fed
to the engine as data.source + data.eval_source), same hyperparameters (LoRA r=4, alpha=32,
dropout 0.01, targets=query, batch 4, lr 1e-3, weight decay 0.01, no warmup, max length 256).
The tutorial truncates on the left (keeps the end of each review); the engine uses head_tail (keeps
the start and the end), its closest option.

    python bench/engine_vs_tutorial.py [--train 1000] [--eval 1000] [--pairs 2] [--variant NAME=k=v,k=v ...]

samples/s is what each script reports: training rows / seconds inside trainer.train() (both include
their in-training evaluations: the tutorial's epoch-end one, the engine's start + mid-run ones).
wall is the whole process, start to exit. Ratios are engine/tutorial from runs taken side by side.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PY, ROOT, TRAIN_CLOCK, engine_cfg, loadavg, md_table, run_child, save, tutorial_split, write_jsonl  # noqa: E402

TUTORIAL = (TRAIN_CLOCK + "\nimport json, runpy, sys, torch; sys.argv = ['tutorial_recipe.py'] + sys.argv[1:]; "
            "print(json.dumps({'torch_threads': torch.get_num_threads()})); "
            "runpy.run_path('bench/tutorial_recipe.py', run_name='__main__')")


def engine_config(train_path: str, eval_path: str, overrides: dict) -> dict:
    cfg = engine_cfg("minilm", "lora", {"r": 4, "alpha": 32, "dropout": 0.01, "targets": "query"},
                     train_path, eval_path, max_length=256, batch_size=4, lr=1e-3, epochs=1,
                     extra_train={"weight_decay": 0.01, "warmup_ratio": 0.0},
                     extra_data={"truncation": "head_tail"})
    for key, value in overrides.items():
        section, field = key.split(".", 1)
        cfg[section][field] = value
    return cfg


def parse_variant(text: str) -> tuple[str, dict]:
    name, _, rest = text.partition("=")
    overrides = {}
    for item in filter(None, rest.split(",")):
        k, v = item.split(":", 1)
        try:  # numbers, true/false, lists; anything else ("float32") is a plain string
            overrides[k] = json.loads(v)
        except json.JSONDecodeError:
            overrides[k] = v
    return name, overrides


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--variant", action="append", default=[],
                    help="engine variant NAME=section.field:value,... (default: the engine as configured now)")
    ap.add_argument("--name", default="engine_vs_tutorial")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads on both sides (0: each side's own default); on a loaded 2-core "
                         "machine 1 thread avoids OpenMP barrier stalls and is less noisy")
    args = ap.parse_args(argv)
    variants = [parse_variant(v) for v in args.variant] or [("engine", {})]
    tmp = tempfile.mkdtemp(prefix="bench-evt-")
    tr, ev = tutorial_split(args.train, args.eval)
    train_path, eval_path = write_jsonl(tr, os.path.join(tmp, "train.jsonl")), write_jsonl(ev, os.path.join(tmp, "eval.jsonl"))
    runs = []
    for i in range(args.pairs):
        # alternate the order each pair, so a load trend does not favour one side
        order = [("tutorial", None)] + [(n, o) for n, o in variants]
        if i % 2:
            order = order[::-1]
        for name, overrides in order:
            if name == "tutorial":
                r = run_child([PY, "-c", TUTORIAL, "--train", str(args.train), "--eval", str(args.eval),
                               "--out", os.path.join(tmp, "tut")],
                              env={"OMP_NUM_THREADS": str(args.threads)} if args.threads else None)
            else:
                cfg = engine_config(train_path, eval_path, overrides)
                if args.threads:
                    cfg["train"]["torch_threads"] = args.threads
                r = run_child([PY, "-c", TRAIN_CLOCK + "\nimport runpy, sys; sys.argv = sys.argv[:1] + sys.argv[1:]; "
                               "runpy.run_path('bench/engine_worker.py', run_name='__main__')", json.dumps(cfg)])
            r.update({"who": name, "pair": i})
            runs.append(r)
            print(json.dumps({k: r.get(k) for k in ("who", "pair", "train_cpu_s", "train_wall_s", "_cpu_s", "samples_per_second", "accuracy", "_wall_s",
                                                    "_loadavg", "_rc", "eval_in_train_s", "torch_threads")}),
                  file=sys.stderr, flush=True)
            if r["_rc"] != 0:
                print(r.get("_stderr_tail"), file=sys.stderr)
    rows = []
    tut = [r for r in runs if r["who"] == "tutorial" and r["_rc"] == 0]
    for name, _ in variants:
        eng = [r for r in runs if r["who"] == name and r["_rc"] == 0]
        ratios = [e["samples_per_second"] / t["samples_per_second"] for e, t in zip(eng, tut)]
        wall = [t["_wall_s"] / e["_wall_s"] for e, t in zip(eng, tut)]
        cpu = [t["train_cpu_s"] / e["train_cpu_s"] for e, t in zip(eng, tut) if e.get("train_cpu_s") and t.get("train_cpu_s")]
        proc_cpu = [t["_cpu_s"] / e["_cpu_s"] for e, t in zip(eng, tut)]
        if not ratios:
            continue
        rows.append({"variant": name, "overrides": json.dumps(next(o for n, o in variants if n == name)),
                     "engine_sps": statistics.median(e["samples_per_second"] for e in eng),
                     "tutorial_sps": statistics.median(t["samples_per_second"] for t in tut),
                     "ratio": round(statistics.median(ratios), 3), "ratio_runs": [round(x, 3) for x in ratios],
                     "wall_ratio": round(statistics.median(wall), 3),
                     "cpu_ratio": round(statistics.median(cpu), 3) if cpu else None,
                     "cpu_ratio_runs": [round(x, 3) for x in cpu], "process_cpu_ratio": round(statistics.median(proc_cpu), 3),
                     "engine_train_cpu_s": statistics.median(e.get("train_cpu_s") or 0 for e in eng),
                     "tutorial_train_cpu_s": statistics.median(t.get("train_cpu_s") or 0 for t in tut),
                     "engine_acc": statistics.median(e["accuracy"] for e in eng),
                     "tutorial_acc": statistics.median(t["accuracy"] for t in tut),
                     "engine_eval_in_train_s": statistics.median(e["eval_in_train_s"] for e in eng),
                     "threads": f"{eng[0].get('torch_threads')}/{tut[0].get('torch_threads')}",
                     "loadavg": f"{min(min(r['_loadavg']) for r in eng + tut):.1f}-{max(max(r['_loadavg']) for r in eng + tut):.1f}"})
    md = (f"Engine vs hand-written recipe, {args.train} train / {args.eval} eval rows, {args.pairs} alternating pairs\n\n"
          + md_table(rows, ["variant", "overrides", "engine_train_cpu_s", "tutorial_train_cpu_s", "cpu_ratio", "cpu_ratio_runs",
                            "process_cpu_ratio", "engine_sps", "tutorial_sps", "ratio", "ratio_runs", "wall_ratio",
                            "engine_acc", "tutorial_acc", "engine_eval_in_train_s", "threads", "loadavg"],
                     ["engine variant", "overrides", "engine CPU s in train()", "tutorial CPU s in train()",
                      "CPU ratio (tut/eng, median)", "CPU ratio per pair", "whole-process CPU ratio", "engine samples/s", "tutorial samples/s", "ratio (median)",
                      "ratio per pair", "wall ratio", "engine acc", "tutorial acc", "engine eval s in train()",
                      "threads eng/tut", "load avg"]))
    payload = {"args": vars(args), "runs": runs, "table": rows, "loadavg_end": loadavg()}
    save(args.name, payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
