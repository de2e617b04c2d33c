"""Tuning script for the "Fix a hallucination" preset: train examples/lora_facts.yaml with overrides
and score base and tuned on the **dev** sets only: the older held-out paraphrases of the facts, the
20 general questions (the rehearsal rows' kinds) and `assets/data/general_dev.jsonl` (30 broad
questions of the test set's kinds, written for tuning: the 20 older ones did not show the
forgetting that the broad test set did). The test sets (fresh paraphrases, broad general
knowledge) are for bench/facts_probe.py; this process cannot read them (bench/splits.py: tuning_only).

    python bench/facts_dev.py [--config examples/lora_facts.yaml] [--set train.learning_rate=0.0015]
                              [--keep DIR]

"kept" is the share of the questions the base answers right that the tuned model still answers
right: the forgetting, whatever the base's own score on a set.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import splits  # noqa: E402

splits.tuning_only()

DEV_GENERAL_FILE = "general_dev.jsonl"


def broad_dev_questions() -> list[dict]:
    """The 30 broad dev questions (history, science, literature, geography, everyday life)."""
    from core import data
    return [{"prompt": r["prompt"], "keywords": list(r["keywords"]), "topic": r.get("topic", "")}
            for r in data.read_jsonl(str(data.BUILTIN_DIR / DEV_GENERAL_FILE))]


def dev_sets(dataset: str) -> tuple[list[dict], list[dict]]:
    """What tuning may look at: the older held-out paraphrases, then the general questions: the 20
    older ones followed by the 30 broad dev ones."""
    from core import data
    return data.builtin_heldout(dataset), data.builtin_general_questions() + broad_dev_questions()


def kept(base_items: list[dict], tuned_items: list[dict]) -> str:
    """'k/n': of the n questions the base got right, how many the tuned model still gets right."""
    right = [t["hit"] for b, t in zip(base_items, tuned_items) if b["hit"]]
    return f"{sum(right)}/{len(right)}"


def phase_seconds(run_dir: str) -> dict:
    """Where the run's time went, from its own events: each phase lasts until the next one; the
    training steps run from the "start" event to the next phase (saving)."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as fh:
        events = [json.loads(line) for line in fh if line.strip()]
    marks = [("training" if ev["type"] == "start" else ev["phase"], ev["time"])
             for ev in events if ev["type"] in ("phase", "start")]
    ends = [t for _, t in marks[1:]] + [events[-1]["time"]]
    out: dict[str, float] = {}
    for (name, t), end in zip(marks, ends):
        out[name] = round(out.get(name, 0.0) + end - t, 1)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/lora_facts.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--keep", default="", help="train into this folder and keep it (else a temporary one)")
    args = ap.parse_args(argv)
    from core.config import load_config
    from core.infer import RunModel
    from core.probe import probe
    from core.train import run
    cfg = load_config(args.config)
    if args.set:
        cfg = cfg.with_overrides(args.set)
    facts, general = dev_sets(cfg.data.source.split(":", 1)[1])
    n_old = len(general) - len(broad_dev_questions())
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or os.path.join(tmp, "run")
        summary = run(cfg, run_dir)
        phases = phase_seconds(run_dir)
        result = probe(RunModel(run_dir), facts=facts, general=general)
    out = {"split": "dev", "sets": args.set, "train_time_s": summary["train_time_s"],
           "wall_time_s": summary["wall_time_s"], "steps": summary["steps"], "phases_s": phases}
    base, tuned = result["base"], result["tuned"]
    out["facts"] = {v: f"{result[v]['facts']['hits']}/{result[v]['facts']['n']}" for v in ("base", "tuned")}
    for name, part in (("general_old", slice(0, n_old)), ("general_dev", slice(n_old, None))):
        b, t = base["general"]["items"][part], tuned["general"]["items"][part]
        out[name] = {"base": f"{sum(i['hit'] for i in b)}/{len(b)}", "tuned": f"{sum(i['hit'] for i in t)}/{len(t)}",
                     "kept": kept(b, t)}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
