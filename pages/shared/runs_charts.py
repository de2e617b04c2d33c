"""The Runs page's charts: several runs' curves overlaid, and the methods compared."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from core.textsafe import plotly_text
from pages import palette
from pages.shared.formatting import finite_or_none
from pages.shared.run_table import metrics

COLOURS = px.colors.qualitative.Plotly


def _series(events: list[dict], key: str, kind: str, x_key: str) -> tuple[list, list]:
    xs, ys = [], []
    for ev in events:
        if ev.get("type") != kind:
            continue
        y, x = finite_or_none(ev.get(key)), finite_or_none(ev.get(x_key))
        if y is not None and x is not None:
            xs.append(x)
            ys.append(y)
    return xs, ys


def curves_figures(selected: list, labels: dict[str, str], x_key: str) -> tuple[go.Figure, go.Figure | None]:
    loss = go.Figure()
    acc = go.Figure()
    any_acc = False
    for i, info in enumerate(selected):
        events = metrics(info.dir)
        colour = COLOURS[i % len(COLOURS)]
        name = plotly_text(labels[info.id])
        tx, ty = _series(events, "loss", "log", x_key)
        if tx:
            loss.add_trace(go.Scatter(x=tx, y=ty, mode="lines", name=f"{name} · train",
                                      line=dict(color=colour), legendgroup=info.id))
        vx, vy = _series(events, "eval_loss", "eval", x_key)
        if vx:
            loss.add_trace(go.Scatter(x=vx, y=vy, mode="lines+markers", name=f"{name} · validation",
                                      line=dict(color=colour, dash="dot"), legendgroup=info.id))
        ax, ay = _series(events, "eval_accuracy", "eval", x_key)
        if ax:
            any_acc = True
            acc.add_trace(go.Scatter(x=ax, y=ay, mode="lines+markers", name=name, line=dict(color=colour)))
    layout = dict(height=340, margin=dict(l=10, r=10, t=40, b=10), xaxis_title=x_key,
                  legend=dict(orientation="h", y=-0.25))
    loss.update_layout(title=dict(text="Loss (solid: training, dotted: validation)", x=0.0),
                       yaxis_title="loss", **layout)
    acc.update_layout(title=dict(text="Validation accuracy", x=0.0), yaxis_title="accuracy",
                      yaxis_range=[0, 1.02], **layout)
    return loss, (acc if any_acc else None)


def method_figures(df: pd.DataFrame) -> list[tuple[str, go.Figure]]:
    out = []
    hover = {"Run": True, "Model": True, "Trainable": ":,", "Method": False}
    for metric, title in (("Accuracy", "Validation accuracy vs trainable parameters"),
                          ("Val loss", "Validation loss vs trainable parameters (language models)")):
        part = df.dropna(subset=["Trainable", metric])
        part = part[part["Trainable"] > 0]
        if metric == "Val loss":
            part = part[part["Accuracy"].isna()]  # classifiers are already in the accuracy chart
        if part.empty:
            continue
        fig = px.scatter(part, x="Trainable", y=metric, color="Method", log_x=True, hover_data=hover,
                         title=title, symbol="Method", **palette.px_method_args(part["Method"]))
        fig.update_traces(marker=dict(size=12, line=dict(width=1, color="#2c3e50")))
        if metric == "Accuracy":
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
        fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10),
                          xaxis_title="trainable parameters (log scale)")
        out.append((metric, fig))
    lat = df.dropna(subset=["Latency (ms)"])
    if not lat.empty:
        # Per model: a MiniLM and a SmolLM2 latency averaged together describe neither (issue 23).
        means = lat.groupby(["Model", "Method"], as_index=False)["Latency (ms)"].mean()
        several = means["Model"].nunique() > 1
        fig = px.bar(means, x="Method", y="Latency (ms)", color="Method", facet_col="Model" if several else None,
                     title="Inference latency per method (ms per example, batch 1, median)"
                           + ("" if several else f" · {means['Model'].iloc[0]}"),
                     color_discrete_map=palette.px_method_args(means["Method"])["color_discrete_map"])
        if several:
            fig.update_yaxes(matches=None, showticklabels=True)  # each model on its own scale
        fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10), showlegend=False)
        out.append(("latency", fig))
    return out
