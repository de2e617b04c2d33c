"""Engine vs the hand-written recipe (bench/tutorial_recipe.py), fairly, plus time-to-accuracy.

Protocol (bench/common.py): fresh children of this one process, alternating A/B then B/A, at least
5 pairs (fewer only with --quick, whose tables say NOT A RESULT), median and range.

Equal terms on both sides:
- the same rows: the first --train reviews of the IMDb dev part (bench/splits.py) in a fixed shuffle,
  scored on the first --eval reviews of the test part (the report split), from the same files;
- the same hyperparameters (LoRA r=4, alpha 32, dropout 0.01 on `query`, batch 4, lr 1e-3, weight
  decay 0.01, no warm-up, one epoch), the same max length (256) and truncation (keep the start:
  the engine's `head`, the recipe's `--keep head`);
- the same torch threads (--threads, default every core) and precision (--precision auto: bf16
  autocast on both where the CPU has native bf16, fp32 on both otherwise); the script refuses a
  ratio whose sides report different settings;
- time = `train_steps`: wall seconds inside Trainer.train() less the evaluations inside it, measured
  by the same patch (common.STEP_CLOCK) in both children. Both sides evaluate on the same report
  rows at the same points (--eval-points per epoch); that time is excluded from both. The
  whole-process (end-to-end) ratio is reported on its own row, named.

Time-to-accuracy: seconds of training (as above) until the first evaluation at >= 80 % and >= 85 %
on the report rows, for both sides and for the engine as shipped (`examples/lora_imdb.yaml`, its own
hyperparameters, same rows/threads/precision; --no-shipped leaves it out). "not reached" is a result.

    python bench/engine_vs_tutorial.py [--train 1000] [--eval 1000] [--pairs 5] [--threads N]
                                       [--precision auto|fp32|bf16] [--eval-points 8] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common, splits  # noqa: E402
from bench.common import PY, STEP_CLOCK, engine_cfg, md_table, run_child, save, spread, spread_text  # noqa: E402

TUTORIAL = (STEP_CLOCK + "\nimport runpy, sys; sys.argv = ['tutorial_recipe.py'] + sys.argv[1:]; "
            "runpy.run_path('bench/tutorial_recipe.py', run_name='__main__')")
ENGINE = STEP_CLOCK + "\nimport runpy; runpy.run_path('bench/engine_worker.py', run_name='__main__')"
TARGETS = (0.80, 0.85)


def pick_precision(choice: str) -> str:
    if choice == "auto":
        f = common.cpu_flags()
        return "bf16" if f["avx512_bf16"] or f["amx_bf16"] else "fp32"
    return choice


def make_files(tmp: str, n_train: int, n_eval: int) -> tuple[str, str]:
    dev, test = splits.imdb_dev(), splits.imdb_test()
    random.Random(0).shuffle(dev)
    random.Random(0).shuffle(test)
    return (common.write_jsonl(dev[:n_train], os.path.join(tmp, "train.jsonl")),
            common.write_jsonl(test[:n_eval], os.path.join(tmp, "report.jsonl")))


def every(n_train: int, batch: int, points: int) -> int:
    steps = math.ceil(n_train / batch)
    return max(1, math.ceil(steps / points)) if points else 1_000_000


def engine_config(train_path: str, eval_path: str, n_train: int, args, precision: str) -> dict:
    cfg = engine_cfg("minilm", "lora", {"r": 4, "alpha": 32, "dropout": 0.01, "targets": "query"},
                     train_path, eval_path, max_length=256, batch_size=4, lr=1e-3, epochs=1,
                     extra_train={"weight_decay": 0.01, "warmup_ratio": 0.0, "torch_threads": args.threads,
                                  "eval_steps": every(n_train, 4, args.eval_points), "eval_max_rows": 0},
                     extra_data={"truncation": "head"})
    cfg["model"]["dtype"] = "auto" if precision == "bf16" else "float32"
    return cfg


def shipped_config(train_path: str, eval_path: str, n_train: int, args, precision: str) -> dict:
    from core.config import load_config
    cfg = load_config(os.path.join(common.ROOT, "examples", "lora_imdb.yaml")).to_dict()
    cfg["data"].update({"source": train_path, "eval_source": eval_path, "n_samples": 0})
    cfg["train"].update({"torch_threads": args.threads, "eval_max_rows": 0,
                         "eval_steps": every(n_train, cfg["train"]["batch_size"], args.eval_points)})
    cfg["model"]["dtype"] = "auto" if precision == "bf16" else "float32"
    return cfg


def run_side(side: str, train_path: str, eval_path: str, args, precision: str, tmp: str) -> dict:
    if side == "tutorial":
        argv = [PY, "-c", TUTORIAL, "--train", str(args.train), "--eval", str(args.eval), "--train-file", train_path,
                "--eval-file", eval_path, "--keep", "head", "--eval-every", str(every(args.train, 4, args.eval_points)),
                "--out", os.path.join(tmp, "tut")] + (["--bf16"] if precision == "bf16" else [])
        return run_child(argv, env={"OMP_NUM_THREADS": str(args.threads)})
    build = engine_config if side == "engine" else shipped_config
    cfg = build(train_path, eval_path, args.train, args, precision)
    return run_child([PY, "-c", ENGINE, json.dumps(cfg)], env={"OMP_NUM_THREADS": str(args.threads)})


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=1000)
    ap.add_argument("--eval", type=int, default=1000)
    ap.add_argument("--pairs", type=int, default=common.MIN_PAIRS)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    ap.add_argument("--eval-points", type=int, default=8, help="evaluations per epoch on the report rows (time excluded)")
    ap.add_argument("--no-shipped", action="store_true", help="leave the shipped default out of time-to-accuracy")
    ap.add_argument("--only-shipped", action="store_true",
                    help="time to accuracy of the shipped default alone (--pairs runs of it, at its own size)")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 pair, labelled NOT A RESULT")
    ap.add_argument("--name", default="engine_vs_tutorial")
    args = ap.parse_args(argv)
    if args.quick:
        args.train, args.eval, args.pairs = min(args.train, 24), min(args.eval, 24), min(args.pairs, 1)
        args.eval_points = min(args.eval_points, 2)
    common.check_pairs(args.pairs, args.quick)
    precision = pick_precision(args.precision)
    record, la0 = common.machine_record(), common.loadavg()
    tmp = tempfile.mkdtemp(prefix="bench-evt-")
    train_path, eval_path = make_files(tmp, args.train, args.eval)
    sides = ["shipped"] if args.only_shipped else ["tutorial", "engine"] + ([] if args.no_shipped else ["shipped"])
    runs = []
    for i in range(args.pairs):
        for side in common.pair_order(i, sides):
            r = run_side(side, train_path, eval_path, args, precision, tmp)
            r.update({"who": side, "pair": i})
            runs.append(r)
            print(json.dumps({k: r.get(k) for k in ("who", "pair", "train_steps_s", "eval_in_train_s", "accuracy",
                                                    "precision", "torch_threads", "_wall_s", "_loadavg", "_rc")}),
                  file=sys.stderr, flush=True)
            if r["_rc"] != 0:
                raise RuntimeError(f"{side} failed in pair {i}: {(r.get('_stderr_tail') or '')[-1500:]}")
    by = {s: [r for r in runs if r["who"] == s] for s in sides}
    steps_ratio, wall_ratio, ratio_rows = (None, None, []) if args.only_shipped else ratios(by)
    tta_rows = time_to_accuracy_rows(by, sides)
    payload = {"args": vars(args), "precision": precision, "machine": record, "runs": runs,
               "steps_ratio": steps_ratio, "wall_ratio": wall_ratio, "ratio_table": ratio_rows, "tta_table": tta_rows,
               "loadavg": [la0, common.loadavg()], "quick": args.quick,
               "files": {"train_fingerprint": splits.fingerprint(common.read_jsonl(train_path)),
                         "report_fingerprint": splits.fingerprint(common.read_jsonl(eval_path))}}
    head = common.protocol_header(record, la0, common.loadavg(), "train_steps", args.pairs, args.quick)
    setting = (f"{args.train} dev rows, {args.eval} report rows, {precision}, {args.threads} threads, "
               f"{args.eval_points} evaluations per epoch on the report rows (excluded from train_steps)")
    if args.only_shipped:
        md = head + f"The shipped default (examples/lora_imdb.yaml), {args.pairs} runs: {setting}.\n\n"
    else:
        md = (head + f"Engine vs tutorial recipe: {setting}; max length 256 (keep the start) for the two "
              "compared sides. Ratio = tutorial s / engine s (> 1: the engine is faster).\n\n"
              + md_table(ratio_rows, ["timing", "ratio", "engine_s", "tutorial_s", "engine_acc", "tutorial_acc",
                                      "precision", "threads"],
                         ["time", "ratio: median (range, pairs)", "engine s (median)", "tutorial s (median)",
                          "engine acc", "tutorial acc", "precision", "threads"]) + "\n\n")
    md += ("Time to accuracy on the report rows (seconds of training steps, evaluations excluded)\n\n"
           + md_table(tta_rows, ["side", "s_to_80", "s_to_85", "final_acc", "train_steps_s"],
                      ["side", "s to 80 %", "s to 85 %", "final accuracy (median)", "train_steps s (median)"]))
    save(args.name, payload, md)
    print(md)
    return payload


def ratios(by: dict) -> tuple[dict, dict, list[dict]]:
    for e, t in zip(by["engine"], by["tutorial"]):
        common.check_same_setting({"precision": e.get("precision"), "threads": e.get("torch_threads")},
                                  {"precision": t.get("precision"), "threads": t.get("torch_threads")})
    steps_ratio = spread([t["train_steps_s"] / e["train_steps_s"] for e, t in zip(by["engine"], by["tutorial"])])
    wall_ratio = spread([t["_wall_s"] / e["_wall_s"] for e, t in zip(by["engine"], by["tutorial"])])
    ratio_rows = [
        {"timing": "train_steps", "ratio": spread_text(steps_ratio),
         "engine_s": spread(r["train_steps_s"] for r in by["engine"])["median"],
         "tutorial_s": spread(r["train_steps_s"] for r in by["tutorial"])["median"]},
        {"timing": "end_to_end", "ratio": spread_text(wall_ratio),
         "engine_s": spread(r["_wall_s"] for r in by["engine"])["median"],
         "tutorial_s": spread(r["_wall_s"] for r in by["tutorial"])["median"]},
    ]
    for row in ratio_rows:
        row.update({"engine_acc": spread(r["accuracy"] for r in by["engine"])["median"],
                    "tutorial_acc": spread(r["accuracy"] for r in by["tutorial"])["median"],
                    "precision": by["engine"][0].get("precision"), "threads": by["engine"][0].get("torch_threads")})
    return steps_ratio, wall_ratio, ratio_rows


def time_to_accuracy_rows(by: dict, sides: list[str]) -> list[dict]:
    tta_rows = []
    for side in sides:
        row = {"side": {"tutorial": "tutorial recipe", "engine": "engine, same hyperparameters",
                        "shipped": "engine, examples/lora_imdb.yaml"}[side],
               "final_acc": spread(r["accuracy"] for r in by[side])["median"],
               "train_steps_s": spread(r["train_steps_s"] for r in by[side])["median"]}
        for target in TARGETS:
            times = [common.time_to(r.get("curve"), target) for r in by[side]]
            reached = [t for t in times if t is not None]
            row[f"s_to_{int(target * 100)}"] = (spread_text(spread(reached)).replace(" pairs", " runs")
                                                + (f"; not reached in {len(times) - len(reached)} of {len(times)}"
                                                   if len(reached) < len(times) else "")) if reached else \
                f"not reached ({len(times)} runs)"
        tta_rows.append(row)
    return tta_rows


if __name__ == "__main__":
    main()
