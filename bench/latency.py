"""Latency: embedded SmolLM2 load (cold: GGUF -> safetensors cache in a fresh PLAYGROUND_CACHE_DIR;
warm: the cache exists), generation time-to-first-token and tokens/s (base, LoRA adapter on,
LoRA merged with merge_and_unload on a copy), and classification latency per sample (batch 1,
median) per method on minilm, unmerged and merged LoRA. Each part in a fresh process.

    python bench/latency.py [--parts load,generate,classify] [--new-tokens 32] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench.common import PY, loadavg, md_table, run_child, save  # noqa: E402

LOAD = r'''
import json, time, torch
t0 = time.perf_counter()
from core import models
t_imp = time.perf_counter() - t0
t1 = time.perf_counter()
path = models.ensure_smollm2_cache()
t_cache = time.perf_counter() - t1
m = models.load_model("smollm2-135m-instruct", head="causal_lm")
print(json.dumps({"import_s": round(t_imp, 2), "cache_s": round(t_cache, 2),
                  "load_s": round(time.perf_counter() - t1, 2)}))
'''

GENERATE = r'''
import copy, json, statistics, sys, time, torch
from peft import LoraConfig, get_peft_model
from core import models
torch.set_num_threads(int(sys.argv[1])); new = int(sys.argv[2])
tok = models.load_tokenizer("smollm2-135m-instruct")
base = models.load_model("smollm2-135m-instruct", head="causal_lm").eval()
ids = tok.apply_chat_template([{"role": "user", "content": "Write two sentences about autumn."}],
                              add_generation_prompt=True, return_tensors="pt", return_dict=True)["input_ids"]
def measure(model, reps=3):
    ttft, tps = [], []
    with torch.no_grad():
        model.generate(input_ids=ids, max_new_tokens=4, do_sample=False)  # warm-up
        for _ in range(reps):
            t0 = time.process_time(); model.generate(input_ids=ids, max_new_tokens=1, do_sample=False)
            ttft.append(time.process_time() - t0)
            t0 = time.process_time()
            out = model.generate(input_ids=ids, max_new_tokens=new, min_new_tokens=new, do_sample=False)
            n = out.shape[1] - ids.shape[1]; tps.append(n / (time.process_time() - t0))
    return {"ttft_ms": round(1000 * statistics.median(ttft), 1), "tokens_per_s": round(statistics.median(tps), 2)}
res = {"base": measure(base)}
torch.manual_seed(0)
lora = get_peft_model(copy.deepcopy(base), LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                      init_lora_weights=False)).eval()
res["lora adapter on"] = measure(lora)
res["lora merged"] = measure(copy.deepcopy(lora).merge_and_unload().eval())
print(json.dumps({"generate": res, "threads": torch.get_num_threads(), "prompt_tokens": ids.shape[1]}))
'''

CLASSIFY = r'''
import copy, json, sys, tempfile, os, torch
from core.config import RunConfig
from core.train import prepare, tokenize_rows
import statistics, time
threads, model_name, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
@torch.no_grad()
def measure_latency(p, rows, n=16):
    # median CPU ms of one batch-1 forward: with 1 thread, CPU time is the work, whatever the load
    model = p.model; model.eval(); times = []
    for r in rows[:n]:
        ids = torch.tensor([r["input_ids"]])
        c0 = time.process_time(); model(input_ids=ids, attention_mask=torch.ones_like(ids))
        times.append(1000 * (time.process_time() - c0))
    return round(statistics.median(times), 2)
torch.set_num_threads(threads)
methods = {"full": {}, "linear_head": {"cache_features": False}, "lora": {"r": 8, "alpha": 16, "targets": "all-linear"},
           "prompt_tuning": {"num_virtual_tokens": 20}, "ia3": {}, "qlora": {"r": 8, "alpha": 16, "targets": "all-linear"}}
res = {}
for name, params in methods.items():
    cfg = RunConfig.from_dict({"model": {"name": model_name}, "data": {"source": path, "max_length": 128, "val_share": 0.5},
                               "method": {"name": name, "params": params}, "train": {"torch_threads": threads}})
    p = prepare(cfg)
    rows = tokenize_rows(p, p.train_rows + p.val_rows)
    measure_latency(p, rows, n=3)  # warm-up
    res[name] = measure_latency(p, rows, n=24)
    if name in ("lora",):
        merged = copy.deepcopy(p.model).merge_and_unload()
        q = copy.copy(p); q.model = merged
        measure_latency(q, rows, n=3)
        res[name + " merged"] = measure_latency(q, rows, n=24)
print(json.dumps({"classify_ms": res, "threads": torch.get_num_threads(), "model": model_name}))
'''


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="load,generate,classify")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--classify-models", default="minilm")
    ap.add_argument("--name", default="latency")
    args = ap.parse_args(argv)
    parts = args.parts.split(",")
    payload, md = {"args": vars(args)}, []
    if "load" in parts:
        cache = tempfile.mkdtemp(prefix="bench-cache-")
        env = {"PLAYGROUND_CACHE_DIR": cache, "OMP_NUM_THREADS": str(args.threads)}
        cold = run_child([PY, "-c", LOAD], env=env)
        warm = run_child([PY, "-c", LOAD], env=env)
        rows = [{"case": c, "cache_s": r.get("cache_s"), "load_s": r.get("load_s"), "process_s": r["_wall_s"],
                 "peak_rss_mb": r["_peak_rss_mb"], "loadavg": r["_loadavg"][1], "rc": r["_rc"]}
                for c, r in (("cold (GGUF -> cache)", cold), ("warm (cache exists)", warm))]
        payload["load"] = rows
        md.append("SmolLM2 load, fresh PLAYGROUND_CACHE_DIR\n\n" + md_table(
            rows, ["case", "cache_s", "load_s", "process_s", "peak_rss_mb", "loadavg"],
            ["case", "cache build s", "cache + load s", "whole process s", "peak RSS MB", "load"]))
    if "generate" in parts:
        r = run_child([PY, "-c", GENERATE, str(args.threads), str(args.new_tokens)])
        rows = [{"view": k, **v, "threads": r.get("threads"), "loadavg": r["_loadavg"][1]}
                for k, v in (r.get("generate") or {}).items()]
        payload["generate"] = rows or r
        md.append(f"SmolLM2 generation, greedy, {args.new_tokens} new tokens, prompt {r.get('prompt_tokens')} tokens\n\n"
                  + md_table(rows, ["view", "ttft_ms", "tokens_per_s", "threads", "loadavg"],
                             ["view", "time to first token, CPU ms", "tokens per CPU-second", "threads", "load"]))
    if "classify" in parts:
        from bench.common import DATA, balanced_split, write_jsonl
        tmp = tempfile.mkdtemp(prefix="bench-lat-")
        tr, te = balanced_split(os.path.join(DATA, "imdb_train_4000.jsonl"), 24, 24)
        path = write_jsonl(tr + te, os.path.join(tmp, "rows.jsonl"))
        rows = []
        for model in args.classify_models.split(","):
            r = run_child([PY, "-c", CLASSIFY, str(args.threads), model, path])
            for k, v in (r.get("classify_ms") or {}).items():
                rows.append({"model": model, "method": k, "ms_per_sample": v, "threads": r.get("threads"),
                             "loadavg": r["_loadavg"][1]})
            if r["_rc"]:
                payload.setdefault("errors", []).append(r.get("_stderr_tail"))
        payload["classify"] = rows
        md.append("Classification latency, batch 1, IMDb reviews at max length 128, median CPU ms of 24 (untrained "
                  "adapters: the work per call is the same)\n\n"
                  + md_table(rows, ["model", "method", "ms_per_sample", "threads", "loadavg"]))
    payload["loadavg_end"] = loadavg()
    text = "\n\n".join(md)
    save(args.name, payload, text)
    print(text)
    return payload


if __name__ == "__main__":
    main()
