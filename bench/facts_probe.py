"""Fix a hallucination, reported: train the shipped lora_facts preset, then score base and tuned on
the probe's **test** sets, which no training row and no tuning touched (bench/splits.py):

- fresh paraphrases of the facts it learned (`assets/data/facts_fresh.jsonl`, 24 rows);
- broad general knowledge (`assets/data/general_broad.jsonl`, 40 questions of other kinds than
  the rehearsal rows: history, science, literature, geography, everyday life).

It also scores the older held-out paraphrases and the 20 general questions, labelled **dev**: the
preset was iterated against them, so those figures are not a result.

    python bench/facts_probe.py [--config examples/lora_facts.yaml] [--quick] [--answers]

--quick: 4 questions of each set and 8 new tokens on the shipped preset cut to 8 steps: NOT A RESULT.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import common  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/lora_facts.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--answers", action="store_true", help="print every answer")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for training and answering (0: default)")
    ap.add_argument("--no-dev", action="store_true", help="skip the dev sets (the ones the preset was tuned on)")
    ap.add_argument("--name", default="facts_probe")
    args = ap.parse_args(argv)
    from core import data
    from core.config import load_config
    from core.infer import RunModel
    from core.probe import probe, probe_facts, probe_general
    from core.train import run
    cfg = load_config(args.config)
    sets = list(args.set) + (["train.max_steps=8"] if args.quick else [])
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
        sets.append(f"train.torch_threads={args.threads}")
    if sets:
        cfg = cfg.with_overrides(sets)
    source = cfg.data.source.split(":", 1)[1]
    limit = 4 if args.quick else None
    tokens = 8 if args.quick else 40
    la0 = common.loadavg()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        summary = run(cfg, run_dir)
        model = RunModel(run_dir)
        t0 = time.perf_counter()
        test = probe(model, facts=probe_facts(source), general=probe_general(), max_new_tokens=tokens, limit=limit)
        dev = None if args.no_dev else probe(model, facts=data.builtin_heldout(source),
                                             general=data.builtin_general_questions(), max_new_tokens=tokens, limit=limit)
        probe_s = time.perf_counter() - t0
    rows = []
    for split, result, parts in (("test", test, (("facts", "fresh paraphrases"), ("general", "broad general"))),
                                 ("dev (tuned on)", dev, (("facts", "older held-out paraphrases"),
                                                          ("general", "20 general questions")))):
        if result is None:
            continue
        for part, label in parts:
            b, t = result["base"][part], result["tuned"][part]
            rows.append({"split": split, "set": label, "n": b["n"], "base": f"{b['hits']}/{b['n']} ({b['score']:.0%})",
                         "tuned": f"{t['hits']}/{t['n']} ({t['score']:.0%})", "base_score": b["score"],
                         "tuned_score": t["score"],
                         "lost": [i["prompt"] for i, j in zip(b["items"], t["items"]) if i["hit"] and not j["hit"]],
                         "gained": [i["prompt"] for i, j in zip(b["items"], t["items"]) if j["hit"] and not i["hit"]]})
    record = common.machine_record()
    md = (common.protocol_header(record, la0, common.loadavg(), quick=args.quick)
          + f"Fix a hallucination (`python bench/facts_probe.py`, {args.config}), base vs tuned, greedy, "
            f"{tokens} new tokens; training {summary['train_time_s']} s ({summary.get('threads')} threads, "
            f"{summary.get('precision')}), load {la0}-{common.loadavg()}\n\n"
          + common.md_table(rows, ["split", "set", "n", "base", "tuned"]))
    payload = {"quick": args.quick, "config": args.config, "sets": sets, "machine": record,
               "train_time_s": summary["train_time_s"], "probe_s": round(probe_s, 1), "table": rows,
               "answers": {"test": test, "dev": dev}}
    common.save(args.name, payload, md)
    print(md, flush=True)
    if args.answers:
        for split, result in (("test", test), ("dev", dev)):
            if result is None:
                continue
            for view in ("base", "tuned"):
                for part in ("facts", "general"):
                    for item in result[view][part]["items"]:
                        print(split, view, part, "OK " if item["hit"] else "-- ", item["prompt"], "=>",
                              item["answer"][:100])
    return payload


if __name__ == "__main__":
    main()
