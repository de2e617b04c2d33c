"""How close to the machine's limit: achieved training FLOP/s / measured matmul FLOP/s in the run's precision (MFU).

FLOPs counted per real (unpadded) token T with N = non-embedding parameters of the base (matmul
weights; embedding lookups and attention scores are not counted, so this is a lower bound):
  full:                    6·N·T  (forward 2N, backward input-grads 2N, weight-grads 2N)
  lora/ia3/prompt tuning:  4·N·T  (forward 2N + input-grads 2N through the frozen base; the
                                   adapters' own FLOPs are < 1% and left out)
  linear_head (no cache):  2·N·T  (forward only, no backward through the base)
Prompt tuning's virtual tokens are counted as tokens (V per row).

    python bench/mfu.py [--rows 96] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import DATA, PY, TRAIN_CLOCK, balanced_split, engine_cfg, loadavg, matmul_flops, md_table, run_child, save, write_jsonl  # noqa: E402

FACTOR = {"full": 6, "lora": 4, "ia3": 4, "prompt_tuning": 4, "linear_head": 2}


def non_embedding_params(model: str) -> int:
    from core import estimate as est
    b = est.param_breakdown(est.load_config(model), task="classification")
    return b["blocks"]  # the transformer blocks; our mean-pooling head skips the pooler (extra_linears)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="full,lora,linear_head")
    ap.add_argument("--name", default="mfu")
    args = ap.parse_args(argv)
    from transformers import AutoTokenizer

    from core import models
    from core.tokenize import encode_classification
    tmp = tempfile.mkdtemp(prefix="bench-mfu-")
    tr, te = balanced_split(os.path.join(DATA, "imdb_train_4000.jsonl"), args.rows, 16)
    paths = write_jsonl(tr, os.path.join(tmp, "tr.jsonl")), write_jsonl(te, os.path.join(tmp, "te.jsonl"))
    tok = AutoTokenizer.from_pretrained(str(models.minilm_dir()))
    tokens = sum(len(r["input_ids"]) for r in encode_classification(tr, tok, args.max_length, "head_tail"))
    n = non_embedding_params("minilm")
    table = []
    for method in args.methods.split(","):
        params = {"cache_features": False} if method == "linear_head" else {}
        cfg = engine_cfg("minilm", method, params, *paths, max_length=args.max_length, batch_size=16,
                         lr=1e-3, extra_train={"eval_steps": 1_000_000, "eval_max_rows": 16, "torch_threads": args.threads},
                         extra_data={"truncation": "head_tail"})
        r = run_child([PY, "-c", TRAIN_CLOCK + "\nimport runpy; runpy.run_path('bench/engine_worker.py', run_name='__main__')",
                       json.dumps(cfg)])
        # The ceiling in the precision the run used (the engine picks bf16 where the CPU has it natively)
        precision = r.get("precision") or "fp32"
        peak = matmul_flops(1024, 2.0, args.threads, precision if precision in ("fp32", "bf16") else "fp32")
        # CPU seconds inside Trainer.train() (1 thread: the work, not the wait), less the share of the
        # in-training evaluation (eval_on_start on 16 rows), taken pro rata from the wall clock
        wall, eval_s = r.get("train_wall_s") or 0.0, r.get("eval_in_train_s") or 0.0
        t = (r.get("train_cpu_s") or 0.0) * (1 - eval_s / wall) if wall else 0.0
        toks = tokens + (20 * args.rows if method == "prompt_tuning" else 0)
        flops = FACTOR[method] * n * toks
        achieved = flops / t if t > 0 else None
        table.append({"method": method, "formula": f"{FACTOR[method]}·N·T", "N_non_embedding": n, "tokens": toks,
                      "train_cpu_s_excl_eval": round(t, 2), "achieved_gflops": round(achieved / 1e9, 2) if achieved else None,
                      "precision": precision, "peak_gflops": round(peak["flops"] / 1e9, 1),
                      "mfu": round(achieved / peak["flops"], 3) if achieved else None, "threads": args.threads,
                      "loadavg": r["_loadavg"][1]})
        print(json.dumps(table[-1]), file=sys.stderr, flush=True)
    md = (f"MFU, minilm, {args.rows} IMDb rows at max length {args.max_length}, batch 16, {args.threads} thread(s), FLOPs per "
           "CPU-second inside Trainer.train(); "
          "peak = best 1024³ matmul rate in the run's own precision, measured right after each run with the same threads\n\n"
          + md_table(table, ["method", "formula", "N_non_embedding", "tokens", "train_cpu_s_excl_eval", "achieved_gflops",
                             "precision", "peak_gflops", "mfu", "threads", "loadavg"]))
    payload = {"args": vars(args), "table": table, "loadavg_end": loadavg()}
    save(args.name, payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
