"""The hallucination probe's wall time (issue 22: 189 s on 2 cores, target <= 30 s), on the embedded
SmolLM2 with a trained "Fix a hallucination" run: every fresh fact paraphrase and broad general
question, base and tuned views, greedy, 40 new tokens, as the Compare page asks them.

Sides (--sides, in alternating order, bench/common.pair_order; median and range of >= 3 reps):
  fast       what the app runs now: core.probe.probe -> RunModel.generate_views (shared system-prompt
             cache, rows leave the batch at their end, LoRA base and tuned rows in one batch)
  warm       `fast` with the base model's answers read from core.probe.BaseAnswerCache (what every
             probe after a server's first one runs: the tuned view only); the cache is filled once
             before the clock, in a temporary folder
  generate   the path before it (the "before" figure): one transformers `generate` per 16 questions
             per view, left-padded, every row decoded until the batch's longest answer ends
  one-by-one one `generate` per question (the first probe: 189 s; slow, not run by default)
One process, the run's model loaded once (the app probes a warm model too). It also says how many
answers the sides gave alike: greedy decoding should agree up to float noise in a near tie.

    python bench/probe_speed.py [--run RUN_DIR] [--config examples/lora_facts.yaml] [--pairs 3]
                                [--sides fast,warm] [--batch-size 0] [--threads 0] [--quick]

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

SIDES = ["fast", "warm", "generate", "one-by-one"]
MIN_REPS = 3  # issue 22's lesson rows: median and range of >= 3
OLD_BATCH = 16  # core.probe.BATCH_SIZE before generate_views


class GenerateCalls:
    """A RunModel seen through the probe's older path: `generate_batch` = one transformers `generate`
    call per batch and view, left-padded (what RunModel.generate_batch did before generate_views)."""

    def __init__(self, model):
        self.model = model

    def generate(self, prompt, tuned=True, **kw):
        return self.model.generate(prompt, tuned=tuned, **kw)

    def generate_batch(self, prompts, tuned=True, max_new_tokens=64, batch_size=OLD_BATCH, **_):
        import torch
        m = self.model
        pad = m.tokenizer.pad_token_id
        rows = [m._chat_ids([{"role": "user", "content": p}])[0].tolist() for p in prompts]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        with m.view(tuned) as model, torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, do_sample=False)
        eos = m.tokenizer.eos_token_id
        texts = []
        for row in out[:, width:].tolist():
            row = row[:row.index(eos) + 1] if eos in row else row
            texts.append(m.tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts


def _answers(result: dict) -> list[str]:
    return [i["answer"] for v in ("base", "tuned") for p in ("facts", "general") for i in result[v][p]["items"]]


def _scores(result: dict) -> dict:
    return {f"{v}_{p}": f"{result[v][p]['hits']}/{result[v][p]['n']}" for v in ("base", "tuned")
            for p in ("facts", "general")}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", help="a finished facts run folder to probe (default: train --config first)")
    ap.add_argument("--config", default="examples/lora_facts.yaml")
    ap.add_argument("--pairs", type=int, default=MIN_REPS)
    ap.add_argument("--sides", default="fast,warm", help=f"comma-separated, of {SIDES}")
    ap.add_argument("--batch-size", type=int, default=0, help="the fast side's rows per batch (0: core.probe.BATCH_SIZE)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--name", default="probe_speed")
    args = ap.parse_args(argv)
    pairs = 1 if args.quick else args.pairs
    if pairs < MIN_REPS and not args.quick:
        raise SystemExit(f"--pairs {pairs}: issue 22's rows need at least {MIN_REPS} reps (or --quick)")
    sides = [x.strip() for x in args.sides.split(",") if x.strip()]
    if not sides or set(sides) - set(SIDES):
        raise SystemExit(f"--sides {args.sides}: choose among {SIDES}")
    import torch

    from core.infer import RunModel
    from core.probe import BATCH_SIZE, BaseAnswerCache, probe, probe_facts, probe_general
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
        times: dict[str, list[float]] = {s: [] for s in sides}
        results: dict[str, dict] = {}
        asked = {"fast": (model, batch), "warm": (model, batch), "generate": (GenerateCalls(model), OLD_BATCH),
                 "one-by-one": (model, 1)}
        cache = BaseAnswerCache(os.path.join(tmp, "probe-base"))
        if "warm" in sides:
            probe(model, facts=facts, general=general, max_new_tokens=tokens, limit=limit, base_cache=cache)
        for pair in range(pairs):
            for side in common.pair_order(pair, sides):
                t0 = time.perf_counter()
                who, size = asked[side]
                results[side] = probe(who, facts=facts, general=general, max_new_tokens=tokens, limit=limit,
                                      batch_size=size, base_cache=cache if side == "warm" else None)
                times[side].append(time.perf_counter() - t0)
                print(f"pair {pair} {side}: {times[side][-1]:.1f} s", flush=True)
    first, last = sides[0], sides[-1]
    a, b = _answers(results[first]), _answers(results[last])
    same = sum(x == y for x, y in zip(a, b))
    spreads = {s: common.spread(times[s]) for s in sides}
    ratio = common.spread([u / max(t, 1e-9) for t, u in zip(times[first], times[last])])
    rows = [{"side": s, "batch size": asked[s][1],
             "probe s (median, range)": f"{spreads[s]['median']:.1f} ({spreads[s]['min']:.1f}–{spreads[s]['max']:.1f})",
             **_scores(results[s])} for s in sides]
    record = common.machine_record()
    n_q = len(facts[:limit] if limit else facts) + len(general[:limit] if limit else general)
    md = (common.protocol_header(record, la0, common.loadavg(), quick=args.quick)
          + f"Hallucination probe (`python bench/probe_speed.py`), {'run ' + args.run if args.run else args.config}: "
            f"{n_q} questions x base and tuned, greedy, {tokens} new tokens, torch threads "
            f"{torch.get_num_threads()}; wall time of one whole probe on a loaded model, {pairs} alternating "
            f"pair(s)\n\n"
          + common.md_table(rows, ["side", "batch size", "probe s (median, range)", "base_facts", "base_general",
                                   "tuned_facts", "tuned_general"])
          + f"\n\nSpeed-up ({last} / {first}, per pair): {common.spread_text(ratio)}. "
            f"Answers alike on those sides: {same}/{len(a)} (greedy; a difference is float noise in a near tie).\n")
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
