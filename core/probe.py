"""Hallucination probe: does the model state the invented facts, and does it still know the world?

Scores base and tuned views of one run on (a) the held-out paraphrases of the fictional facts
(recall = every keyword of the fact appears in the answer) and (b) general questions (correct =
any accepted keyword appears): catastrophic forgetting made visible.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass


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


def _score(run_model, rows: list[dict], tuned: bool, judge, max_new_tokens: int) -> dict:
    items = []
    for row in rows:
        answer = run_model.generate(row["prompt"], tuned=tuned, max_new_tokens=max_new_tokens)
        items.append(ProbeItem(row["prompt"], answer, list(row["keywords"]), judge(answer, row["keywords"])))
    hits = sum(i.hit for i in items)
    return {"score": hits / max(len(items), 1), "hits": hits, "n": len(items), "items": [asdict(i) for i in items]}


def probe(run_model, facts: list[dict] | None = None, general: list[dict] | None = None,
          max_new_tokens: int = 40, limit: int | None = None) -> dict:
    """{"base": {"facts": {...}, "general": {...}}, "tuned": {...}} with scores and the answers."""
    from core import data
    facts = facts if facts is not None else data.builtin_heldout("facts")
    general = general if general is not None else data.builtin_general_questions()
    if limit:
        facts, general = facts[:limit], general[:limit]
    out = {}
    for view, tuned in (("base", False), ("tuned", True)):
        out[view] = {"facts": _score(run_model, facts, tuned, fact_hit, max_new_tokens),
                     "general": _score(run_model, general, tuned, general_hit, max_new_tokens)}
    return out
