"""Write rehearsal rows (assets/data/rehearsal.jsonl format) from the base model's own answers (self-distillation).

The "Fix a hallucination" lesson mixes ordinary questions into its training rows so that learning
the invented facts does not overwrite the rest. Hand-written answers ("The capital of Italy is
Rome.") teach the model a new style as well; the base model's own greedy answers teach it only to
keep answering as before. This script asks the base SmolLM2 (the base view of any SFT run on it)
the questions of `assets/data/rehearsal_questions.jsonl`, a training pool written for this and for
nothing else, and keeps, as a rehearsal row, the start of each answer up to the sentence that names
an accepted keyword, when the base answered right.

    python bench/rehearsal_self.py --run RUN_DIR --out FILE [--limit N --then FILE]

Tried on 2026-12-07 (16 rows written by this, topped up with 8 hand-written ones: `--limit 24
--then OLD_REHEARSAL`) and NOT shipped: on dev it kept fewer general answers and learned fewer
facts than the hand-written rows (examples/lora_facts.yaml's header). The pool no longer holds
the questions whose base answers named a test question's accepted answer, nor the 4 that were test
questions (a check that reported only which pool rows to drop).

Dropped: questions the base gets wrong, and answers that spell out a dev question's accepted
answer (tuning would then be scored on what it was taught). It reads dev sets only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import splits  # noqa: E402

splits.tuning_only()

POOL_FILE = "rehearsal_questions.jsonl"
DEV_FILES = ("general_dev.jsonl", "general_dev_more.jsonl", "general_questions.jsonl")
MAX_NEW_TOKENS = 40  # what the probe lets an answer say
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")


def answer_start(answer: str, keywords: list[str]) -> str:
    """The answer's sentences up to the first that names a keyword ('' when none does)."""
    kept = []
    for sentence in _SENTENCE_END.split(answer.strip()):
        kept.append(sentence)
        if any(k.lower() in sentence.lower() for k in keywords):
            return " ".join(kept).strip()
    return ""


def forbidden_answers() -> list[str]:
    """Accepted answers of the dev questions: a rehearsal row must not spell them out."""
    from core import data
    words = []
    for name in DEV_FILES:
        for row in data.read_jsonl(str(data.BUILTIN_DIR / name)):
            words += [k.lower() for k in row.get("keywords", []) if len(k) > 2 or name == DEV_FILES[0]]
    return words


def rehearsal_rows(pool: list[dict], answers: list[str], forbidden: list[str]) -> list[dict]:
    out = []
    for row, answer in zip(pool, answers):
        start = answer_start(answer, row["keywords"])
        if not start or any(w in start.lower() for w in forbidden):
            continue
        out.append({"fact_id": "rehearsal", "prompt": row["prompt"], "response": start, "split": "train"})
    return out


def interleaved(rows: list[dict], pool: list[dict]) -> list[dict]:
    """Rows taken one topic at a time (history, science, ... then again), so that a shorter
    prefix (`--limit`) still covers every kind of question."""
    topic = {r["prompt"]: r.get("topic", "") for r in pool}
    seen: dict[str, int] = {}
    rank = []
    for r in rows:
        t = topic.get(r["prompt"], "")
        seen[t] = seen.get(t, 0) + 1
        rank.append(seen[t])
    return [r for _, r in sorted(zip(rank, rows), key=lambda x: x[0])]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="any SFT run on the lesson's base model (its base view answers)")
    ap.add_argument("--out", required=True, help="e.g. a candidate file for bench/facts_dev.py")
    ap.add_argument("--limit", type=int, default=0, help="keep at most this many rows (0: all)")
    ap.add_argument("--then", default="", help="rows to top up with (in file order) until --limit, e.g. "
                                               "older hand-written rehearsal rows")
    args = ap.parse_args(argv)
    from core import data
    from core.infer import RunModel
    pool = data.read_jsonl(str(data.BUILTIN_DIR / POOL_FILE))
    answers = RunModel(args.run).generate_batch([r["prompt"] for r in pool], tuned=False,
                                                max_new_tokens=MAX_NEW_TOKENS)
    rows = interleaved(rehearsal_rows(pool, answers, forbidden_answers()), pool)
    if args.then and args.limit:
        rows += data.read_jsonl(args.then)[:max(0, args.limit - len(rows))]
    if args.limit:
        rows = rows[:args.limit]
    with open(args.out, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    dropped = [(r["prompt"], a) for r, a in zip(pool, answers) if r["prompt"] not in {x["prompt"] for x in rows}]
    print(json.dumps({"kept": len(rows), "of": len(pool), "dropped": dropped}, ensure_ascii=False, indent=1))
    return rows


if __name__ == "__main__":
    main()
