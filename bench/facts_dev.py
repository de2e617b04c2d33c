"""Tuning script for the "Fix a hallucination" preset: train examples/lora_facts.yaml with overrides
and score base and tuned on the **dev** sets only: the older held-out paraphrases of the facts, the
20 general questions (the rehearsal rows' kinds) and `assets/data/general_dev.jsonl` (30 broad
questions of the test set's kinds, written for tuning: the 20 older ones did not show the
forgetting that the broad test set did), and, since the second pass, 48 more paraphrases
(`facts_dev_more.jsonl`) and 34 more broad questions (`general_dev_more.jsonl`). The test sets
(fresh paraphrases, broad general knowledge) are for bench/facts_probe.py; this process cannot read them (bench/splits.py: tuning_only).

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
# Written for the second tuning pass (2026-12-07): 24 paraphrases and 30 broad questions left a
# one-question difference inside the noise, so both sets grew (48 more paraphrases of the 12
# facts-mini facts: aliases, indirect wordings, other facts of the same entity; 34 more broad
# questions of the same five kinds).
DEV_GENERAL_MORE_FILE = "general_dev_more.jsonl"
DEV_FACTS_MORE_FILE = "facts_dev_more.jsonl"


def broad_dev_questions(file: str = DEV_GENERAL_FILE) -> list[dict]:
    """Broad dev questions (history, science, literature, geography, everyday life) of one file."""
    from core import data
    return [{"prompt": r["prompt"], "keywords": list(r["keywords"]), "topic": r.get("topic", "")}
            for r in data.read_jsonl(str(data.BUILTIN_DIR / file))]


def more_paraphrases() -> list[dict]:
    """The dev paraphrases written for the second pass, as SFT rows like builtin_heldout's."""
    from core import data
    return [{"prompt": r["prompt"], "response": r["response"], "keywords": list(r["keywords"])}
            for r in data.read_jsonl(str(data.BUILTIN_DIR / DEV_FACTS_MORE_FILE))]


def dev_sets(dataset: str) -> tuple[list[dict], list[dict]]:
    """What tuning may look at: the older held-out paraphrases (then, for facts-mini, the 48 newer
    ones), then the general questions: the 20 older ones, the 30 broad dev ones, the 34 newer ones."""
    from core import data
    facts = data.builtin_heldout(dataset) + (more_paraphrases() if dataset == "facts-mini" else [])
    return facts, (data.builtin_general_questions() + broad_dev_questions()
                   + broad_dev_questions(DEV_GENERAL_MORE_FILE))


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

    def generate_views(self, prompts: list[str], views=(False, True), max_new_tokens: int = 64, batch_size: int = 32,
                       **kw) -> dict:
        """RunModel.generate_views with the base view read from the file when every prompt is in it."""
        if False in views and all(p in self.base for p in prompts):
            out = self.run_model.generate_views(prompts, tuple(v for v in views if v), max_new_tokens, batch_size, **kw)
            out[False] = [self.base[p] for p in prompts]
            return out
        out = self.run_model.generate_views(prompts, views, max_new_tokens, batch_size, **kw)
        if False in views and self.path:
            self.base.update(zip(prompts, out[False]))
            with open(self.path, "w", encoding="utf-8") as fh:
                json.dump(self.base, fh, ensure_ascii=False)
        return out


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
    n_old = len(general) - len(broad_dev_questions()) - len(broad_dev_questions(DEV_GENERAL_MORE_FILE))
    n_dev = n_old + len(broad_dev_questions())
    n_heldout = len(facts) - (len(more_paraphrases()) if len(facts) > 24 else 0)
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
    for name, part in (("heldout", slice(0, n_heldout)), ("more", slice(n_heldout, None))):
        items = tuned["facts"]["items"][part]
        out[f"facts_{name}"] = f"{sum(i['hit'] for i in items)}/{len(items)}"
    for name, part in (("general_old", slice(0, n_old)), ("general_dev", slice(n_old, n_dev)),
                       ("general_more", slice(n_dev, None))):
        b, t = base["general"]["items"][part], tuned["general"]["items"][part]
        out[name] = {"base": f"{sum(i['hit'] for i in b)}/{len(b)}", "tuned": f"{sum(i['hit'] for i in t)}/{len(t)}",
                     "kept": kept(b, t)}
    # What went wrong, for the log: a missed fact's answer says which fact it was confused with.
    out["misses"] = [(i["prompt"], i["answer"][:80]) for i in tuned["facts"]["items"] if not i["hit"]]
    out["forgotten"] = [(t["prompt"], t["answer"][:60]) for b, t in zip(base["general"]["items"],
                                                                          tuned["general"]["items"])
                        if b["hit"] and not t["hit"]]
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
