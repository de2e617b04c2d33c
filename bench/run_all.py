"""Regenerate every benchmark table: python -m bench.run_all [--quick] [--only a,b] [--out DIR]

Full mode: the budgets of BENCHMARKS.md (about an hour on a quiet 2-core machine), ratios with the
protocol's 5 pairs. --quick: tiny N and few steps: a smoke run whose figures are NOT A RESULT.
Either way every study's headline figures are checked against sane bounds (SANITY below: an
accuracy in [0, 1], a positive finite ratio, a time-to-accuracy curve that moves forward, the
dev/test cut as documented...), and a figure outside them fails the run loudly (exit status 1,
"SANITY" lines on stderr and in results.md). Writes DIR/<study>.json|.md, DIR/results.json and
DIR/results.md (all tables, the machine, the load averages and the matmul ceiling).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import common  # noqa: E402

# study -> (module, full argv, quick argv)
STUDIES = {
    # the headline studies of BENCHMARKS.md first: they are what tests/test_bench_quick.py runs
    "imdb_report": ("bench.imdb_report", [], ["--quick"]),
    "facts_probe": ("bench.facts_probe", [], ["--quick"]),
    "engine_vs_tutorial": ("bench.engine_vs_tutorial", ["--train", "1000", "--eval", "1000", "--pairs", "5"],
                           ["--quick", "--threads", "1"]),
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
    "app_vs_headless": ("bench.app_vs_headless", ["--pairs", "5"], ["--rows", "16", "--max-length", "32", "--pairs", "1", "--quick"]),
    "app_browser_vs_headless": ("bench.app_browser_vs_headless", ["--pairs", "5", "--query", "ep=10"],
                                ["--pairs", "1", "--query", "ep=1&n=48", "--quick"]),
    # issue 22's table; the browser side is left to `python bench/lesson_speed.py` (a fresh server per row)
    "lesson_speed": ("bench.lesson_speed", ["--headless-only"],
                     ["--quick", "--headless-only", "--reps", "1", "--rows", "sentiment,facts,probe,chat"]),
}
HEADLINE = ("imdb_report", "facts_probe", "engine_vs_tutorial")


# ------------------------------------------------------------------------------ sanity of the figures

def _finite_pos(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def _unit(x) -> bool:
    return isinstance(x, (int, float)) and 0.0 <= x <= 1.0


def _imdb_report(p: dict, quick: bool) -> list[str]:
    from bench import splits
    row, bad = p["table"][0], []
    if not _unit(row.get("test_accuracy")):
        bad.append(f"test accuracy {row.get('test_accuracy')!r} is not in [0, 1]")
    want = 64 if quick else splits.N_TEST
    if row.get("n_test") != want:
        bad.append(f"scored {row.get('n_test')} test rows, expected {want}")
    if not quick and _unit(row.get("test_accuracy")) and row["test_accuracy"] < 0.6:
        bad.append(f"the shipped default scored {row['test_accuracy']:.3f} on the test part: below 0.6, something broke")
    if not row.get("test_fingerprint") or row.get("test_fingerprint") == row.get("dev_fingerprint"):
        bad.append("the test part has no fingerprint, or the same as the dev part")
    return bad


def _facts_probe(p: dict, quick: bool) -> list[str]:
    bad = []
    want = {("test", "fresh paraphrases"): 24, ("test", "broad general"): 40}
    for row in p["table"]:
        for k in ("base_score", "tuned_score"):
            if not _unit(row.get(k)):
                bad.append(f"{row['split']} {row['set']}: {k} {row.get(k)!r} not in [0, 1]")
        n = want.get((row["split"], row["set"]))
        if n and not quick and row["n"] != n:
            bad.append(f"{row['set']}: {row['n']} questions, expected {n}")
        if quick and row["n"] != 4:
            bad.append(f"{row['set']}: {row['n']} questions in quick mode, expected 4")
    if not any(r["split"] == "test" for r in p["table"]):
        bad.append("no test-set rows")
    return bad


def _engine_vs_tutorial(p: dict, quick: bool) -> list[str]:
    bad = []
    if not _finite_pos(p["steps_ratio"].get("median")) or not _finite_pos(p["wall_ratio"].get("median")):
        bad.append(f"ratio not a positive number: {p['steps_ratio']} / {p['wall_ratio']}")
    elif not quick and not 0.2 <= p["steps_ratio"]["median"] <= 5:
        bad.append(f"engine/recipe ratio {p['steps_ratio']['median']} outside 0.2-5: a side is broken")
    if p["steps_ratio"].get("n") != p["args"]["pairs"]:
        bad.append(f"{p['steps_ratio'].get('n')} ratios from {p['args']['pairs']} pairs")
    for r in p["runs"]:
        who = f"{r['who']} pair {r['pair']}"
        if not _finite_pos(r.get("train_steps_s")) or r["train_steps_s"] > r["_wall_s"]:
            bad.append(f"{who}: train_steps_s {r.get('train_steps_s')!r} not in (0, wall {r['_wall_s']}]")
        if not _unit(r.get("accuracy")):
            bad.append(f"{who}: accuracy {r.get('accuracy')!r}")
        curve = r.get("curve") or []
        if not curve:
            bad.append(f"{who}: no evaluation inside training, so no time-to-accuracy")
        times = [c[0] for c in curve]
        if times != sorted(times) or any(t < 0 for t in times) or not all(_unit(c[1]) for c in curve):
            bad.append(f"{who}: time-to-accuracy curve out of order or out of range: {curve}")
    return bad


def _accuracy(p: dict, quick: bool) -> list[str]:
    return [f"{r.get('method')} on {r.get('dataset')}: rc {r.get('rc')}, accuracy {r.get('accuracy')!r}"
            for r in p.get("table", []) if r.get("rc") != 0 or not _unit(r.get("accuracy"))]


def _memory(p: dict, quick: bool) -> list[str]:
    return [f"{r.get('model')} {r.get('method')}: peak RSS {r.get('peak_rss_mb')!r}" for r in p.get("table", [])
            if r.get("rc") != 0 or not _finite_pos(r.get("peak_rss_mb"))]


def _browser(p: dict, quick: bool) -> list[str]:
    bad = [f"{r.get('side')}: samples/s {r.get('samples_per_second')!r}" for r in p.get("rows", [])
           if not _finite_pos(r.get("samples_per_second"))]
    if not p.get("ratios") or not all(_finite_pos(x) for x in p["ratios"]):
        bad.append(f"app/headless ratios {p.get('ratios')!r}")
    return bad


def _lesson_speed(p: dict, quick: bool) -> list[str]:
    bad = [f"{row} {side} rep {r.get('rep')}: {r['error'].strip().splitlines()[-1][:200]}"
           for row, sides in p["results"].items() for side, reps in sides.items() for r in reps if "error" in r]
    for row, sides in p["results"].items():
        for side, reps in sides.items():
            for r in reps:
                for key in ("start_to_result_s", "probe_s", "total_s", "learn_s", "train_s"):
                    if key in r and not _finite_pos(r[key]):
                        bad.append(f"{row} {side}: {key} {r[key]!r}")
                if "accuracy" in r and r["accuracy"] is not None and not _unit(r["accuracy"]):
                    bad.append(f"{row} {side}: accuracy {r['accuracy']!r}")
    return bad


SANITY = {"imdb_report": _imdb_report, "facts_probe": _facts_probe, "engine_vs_tutorial": _engine_vs_tutorial,
          "accuracy_methods": _accuracy, "accuracy_datasize": _accuracy, "memory": _memory,
          "app_browser_vs_headless": _browser, "lesson_speed": _lesson_speed}


def sanity(name: str, payload: dict, quick: bool) -> list[str]:
    """Problems with a study's headline figures (empty: sane). A check that itself fails is a problem."""
    check = SANITY.get(name)
    if check is None:
        return []
    try:
        return check(payload, quick)
    except (KeyError, TypeError, IndexError, ValueError) as exc:
        return [f"the figures are not where they should be ({exc!r})"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run_all")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma list of studies, or 'headline': " + ",".join(STUDIES))
    ap.add_argument("--out", default=None, help="output folder (default bench/out)")
    args = ap.parse_args(argv)
    if args.out:
        os.environ["BENCH_OUT"] = os.path.abspath(args.out)
    out = common.out_dir()
    os.makedirs(out, exist_ok=True)
    chosen = [s for s in (args.only.split(",") if args.only else STUDIES) if s]
    if chosen == ["headline"]:
        chosen = list(HEADLINE)
    unknown = [s for s in chosen if s not in STUDIES]
    if unknown:
        ap.error(f"unknown studies {', '.join(unknown)}; known: headline, {', '.join(STUDIES)}")
    import importlib
    info = {"machine": common.machine(), "matmul": common.matmul_flops(512 if args.quick else 1024, 1.0 if args.quick else 3.0),
            "quick": args.quick, "command": " ".join(["python -m bench.run_all"] + (argv if argv is not None else sys.argv[1:])),
            "studies": {}}
    sections = []
    for name in chosen:
        module, full, quick = STUDIES[name]
        argv_ = (quick if args.quick else full) + ["--name", name + ("_quick" if args.quick else "")]
        t0 = time.perf_counter()
        problems = []
        try:
            payload = importlib.import_module(module).main(argv_)
            problems = sanity(name, payload, args.quick)
            status = "ok" if not problems else "insane"
        except Exception as exc:  # one study failing must not lose the others' tables
            payload, status = {"error": repr(exc)}, "failed"
        for problem in problems:
            print(f"[run_all] SANITY {name}: {problem}", file=sys.stderr, flush=True)
        info["studies"][name] = {"status": status, "seconds": round(time.perf_counter() - t0, 1),
                                 "loadavg_after": common.loadavg(), "sanity": problems}
        md_path = os.path.join(out, f"{argv_[-1]}.md")
        body = open(md_path).read() if os.path.exists(md_path) and status != "failed" else f"FAILED: {payload.get('error')}"
        if problems:
            body = "**SANITY CHECK FAILED**: " + "; ".join(problems) + "\n\n" + body
        sections.append(f"## {name}\n\n{body}")
        print(f"[run_all] {name}: {status} in {info['studies'][name]['seconds']} s", file=sys.stderr, flush=True)
    m = info["machine"]
    flags = ", ".join(k for k, v in common.cpu_flags().items() if v) or "no AVX2/AVX-512/bf16"
    head = (f"# Benchmarks{' (QUICK SMOKE RUN: NOT A RESULT)' if args.quick else ''}\n\n"
            f"CPU flags: {flags}; versions: {common.versions()}; load average at the end {common.loadavg():.2f}\n\n"
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
