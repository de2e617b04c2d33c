"""Runs: every run on disk in one table, overlaid curves, a method comparison, and per-run actions
(downloads, the headless command, delete, and what LoRA changed layer by layer)."""
from __future__ import annotations

import math
import os

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from core import runs
from core.config import ConfigError
from core.textsafe import csv_row, md_text, plotly_text
from pages import palette, present
from pages.ui import (
    JOB_KEY,
    anatomy_view,
    error_text,
    fmt_bytes,
    fmt_params,
    fmt_seconds,
    is_admin,
    manager,
    md_escape,
    owner_id,
    run_label,
    show_error,
    uses_dora,
)

FLASH_KEY = "_runs_flash"   # a message to show once after a rerun (e.g. "deleted")
COLOURS = px.colors.qualitative.Plotly



# ------------------------------------------------------------------------------------ reading

@st.cache_data(show_spinner=False, max_entries=256)
def _read_metrics(run_dir: str, mtime: float, size: int) -> list[dict]:
    return runs.read_metrics(run_dir)


def metrics(run_dir: str) -> list[dict]:
    """read_metrics, re-read only when metrics.jsonl changed (a running job appends to it)."""
    try:
        st_ = os.stat(os.path.join(run_dir, "metrics.jsonl"))
    except OSError:
        return []
    return _read_metrics(run_dir, st_.st_mtime, st_.st_size)


def _num(value):
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def short_label(info) -> str:
    """A legend-sized name: the run's own name, else method · model · last id digits."""
    own = (info.status or {}).get("name") or (info.config or {}).get("name")
    if own:
        return str(own)
    method = ((info.config or {}).get("method") or {}).get("name", "?")
    return f"{method} · {_short_model(((info.config or {}).get('model') or {}).get('name'))} · #{info.id[-4:]}"


def _short_model(name: str) -> str:
    text = str(name or "?").rstrip("/\\")
    return os.path.basename(text) if os.path.isabs(text) or text.startswith((".", "~")) else text


def _experiment_title(info) -> str | None:
    """'Which method wins? · which_method-2026…' for a run queued by the Experiments page, else None."""
    experiment = (info.config or {}).get("experiment")
    if not experiment:
        return None
    name = str((info.config or {}).get("name") or "")
    title = name.split(": ", 1)[0] if ": " in name else ""
    return f"{title} · {experiment}" if title else experiment


def table_rows(infos: list, me: str) -> list[dict]:
    rows = []
    for info in infos:
        cfg, s = info.config or {}, info.summary or {}
        params = (cfg.get("method") or {}).get("params") or {}
        train = cfg.get("train") or {}
        final = s.get("final") or {}
        peak = _num(s.get("peak_cuda_mb")) or _num(s.get("peak_rss_mb"))
        rows.append({
            "Run": info.name, "Model": _short_model((cfg.get("model") or {}).get("name")),
            "Method": (cfg.get("method") or {}).get("name", "?"),
            "r": _num(params.get("r")), "alpha": _num(params.get("alpha")),
            "LR": _num(train.get("learning_rate")), "Epochs": _num(train.get("epochs")),
            "Batch": _num(train.get("batch_size")), "N train": _num(s.get("n_train")),
            "Accuracy": _num(final.get("eval_accuracy")), "Val loss": _num(final.get("eval_loss")),
            "Trainable": _num(s.get("trainable_params")), "Trainable %": _num(s.get("trainable_percent")),
            "Train time (s)": _num(s.get("train_time_s")), "Peak memory (MB)": peak,
            "Latency (ms)": _num(s.get("latency_ms_per_sample")),
            "Busy": bool(s.get("machine_load").get("busy")) if isinstance(s.get("machine_load"), dict) else None,
            "Experiment": _experiment_title(info), "Status": info.state, "Yours": info.owned_by(me),
            "By": str((info.status or {}).get("nickname") or ""),
            "id": info.id,
        })
    return rows


def table_frame(rows: list[dict]) -> pd.DataFrame:
    """The table as shown: its CSV download (the table's toolbar) must not carry a formula."""
    return pd.DataFrame([csv_row(r) for r in rows])


def chart_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows for Plotly, whose labels and hover text render HTML: every text made inert."""
    return pd.DataFrame([{k: plotly_text(v) if isinstance(v, str) and k != "id" else v for k, v in r.items()}
                         for r in rows])


# ------------------------------------------------------------------------------------ charts

def _series(events: list[dict], key: str, kind: str, x_key: str) -> tuple[list, list]:
    xs, ys = [], []
    for ev in events:
        if ev.get("type") != kind:
            continue
        y, x = _num(ev.get(key)), _num(ev.get(x_key))
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


# ------------------------------------------------------------------------------------ actions

def _delete(run_id: str, me: str, admin: bool) -> None:
    try:
        manager().delete(run_id, me, admin)
    except Exception as exc:
        show_error(exc)
        return
    from core import model_cache
    model_cache.discard(runs.run_dir_for(run_id))  # its model, if the Compare page had it loaded
    for key in ("runs_detail", "runs_confirm_delete"):
        st.session_state.pop(key, None)
    if st.session_state.get("compare_run") == run_id:
        st.session_state.pop("compare_run", None)
    st.session_state[FLASH_KEY] = f"Deleted run {run_id}."
    st.rerun()


def _resume(info, me: str, admin: bool) -> None:
    from core.config import RunConfig
    try:
        new_id = manager().submit(RunConfig.from_dict(info.config), me, resume_from=info.id, admin=admin)
    except Exception as exc:
        show_error(exc)
        return
    st.session_state[JOB_KEY] = new_id  # the Train page follows it live
    st.session_state.pop("_train_events", None)
    st.session_state[FLASH_KEY] = (f"Resuming from the last checkpoint of {info.id} as run {new_id}; "
                                   "follow it on the Train page.")
    st.rerun()


@st.cache_data(show_spinner=False, max_entries=16)
def _cached_script(run_id: str, mtime: float) -> str:
    # Only ever reached through _script, after the owner check.
    try:
        from core import export
        return export.script_for(run_id, None, admin=True)
    except Exception as exc:  # the download still succeeds, and says why
        return f"# This run could not be exported as a script: {error_text(exc)}\n"


def _script(run_id: str, me: str, admin: bool, mtime: float) -> str:
    """The exported script, made when first asked for (it reads the run's data), once per run."""
    if not manager().can_access(run_id, me, admin):
        return "# Only the session that started this run (or an admin) can export its script.\n"
    return _cached_script(run_id, mtime)


def _config_yaml(run_id: str, me: str, admin: bool) -> str:
    try:
        return manager().config_yaml(run_id, me, admin)
    except Exception as exc:
        return f"# The config could not be read: {error_text(exc)}\n"


def allowed_config(info, me: str, admin: bool) -> bool:
    try:
        return manager().can_access(info.id, me, admin)
    except OSError:
        return False


def _merged(run_id: str, me: str, admin: bool) -> bytes:
    from core import export
    return export.merged_zip_for(run_id, me, admin)


def _trains(info) -> bool:
    from core.methods import get_method
    try:
        return get_method(((info.config or {}).get("method") or {}).get("name", "")).trains
    except (ConfigError, AttributeError):  # an unknown method, or a config that is not a mapping
        return False


def export_section(info, me: str, admin: bool) -> None:
    """A standalone training script for any run; the merged model where it is reasonable."""
    from core import export
    st.markdown("**Take it home**")
    allowed = allowed_config(info, me, admin)
    e1, e2 = st.columns(2)
    with e1:
        if not allowed:
            # The script embeds the training rows: someone else's uploaded data is not ours to hand out.
            st.caption("The training script embeds this run's data: only the session that started it can "
                       "download it.")
        elif info.state not in ("completed", "stopped"):
            st.caption("The training script is offered once the run has finished.")
        elif not _trains(info):
            st.caption("This method trains nothing, so there is no training script to export.")
        else:
            try:
                mtime = os.path.getmtime(os.path.join(info.dir, "summary.json"))
            except OSError:
                mtime = 0.0
            st.download_button("Training script (Python)", data=lambda: _script(info.id, me, admin, mtime),
                               file_name=f"train_{info.id}.py", mime="text/x-python", key="runs_dl_script",
                               help="transformers + peft only, nothing of this app: the same rows, seed and "
                                    "settings; it prints the final training loss to compare with this run's")
            loss = export.final_training_loss(info.dir)
            if loss is not None:
                st.caption(f"This run's final training loss: {loss:.6g}; the script prints its own.")
    with e2:
        ok, why, size = export.merge_check(info.dir)
        if not info.has_weights:
            st.caption("No weights were saved, so there is no merged model.")
        elif not ok:
            st.caption(f"No merged model: {why}.")
        elif not allowed:
            st.caption("Only the session that started this run can download its merged model.")
        else:
            st.download_button(f"Merged model (zip, ~{fmt_bytes(size)})", key="runs_dl_merged",
                               data=lambda: _merged(info.id, me, admin), file_name=f"{info.id}-merged.zip",
                               mime="application/zip",
                               help="The adapter folded into the base weights (peft merge_and_unload): one "
                                    "ordinary model, no peft needed to run it, no extra latency")


def unreadable_details(info, me: str, admin: bool) -> None:
    st.warning(f"This run's files are unreadable: {md_text(info.problem, 400)}. Nothing of it can be shown "
               "or downloaded; the other runs are not affected.")
    if info.owned_by(me) or admin:
        x1, x2 = st.columns([3, 1])
        confirm = x1.checkbox("Yes, delete this unreadable run for good", key="runs_confirm_delete")
        if x2.button("Delete run", key="runs_delete", disabled=not confirm, type="primary"):
            _delete(info.id, me, admin)


def details(info, me: str, admin: bool) -> None:
    if info.state == runs.UNREADABLE:
        unreadable_details(info, me, admin)
        return
    s = info.summary or {}
    status = info.status or {}
    if info.state == "failed":
        # Shown to every visitor, and it may quote the run's own data (a file name, a column).
        st.error(f"This run failed: {md_text(status.get('message') or 'no message', 600)}"
                 + (f" — {md_text(status['hint'], 300)}" if status.get("hint") else ""))
    elif info.state in ("interrupted", "cancelled", "stopped") and status.get("message"):
        st.info(f"{info.state.capitalize()}: {md_text(status['message'], 600)}")
    if info.resumable:
        if info.owned_by(me) or admin:
            if st.button("Resume from last checkpoint", key="runs_resume", type="primary",
                         help="Queue a new run that continues this one from its last saved checkpoint"):
                _resume(info, me, admin)
        else:
            st.caption("This run can resume from its last checkpoint: only the session that started it "
                       "or an admin can resume it.")
    final = s.get("final") or {}
    c = st.columns(4)
    c[0].metric("Trainable parameters", fmt_params(s.get("trainable_params")),
                help=f"{s.get('trainable_percent', '—')} % of {fmt_params(s.get('total_params'))}")
    if "eval_accuracy" in final:
        c[1].metric("Validation accuracy", f"{final['eval_accuracy']:.1%}")
    elif "eval_loss" in final:
        c[1].metric("Validation loss", f"{final['eval_loss']:.3f}")
    else:
        c[1].metric("Final metric", "—")
    c[2].metric("Train time", fmt_seconds(s.get("train_time_s")))
    latency = _num(s.get("latency_ms_per_sample"))
    c[3].metric("Latency per example", f"{latency:.1f} ms" if latency is not None else "—")

    st.markdown("**Downloads**")
    d1, d2 = st.columns(2)
    with d1:
        if not info.has_weights:
            st.caption("No weights were saved for this run.")
        else:
            try:
                allowed = manager().can_access(info.id, me, admin)
            except Exception as exc:
                show_error(exc)
                allowed = False
            if allowed:
                st.download_button("Download weights (zip)", key="runs_dl_weights",
                                   data=lambda: manager().weights_zip(info.id, me, admin),
                                   file_name=f"{info.id}.zip", mime="application/zip")
            else:
                st.info("Only the session that started this run can download its weights.")
    with d2:
        if allowed_config(info, me, admin):
            st.download_button("Download config (YAML)", data=lambda: _config_yaml(info.id, me, admin),
                               file_name=f"{info.id}.yaml", mime="text/yaml", key="runs_dl_config")
        else:
            st.caption("Only the session that started this run can download its config.")

    st.markdown("**Re-run it headless** (same config, same seed), from the app's folder:")
    st.code(runs.headless_command(info.id), language="bash")
    st.caption("`runs/` stands for the runs folder (PLAYGROUND_RUNS_DIR).")

    if info.owned_by(me) or admin:
        if info.state in runs.ACTIVE_STATES:
            st.caption("This run is queued or training: stop it on the Train page before deleting it.")
        else:
            x1, x2 = st.columns([3, 1])
            confirm = x1.checkbox("Yes, delete this run and its weights for good", key="runs_confirm_delete")
            if x2.button("Delete run", key="runs_delete", disabled=not confirm, type="primary"):
                _delete(info.id, me, admin)

    export_section(info, me, admin)

    events = metrics(info.dir)
    if any(e.get("type") == "anatomy" and e.get("layers") for e in events) or s.get("anatomy"):
        st.markdown("**LoRA anatomy**")
        anatomy_view(events, "runs_anatomy", dora=uses_dora(info.config), fallback=s.get("anatomy"))


# ------------------------------------------------------------------------------------ the page

st.title("Runs")
flash = st.session_state.pop(FLASH_KEY, None)
if flash:
    st.success(flash)

try:
    infos = runs.list_runs()
except OSError as exc:
    show_error(exc)
    st.info("Check that the runs folder exists and is readable, then reload the page.")
    st.stop()
if not infos:
    st.info("No runs yet. Train one on the **Train** page; every run is listed here.")
    st.stop()

me, admin = owner_id(), is_admin()
if st.toggle("My runs only", key="runs_mine", help="Runs started from this browser (kept by a cookie across reloads)"):
    infos = [i for i in infos if i.owned_by(me)]
    if not infos:
        st.info("You have no runs yet on this server. Train one on the **Train** page.")
        st.stop()
by_id = {i.id: i for i in infos}
labels = {i.id: run_label(i) for i in infos}
rows = table_rows(infos, me)
df, chart_df = table_frame(rows), chart_frame(rows)
broken = [i for i in infos if i.state == runs.UNREADABLE]
if broken:
    st.warning(f"{len(broken)} run folder(s) could not be read and are listed as unreadable: "
               + "; ".join(f"{i.id}: {md_text(i.problem, 200)}" for i in broken[:5])
               + (" …" if len(broken) > 5 else ""))

st.caption(f"{len(infos)} run(s), newest first. Click a column header to sort.")
present.table(
    df.drop(columns=["id"]), hide_index=True, key="runs_table",
    keep=["Run", "Method", "Model", "Accuracy", "Trainable %", "Train time (s)", "Status", "Experiment"],
    column_config={
        "LR": st.column_config.NumberColumn(format="%.0e"),
        "Accuracy": st.column_config.NumberColumn(format="percent"),
        "Val loss": st.column_config.NumberColumn(format="%.3f"),
        "Trainable": st.column_config.NumberColumn(format="localized"),
        "Trainable %": st.column_config.NumberColumn(format="%.4g %%"),
        "Train time (s)": st.column_config.NumberColumn(format="%.1f"),
        "Peak memory (MB)": st.column_config.NumberColumn(
            format="%.0f", help="GPU peak when trained on CUDA, else the process's peak RAM (RSS)"),
        "Latency (ms)": st.column_config.NumberColumn(format="%.1f", help="one example, batch 1, median"),
        "Busy": st.column_config.CheckboxColumn(help="timed while other work loaded the machine: slower than alone"),
        "Yours": st.column_config.CheckboxColumn(help="started from this browser"),
        "By": st.column_config.TextColumn(help="the name its owner typed in the sidebar"),
        "Experiment": st.column_config.TextColumn(help="runs queued together on the Experiments page"),
    })

st.header("Curves")
with_metrics = [i.id for i in infos if i.state != runs.UNREADABLE and metrics(i.dir)]
if not with_metrics:
    st.caption("No run has logged any metrics yet.")
else:
    if "runs_curves" not in st.session_state or any(r not in with_metrics for r in st.session_state["runs_curves"]):
        st.session_state["runs_curves"] = with_metrics[:3]
    picked = st.multiselect("Runs to overlay", with_metrics, key="runs_curves", format_func=labels.get)
    x_key = st.radio("x axis", ["epoch", "step"], horizontal=True, key="runs_x",
                     help="epoch lines up runs with different batch sizes; step counts optimizer updates")
    if picked:
        loss_fig, acc_fig = curves_figures([by_id[r] for r in picked], {r: short_label(by_id[r]) for r in picked},
                                           x_key)
        if acc_fig is not None:
            c1, c2 = st.columns(2)
            c1.plotly_chart(present.figure(loss_fig), key="runs_loss")
            c2.plotly_chart(present.figure(acc_fig), key="runs_acc")
        else:
            st.plotly_chart(present.figure(loss_fig), key="runs_loss")

st.header("Methods compared")
models_present = sorted({m for m in df["Model"].dropna()})
if models_present and st.session_state.get("runs_cmp_model") not in ["All models"] + models_present:
    # One model by default (the one with most runs): mixing MiniLM and SmolLM2 timings misleads.
    st.session_state["runs_cmp_model"] = df["Model"].dropna().value_counts().idxmax()
scope = st.selectbox("Model", ["All models"] + models_present, key="runs_cmp_model",
                     help="Compare methods on one model, as in the OPT-350m study")
done = chart_df[chart_df["Status"].isin(["completed", "stopped"])]
if scope != "All models":
    done = done[pd.Series([r["Model"] == scope for r in rows if r["Status"] in ("completed", "stopped")],
                          index=done.index, dtype=bool)]
figures = method_figures(done)
if not figures:
    st.caption("Finish a few runs with different methods to compare them here.")
else:
    cols = st.columns(min(2, len(figures)))
    for i, (name, fig) in enumerate(figures):
        cols[i % len(cols)].plotly_chart(present.figure(fig), key=f"runs_method_{name}")
    busy = done[done["Busy"] == True]  # noqa: E712 - a pandas mask, not a truth test
    if not busy.empty:
        st.warning(f"{len(busy)} of these runs were timed while the machine was busy ({', '.join(busy['Run'].map(md_escape))}): "
                   "their training times and latencies are slower than the same run alone.")
    st.caption("Up and to the left is best: more accuracy for fewer trained weights. LoRA usually sits "
               "within a point or two of full fine-tuning with a few percent of the parameters or less; "
               "merged into W it adds no latency, unmerged it adds a little.")

st.header("One run")
ids = [i.id for i in infos]
if st.session_state.get("runs_detail") not in by_id:
    wanted = st.session_state.get("compare_run")
    st.session_state["runs_detail"] = wanted if wanted in by_id else ids[0]
detail_id = st.selectbox("Run", ids, key="runs_detail", format_func=labels.get)
details(by_id[detail_id], me, admin)
