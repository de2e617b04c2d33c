"""Tuning script for the "Fix a hallucination" preset: train examples/lora_facts.yaml with overrides
and score base and tuned on the **dev** sets only: the older held-out paraphrases of the facts and
the 20 general questions. The test sets (fresh paraphrases, broad general knowledge) are for
bench/facts_probe.py; this process cannot read them (bench/splits.py: tuning_only).

    python bench/facts_dev.py [--config examples/lora_facts.yaml] [--set train.learning_rate=0.0015]
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


def dev_sets(dataset: str) -> tuple[list[dict], list[dict]]:
    """What tuning may look at: the older held-out paraphrases and the 20 general questions."""
    from core import data
    return data.builtin_heldout(dataset), data.builtin_general_questions()


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="examples/lora_facts.yaml")
    ap.add_argument("--set", action="append", default=[])
    args = ap.parse_args(argv)
    from core.config import load_config
    from core.infer import RunModel
    from core.probe import probe
    from core.train import run
    cfg = load_config(args.config)
    if args.set:
        cfg = cfg.with_overrides(args.set)
    facts, general = dev_sets(cfg.data.source.split(":", 1)[1])
    with tempfile.TemporaryDirectory() as tmp:
        summary = run(cfg, os.path.join(tmp, "run"))
        result = probe(RunModel(os.path.join(tmp, "run")), facts=facts, general=general)
    out = {"split": "dev", "sets": args.set, "train_time_s": summary["train_time_s"]}
    for view in ("base", "tuned"):
        for part in ("facts", "general"):
            out[f"{view}_{part}"] = round(result[view][part]["score"], 3)
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
