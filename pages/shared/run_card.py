"""The result of a finished run on Train: its card, its LoRA anatomy, Compare and the weights."""
from __future__ import annotations

import streamlit as st

from core import runs, urlstate
from core.textsafe import md_text
from pages.shared.anatomy import anatomy_view, uses_dora
from pages.shared.formatting import compute_note, fmt_bytes, fmt_params, fmt_seconds, show_error
from pages.shared.keys import COMPARE_RUN_KEY
from pages.shared.session import is_admin, manager, owner_id
from pages.shared.train_state import url_state


def run_config(job_id: str) -> dict:
    try:
        return runs.get_run(job_id).config or {}
    except runs.NotFound:
        return {}  # deleted meanwhile: job_panel's poll says so
    except Exception as exc:
        show_error(exc)
        return {}


def _initial_metrics(summary: dict, events: list[dict]) -> dict:
    if summary.get("initial"):
        return summary["initial"]
    for ev in events:  # eval_on_start: the first evaluation scores the untouched model
        if ev.get("type") == "eval":
            return ev
    return {}


def result_block(job_id: str, snap: dict, events: list[dict]) -> None:
    state = snap["state"]
    if state == "failed":
        message = snap.get("error") or snap.get("message") or "the run failed"
        # The job followed may be another visitor's, and its message may quote their data.
        st.error(md_text(message, 600) + (f". Hint: {md_text(snap['hint'])}" if snap.get("hint") else ""))
        return
    if state in ("cancelled", "interrupted"):
        st.warning(md_text(snap.get("message") or state, 600))
        return
    summary = snap.get("summary") or {}
    if state == "stopped":
        st.info(md_text(snap.get("message") or "stopped", 600))
    if not summary:
        return
    summary_card(summary, events)
    anatomy_block(events, run_config(job_id))
    actions(job_id, summary)


def summary_card(summary: dict, events: list[dict]) -> None:
    final, initial = summary.get("final") or {}, _initial_metrics(summary, events)
    with st.container(border=True):
        st.markdown("**Result**")
        c = st.columns(4)
        if "eval_accuracy" in final:
            before = initial.get("eval_accuracy")
            c[0].metric("Validation accuracy", f"{final['eval_accuracy']:.1%}",
                        delta=None if before is None else f"{(final['eval_accuracy'] - before) * 100:+.1f} pts",
                        help=None if before is None else f"before training: {before:.1%}")
        elif "eval_perplexity" in final:
            before = initial.get("eval_perplexity")
            c[0].metric("Validation perplexity", f"{final['eval_perplexity']:.3g}",
                        delta=None if before is None else f"{final['eval_perplexity'] - before:+.3g}",
                        delta_color="inverse")
        else:  # no validation rows (e.g. the facts lesson): the last training loss, not an empty slot
            losses = [ev["loss"] for ev in events
                      if ev.get("type") == "log" and isinstance(ev.get("loss"), (int, float))]
            if losses:
                c[0].metric("Training loss (last)", f"{losses[-1]:.4f}", help="No validation rows in this run: "
                            "this is the loss on the training rows, which says less about new questions.")
        if "eval_loss" in final:
            c[1].metric("Validation loss", f"{final['eval_loss']:.4f}")
        c[2].metric("Trainable", f"{summary.get('trainable_percent', 0):.3g}%",
                    help=f"{fmt_params(summary.get('trainable_params'))} of {fmt_params(summary.get('total_params'))}")
        c[3].metric("Train time", fmt_seconds(summary.get("train_time_s")))
        c = st.columns(4)
        peak = summary.get("peak_cuda_mb") or summary.get("peak_rss_mb")
        label = "Peak GPU memory" if summary.get("peak_cuda_mb") else "Peak process memory"
        c[0].metric(label, fmt_bytes(peak * 2**20) if isinstance(peak, (int, float)) else "—")
        latency = summary.get("latency_ms_per_sample")
        # Short values: a quarter-width metric cuts anything longer than about 12 characters.
        c[1].metric("Latency per sample", f"{latency:.1f} ms" if isinstance(latency, (int, float)) else "—")
        sps = summary.get("samples_per_second")
        c[2].metric("Samples per second", f"{sps:.1f}" if isinstance(sps, (int, float)) else "—",
                    help=compute_note(summary))
        c[3].metric("Rows (train / val)", f"{summary.get('n_train', 0):,} / {summary.get('n_val', 0):,}")


def anatomy_block(events: list[dict], config: dict | None = None, live: bool = False) -> None:
    """What LoRA has changed so far (pages.ui.anatomy_view, the same picture as on Runs)."""
    if not any(ev.get("type") == "anatomy" and ev.get("layers") for ev in events):
        return
    with st.expander("LoRA anatomy", expanded=live):
        anatomy_view(events, "tr_live_anatomy" if live else "tr_anatomy", dora=uses_dora(config), live=live)


def actions(job_id: str, summary: dict) -> None:
    c1, c2 = st.columns(2)
    if c1.button("Compare base vs tuned", key="tr_compare"):
        st.session_state[COMPARE_RUN_KEY] = job_id
        lesson = url_state()["lesson"]  # a lesson that continues on Compare keeps its guidance there
        st.switch_page("pages/compare.py", query_params={urlstate.LESSON_KEY: lesson} if lesson else None)
    owner, admin = owner_id(), is_admin()
    try:
        allowed = manager().can_access(job_id, owner, admin)
        has_weights = runs.get_run(job_id).has_weights
    except Exception as exc:
        show_error(exc)
        return
    if allowed and has_weights:
        # Deferred: a full fine-tune's weights are hundreds of MB; zip them only when asked.
        c2.download_button("Download weights (zip)", data=lambda: manager().weights_zip(job_id, owner, admin),
                           file_name=f"{job_id}.zip", mime="application/zip", key="tr_download")
