"""An experiment's results: the table and the charts (accuracy vs trainable parameters, vs the
varied setting, training time and latency)."""
from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from core import experiments
from core.textsafe import csv_cell, plotly_text
from pages import palette
from pages.shared.formatting import finite_or_none, fmt_seconds

AXIS_LABELS = {"method": "Method", "r": "LoRA rank r", "alpha": "LoRA alpha", "dropout": "Adapter dropout",
               "n_samples": "Training rows N", "virtual_tokens": "Virtual tokens V",
               "learning_rate": "Learning rate"}


def experiment_title(rows: list[dict], experiment: str) -> str:
    name = next((r["name"] for r in rows if r.get("name")), "")
    return (name.split(": ", 1)[0] if ": " in name else name) or experiment


def varied_settings(rows: list[dict]) -> list[str]:
    """The settings the grid varied: named in the runs' names ("title: r=4, dropout=0.1"), else
    every setting with more than one value."""
    named: list[str] = []
    for r in rows:
        label = str(r.get("name") or "").split(": ", 1)[-1]
        for part in label.split(", "):
            axis = part.split("=", 1)[0]
            if "=" in part and axis in experiments.AXES and axis not in named:
                named.append(axis)
    if named:
        if len({r.get("method") for r in rows}) > 1 and "method" not in named:
            named.insert(0, "method")
        return [a for a in experiments.AXES if a in named]
    return [a for a in experiments.AXES
            if len({repr(r.get(a)) for r in rows if r.get(a) is not None}) > 1]


def results_frame(rows: list[dict], varied: list[str]) -> pd.DataFrame:
    table = []
    for r in rows:
        row = {"Run": csv_cell(r["name"].split(": ", 1)[-1] if r.get("name") else r["run"]), "Status": r["state"],
               "Method": r["method"]}
        for axis in varied:
            if axis != "method":
                row[AXIS_LABELS.get(axis, axis)] = r.get(axis)
        row.update({"N train": r.get("n_train"), "Accuracy": finite_or_none(r.get("accuracy")),
                    "Converged?": "no: accuracy was still rising" if r.get("still_rising") else "",
                    "Val loss": finite_or_none(r.get("eval_loss")), "Trainable": r.get("trainable_params"),
                    "Trainable %": finite_or_none(r.get("trainable_percent")), "Train time (s)": finite_or_none(r.get("train_time_s")),
                    "Latency (ms)": finite_or_none(r.get("latency_ms")), "id": r["run"]})
        table.append(row)
    return pd.DataFrame(table)


def _group_label(r: dict, axes: list[str]) -> str:
    parts = [str(r.get("method"))]
    parts += [f"{AXIS_LABELS.get(a, a).split()[-1]}={r.get(a)}" for a in axes
              if a != "method" and r.get(a) is not None]
    return ", ".join(parts)


def result_charts(rows: list[dict], varied: list[str]) -> list[tuple[str, go.Figure]]:
    done = [r for r in rows if r["state"] in ("completed", "stopped")]
    if not done:
        return []
    metric = "accuracy" if any(finite_or_none(r.get("accuracy")) is not None for r in done) else "eval_loss"
    metric_label = "validation accuracy" if metric == "accuracy" else "validation loss"
    layout = dict(height=360, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    figs = []
    points = [r for r in done if finite_or_none(r.get(metric)) is not None and (r.get("trainable_params") or 0) > 0]
    if points:
        fig = px.scatter(pd.DataFrame([{"trainable parameters": r["trainable_params"], metric_label: r[metric],
                                        "method": plotly_text(r["method"]),
                                        "run": plotly_text(r["name"].split(": ", 1)[-1])}
                                       for r in points]),
                         x="trainable parameters", y=metric_label, color="method", log_x=True, hover_data=["run"],
                         title=f"{metric_label.capitalize()} vs trainable parameters", symbol="method",
                         **palette.px_method_args(r["method"] for r in points))
        fig.update_traces(marker=dict(size=13, line=dict(width=1, color="#2c3e50")))
        if metric == "accuracy":
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
        fig.update_layout(**layout)
        figs.append(("params", fig))
    x_axis = "n_samples" if "n_samples" in varied else next((a for a in varied if a != "method"), None)
    if x_axis:
        others = [a for a in varied if a not in (x_axis, "method")]
        x_of = (lambda r: r.get("n_train") or r.get("n_samples")) if x_axis == "n_samples" else (lambda r: r.get(x_axis))
        fig = go.Figure()
        groups: dict[str, list] = {}
        for r in sorted(points or done, key=lambda r: (x_of(r) or 0)):
            if finite_or_none(r.get(metric)) is not None:
                groups.setdefault(_group_label(r, others), []).append(r)
        for label, members in groups.items():
            fig.add_trace(go.Scatter(x=[x_of(r) for r in members], y=[r[metric] for r in members],
                                     mode="lines+markers", name=plotly_text(label)))
        x_title = "training rows N" if x_axis == "n_samples" else AXIS_LABELS.get(x_axis, x_axis)
        fig.update_layout(title=dict(text=f"{metric_label.capitalize()} vs {x_title}", x=0.0), xaxis_title=x_title,
                          yaxis_title=metric_label, **layout)
        if x_axis in ("learning_rate",):
            fig.update_xaxes(type="log")
        if metric == "accuracy":
            fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
        figs.append(("by_axis", fig))
    names = [plotly_text(r["name"].split(": ", 1)[-1]) for r in done]
    times = go.Figure(go.Bar(x=names, y=[finite_or_none(r.get("train_time_s")) for r in done],
                             marker_color=[palette.colour(r["method"]) for r in done],
                             text=[fmt_seconds(r.get("train_time_s")) for r in done], textposition="auto"))
    flag_busy(times, done)
    times.update_layout(title=dict(text="Training time (s)", x=0.0), yaxis_title="seconds", **layout)
    figs.append(("time", times))
    lat = [r for r in done if finite_or_none(r.get("latency_ms")) is not None]
    if lat:
        latency = go.Figure(go.Bar(x=[plotly_text(r["name"].split(": ", 1)[-1]) for r in lat],
                                   y=[r["latency_ms"] for r in lat],
                                   marker_color=[palette.colour(r["method"]) for r in lat],
                                   text=[f"{r['latency_ms']:.1f}" for r in lat],
                                   textposition="auto"))
        flag_busy(latency, lat)
        latency.update_layout(title=dict(text="Inference latency (ms per example, batch 1)", x=0.0),
                              yaxis_title="ms", **layout)
        figs.append(("latency", latency))
    return figs


def flag_busy(fig: go.Figure, rows: list[dict]) -> None:
    """Hatch the bars of runs timed while other work loaded the machine, and say so in the title."""
    busy = [bool(r.get("busy")) for r in rows]
    if not any(busy):
        return
    fig.update_traces(marker_pattern_shape=["/" if b else "" for b in busy])
    fig.add_annotation(text="hatched: timed while the machine was busy (slower than alone)", showarrow=False,
                       xref="paper", yref="paper", x=0, y=1.0, xanchor="left", yanchor="bottom")
