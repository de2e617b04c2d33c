"""Hallucination probe: does the model state the invented facts, and does it still know the world?

Scores base and tuned views of one run on (a) the held-out paraphrases of the fictional facts
(recall = every keyword of the fact appears in the answer) and (b) general questions (correct =
any accepted keyword appears): catastrophic forgetting made visible.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

# progress(done, total, view, part): called after every answer, e.g. to move a progress bar.
Progress = Callable[[int, int, str, str], None]


@dataclass
class ProbeItem:
    prompt: str
    answer: str
    keywords: list
    hit: bool


def fact_hit(answer: str, keywords: list[str]) -> bool:
    low = answer.lower()
    return bool(keywords) and all(k.lower() in low for k in keywords)


def general_hit(answer: str, keywords: list[str]) -> bool:
    low = answer.lower()
    return any(k.lower() in low for k in keywords)


def _score(run_model, rows: list[dict], tuned: bool, judge, max_new_tokens: int, tick=None) -> dict:
    items = []
    for row in rows:
        answer = run_model.generate(row["prompt"], tuned=tuned, max_new_tokens=max_new_tokens)
        items.append(ProbeItem(row["prompt"], answer, list(row["keywords"]), judge(answer, row["keywords"])))
        if tick:
            tick()
    hits = sum(i.hit for i in items)
    return {"score": hits / max(len(items), 1), "hits": hits, "n": len(items), "items": [asdict(i) for i in items]}


def probe(run_model, facts: list[dict] | None = None, general: list[dict] | None = None,
          max_new_tokens: int = 40, limit: int | None = None, progress: Progress | None = None) -> dict:
    """{"base": {"facts": {...}, "general": {...}}, "tuned": {...}} with scores and the answers.

    Facts count when *all* their keywords appear in the answer (a fact is a name and a number,
    say), general questions when *any* accepted keyword does ("Paris" or "paris, france").
    `progress(done, total, view, part)` is called after each answer.
    """
    from core import data
    facts = facts if facts is not None else data.builtin_heldout("facts")
    general = general if general is not None else data.builtin_general_questions()
    if limit:
        facts, general = facts[:limit], general[:limit]
    out = {}
    total = 2 * (len(facts) + len(general))
    done = [0]

    def ticker(view: str, part: str):
        def tick():
            done[0] += 1
            if progress:
                progress(done[0], total, view, part)
        return tick

    for view, tuned in (("base", False), ("tuned", True)):
        out[view] = {"facts": _score(run_model, facts, tuned, fact_hit, max_new_tokens, ticker(view, "facts")),
                     "general": _score(run_model, general, tuned, general_hit, max_new_tokens,
                                       ticker(view, "general"))}
    return out
