"""The training curves of one run (Train, the follow view, the replay)."""
from __future__ import annotations

import math
from collections.abc import Iterable

import plotly.graph_objects as go


def _series(events: Iterable[dict], key: str, types: tuple[str, ...] | None = None) -> tuple[list, list]:
    xs, ys = [], []
    for ev in events or ():
        if types and ev.get("type") not in types:
            continue
        value = ev.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(ev.get("step", len(xs)))
            ys.append(value)
    return xs, ys


def _figure(title: str, y_title: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, x=0.0), height=height, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="step", yaxis_title=y_title, showlegend=False)
    return fig


def _line(fig: go.Figure, xs: list, ys: list, name: str, color: str | None = None) -> go.Figure:
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 30 else "lines", name=name,
                             line=dict(color=color) if color else None))
    return fig


def loss_chart(events: Iterable[dict]) -> go.Figure:
    """Training loss (and validation loss where known) against the step."""
    events = list(events or ())
    fig = _figure("Training loss", "loss")
    _line(fig, *_series(events, "loss", ("log",)), "training loss")
    vx, vy = _series(events, "eval_loss", ("eval",))
    if vx:
        # Streamlit's theme gives a second trace a paler shade of the first: a class at the back of
        # the room must tell at a glance which curve turns up when the model overfits.
        _line(fig, vx, vy, "validation loss", color="#e67e22")
        # Below the x-axis title: at y=-0.25 the legend sat on the word "step".
        fig.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.35, yanchor="top"))
    return fig


def metrics_charts(events: Iterable[dict]) -> dict[str, go.Figure]:
    """Figures keyed by the event key they plot: train_loss, eval_loss, eval_accuracy,
    eval_perplexity, learning_rate.

    Only series with at least one point are returned, so a page can lay out what exists. Once the
    training loss exists, validation loss is drawn on its chart (loss_chart), not on one of its own:
    overfitting shows at a glance, and a live page has one figure fewer to redraw (each costs
    Chromium ~0.1 CPU-s that a shared machine takes from training).
    """
    events = list(events or ())
    out: dict[str, go.Figure] = {}
    if _series(events, "loss", ("log",))[0]:
        out["train_loss"] = loss_chart(events)
    for key, title, y_title in (("eval_loss", "Validation loss", "loss"),
                                ("eval_accuracy", "Validation accuracy", "accuracy"),
                                ("eval_perplexity", "Validation perplexity", "perplexity"),
                                ("learning_rate", "Learning rate", "learning rate")):
        xs, ys = _series(events, key, ("log",) if key == "learning_rate" else ("eval",))
        if not xs or (key == "eval_loss" and "train_loss" in out):
            continue
        fig = _line(_figure(title, y_title), xs, ys, title)
        if key == "eval_accuracy":
            fig.update_yaxes(range=[0, 1.02])
        if key == "learning_rate":
            fig.update_yaxes(exponentformat="e")
        out[key] = fig
    for fig in out.values():
        _whole_steps(fig)
    return out


def _whole_steps(fig: go.Figure) -> None:
    """Steps are whole and never negative: one point at step 0 drew an axis from -1 to 1."""
    xs = [x for trace in fig.data for x in (trace.x or ()) if isinstance(x, (int, float))]
    if xs and max(xs) - min(xs) < 6:
        lo, hi = min(xs), max(xs)
        fig.update_xaxes(dtick=1, range=[max(lo - 0.5, -0.5) if lo >= 0 else lo - 0.5, hi + 0.5])
