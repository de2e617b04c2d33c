"""The hallucination probe's time, batched (RunModel.generate_batch) vs one `generate` per question
(issue 22: 189 s on 2 cores, target <= 30 s), on the embedded SmolLM2 with a trained "Fix a
hallucination" run: every fresh fact paraphrase and broad general question, base and tuned views,
greedy, 40 new tokens, as the Compare page asks them.

One process, the run's model loaded once (the app probes a warm model too); each pair times one
whole probe per side, in alternating order (bench/common.pair_order); median and range. It also
says how many answers the two sides gave alike: greedy decoding should agree up to float noise.

    python bench/probe_speed.py [--run RUN_DIR] [--config examples/lora_facts.yaml] [--pairs 5]
                                [--batch-size 16] [--threads 0] [--quick]

--run: a finished facts run to probe (read only); without it the shipped preset is trained first.
--quick: 4 questions of each set, 8 new tokens, 1 pair, the preset cut to 2 steps: NOT A RESULT.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import common  # noqa: E402

SIDES = ["batched", "unbatched"]


def _answers(result: dict) -> list[str]:
    return [i["answer"] for v in ("base", "tuned") for p in ("facts", "general") for i in result[v][p]["items"]]


def _scores(result: dict) -> dict:
    return {f"{v}_{p}": f"{result[v][p]['hits']}/{result[v][p]['n']}" for v in ("base", "tuned")
            for p in ("facts", "general")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a finished facts run folder to probe (default: train --config first)")
    ap.add_argument("--config", default="examples/lora_facts.yaml")
    ap.add_argument("--pairs", type=int, default=common.MIN_PAIRS)
    ap.add_argument("--batch-size", type=int, default=0, help="0: core.probe.BATCH_SIZE")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default="probe_speed")
    args = ap.parse_args(argv)
    pairs = 1 if args.quick else args.pairs
    common.check_pairs(pairs, args.quick)
    import torch

    from core.infer import RunModel
    from core.probe import BATCH_SIZE, probe, probe_facts, probe_general
    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch_size or BATCH_SIZE
    limit = 4 if args.quick else None
    tokens = 8 if args.quick else 40
    la0 = common.loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir, train_s = args.run, None
        if not run_dir:
            from core.config import load_config
            from core.train import run
            cfg = load_config(args.config)
            if args.quick:
                cfg = cfg.with_overrides(["train.max_steps=2"])
            run_dir = os.path.join(tmp, "run")
            train_s = run(cfg, run_dir)["train_time_s"]
        model = RunModel(run_dir)
        source = model.cfg.data.source.split(":", 1)[-1]
        facts = probe_facts(source if source.startswith("facts") else "facts")
        general = probe_general()
        times: dict[str, list[float]] = {s: [] for s in SIDES}
        results: dict[str, dict] = {}
        for pair in range(pairs):
            for side in common.pair_order(pair, SIDES):
                t0 = time.perf_counter()
                results[side] = probe(model, facts=facts, general=general, max_new_tokens=tokens, limit=limit,
                                      batch_size=batch if side == "batched" else 1)
                times[side].append(time.perf_counter() - t0)
                print(f"pair {pair} {side}: {times[side][-1]:.1f} s", flush=True)
    a, b = _answers(results["batched"]), _answers(results["unbatched"])
    same = sum(x == y for x, y in zip(a, b))
    spreads = {s: common.spread(times[s]) for s in SIDES}
    ratio = common.spread([u / max(t, 1e-9) for t, u in zip(times["batched"], times["unbatched"])])
    rows = [{"side": s, "batch size": batch if s == "batched" else 1,
             "probe s (median, range)": f"{spreads[s]['median']:.1f} ({spreads[s]['min']:.1f}–{spreads[s]['max']:.1f})",
             **_scores(results[s])} for s in SIDES]
    record = common.machine_record()
    n_q = len(facts[:limit] if limit else facts) + len(general[:limit] if limit else general)
    md = (common.protocol_header(record, la0, common.loadavg(), quick=args.quick)
          + f"Hallucination probe (`python bench/probe_speed.py`), {'run ' + args.run if args.run else args.config}: "
            f"{n_q} questions x base and tuned, greedy, {tokens} new tokens, torch threads "
            f"{torch.get_num_threads()}; wall time of one whole probe on a loaded model, {pairs} alternating "
            f"pair(s)\n\n"
          + common.md_table(rows, ["side", "batch size", "probe s (median, range)", "base_facts", "base_general",
                                   "tuned_facts", "tuned_general"])
          + f"\n\nSpeed-up (unbatched / batched, per pair): {common.spread_text(ratio)}. "
            f"Answers alike on both sides: {same}/{len(a)} (greedy; a difference is float noise in a near tie).\n")
    payload = {"quick": args.quick, "run": args.run, "config": None if args.run else args.config,
               "train_time_s": train_s, "batch_size": batch, "max_new_tokens": tokens, "questions": n_q,
               "threads": torch.get_num_threads(), "machine": record, "times_s": times, "spread": spreads,
               "speedup": ratio, "answers_alike": [same, len(a)],
               "differing": [[x, y] for x, y in zip(a, b) if x != y], "results": results}
    common.save(args.name + ("_quick" if args.quick else ""), payload, md)
    print(md, flush=True)
    return payload


if __name__ == "__main__":
    main()
