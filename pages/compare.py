"""Compare: the base model and the fine-tuned one, side by side.

Chat panes for instruction-tuned (sft) runs, label probabilities for classifiers. One loaded model
serves both views (peft's disable_adapter() for the base), shared across sessions by cache_resource.
"""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import lessons, runs, showcase, urlstate
from core.textsafe import md_text, plotly_text
from pages import confusion, present
from pages.shared.chat import chat
from pages.shared.compare_examples import PANES, PENDING_KEY, set_pending, short, shown_examples
from pages.shared.formatting import error_text, run_label, short_path, show_error
from pages.shared.keys import COMPARE_RUN_KEY
from pages.shared.legacy import leave_legacy_multipage_mode
from pages.shared.links import lesson_box, query_params
from pages.shared.probe_card import probe_section

PICK_KEY = "compare_pick"          # the selectbox's own key
WANTED_KEY = COMPARE_RUN_KEY       # set by other pages (Train: "Compare base vs tuned")
APPLIED_KEY = "_compare_applied"   # the last compare_run we moved the selectbox to
CLS_KEY = "_compare_cls"           # run id -> {"text", "base", "tuned"}


# ------------------------------------------------------------------------------------ loading

def load_model(run_dir: str):
    """One RunModel per run for the whole server, in a bounded LRU (core.model_cache,
    PLAYGROUND_MODEL_CACHE_SIZE) that really frees evicted models: treat it as read-only."""
    from core import model_cache
    return model_cache.get(run_dir)


def _finished_with_weights() -> list:
    return [r for r in runs.list_runs() if r.state in ("completed", "stopped") and r.has_weights]


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
            col.button(md_text(short(text)), key=f"cmp_cls_ex_{i}", on_click=set_pending, args=(text,), width="stretch")

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

leave_legacy_multipage_mode()
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
         f"{md_text(short_path((cfg.get('model') or {}).get('name')))}",
         f"data {md_text(short_path((cfg.get('data') or {}).get('source')))}"]
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
