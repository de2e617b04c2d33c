"""Experiments: a grid of runs that differ in one or two settings, queued together, and their results.

The classic studies are one click ("Which method wins?", "How much data?"); a custom grid varies
one or two settings of the Train page's draft (or the app's defaults). The results are ordinary
runs sharing an `experiment` id, so the Runs page lists them too.
"""
from __future__ import annotations

import math

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import experiments, lessons, presets, urlstate
from core.config import ConfigError, RunConfig
from core.textsafe import csv_cell, plotly_text
from pages import palette, present
from pages.ui import (
    error_text,
    fmt_params,
    fmt_seconds,
    is_admin,
    lesson_box,
    manager,
    md_escape,
    owner_id,
    query_params,
    show_error,
)

PICK_KEY = "exp_pick"               # the results selectbox
WANTED_KEY = "_exp_wanted"          # an experiment just queued: the results show it
PENDING_KEY = "_exp_pending"        # experiment id -> [config dicts] waiting for room in the queue
FLASH_KEY = "_exp_flash"            # (kind, text) to show once after a rerun
TRAIN_DRAFT_KEY = "_train_draft"    # pages/train.py DRAFT_KEY
REFRESH_S = 2.0
LIVE_STATES = ("queued", "running")
AXIS_LABELS = {"method": "Method", "r": "LoRA rank r", "alpha": "LoRA alpha", "dropout": "Adapter dropout",
               "n_samples": "Training rows N", "virtual_tokens": "Virtual tokens V",
               "learning_rate": "Learning rate"}
AXIS_HINTS = {"method": "lora, prompt_tuning, linear_head", "r": "2, 8, 32", "alpha": "8, 16, 32",
              "dropout": "0, 0.1", "n_samples": "50, 150, 300", "virtual_tokens": "8, 25",
              "learning_rate": "0.0001, 0.001"}
NONE = "(none)"


# ------------------------------------------------------------------------------------ queueing

def submit_all(configs: list[RunConfig], experiment: str) -> None:
    """Queue the runs in order; those the queue has no room for wait in the session (PENDING_KEY)."""
    from core.jobs import OwnerLimit, QueueFull, max_queue
    queued = 0
    for i, cfg in enumerate(configs):
        try:
            manager().submit(cfg, owner_id())
        except QueueFull as exc:
            rest = [c.to_dict() for c in configs[i:]]
            st.session_state.setdefault(PENDING_KEY, {})[experiment] = rest
            why = (str(exc) if isinstance(exc, OwnerLimit) else "the training queue is full (it holds at most "
                   f"{max_queue()} waiting runs, PLAYGROUND_MAX_QUEUE)")
            st.session_state[FLASH_KEY] = (
                "warning",
                f"Queued {queued} of {len(configs)} runs: {why}. The other {len(rest)} wait here and join "
                "the queue by themselves as places free up, while this page stays open.")
            break
        except Exception as exc:
            st.session_state[FLASH_KEY] = ("error", f"Queued {queued} of {len(configs)} runs, then: "
                                                    f"{error_text(exc)}")
            break
        queued += 1
    else:
        st.session_state[FLASH_KEY] = ("success", f"Queued all {len(configs)} runs. Results appear below as "
                                                  "each one finishes.")
    st.session_state[WANTED_KEY] = experiment
    st.session_state.pop(PICK_KEY, None)
    st.rerun()


def drain_pending() -> int:
    """Move waiting runs into the queue while it has room; returns how many still wait."""
    from core.jobs import QueueFull
    pending = st.session_state.get(PENDING_KEY) or {}
    for experiment in list(pending):
        rest = pending[experiment]
        while rest:
            try:
                manager().submit(RunConfig.from_dict(rest[0]), owner_id())
            except QueueFull:
                break
            except Exception as exc:  # a config that stopped being valid (a limit changed): drop it, say so
                st.session_state[FLASH_KEY] = ("error", f"A waiting run of {experiment} was dropped: "
                                                        f"{error_text(exc)}")
            rest.pop(0)
        if not rest:
            del pending[experiment]
    return sum(len(v) for v in pending.values())


# ------------------------------------------------------------------------------------ sections

def preset_cards(highlight: str) -> None:
    st.header("Classic studies")
    all_presets = experiments.presets()
    cols = st.columns(len(all_presets))
    for col, (key, preset) in zip(cols, all_presets.items()):
        with col.container(border=True):
            st.markdown(f"**{preset.title}**" + ("  ← this lesson" if key == highlight else ""))
            st.caption(preset.question)
            try:
                configs = experiments.preset_runs(key)
            except Exception as exc:
                show_error(exc)
                continue
            varied = ", ".join(AXIS_LABELS.get(a, a) for a in preset.axes)
            st.caption(f"{len(configs)} runs · varies {varied} · {configs[0].model.name} on "
                       f"{configs[0].data.source}")
            if st.button(f"Queue: {preset.title}", key=f"exp_preset_{key}",
                         type="primary" if key == highlight else "secondary"):
                submit_all(configs, configs[0].experiment)


def _base_config() -> tuple[dict, str]:
    draft = st.session_state.get(TRAIN_DRAFT_KEY)
    options = (["train", "defaults"] if draft else ["defaults"])
    labels = {"train": "The Train page's current settings", "defaults": "The app's defaults (LoRA on sentiment)"}
    pick = st.radio("Start from", options, format_func=labels.get, key="exp_base", horizontal=True)
    if pick == "train":
        return dict(draft), labels[pick]
    return presets.app_defaults().to_dict(), labels[pick]


def grid_builder() -> None:
    st.header("Build your own grid")
    st.caption("Vary one or two settings; every other setting stays as in the starting point. Type values "
               "separated by commas.")
    base, base_label = _base_config()
    axes_names = list(experiments.AXES)
    c1, c2 = st.columns(2)
    with c1:
        axis1 = st.selectbox("First setting", axes_names, index=axes_names.index("r"), key="exp_axis1",
                             format_func=lambda a: AXIS_LABELS.get(a, a))
        text1 = st.text_input("Values", key=f"exp_values1_{axis1}", placeholder=AXIS_HINTS.get(axis1, ""),
                              value=AXIS_HINTS.get(axis1, ""))
    with c2:
        axis2 = st.selectbox("Second setting (optional)", [NONE] + [a for a in axes_names if a != axis1],
                             key="exp_axis2", format_func=lambda a: AXIS_LABELS.get(a, a))
        text2 = "" if axis2 == NONE else st.text_input(
            "Values", key=f"exp_values2_{axis2}", placeholder=AXIS_HINTS.get(axis2, ""), value=AXIS_HINTS.get(axis2, ""))
    title = st.text_input("Experiment name", key="exp_title", max_chars=80,
                          placeholder="e.g. Does rank matter?").strip()
    try:
        axes = {axis1: experiments.parse_axis_values(axis1, text1)}
        if axis2 != NONE:
            axes[axis2] = experiments.parse_axis_values(axis2, text2)
        configs = experiments.grid(base, axes, title=title or "My experiment")
    except ConfigError as exc:
        st.error(str(exc))
        configs = []
    except Exception as exc:
        show_error(exc)
        configs = []
    if configs:
        names = [c.name.split(": ", 1)[-1] for c in configs]
        st.caption(f"{len(configs)} runs from {base_label.lower()}: " + md_escape("; ".join(names)))
    if st.button(f"Queue {len(configs)} runs" if configs else "Queue the grid", key="exp_queue_grid",
                 type="primary", disabled=not configs):
        submit_all(configs, configs[0].experiment)


# ------------------------------------------------------------------------------------ results

def _title(rows: list[dict], experiment: str) -> str:
    name = next((r["name"] for r in rows if r.get("name")), "")
    return (name.split(": ", 1)[0] if ": " in name else name) or experiment


@st.cache_data(ttl=2, show_spinner=False)
def _experiment_labels(ids: tuple) -> dict:
    return {e: f"{_title(experiments.results(e), e)} · {e}" for e in ids}


def _varied(rows: list[dict]) -> list[str]:
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


def _num(value):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return value if ok else None


def results_frame(rows: list[dict], varied: list[str]) -> pd.DataFrame:
    table = []
    for r in rows:
        row = {"Run": csv_cell(r["name"].split(": ", 1)[-1] if r.get("name") else r["run"]), "Status": r["state"],
               "Method": r["method"]}
        for axis in varied:
            if axis != "method":
                row[AXIS_LABELS.get(axis, axis)] = r.get(axis)
        row.update({"N train": r.get("n_train"), "Accuracy": _num(r.get("accuracy")),
                    "Val loss": _num(r.get("eval_loss")), "Trainable": r.get("trainable_params"),
                    "Trainable %": _num(r.get("trainable_percent")), "Train time (s)": _num(r.get("train_time_s")),
                    "Latency (ms)": _num(r.get("latency_ms")), "id": r["run"]})
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
    metric = "accuracy" if any(_num(r.get("accuracy")) is not None for r in done) else "eval_loss"
    metric_label = "validation accuracy" if metric == "accuracy" else "validation loss"
    layout = dict(height=360, margin=dict(l=10, r=10, t=40, b=10), legend=dict(orientation="h", y=-0.25))
    figs = []
    points = [r for r in done if _num(r.get(metric)) is not None and (r.get("trainable_params") or 0) > 0]
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
            if _num(r.get(metric)) is not None:
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
    times = go.Figure(go.Bar(x=names, y=[_num(r.get("train_time_s")) for r in done],
                             marker_color=[palette.colour(r["method"]) for r in done],
                             text=[fmt_seconds(r.get("train_time_s")) for r in done], textposition="auto"))
    _flag_busy(times, done)
    times.update_layout(title=dict(text="Training time (s)", x=0.0), yaxis_title="seconds", **layout)
    figs.append(("time", times))
    lat = [r for r in done if _num(r.get("latency_ms")) is not None]
    if lat:
        latency = go.Figure(go.Bar(x=[plotly_text(r["name"].split(": ", 1)[-1]) for r in lat],
                                   y=[r["latency_ms"] for r in lat],
                                   marker_color=[palette.colour(r["method"]) for r in lat],
                                   text=[f"{r['latency_ms']:.1f}" for r in lat],
                                   textposition="auto"))
        _flag_busy(latency, lat)
        latency.update_layout(title=dict(text="Inference latency (ms per example, batch 1)", x=0.0),
                              yaxis_title="ms", **layout)
        figs.append(("latency", latency))
    return figs


def cancel_button(experiment: str) -> None:
    """One click: this person's waiting runs of the experiment cancelled, the running one stopped."""
    if not st.button("Cancel the rest of this experiment", key=f"exp_cancel_{experiment}",
                     help="Cancels its waiting runs and stops the one training; finished runs stay"):
        return
    (st.session_state.get(PENDING_KEY) or {}).pop(experiment, None)
    try:
        n = manager().cancel_experiment(experiment, owner_id(), is_admin())
    except Exception as exc:
        show_error(exc)
        return
    st.session_state[FLASH_KEY] = ("success", f"Cancelled {n} run(s) of this experiment." if n else
                                   "Nothing of yours was waiting or training in this experiment.")
    st.rerun()
def _flag_busy(fig: go.Figure, rows: list[dict]) -> None:
    """Hatch the bars of runs timed while other work loaded the machine, and say so in the title."""
    busy = [bool(r.get("busy")) for r in rows]
    if not any(busy):
        return
    fig.update_traces(marker_pattern_shape=["/" if b else "" for b in busy])
    fig.add_annotation(text="hatched: timed while the machine was busy (slower than alone)", showarrow=False,
                       xref="paper", yref="paper", x=0, y=1.0, xanchor="left", yanchor="bottom")


def _notice(experiment: str) -> str:
    for key, preset in experiments.presets().items():
        if experiment.startswith(f"{key}-"):
            return preset.notice
    return ""


def show_results(experiment: str) -> None:
    rows = experiments.results(experiment)
    if not rows:
        st.caption("This experiment has no runs (they may have been deleted).")
        return
    counts = {s: sum(r["state"] == s for r in rows) for s in ("completed", "stopped", "running", "queued", "failed")}
    waiting = len((st.session_state.get(PENDING_KEY) or {}).get(experiment, []))
    parts = [f"{counts['completed'] + counts['stopped']} of {len(rows) + waiting} finished"]
    for state in ("running", "queued", "failed"):
        if counts[state]:
            parts.append(f"{counts[state]} {state}")
    if waiting:
        parts.append(f"{waiting} waiting for room in the queue")
    st.markdown(f"**{md_escape(_title(rows, experiment))}** · " + " · ".join(parts))
    if counts["running"] or counts["queued"] or waiting:
        cancel_button(experiment)
    varied = _varied(rows)
    df = results_frame(rows, varied)
    present.table(df.drop(columns=["id"]), hide_index=True, key="exp_table",
                  keep=["Run", "Method", "Accuracy", "Trainable %", "Train time (s)", "Latency (ms)", "Status"], column_config={
        "Accuracy": st.column_config.NumberColumn(format="percent"),
        "Val loss": st.column_config.NumberColumn(format="%.3f"),
        "Trainable": st.column_config.NumberColumn(format="localized"),
        "Trainable %": st.column_config.NumberColumn(format="%.4g %%"),
        "Train time (s)": st.column_config.NumberColumn(format="%.1f"),
        "Latency (ms)": st.column_config.NumberColumn(format="%.1f"),
    })
    figs = result_charts(rows, varied)
    if not figs:
        st.caption("The charts appear when the first run has finished.")
    else:
        cols = st.columns(2)
        for i, (name, fig) in enumerate(figs):
            cols[i % 2].plotly_chart(present.figure(fig), key=f"exp_chart_{name}")
    failed = [r for r in rows if r["state"] == "failed"]
    if failed:
        st.caption("Failed runs show their reason on the Runs page.")
    notice = _notice(experiment)
    if notice and counts["completed"]:
        st.info(f"**What to notice:** {notice}")
    trainable = [r for r in rows if r.get("trainable_params")]
    if trainable:
        st.caption("Trainable parameters: " + ", ".join(
            f"{md_escape(r['name'].split(': ', 1)[-1])} {fmt_params(r['trainable_params'])}" for r in trainable))


def results_section(highlight: str, flash=None) -> None:
    st.header("Results")
    try:
        found = experiments.list_experiments()
    except OSError as exc:
        show_error(exc)
        return
    wanted = st.session_state.get(WANTED_KEY)
    if wanted and wanted not in found:
        found = [wanted] + found
    if not found:
        st.caption("No experiment yet: queue one above. Its runs also appear on the Runs page.")
        return
    if st.session_state.get(PICK_KEY) not in found:
        lesson_match = next((e for e in found if highlight and e.startswith(f"{highlight}-")), None)
        st.session_state[PICK_KEY] = wanted if wanted in found else (lesson_match or found[0])
    labels = _experiment_labels(tuple(found))
    experiment = st.selectbox("Experiment", found, key=PICK_KEY, format_func=lambda e: labels.get(e, e))

    def busy() -> bool:
        if (st.session_state.get(PENDING_KEY) or {}).get(experiment):
            return True
        return any(r["state"] in LIVE_STATES for r in experiments.results(experiment))

    live = busy()

    @st.fragment(run_every=REFRESH_S if live else None)
    def view() -> None:
        if st.session_state.get(PENDING_KEY):
            drain_pending()
        try:
            show_results(experiment)
        except Exception as exc:  # a half-written run folder must not break the page
            show_error(exc)
        if live and not busy():
            if flash:  # shown in this run, which the rerun replaces: show it again there
                st.session_state[FLASH_KEY] = flash
            st.rerun()  # once: stop polling

    view()


# ------------------------------------------------------------------------------------ the page

def _lesson() -> str:
    """The lesson a link asks for ('' when none); a Train lesson opened here goes to Train."""
    key = urlstate.lesson_of(query_params())
    if not key:
        return ""
    lesson = lessons.get(key)
    if lesson is None:
        st.warning(f"This link names a lesson {key!r} that does not exist; showing the usual page.")
        return ""
    if lesson.page != "experiments":
        st.switch_page(lesson.page_path, query_params={urlstate.LESSON_KEY: lesson.key})
    return key


def main() -> None:
    st.title("Experiments")
    st.caption("Queue a grid of runs that differ in one or two settings, then compare them side by side. "
               "They train one after another; each is an ordinary run, listed on the Runs page too.")
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash:
        getattr(st, flash[0])(flash[1])
    lesson_key = _lesson()
    lesson = lessons.get(lesson_key) if lesson_key else None
    highlight = lesson.experiment if lesson else ""
    if lesson:
        lesson_box(lesson)
    preset_cards(highlight)
    grid_builder()
    results_section(highlight, flash)


main()
