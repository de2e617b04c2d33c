"""Compare: the base model and the fine-tuned one, side by side.

Chat panes for instruction-tuned (sft) runs, label probabilities for classifiers. One loaded model
serves both views (peft's disable_adapter() for the base), shared across sessions by cache_resource.
"""
from __future__ import annotations

import os

import plotly.graph_objects as go
import streamlit as st

from core import chat_gate, lessons, limits, runs, showcase, urlstate
from core.textsafe import md_text, plotly_text
from pages import confusion, present
from pages.ui import error_text, is_admin, lesson_box, md_escape, owner_id, query_params, run_label, show_error

PICK_KEY = "compare_pick"          # the selectbox's own key
WANTED_KEY = "compare_run"         # set by other pages (Train: "Compare base vs tuned")
APPLIED_KEY = "_compare_applied"   # the last compare_run we moved the selectbox to
CHATS_KEY = "_compare_chats"       # run id -> {"base": [messages], "tuned": [messages]}
PENDING_KEY = "_compare_pending"   # a prompt or text an example button asked for
CLS_KEY = "_compare_cls"           # run id -> {"text", "base", "tuned"}
HISTORY_MESSAGES = 6               # earlier messages sent as context: 3 turns keep small models on track
NO_ANSWER = "_(no answer: the model stopped at once)_"
PANES = (("base", False, "Base model", "before fine-tuning"), ("tuned", True, "Fine-tuned", "after fine-tuning"))
PROBE_SOURCES = ("builtin:facts", "builtin:facts-mini")
PROBE_FILE = "probe.json"          # in the run folder: the probe runs once per run
PROBE_TOKENS = 40
NOTICES_KEY = "_compare_notices"   # sends the server refused: shown until the next answer
SUPERSEDED = "_(stopped: a newer message replaced this one before it was answered)_"


# ------------------------------------------------------------------------------------ loading

def load_model(run_dir: str):
    """One RunModel per run for the whole server, in a bounded LRU (core.model_cache,
    PLAYGROUND_MODEL_CACHE_SIZE) that really frees evicted models: treat it as read-only."""
    from core import model_cache
    return model_cache.get(run_dir)


def _finished_with_weights() -> list:
    return [r for r in runs.list_runs() if r.state in ("completed", "stopped") and r.has_weights]


@st.cache_data(show_spinner=False, max_entries=32)
def examples_for(run_id: str, data_cfg: dict, task: str, seed: int) -> list[str]:
    """A few prompts (sft) or texts (classification) from the run's own dataset."""
    from core import data
    from core.config import DataSpec
    source = str(data_cfg.get("source", ""))
    if task == "sft" and source == "builtin:facts":
        # Held-out rephrasings: questions the base cannot know and the tuned model never saw verbatim.
        seen, out = set(), []
        for row in data.builtin_heldout("facts"):
            if row.get("fact_id") not in seen:
                seen.add(row.get("fact_id"))
                out.append(row["prompt"])
        return out[:3]
    if source.startswith("hub:"):
        return []  # downloading a dataset to show three examples is not worth the wait
    try:
        loaded = data.load_rows(DataSpec(**data_cfg), seed=seed)
    except (ValueError, OSError):
        return []
    rows = loaded.val or loaded.train
    key = "prompt" if task == "sft" else "text"
    return [str(r[key]) for r in data.without_rehearsal(rows) if r.get(key)][:3]


def may_show_examples(info) -> bool:
    """Rows of a run's data are shown as examples only when they are public (the lesson's built-in
    data in assets/data) or the visitor owns the run: an upload is its owner's alone."""
    source = str(((info.config or {}).get("data") or {}).get("source", ""))
    return source.startswith("builtin:") or info.owned_by(owner_id()) or is_admin()


def shown_examples(info, task: str, seed: int) -> list[str]:
    if not may_show_examples(info):
        return []
    return examples_for(info.id, (info.config or {}).get("data") or {}, task, seed)


def _escaped_stream(chunks, raw: list[str]):
    """Model output, streamed as inert text: a model tuned on someone's data may answer with a
    markdown image or link. Trailing letters wait for the next chunk, so 'www' is never split
    between two chunks and escaped on neither; `raw` collects the text as generated."""
    held = ""
    for chunk in chunks:
        raw.append(str(chunk))
        text = held + str(chunk)
        cut = len(text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"))
        held = text[cut:]
        if cut:
            yield md_text(text[:cut], max_len=None, multiline=True)
    if held:
        yield md_text(held, max_len=None, multiline=True)


def _general_question() -> str | None:
    from core import data
    try:
        questions = data.builtin_general_questions()
    except (ValueError, OSError):
        return None
    return questions[0]["prompt"] if questions else None


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _short_path(value) -> str:
    # A server path says little to a class and more than needed to a visitor: keep its last part.
    text = str(value or "?").rstrip("/\\")
    return os.path.basename(text) if os.path.isabs(text) or text.startswith((".", "~")) else text


def _set_pending(value: str) -> None:
    st.session_state[PENDING_KEY] = value


# ------------------------------------------------------------------------------------ chat (sft)

def chat(model, info) -> None:
    chats = st.session_state.setdefault(CHATS_KEY, {})
    chat_state = chats.setdefault(info.id, {"base": [], "tuned": []})

    s1, s2, s3 = st.columns([2, 2, 1.2])
    max_new = s1.slider("Max new tokens", 8, 512, 128, step=8, key="cmp_max_new",
                        help="How long an answer may get. Small CPUs: keep it short.")
    temperature = s2.slider("Temperature", 0.0, 1.5, 0.0, step=0.1, key="cmp_temp",
                            help="0 = greedy: the most likely token every time, so the class sees the same "
                                 "answer twice. Higher = more varied answers.")
    # The facts (hallucination) lesson asks paraphrases one after another: with the previous exchange
    # in its context the tuned model copied a wrong answer forward (issue 23). Each question fresh.
    facts = (info.config.get("data") or {}).get("source") == "builtin:facts"
    remember = s3.toggle("Remember chat", value=not facts, key="cmp_remember",
                         help=f"Send up to the last {HISTORY_MESSAGES} messages of each pane as context.")

    data_cfg = info.config.get("data") or {}
    seed = int((info.config.get("train") or {}).get("seed", 42))
    examples = shown_examples(info, "sft", seed)
    general = _general_question()
    if examples or general:
        if not examples:  # e.g. another session's upload: its rows are not ours to show
            st.caption("Try one: a general question (a run's uploaded data is shown only to the session "
                       "that started it).")
        else:
            st.caption("Try one: questions from the run's own data"
                       + (" (held-out rephrasings — watch the base model make things up)"
                          if data_cfg.get("source") == "builtin:facts" else "")
                       + ", and a general question to check that nothing else broke.")
        buttons = examples + ([general] if general else [])
        cols = st.columns(len(buttons))
        for i, (col, text) in enumerate(zip(cols, buttons)):
            # A button label renders markdown: an image in a row would load in this visitor's browser.
            label = ("General: " if text == general and i == len(buttons) - 1 else "") + md_text(_short(text, 70))
            col.button(label, key=f"cmp_ex_{i}", on_click=_set_pending, args=(text,), width="stretch")

    with st.form("cmp_form", clear_on_submit=True):
        typed = st.text_input("Prompt", key="cmp_prompt", placeholder="Ask both models the same question…",
                              max_chars=limits.max_prompt_chars())
        sent = st.form_submit_button("Send", key="cmp_send", type="primary")
    prompt = typed.strip() if sent and typed and typed.strip() else st.session_state.pop(PENDING_KEY, None)
    if sent and not (typed or "").strip():
        st.warning("The prompt is empty: type a question, then press Send.")

    if prompt:
        prompt = _admit(model, prompt, [chat_state[p][-HISTORY_MESSAGES:] if remember else [] for p, *_ in PANES])
    for notice in st.session_state.get(NOTICES_KEY, []):
        st.warning(notice)

    panes = st.columns(2)
    for col, (pane, _, title, sub) in zip(panes, PANES):
        with col:
            st.subheader(title)
            st.caption(sub)
            for msg in chat_state[pane]:
                with st.chat_message(msg["role"]):
                    st.markdown(_shown(msg["content"]))

    if prompt:
        # One answer in flight per session: this send cancels the one before it (whose script run
        # Streamlit has replaced with this one), and a closed tab cancels it too (its generator closes).
        cancel = chat_gate.begin(owner_id())
        try:
            for col, (pane, tuned, _, _) in zip(panes, PANES):
                history = chat_state[pane][-HISTORY_MESSAGES:] if remember else []
                with col:
                    _answer_pane(model, chat_state[pane], prompt, tuned, history, max_new, temperature, cancel)
        finally:
            chat_gate.end(owner_id(), cancel)

    if any(chat_state.values()):
        if st.button("Clear both chats", key="cmp_clear"):
            chats[info.id] = {"base": [], "tuned": []}
            st.rerun()


def _admit(model, prompt: str, histories: list[list]) -> str | None:
    """The prompt if this server will answer it now; else None, with the reason kept on screen."""
    notices = st.session_state.setdefault(NOTICES_KEY, [])
    try:
        for history in histories:  # the longer history decides whether the token cap holds
            model.check_prompt(prompt, history)
        chat_gate.check_rate(owner_id())
    except Exception as exc:
        notices.append(f"Not sent: “{md_escape(_short(prompt, 60))}” — {error_text(exc)}")
        del notices[:-3]
        return None
    notices.clear()
    return prompt


def _not_answered(exc: BaseException) -> str:
    return f"_(not answered: {md_escape(error_text(exc))})_"


def _shown(content: str) -> str:
    """A chat message as markdown: the model's or visitor's text escaped; the page's own notes
    (NO_ANSWER, SUPERSEDED, not answered), which end the text, keep their italics."""
    for note in (SUPERSEDED, NO_ANSWER):
        if content.endswith(note):
            body = content[: -len(note)].strip()
            return (md_text(body, max_len=None, multiline=True) + "\n\n" if body else "") + note
    if content.startswith("_(not answered: ") and content.endswith(")_"):
        return content  # built by _not_answered from an escaped error text
    return md_text(content, max_len=None, multiline=True) or NO_ANSWER


def _answer_pane(model, messages: list, prompt: str, tuned: bool, history: list, max_new: int,
                 temperature: float, cancel) -> None:
    """Stream one pane's answer and record it; a failed or superseded answer is recorded as such."""
    answer = None
    try:
        with st.chat_message("user"):
            st.markdown(md_text(prompt, max_len=None, multiline=True))
        with st.chat_message("assistant"):
            raw: list[str] = []
            try:
                st.write_stream(_escaped_stream(model.generate_stream(
                    prompt, tuned=tuned, max_new_tokens=max_new, temperature=temperature, history=history,
                    cancel=cancel), raw))
            except Exception as exc:  # the model call must never show a traceback
                show_error(exc)
                st.caption("Try a shorter prompt or fewer new tokens, or clear the chat.")
                answer = _not_answered(exc)
                return
            answer = "".join(raw).strip()  # as generated: it goes back to the model as history
            if cancel.is_set():
                answer = (answer + "\n\n" if answer else "") + SUPERSEDED
            if not answer:
                st.markdown(NO_ANSWER)
    finally:
        # Also when Streamlit stops this script run mid-answer (a newer send): never dropped silently.
        messages += [{"role": "user", "content": prompt},
                     {"role": "assistant", "content": SUPERSEDED if answer is None else answer}]


# ------------------------------------------------------------------------------ hallucination probe

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

    try:
        result = probe.probe(model, facts=probe.probe_facts(dataset), max_new_tokens=PROBE_TOKENS,
                             progress=progress)
    except Exception as exc:  # the model call must never show a traceback
        bar.empty()
        show_error(exc)
        return None
    bar.empty()
    saved = {"dataset": dataset, "max_new_tokens": PROBE_TOKENS, "created": time.time(), "result": result}
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
        rows.append({"prompt": base["prompt"], "keywords": ", ".join(map(str, base.get("keywords") or [])),
                     "base answer": f"{'✓' if base['hit'] else '✗'} {base['answer']}",
                     "tuned answer": f"{'✓' if tuned['hit'] else '✗'} {tuned['answer']}"})
    return rows


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
        with st.expander("The answers behind the numbers"):
            st.markdown("**Held-out fact questions**")
            present.table(_answers_table(result, "facts"), hide_index=True, key="cmp_probe_facts")
            st.markdown("**General questions**")
            present.table(_answers_table(result, "general"), hide_index=True, key="cmp_probe_general")
            st.caption(f"Scored on {md_escape(saved.get('dataset', dataset))}'s held-out rephrasings; greedy "
                       f"answers of up to {saved.get('max_new_tokens', PROBE_TOKENS)} tokens.")


# ------------------------------------------------------------------------------ classification

def _prob_figure(probs: dict[str, float], title: str) -> go.Figure:
    labels = list(probs)
    values = [float(probs[k]) for k in labels]
    best = max(range(len(values)), key=values.__getitem__) if values else -1
    colours = ["#e67e22" if i == best else "#95a5a6" for i in range(len(values))]
    labels = [plotly_text(k) for k in labels]  # the run's own label names: Plotly renders their HTML
    fig = go.Figure(go.Bar(x=values, y=labels, orientation="h", marker_color=colours,
                           text=[f"{v:.0%}" for v in values], textposition="auto"))
    fig.update_layout(title=dict(text=plotly_text(title), x=0.0), height=120 + 36 * len(labels),
                      margin=dict(l=10, r=10, t=40, b=10), xaxis=dict(range=[0, 1], tickformat=".0%"),
                      yaxis=dict(autorange="reversed"))
    return fig


def classify(model, info) -> None:
    results = st.session_state.setdefault(CLS_KEY, {})
    data_cfg = info.config.get("data") or {}
    seed = int((info.config.get("train") or {}).get("seed", 42))
    examples = shown_examples(info, "classification", seed) + showcase.sentences(data_cfg.get("source"))
    if examples:
        st.caption("Try one: texts from the run's validation data")
        cols = st.columns(len(examples))
        for i, (col, text) in enumerate(zip(cols, examples)):
            col.button(md_text(_short(text)), key=f"cmp_cls_ex_{i}", on_click=_set_pending, args=(text,), width="stretch")

    pending = st.session_state.pop(PENDING_KEY, None)
    if pending:
        st.session_state["cmp_text"] = pending  # before the widget is drawn: allowed
    with st.form("cmp_cls_form"):
        text = st.text_area("Text to classify", key="cmp_text", height=90,
                            placeholder="Type a sentence, e.g. a short review")
        sent = st.form_submit_button("Classify", key="cmp_classify", type="primary")
    text = (text or "").strip()
    if (sent or pending) and not text:
        st.warning("The text is empty: type a sentence, then press Classify.")
    elif sent or pending:
        try:
            with st.spinner("Classifying…"):
                results[info.id] = {"text": text, "base": model.classify(text, tuned=False),
                                    "tuned": model.classify(text, tuned=True)}
        except Exception as exc:
            show_error(exc)
            st.caption("Try a shorter text, or another run.")

    result = results.get(info.id)
    if not result:
        return
    st.markdown(f"> {md_text(result['text'], 300)}")
    cols = st.columns(2)
    for col, (pane, _, title, _) in zip(cols, PANES):
        probs = result[pane]
        top = max(probs, key=probs.get) if probs else "?"
        col.plotly_chart(present.figure(_prob_figure(probs, f"{title}: {top}")), key=f"cmp_bars_{pane}",
                         config={"displayModeBar": False})
    fmt = getattr(model, "format", "")
    if fmt in ("peft", "head"):
        st.caption("The base model's classification head is the freshly initialised one the run started "
                   "from, so its answer is close to a coin toss: a pre-trained model does not know your "
                   "labels until it is tuned.")


# ------------------------------------------------------------------------------------ the page

st.title("Compare base and fine-tuned")
_lesson = lessons.get(urlstate.lesson_of(query_params()))
if _lesson is not None and _lesson.then == "compare":
    lesson_box(_lesson)

try:
    candidates = _finished_with_weights()
except OSError as exc:
    show_error(exc)
    st.stop()
if not candidates:
    st.info("No finished run with saved weights yet. Train one on the **Train** page, then come back here.")
    st.stop()

by_id = {r.id: r for r in candidates}
ids = list(by_id)
wanted = st.session_state.get(WANTED_KEY)
if wanted in by_id and st.session_state.get(APPLIED_KEY) != wanted:
    st.session_state[PICK_KEY] = wanted
if st.session_state.get(PICK_KEY) not in by_id:
    st.session_state[PICK_KEY] = ids[0]
run_id = st.selectbox("Finished run", ids, key=PICK_KEY, format_func=lambda i: run_label(by_id[i]))
st.session_state[WANTED_KEY] = st.session_state[APPLIED_KEY] = run_id
info = by_id[run_id]

cfg = info.config
final = (info.summary or {}).get("final") or {}
facts = [f"**{md_text((cfg.get('method') or {}).get('name', '?'))}** on "
         f"{md_text(_short_path((cfg.get('model') or {}).get('name')))}",
         f"data {md_text(_short_path((cfg.get('data') or {}).get('source')))}"]
if "eval_accuracy" in final:
    facts.append(f"validation accuracy {final['eval_accuracy']:.1%}")
elif "eval_loss" in final:
    facts.append(f"validation loss {final['eval_loss']:.3f}")
st.caption(" · ".join(facts))

try:
    with st.spinner("Loading model…"):
        model = load_model(info.dir)
except Exception as exc:
    st.error(f"Could not load this run's model: {error_text(exc)}")
    st.info("Choose another run, or train this one again on the Train page.")
    st.stop()

if model.task == "sft":
    probe_section(model, info)
    chat(model, info)
else:
    classify(model, info)
    confusion.section(model, info)
