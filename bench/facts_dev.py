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


class CachedBase:
    """A run's model whose base view answers from a file: the base model's greedy answers do not
    change between candidates, so a sweep asks them once (half the probe's work for every later
    candidate). Answers are stored by prompt; a prompt not in the file is asked."""

    def __init__(self, run_model, path: str):
        self.run_model, self.path = run_model, path
        self.base: dict[str, str] = {}
        if path and os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                self.base = json.load(fh)

    def generate_batch(self, prompts: list[str], tuned: bool = True, **kw) -> list[str]:
        if tuned or not all(p in self.base for p in prompts):
            answers = self.run_model.generate_batch(prompts, tuned=tuned, **kw)
            if not tuned and self.path:
                self.base.update(zip(prompts, answers))
                with open(self.path, "w", encoding="utf-8") as fh:
                    json.dump(self.base, fh, ensure_ascii=False)
            return answers
        return [self.base[p] for p in prompts]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/lora_facts.yaml")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--keep", default="", help="train into this folder and keep it (else a temporary one)")
    ap.add_argument("--base-answers", default="",
                    help="a JSON file of the base model's answers: read if present, else written (a sweep's later "
                         "candidates then generate the tuned answers only)")
    ap.add_argument("--dev-of", default="facts-mini",
                    help="whose dev questions to ask when data.source is a candidate file, not a built-in")
    args = ap.parse_args(argv)
    from core.config import load_config
    from core.infer import RunModel
    from core.probe import probe
    from core.train import run
    cfg = load_config(args.config)
    if args.set:
        cfg = cfg.with_overrides(args.set)
    source = cfg.data.source
    facts, general = dev_sets(source.split(":", 1)[1] if source.startswith("builtin:") else args.dev_of)
    n_old = len(general) - len(broad_dev_questions())
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = args.keep or os.path.join(tmp, "run")
        summary = run(cfg, run_dir)
        phases = phase_seconds(run_dir)
        model = RunModel(run_dir)
        result = probe(CachedBase(model, args.base_answers) if args.base_answers else model, facts=facts, general=general)
    out = {"split": "dev", "sets": args.set, "rows": summary.get("n_train"), "train_time_s": summary["train_time_s"],
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
