"""Compare, for classifiers: both models on the run's held-out rows, as confusion matrices and the
examples each gets wrong, so a class sees *which* reviews the tuning fixed (and which it broke)."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from pages import present
from pages.shared.formatting import show_error

RESULTS_KEY = "_cmp_confusion"   # run id -> {"labels", "rows": [{"text", "true", "base", "tuned"}]}
MAX_ROWS = 60                    # two forward passes each: seconds on a CPU for MiniLM
SHOWN_MISTAKES = 8


def matrix(rows: list[dict], labels: list[str], pane: str) -> list[list[int]]:
    """counts[true][predicted] for one pane ('base' or 'tuned')."""
    index = {name: i for i, name in enumerate(labels)}
    out = [[0] * len(labels) for _ in labels]
    for r in rows:
        if r["true"] in index and r[pane] in index:
            out[index[r["true"]]][index[r[pane]]] += 1
    return out


def figure(counts: list[list[int]], labels: list[str], title: str) -> go.Figure:
    fig = go.Figure(go.Heatmap(z=counts, x=labels, y=labels, colorscale="Blues", showscale=False,
                               text=[[str(v) for v in row] for row in counts], texttemplate="%{text}",
                               hovertemplate="true %{y}, predicted %{x}: %{z}<extra></extra>"))
    fig.update_layout(title=dict(text=title, x=0.0), height=300, margin=dict(l=10, r=10, t=50, b=10),
                      xaxis_title="predicted", yaxis_title="true", yaxis=dict(autorange="reversed"))
    return fig


def _score(model, info) -> dict | None:
    from core import data
    from core.config import DataSpec
    cfg = info.config
    try:
        loaded = data.load_rows(DataSpec(**(cfg.get("data") or {})), seed=int((cfg.get("train") or {}).get("seed", 42)))
    except Exception as exc:
        show_error(exc)
        return None
    names = list(loaded.label_names or getattr(model, "label_names", None) or [])
    rows = [r for r in (loaded.val or []) if r.get("text")][:MAX_ROWS]
    if not rows or not names:
        st.caption("This run has no held-out rows to score.")
        return None
    out = []
    progress = st.progress(0.0, text="Scoring the held-out examples with both models…")
    for i, r in enumerate(rows):
        base, tuned = model.classify(r["text"], tuned=False), model.classify(r["text"], tuned=True)
        out.append({"text": r["text"], "true": names[r["label"]], "base": max(base, key=base.get),
                    "tuned": max(tuned, key=tuned.get)})
        progress.progress((i + 1) / len(rows), text=f"Scored {i + 1} of {len(rows)}")
    progress.empty()
    return {"labels": names, "rows": out}


def section(model, info) -> None:
    st.subheader("Held-out examples: base vs tuned")
    results = st.session_state.setdefault(RESULTS_KEY, {})
    if st.button(f"Score up to {MAX_ROWS} held-out examples", key="cmp_confusion_go"):
        scored = _score(model, info)
        if scored:
            results[info.id] = scored
    result = results.get(info.id)
    if not result:
        st.caption("Rows the run never trained on: the confusion matrices show where each model goes wrong.")
        return
    labels, rows = result["labels"], result["rows"]
    cols = st.columns(2)
    for col, pane, title in zip(cols, ("base", "tuned"), ("Base", "Tuned")):
        right = sum(r[pane] == r["true"] for r in rows)
        col.plotly_chart(present.figure(figure(matrix(rows, labels, pane), labels,
                                               f"{title}: {right} of {len(rows)} right")),
                         key=f"cmp_confusion_{pane}", config={"displayModeBar": False})
    wrong = [r for r in rows if r["tuned"] != r["true"] or r["base"] != r["true"]]
    if not wrong:
        st.caption("Both models get every one of these right.")
        return
    fixed = sum(r["base"] != r["true"] and r["tuned"] == r["true"] for r in rows)
    broken = sum(r["base"] == r["true"] and r["tuned"] != r["true"] for r in rows)
    st.markdown(f"Tuning fixed **{fixed}** and broke **{broken}** of these {len(rows)} examples.")
    table = [{"Text": r["text"], "True": r["true"], "Base": r["base"] + (" ✓" if r["base"] == r["true"] else " ✗"),
              "Tuned": r["tuned"] + (" ✓" if r["tuned"] == r["true"] else " ✗")}
             for r in sorted(wrong, key=lambda r: r["tuned"] == r["true"])[:SHOWN_MISTAKES]]
    present.table(table, hide_index=True, key="cmp_confusion_table")
