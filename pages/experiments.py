"""Experiments: a grid of runs that differ in one or two settings, queued together, and their results.

The classic studies are one click ("Which method wins?", "How much data?"); a custom grid varies
one or two settings of the Train page's draft (or the app's defaults). The results are ordinary
runs sharing an `experiment` id, so the Runs page lists them too.
"""
from __future__ import annotations

import streamlit as st

from core import experiments, lessons, presets, urlstate
from core.config import ConfigError
from pages import present
from pages.shared.experiment_queue import FLASH_KEY, PENDING_KEY, PICK_KEY, WANTED_KEY, drain_pending, submit_all
from pages.shared.experiment_results import AXIS_LABELS, experiment_title, result_charts, results_frame, varied_settings
from pages.shared.formatting import fmt_params, md_escape, show_error
from pages.shared.keys import TRAIN_DRAFT_KEY
from pages.shared.legacy import leave_legacy_multipage_mode
from pages.shared.links import lesson_box, query_params
from pages.shared.session import is_admin, manager, owner_id

REFRESH_S = 2.0
LIVE_STATES = ("queued", "running")
AXIS_HINTS = {"method": "lora, prompt_tuning, linear_head", "r": "2, 8, 32", "alpha": "8, 16, 32",
              "dropout": "0, 0.1", "n_samples": "50, 150, 300", "virtual_tokens": "8, 25",
              "learning_rate": "0.0001, 0.001"}
NONE = "(none)"


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

@st.cache_data(ttl=2, show_spinner=False)
def _experiment_labels(ids: tuple) -> dict:
    return {e: f"{experiment_title(experiments.results(e), e)} · {e}" for e in ids}


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
    st.markdown(f"**{md_escape(experiment_title(rows, experiment))}** · " + " · ".join(parts))
    if counts["running"] or counts["queued"] or waiting:
        cancel_button(experiment)
    varied = varied_settings(rows)
    df = results_frame(rows, varied)
    present.table(df.drop(columns=["id"]), hide_index=True, key="exp_table",
                  keep=["Run", "Method", "Accuracy", "Converged?", "Trainable %", "Train time (s)", "Latency (ms)",
                        "Status"], column_config={
        "Accuracy": st.column_config.NumberColumn(format="percent"),
        "Val loss": st.column_config.NumberColumn(format="%.3f"),
        "Trainable": st.column_config.NumberColumn(format="localized"),
        "Trainable %": st.column_config.NumberColumn(format="%.4g %%"),
        "Train time (s)": st.column_config.NumberColumn(format="%.1f"),
        "Latency (ms)": st.column_config.NumberColumn(format="%.1f"),
    })
    rising = sum(bool(r.get("still_rising")) for r in rows)
    if rising:
        st.caption(f"{rising} run(s) were still improving when their budget ended (accuracy still rising at the "
                   "last evaluations): under-trained, so their accuracy is a lower bound and the ranking may change "
                   "with more steps.")
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
               "They join the queue like any run (in parallel when the server has several workers); each is an "
               "ordinary run, listed on the Runs page too.")
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


leave_legacy_multipage_mode()
main()
