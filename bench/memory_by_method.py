"""Peak RSS per method, each run in a fresh subprocess (os.wait4's ru_maxrss), against
core.estimate.memory_estimate's prediction.

    python bench/memory_by_method.py [--models minilm,smollm2-135m-instruct] [--steps 4] [--batch 8] [--seq 128]

The job: classification on IMDb reviews truncated to --seq tokens (nearly all are longer, so every
batch is --seq wide), --steps optimizer steps, no evaluation. The estimate counts tensors only, so
each row's floor is the same job, same method, run on the model's *tiny twin*: a random model of
the same family and tokenizer with a 16-wide, one-layer body, whose tensors are a few MB. What that
run holds (the libraries a run imports, the Trainer and accelerate, the code pages torch touches,
the tokenizer, the data) is what a run costs besides the model, and is subtracted in "above floor".
The older floor (the libraries imported, nothing run) is still reported: it left ~170 MB of that in
the "model" side, which is most of a MiniLM run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

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
# glibc serves blocks above this size with mmap and unmaps them when freed (its default threshold
# climbs to 32 MB as large blocks are freed, after which freed activations stay in the heap)
PROMPT_FREE = {"MALLOC_MMAP_THRESHOLD_": "131072"}
FLOOR = ("import json, resource, torch, transformers, peft, bitsandbytes, core.train, core.loop; "
         "print(json.dumps({'floor': True}))")


TWIN = """
import sys, torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer
from core.models import ensure_smollm2_cache, resolve
model, folder = sys.argv[1], sys.argv[2]
resolved = resolve(model)
causal = resolved.kind == "causal"
source = str(ensure_smollm2_cache()) if resolved.origin == "embedded" and causal else resolved.source
config = AutoConfig.from_pretrained(source)
for key, value in {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1,
                   "intermediate_size": 32, "head_dim": 8}.items():
    if hasattr(config, key):
        setattr(config, key, value)
torch.manual_seed(0)
(AutoModelForCausalLM if causal else AutoModel).from_config(config).save_pretrained(folder)
AutoTokenizer.from_pretrained(source).save_pretrained(folder)
"""


def tiny_twin(model: str, folder: str) -> str:
    """Save a random model with `model`'s family, vocabulary and tokenizer, but a 16-wide, 1-layer body.

    Built in a child: ru_maxrss of a forked child starts from its parent's RSS, so this process must
    stay small (building SmolLM2's cache here made every later child "peak" at 1.2 GB).
    """
    r = run_child([PY, "-c", TWIN, model, folder])
    if r["_rc"] != 0:
        raise RuntimeError(f"could not build the tiny twin of {model}: {r.get('_stderr_tail', '')[-600:]}")
    return folder


def estimate(model: str, method: str, params: dict, batch: int, seq: int, precision: str | None) -> dict:
    """The estimator's figure for the run as it ran: on this CPU, with SDPA, autocast if it was mixed."""
    from core import estimate as est
    kw = dict(batch_size=batch, seq_len=seq, task="classification", device="cpu", flash_attention=True,
              autocast="mixed" in (precision or ""))
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
    ap.add_argument("--dtype", default="auto", help="model.dtype of the runs: auto (bf16 autocast where the CPU "
                    "has it) or float32")
    ap.add_argument("--no-prompt-free", dest="prompt_free", action="store_false",
                    help="skip the third run of each row (glibc returning freed memory at once)")
    ap.add_argument("--name", default="memory")
    ap.add_argument("--jobs", type=int, default=2, help="child processes at a time (each has one thread)")
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
    print(json.dumps({"import_floor_mb": floor["_peak_rss_mb"]}), file=sys.stderr, flush=True)
    env = {"BENCH_NO_OWN_WEIGHTS": "1"} if args.no_fix else None
    table = []
    for model in args.models.split(","):
        twin = tiny_twin(model, os.path.join(tmp, f"twin-{model}"))
        for method in args.methods.split(","):
            params = METHODS[method]

            def job(name: str, extra_env: dict | None = None) -> dict:
                cfg = engine_cfg(name, method, params, train_path, eval_path, max_length=args.seq,
                                 batch_size=args.batch, max_steps=args.steps,
                                 extra_train={"logging_steps": 1, "eval_steps": 1_000_000, "torch_threads": 1})
                cfg["model"]["dtype"] = args.dtype
                return run_child([PY, os.path.join(ROOT, "bench", "engine_worker.py"), json.dumps(cfg)],
                                 env={**(env or {}), **(extra_env or {})})

            # Four fresh processes a row, --jobs at a time: each child is single-threaded and its peak
            # RSS is its own (os.wait4), so running two side by side changes the time, not the figure.
            runs = [(model, None), (twin, None)]
            # the same job with glibc returning freed blocks at once: RSS then follows the live tensors
            runs += [(model, PROMPT_FREE), (twin, PROMPT_FREE)] if args.prompt_free else []
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                done = list(pool.map(lambda a: job(*a), runs))
            r, twin_run = done[0], done[1]
            prompt = (done[2], done[3]) if args.prompt_free else None
            est = estimate(model, method, params, args.batch, args.seq, r.get("precision"))
            peak, run_floor = r["_peak_rss_mb"], twin_run["_peak_rss_mb"]
            row = {"model": model, "method": method, "precision": r.get("precision"), "peak_rss_mb": peak,
                   "run_floor_mb": run_floor, "above_floor_mb": round(peak - run_floor, 1),
                   "above_import_floor_mb": round(peak - floor["_peak_rss_mb"], 1),
                   "rss_after_load_mb": (r.get("rss_at_phase_mb") or {}).get("start"),
                   "train_peak_rss_mb": r.get("peak_rss_mb"),
                   "estimate_mb": round(est["total"] / 2**20, 1),
                   "est_weights_mb": round(est["weights"] / 2**20, 1),
                   "est_activations_mb": round(est["activations"] / 2**20, 1),
                   "est_workspace_mb": round(est["workspace"] / 2**20, 1),
                   "trainable_params": r.get("trainable_params"), "rc": r["_rc"], "loadavg": r["_loadavg"][1]}
            row["measured_over_estimate"] = round(row["above_floor_mb"] / max(row["estimate_mb"], 1e-9), 3)
            children = [("error", r), ("floor_error", twin_run)]
            if prompt:
                row["prompt_free_peak_rss_mb"] = prompt[0]["_peak_rss_mb"]
                row["prompt_free_above_floor_mb"] = round(prompt[0]["_peak_rss_mb"] - prompt[1]["_peak_rss_mb"], 1)
                # glibc returning freed blocks leaves no workspace: compare with the tensors alone
                tensors = row["estimate_mb"] - row["est_workspace_mb"]
                row["prompt_free_over_tensors"] = round(row["prompt_free_above_floor_mb"] / max(tensors, 1e-9), 3)
                children += [("prompt_free_error", prompt[0]), ("prompt_free_floor_error", prompt[1])]
            for label, child in children:
                if child["_rc"] != 0:
                    row[label] = (child.get("_stderr_tail") or "")[-400:]
            table.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    md = (f"Peak RSS per method (fresh process each; batch {args.batch}, seq {args.seq}, {args.steps} steps; "
          f"floor: the same job on the model's tiny twin; libraries alone: {floor['_peak_rss_mb']} MB)\n\n"
          + md_table(table, ["model", "method", "precision", "trainable_params", "peak_rss_mb", "run_floor_mb",
                             "above_floor_mb", "estimate_mb", "est_weights_mb", "est_activations_mb",
                             "est_workspace_mb", "measured_over_estimate", "prompt_free_peak_rss_mb",
                             "prompt_free_above_floor_mb", "prompt_free_over_tensors", "loadavg"],
                     ["model", "method", "precision", "trainable", "peak RSS MB", "floor (tiny twin) MB",
                      "above floor MB", "estimate MB", "est. weights MB", "est. activations MB",
                      "est. workspace MB", "measured/estimate", "glibc returning freed memory: peak RSS MB",
                      "above its floor MB", "measured/(estimate - workspace)", "load"]))
    payload = {"args": vars(args), "import_floor_mb": floor["_peak_rss_mb"], "table": table, "loadavg_end": loadavg()}
    save(args.name, payload, md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
