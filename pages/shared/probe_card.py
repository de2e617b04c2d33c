"""Compare's hallucination probe: held-out fact questions and general ones, base vs tuned, once per run."""
from __future__ import annotations

import os

import streamlit as st

from core import runs
from core.probe import PROBE_TOKENS
from pages import present
from pages.shared.compare_examples import PANES
from pages.shared.formatting import md_escape, show_error

PROBE_SOURCES = ("builtin:facts", "builtin:facts-mini")
PROBE_FILE = "probe.json"          # in the run folder: the probe runs once per run
CACHED_NOTE = (" The base model's answers came from an earlier probe on this server: the same base model asked "
               "the same questions answers the same way.")


def _read_probe(run_dir: str) -> dict | None:
    import json
    try:
        with open(os.path.join(run_dir, PROBE_FILE), encoding="utf-8") as fh:
            saved = json.load(fh)
    except (OSError, ValueError):
        return None
    result = saved.get("result") if isinstance(saved, dict) else None
    ok = isinstance(result, dict) and all(_probe_part_ok(result.get(v)) for v in ("base", "tuned"))
    return saved if ok else None  # a malformed file is computed again, never a traceback


def _probe_part_ok(view) -> bool:
    """probe.json is a run file like any other: check every field the section formats."""
    if not isinstance(view, dict):
        return False
    for part in ("facts", "general"):
        p = view.get(part)
        if not (isinstance(p, dict) and all(runs.is_finite_number(p.get(k)) for k in ("hits", "n", "score"))
                and isinstance(p.get("items"), list)
                and all(isinstance(i, dict) and {"prompt", "answer", "hit"} <= set(i) for i in p["items"])):
            return False
    return True


def _run_probe(model, info, dataset: str) -> dict | None:
    import time

    from core import probe
    bar = st.progress(0.0, text="Asking both models the held-out questions…")

    def progress(done: int, total: int, view: str, part: str) -> None:
        what = "held-out fact questions" if part == "facts" else "general questions"
        who = "base model" if view == "base" else "fine-tuned model"
        bar.progress(done / max(total, 1), text=f"{done}/{total} answers · {who}, {what}")

    cache = probe.BaseAnswerCache()
    started = time.perf_counter()
    try:
        # The base model's answers to the built-in sets are the same for every run on this base:
        # kept per server, a class's later probes ask only the tuned model. Only built-in questions
        # are ever asked here (PROBE_SOURCES), so nothing a visitor typed is kept.
        result = probe.probe(model, facts=probe.probe_facts(dataset), max_new_tokens=PROBE_TOKENS,
                             progress=progress, base_cache=cache)
    except Exception as exc:  # the model call must never show a traceback
        bar.empty()
        show_error(exc)
        return None
    bar.empty()
    # How long the answers took in the server, and whether the base's came from its cache: what the
    # benchmark subtracts from click -> scores to see the page's own share (bench/lesson_app.py).
    saved = {"dataset": dataset, "max_new_tokens": PROBE_TOKENS, "created": time.time(), "result": result,
             "seconds": round(time.perf_counter() - started, 2), "base_answers_cached": cache.hits > 0}
    try:
        runs.atomic_write_json(os.path.join(info.dir, PROBE_FILE), saved)
    except OSError as exc:  # shown anyway; only the cache is lost
        st.caption(f"The probe's result could not be saved with the run ({exc.strerror or exc}).")
    return saved


def _score_text(part: dict) -> str:
    return f"{part['hits']}/{part['n']} ({part['score']:.0%})"


def _answers_table(result: dict, part: str) -> list[dict]:
    rows = []
    for base, tuned in zip(result["base"][part]["items"], result["tuned"][part]["items"]):
        change = "lost" if base["hit"] and not tuned["hit"] else "gained" if tuned["hit"] and not base["hit"] else ""
        rows.append({"prompt": base["prompt"], "keywords": ", ".join(map(str, base.get("keywords") or [])),
                     "base answer": f"{'✓' if base['hit'] else '✗'} {base['answer']}",
                     "tuned answer": f"{'✓' if tuned['hit'] else '✗'} {tuned['answer']}", "tuning": change})
    return rows


def _forgetting_note(result: dict) -> None:
    """Said beside the scores, not only in the table: a lesson on hallucination must show the ones
    tuning creates (issue 21)."""
    from core import probe
    general = probe.changes(result, "general")
    if general["lost"]:
        st.warning(f"Tuning lost {len(general['lost'])} general question(s) the base model answered right"
                   + (f" and gained {len(general['gained'])}" if general["gained"] else "")
                   + ": the tuned model forgot, or made up a new answer. They are marked \"lost\" in the "
                     "answers below.")


def probe_section(model, info) -> None:
    """Fact recall on held-out rephrasings and general questions, base vs tuned, computed once per run."""
    source = str((info.config.get("data") or {}).get("source", ""))
    if model.task != "sft" or source not in PROBE_SOURCES:
        return
    dataset = source.removeprefix("builtin:")
    with st.container(border=True):
        st.markdown("**Hallucination probe**")
        st.caption("Both models answer questions about the invented facts, worded differently from anything in "
                   "the training set (a fact counts when every keyword of it is in the answer), and general "
                   "questions (right when an accepted keyword is in the answer): did tuning fix the "
                   "hallucination, and did the model forget anything else?")
        saved = _read_probe(info.dir)
        if saved is None:
            from core import probe
            n = len(probe.probe_facts(dataset)) + len(probe.probe_general())
            if st.button("Run the hallucination probe", key="cmp_probe", type="primary",
                         help=f"{n} questions no training row holds (fact paraphrases and broad general knowledge), asked of both models "
                              f"(greedy, up to {PROBE_TOKENS} tokens each). Computed once; saved with the run."):
                saved = _run_probe(model, info, dataset)
            if saved is None:
                return
        result = saved["result"]
        cols = st.columns(2)
        for col, (view, _, title, _) in zip(cols, PANES):
            facts, general = result[view]["facts"], result[view]["general"]
            with col:
                st.markdown(f"**{title}**")
                m1, m2 = st.columns(2)
                delta_f = delta_g = None
                if view == "tuned":
                    base = result["base"]
                    delta_f = f"{(facts['score'] - base['facts']['score']) * 100:+.0f} pts"
                    delta_g = f"{(general['score'] - base['general']['score']) * 100:+.0f} pts"
                m1.metric("Facts recalled (held-out)", _score_text(facts), delta=delta_f,
                          help="Rephrased questions about the invented facts: the base model can only guess")
                m2.metric("General questions right", _score_text(general), delta=delta_g,
                          help="Everyday knowledge: a drop here is catastrophic forgetting")
        _forgetting_note(result)
        with st.expander("The answers behind the numbers"):
            st.markdown("**Held-out fact questions**")
            present.table(_answers_table(result, "facts"), hide_index=True, key="cmp_probe_facts")
            st.markdown("**General questions**")
            present.table(_answers_table(result, "general"), hide_index=True, key="cmp_probe_general")
            st.caption(f"Scored on {md_escape(saved.get('dataset', dataset))}'s held-out rephrasings; greedy "
                       f"answers of up to {saved.get('max_new_tokens', PROBE_TOKENS)} tokens."
                       + (CACHED_NOTE if saved.get("base_answers_cached") is True else ""))
