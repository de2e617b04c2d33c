"""Peak RSS per method, each run in a fresh subprocess (os.wait4's ru_maxrss), against
core.estimate.memory_estimate's prediction.

    python bench/memory_by_method.py [--models minilm,smollm2-135m-instruct] [--steps 4] [--batch 8] [--seq 128]

The job: classification on IMDb reviews truncated to --seq tokens (nearly all are longer, so every
batch is --seq wide), --steps optimizer steps, no evaluation. The process's own floor (Python +
torch + transformers + peft imported, nothing loaded) is measured once and subtracted: the estimate
counts tensors only.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import DATA, PY, ROOT, engine_cfg, loadavg, md_table, read_jsonl, run_child, save, write_jsonl  # noqa: E402

METHODS = {
    "full": {},
    "linear_head": {"cache_features": False},
    "lora": {"r": 8, "alpha": 16, "targets": "all-linear"},
    "qlora": {"r": 8, "alpha": 16, "targets": "all-linear"},
    "prompt_tuning": {"num_virtual_tokens": 20},
    "ia3": {},
}
FLOOR = ("import json, resource, torch, transformers, peft, bitsandbytes, core.train, core.loop; "
         "print(json.dumps({'floor': True}))")


def estimate(model: str, method: str, params: dict, batch: int, seq: int) -> dict:
    from core import estimate as est
    kw = dict(batch_size=batch, seq_len=seq, task="classification")
    if method in ("lora", "qlora"):
        kw.update(r=params["r"], targets=params["targets"], lora_dropout=params.get("dropout", 0.05))
    if method == "prompt_tuning":
        kw["num_virtual_tokens"] = params["num_virtual_tokens"]
    return est.memory_estimate(est.load_config(model), method, **kw)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm,smollm2-135m-instruct")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--name", default="memory")
    ap.add_argument("--no-fix", action="store_true", help="without core.methods.qlora.own_unquantized_weights")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="bench-mem-")
    rows_all = read_jsonl(os.path.join(DATA, "imdb_train_4000.jsonl"))
    # both labels (classification needs two), at least 4 rows, every one longer than --seq tokens
    n = max(args.batch * args.steps, 4)
    long_rows = [r for r in rows_all if len(r["text"]) > 6 * args.seq]
    long_rows = ([r for r in long_rows if r["label"] == 0][:(n + 1) // 2]
                 + [r for r in long_rows if r["label"] == 1][:n // 2])
    train_path = write_jsonl(long_rows, os.path.join(tmp, "train.jsonl"))
    # a 2-row eval file: with val_share 0 a classification run crashes tokenising an empty list
    # (core.tokenize.encode_classification([])); evaluation is tiny and without gradients
    eval_path = write_jsonl(rows_all[-2:], os.path.join(tmp, "eval.jsonl"))
    floor = run_child([PY, "-c", FLOOR])
    print(json.dumps({"floor_mb": floor["_peak_rss_mb"]}), file=sys.stderr, flush=True)
    table = []
    for model in args.models.split(","):
        for method in args.methods.split(","):
            params = METHODS[method]
            cfg = engine_cfg(model, method, params, train_path, eval_path, max_length=args.seq, batch_size=args.batch,
                             max_steps=args.steps, extra_train={"logging_steps": 1, "eval_steps": 1_000_000,
                                                                         "torch_threads": 1})
            r = run_child([PY, os.path.join(ROOT, "bench", "engine_worker.py"), json.dumps(cfg)],
                          env={"BENCH_NO_OWN_WEIGHTS": "1"} if args.no_fix else None)
            est = estimate(model, method, params, args.batch, args.seq)
            peak = r["_peak_rss_mb"]
            row = {"model": model, "method": method, "peak_rss_mb": peak,
                   "above_floor_mb": round(peak - floor["_peak_rss_mb"], 1),
                   "rss_after_load_mb": (r.get("rss_at_phase_mb") or {}).get("start"),
                   "train_peak_rss_mb": r.get("peak_rss_mb"),
                   "estimate_mb": round(est["total"] / 2**20, 1),
                   "est_weights_mb": round(est["weights"] / 2**20, 1),
                   "est_activations_mb": round(est["activations"] / 2**20, 1),
                   "trainable_params": r.get("trainable_params"), "rc": r["_rc"], "loadavg": r["_loadavg"][1]}
            row["measured_over_estimate"] = round(row["above_floor_mb"] / max(row["estimate_mb"], 1e-9), 3)
            if r["_rc"] != 0:
                row["error"] = (r.get("_stderr_tail") or "")[-400:]
            table.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    md = (f"Peak RSS per method (fresh process each; batch {args.batch}, seq {args.seq}, {args.steps} steps; "
          f"process floor {floor['_peak_rss_mb']} MB subtracted for 'above floor')\n\n"
          + md_table(table, ["model", "method", "trainable_params", "peak_rss_mb", "above_floor_mb", "rss_after_load_mb",
                             "estimate_mb", "est_weights_mb", "est_activations_mb", "measured_over_estimate", "loadavg"],
                     ["model", "method", "trainable", "peak RSS MB", "above floor MB", "RSS at train start MB",
                      "estimate MB", "est. weights MB", "est. activations MB", "measured/estimate", "load"]))
    payload = {"args": vars(args), "floor_mb": floor["_peak_rss_mb"], "table": table, "loadavg_end": loadavg()}
    save(args.name, payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
