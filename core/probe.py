"""Hallucination probe: does the model state the invented facts, and does it still know the world?

Scores base and tuned views of one run on (a) paraphrases of the fictional facts that no training
row and no tuning of the presets used (recall = every keyword of the fact appears in the answer) and
(b) broad general-knowledge questions of other kinds than the rehearsal rows (correct = any accepted
keyword appears): catastrophic forgetting made visible where it happens.

Which rows: `probe_facts(dataset)` takes `assets/data/facts_fresh.jsonl` for every fact that has
fresh paraphrases and the older held-out rows for the others; `probe_general()` is
`assets/data/general_broad.jsonl`. The older held-out rows of facts-mini and
`general_questions.jsonl` were what the "Fix a hallucination" preset was iterated against, so they
are no longer what a class is shown (bench/splits.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

# progress(done, total, view, part): called after every batch of answers, e.g. to move a progress bar.
Progress = Callable[[int, int, str, str], None]
# Answers (rows) per batch. One generate per question took ~189 s for the probe on 2 cores (issue
# 22); one transformers `generate` per 16 questions per view ~1.09 s per answer. RunModel.generate_views
# does less work per batch (the system prompt's cache shared, rows leaving at their end of turn, a
# LoRA run's base and tuned rows together), and holds the model a token at a time, so the size no
# longer bounds a chat's wait; PLAYGROUND_GENERATION_SECONDS still bounds each batch's own time.
BATCH_SIZE = 32


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


FRESH_FACTS_FILE = "facts_fresh.jsonl"
BROAD_GENERAL_FILE = "general_broad.jsonl"


def probe_facts(dataset: str) -> list[dict]:
    """Fact questions for the probe of a run on a built-in fact set: fresh paraphrases where written."""
    from core import data
    heldout = data.builtin_heldout(dataset)
    path = data.BUILTIN_DIR / FRESH_FACTS_FILE
    if not path.is_file():  # a trimmed install: the older held-out rows still make a probe
        return heldout
    ids = {r.get("fact_id") for r in heldout}
    fresh = [r for r in data.read_jsonl(str(path)) if r.get("fact_id") in ids and isinstance(r.get("prompt"), str)]
    covered = {r["fact_id"] for r in fresh}
    return fresh + [r for r in heldout if r.get("fact_id") not in covered]


def probe_general() -> list[dict]:
    """Broad general-knowledge questions (history, science, literature, geography, everyday life)."""
    from core import data
    path = data.BUILTIN_DIR / BROAD_GENERAL_FILE
    if not path.is_file():
        return data.builtin_general_questions()
    out = []
    for row in data.read_jsonl(str(path)):
        prompt, keywords = row.get("prompt"), row.get("keywords") or []
        if isinstance(prompt, str) and prompt.strip() and isinstance(keywords, list):
            out.append({**row, "keywords": [str(k) for k in keywords if k is not None]})
    return out


def _answers(run_model, prompts: list[str], tuned: bool, max_new_tokens: int, batch_size: int, tick):
    """Answers in order; `tick(done_in_this_list)` after each batch (one by one when batch_size <= 1
    or the model has no generate_batch)."""
    batched = getattr(run_model, "generate_batch", None)
    if batch_size <= 1 or batched is None:
        for i, prompt in enumerate(prompts):
            yield run_model.generate(prompt, tuned=tuned, max_new_tokens=max_new_tokens)
            tick(i + 1)
        return
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        yield from batched(chunk, tuned=tuned, max_new_tokens=max_new_tokens, batch_size=batch_size)
        tick(start + len(chunk))


def _score(rows: list[dict], answers: list[str], judge) -> dict:
    items = [ProbeItem(row["prompt"], answer, list(row["keywords"]), judge(answer, row["keywords"]))
             for row, answer in zip(rows, answers)]
    hits = sum(i.hit for i in items)
    return {"score": hits / max(len(items), 1), "hits": hits, "n": len(items), "items": [asdict(i) for i in items]}


def probe(run_model, facts: list[dict] | None = None, general: list[dict] | None = None,
          max_new_tokens: int = 40, limit: int | None = None, progress: Progress | None = None,
          batch_size: int = BATCH_SIZE) -> dict:
    """{"base": {"facts": {...}, "general": {...}}, "tuned": {...}} with scores and the answers.

    Facts count when *all* their keywords appear in the answer (a fact is a name and a number,
    say), general questions when *any* accepted keyword does ("Paris" or "paris, france").
    A model with `generate_views` (RunModel) answers both views in one pass, `batch_size` answers
    at a time; otherwise a view's questions are asked `batch_size` at a time through `generate_batch`
    (1: one `generate` call per question); `progress(done, total, view, part)` is called after each
    batch, `view` and `part` being those of the batch's last answer.
    """
    facts = facts if facts is not None else probe_facts("facts")
    general = general if general is not None else probe_general()
    if limit:
        facts, general = facts[:limit], general[:limit]
    out = {}
    total = 2 * (len(facts) + len(general))
    prompts = [r["prompt"] for r in facts + general]
    views = getattr(run_model, "generate_views", None)
    if views is not None and batch_size > 1:  # both views in one pass (RunModel.generate_views)
        def tick_both(done: int, index: int, tuned: bool) -> None:
            if progress:
                progress(done, total, "tuned" if tuned else "base", "facts" if index < len(facts) else "general")

        both = views(prompts, (False, True), max_new_tokens, batch_size, tick=tick_both)
        return {view: {"facts": _score(facts, both[tuned][:len(facts)], fact_hit),
                       "general": _score(general, both[tuned][len(facts):], general_hit)}
                for view, tuned in (("base", False), ("tuned", True))}
    for i, (view, tuned) in enumerate((("base", False), ("tuned", True))):
        def tick(done: int, before: int = i * len(prompts), view: str = view) -> None:
            if progress:
                progress(before + done, total, view, "facts" if done <= len(facts) else "general")

        # Facts and general questions share batches: a part's short tail batch would cost nearly as
        # much as a full one (each batch decodes until its longest answer ends).
        answers = list(_answers(run_model, prompts, tuned, max_new_tokens, batch_size, tick))
        out[view] = {"facts": _score(facts, answers[:len(facts)], fact_hit),
                     "general": _score(general, answers[len(facts):], general_hit)}
    return out


def changes(result: dict, part: str) -> dict[str, list[str]]:
    """What tuning changed on one part of a probe result: the questions the base answered right and
    the tuned model did not ("lost": forgetting, or a new invention), and the reverse ("gained")."""
    lost, gained = [], []
    for base, tuned in zip(result["base"][part]["items"], result["tuned"][part]["items"]):
        if base["hit"] and not tuned["hit"]:
            lost.append(base["prompt"])
        elif tuned["hit"] and not base["hit"]:
            gained.append(base["prompt"])
    return {"lost": lost, "gained": gained}
