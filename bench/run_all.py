"""Regenerate every benchmark table: python -m bench.run_all [--quick] [--only a,b] [--out DIR]

Full mode: the budgets stated in each script (about an hour on a quiet 2-core machine).
--quick: tiny N and few steps (under 10 minutes): a smoke test that every study still runs and
writes its table; its numbers mean nothing. Writes DIR/<study>.json|.md, DIR/results.json and
DIR/results.md (all tables, the machine, the load averages and the matmul ceiling).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

# study -> (module, full argv, quick argv)
STUDIES = {
    "engine_vs_tutorial": ("bench.engine_vs_tutorial",
                           # the job with every core, as shipped (bf16 autocast where the CPU has
                           # it) and in plain fp32, so the table says what mixed precision buys
                           ["--train", "1000", "--eval", "1000", "--pairs", "1",
                            "--variant", "engine=model.dtype:auto", "--variant", "engine_fp32=model.dtype:float32"],
                           ["--train", "16", "--eval", "16", "--pairs", "1", "--threads", "1"]),
    "memory": ("bench.memory_by_method", [],
               ["--models", "minilm", "--methods", "full,linear_head,lora", "--steps", "1", "--batch", "2", "--seq", "32"]),
    "accuracy_methods": ("bench.accuracy_by_method", ["methods", "--jobs", "2"],
                         ["methods", "--budget", "quick", "--models", "minilm", "--datasets", "sst2",
                          "--methods", "zero_shot,linear_head,lora"]),
    "accuracy_datasize": ("bench.accuracy_by_method", ["datasize", "--jobs", "2"],
                          ["datasize", "--budget", "quick", "--jobs", "2"]),
    "linear_head_cache": ("bench.linear_head_cache", [], ["--rows", "32", "--epochs", "2", "--max-length", "32"]),
    "mfu": ("bench.mfu", [], ["--rows", "16", "--max-length", "32", "--methods", "lora"]),
    "latency": ("bench.latency", [], ["--parts", "classify", "--new-tokens", "4"]),
    "app_vs_headless": ("bench.app_vs_headless", [], ["--rows", "16", "--max-length", "32", "--pairs", "1"]),
    "app_browser_vs_headless": ("bench.app_browser_vs_headless", ["--pairs", "2", "--query", "ep=6"],
                                ["--pairs", "1", "--query", "ep=1&n=48"]),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run_all")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma list of studies: " + ",".join(STUDIES))
    ap.add_argument("--out", default=None, help="output folder (default bench/out)")
    args = ap.parse_args(argv)
    if args.out:
        os.environ["BENCH_OUT"] = os.path.abspath(args.out)
    out = common.out_dir()
    os.makedirs(out, exist_ok=True)
    chosen = [s for s in (args.only.split(",") if args.only else STUDIES) if s]
    import importlib
    info = {"machine": common.machine(), "matmul": common.matmul_flops(512 if args.quick else 1024, 1.0 if args.quick else 3.0),
            "quick": args.quick, "command": " ".join(["python -m bench.run_all"] + (argv if argv is not None else sys.argv[1:])),
            "studies": {}}
    sections = []
    for name in chosen:
        module, full, quick = STUDIES[name]
        argv_ = (quick if args.quick else full) + ["--name", name + ("_quick" if args.quick else "")]
        t0 = time.perf_counter()
        try:
            payload = importlib.import_module(module).main(argv_)
            status = "ok"
        except Exception as exc:  # one study failing must not lose the others' tables
            payload, status = {"error": repr(exc)}, "failed"
        info["studies"][name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1),
                                 "loadavg_after": common.loadavg()}
        md_path = os.path.join(out, f"{argv_[-1]}.md")
        body = open(md_path).read() if os.path.exists(md_path) and status == "ok" else f"FAILED: {payload.get('error')}"
        sections.append(f"## {name}\n\n{body}")
        print(f"[run_all] {name}: {status} in {info['studies'][name]['seconds']} s", file=sys.stderr, flush=True)
    m = info["machine"]
    head = (f"# Benchmarks{' (quick smoke run: numbers are not meaningful)' if args.quick else ''}\n\n"
            f"{m['date']} · {m['cpu']} · {m['cores']} cores · {m['ram_gb']} GB RAM · torch {m['torch']} "
            f"({m['torch_threads']} threads by default) · load average at start {m['loadavg'][0]:.2f}\n\n"
            f"fp32 matmul ceiling: {info['matmul']['flops'] / 1e9:.1f} GFLOP/s ({info['matmul']['threads']} threads)\n\n"
            f"Command: `{info['command']}`\n")
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(info, fh, indent=1, default=str)
    with open(os.path.join(out, "results.md"), "w") as fh:
        fh.write(head + "\n" + "\n\n".join(sections) + "\n")
    return 0 if all(s["status"] == "ok" for s in info["studies"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
