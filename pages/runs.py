"""Runs: every run on disk in one table, overlaid curves, a method comparison, and per-run actions
(downloads, the headless command, delete, and what LoRA changed layer by layer)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from core import runs
from core.textsafe import md_text
from pages import present
from pages.shared.anatomy import anatomy_view, uses_dora
from pages.shared.formatting import fmt_params, fmt_seconds, finite_or_none, md_escape, run_label, show_error
from pages.shared.keys import COMPARE_RUN_KEY
from pages.shared.legacy import leave_legacy_multipage_mode
from pages.shared.run_actions import FLASH_KEY, allowed_config, config_yaml, delete_run, export_section, resume_run
from pages.shared.run_table import chart_frame, metrics, short_label, table_frame, table_rows
from pages.shared.runs_charts import curves_figures, method_figures
from pages.shared.session import is_admin, manager, owner_id
from pages.shared.train_state import seed_index


def unreadable_details(info, me: str, admin: bool) -> None:
    st.warning(f"This run's files are unreadable: {md_text(info.problem, 400)}. Nothing of it can be shown "
               "or downloaded; the other runs are not affected.")
    if info.owned_by(me) or admin:
        x1, x2 = st.columns([3, 1])
        confirm = x1.checkbox("Yes, delete this unreadable run for good", key="runs_confirm_delete")
        if x2.button("Delete run", key="runs_delete", disabled=not confirm, type="primary"):
            delete_run(info.id, me, admin)


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
                resume_run(info, me, admin)
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
    latency = finite_or_none(s.get("latency_ms_per_sample"))
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
            st.download_button("Download config (YAML)", data=lambda: config_yaml(info.id, me, admin),
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
                delete_run(info.id, me, admin)

    export_section(info, me, admin)

    events = metrics(info.dir)
    if any(e.get("type") == "anatomy" and e.get("layers") for e in events) or s.get("anatomy"):
        st.markdown("**LoRA anatomy**")
        anatomy_view(events, "runs_anatomy", dora=uses_dora(info.config), fallback=s.get("anatomy"))


# ------------------------------------------------------------------------------------ the page

leave_legacy_multipage_mode()
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
    # Each seeded widget also gets its value as its own default: a browser that re-creates it after the
    # run that seeded it was interrupted sends that default back (streamlit#4247), else none or the first.
    picked = st.multiselect("Runs to overlay", with_metrics, default=st.session_state["runs_curves"],
                            key="runs_curves", format_func=labels.get)
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
scopes = ["All models"] + models_present
scope = st.selectbox("Model", scopes, index=seed_index("runs_cmp_model", st.session_state.get("runs_cmp_model"), scopes),
                     key="runs_cmp_model",
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
    wanted = st.session_state.get(COMPARE_RUN_KEY)
    st.session_state["runs_detail"] = wanted if wanted in by_id else ids[0]
detail_id = st.selectbox("Run", ids, index=seed_index("runs_detail", st.session_state["runs_detail"], ids),
                         key="runs_detail", format_func=labels.get)
details(by_id[detail_id], me, admin)
