"""Train's live view of one run: progress, Stop, the charts while it trains, then its result."""
from __future__ import annotations

from collections.abc import MutableMapping

import streamlit as st

from pages import present, replay
from pages.shared.charts import metrics_charts
from pages.shared.formatting import fmt_seconds, md_escape, show_error
from pages.shared.keys import JOB_KEY
from pages.shared.polling import poll_events
from pages.shared.run_card import anatomy_block, result_block, run_config
from pages.shared.session import is_admin, manager, owner_id
from pages.shared.train_state import EVENTS_KEY, SCROLL_TO_RUN_KEY

SCROLL_TO_RUN_JS = """<script>
(function() {
  let tries = 0;
  const go = () => {
    const el = window.parent.document.querySelector('.st-key-tr_current_run') ||
               document.querySelector('.st-key-tr_current_run');
    if (el) { el.scrollIntoView({block: 'start', behavior: 'instant'}); return; }
    if (++tries < 40) { setTimeout(go, 100); }
  };
  go();
})();
</script>"""
LIVE_REFRESH_S = 2.0   # the progress line while a run is queued or trains
LIVE_CHARTS_S = 10.0   # the charts and the LoRA anatomy (see job_panel for why they differ)
QUIET_POLLS_CSS = "<style>[data-testid='stStatusWidget'] { display: none !important; }</style>"


def current_job() -> str | None:
    """This session's latest run, else this browser's (after a reload: the owner cookie), else the run training now."""
    job_id = st.session_state.get(JOB_KEY)
    if job_id:
        return job_id
    try:
        job_id = manager().latest_for(owner_id())
        if job_id:
            st.session_state[JOB_KEY] = job_id  # followed like one started in this session
            return job_id
        active = manager().active()
    except Exception as exc:
        show_error(exc)
        return None
    return active["id"] if active else None


def poll(job_id: str) -> tuple[dict, list[dict]]:
    """The job's snapshot and all its events so far."""
    return poll_events(job_id, EVENTS_KEY)


def _poll_shown(job_id: str) -> tuple[dict, list[dict]] | None:
    """poll(), or None with the error shown in place (the run was deleted meanwhile, a disk error)."""
    try:
        return poll(job_id)
    except Exception as exc:
        show_error(exc)
        return None


def _phase(events: list[dict], snap: dict) -> str:
    for ev in reversed(events):
        if ev.get("type") == "phase":
            return str(ev.get("phase"))
        if ev.get("type") in ("start", "progress", "eval"):
            scored = any(e.get("type") == "start" and e.get("n_val") for e in events)
            return "scoring the untouched model before the first step" if scored else "starting the first step"
    return snap.get("status_message") or "starting"


def progress_block(snap: dict, events: list[dict]) -> None:
    state = snap["state"]
    if state == "queued":
        from pages.classroom import wait_text
        st.progress(0.0, text=f"Queued: place {snap.get('position')} of {snap.get('queue_length')}, {wait_text(snap)}")
        return
    prog = snap["progress"]
    step, max_steps = prog.get("step"), prog.get("max_steps")
    if state == "running" and (not step or not max_steps):
        st.progress(0.0, text=f"{_phase(events, snap).capitalize()}…")
        return
    parts = [f"step {step}/{max_steps}"] if max_steps else []
    if prog.get("epoch") is not None:
        parts.append(f"epoch {prog['epoch']:.2f}")
    if snap.get("samples_per_second"):
        parts.append(f"{snap['samples_per_second']:.1f} samples/s")
    if state == "running" and snap.get("eta_s") is not None:
        parts.append(f"ETA {fmt_seconds(snap['eta_s'])}")
    if snap.get("stopping"):
        parts.append("stopping…")
    st.progress(prog.get("fraction") or 0.0, text=" · ".join(parts) or state)


CHART_EVENTS = ("log", "eval")  # what metrics_charts plots: progress and anatomy events change no chart
FIGURES_KEY = "_tr_live_figures"


def _charted(events: list[dict]) -> int:
    return sum(1 for ev in events if ev.get("type") in CHART_EVENTS)


def live_figures(cache: MutableMapping, job_id: str, events: list[dict], styled: bool) -> dict:
    """metrics_charts(events), styled for the room or not, built again only when a charted event
    arrived since the last call (kept in `cache`): most polls of a live run bring only progress
    lines, and a figure sent again unchanged is not drawn again by the browser."""
    stamp = (job_id, _charted(events), styled)
    cached = cache.get(FIGURES_KEY)
    if cached and cached[0] == stamp:
        return cached[1]
    figs = {key: present.style_figure(fig, styled) for key, fig in metrics_charts(events).items()}
    cache[FIGURES_KEY] = (stamp, figs)
    return figs


def charts_block(events: list[dict], sft: bool, job_id: str = "") -> None:
    figs = live_figures(st.session_state, job_id, events, present.enabled())
    if not figs:
        st.caption("Charts appear with the first logged step.")
        return
    quality = "eval_perplexity" if sft else "eval_accuracy"
    order = [k for k in ("train_loss", "eval_loss", quality, "learning_rate") if k in figs]
    cols = st.columns(2)
    for i, key in enumerate(order):
        with cols[i % 2]:
            st.plotly_chart(figs[key], key=f"tr_chart_{key}")


def stop_button(job_id: str, snap: dict) -> None:
    if snap["state"] not in ("queued", "running") or snap.get("stopping"):
        return
    admin = is_admin()
    if not manager().can_access(job_id, owner_id(), admin):
        st.caption("This run belongs to another session: only its owner or an admin can stop it.")
        return
    label = "Cancel" if snap["state"] == "queued" else "Stop"
    if st.button(label, key="tr_stop"):
        try:
            manager().stop(job_id, owner_id(), admin=admin)
            st.toast("Stopping after the current step…")
        except Exception as exc:
            show_error(exc)


def job_panel(job_id: str) -> None:
    try:
        snap, _ = poll(job_id)
    except Exception as exc:
        if st.session_state.get(JOB_KEY) == job_id:
            st.session_state.pop(JOB_KEY, None)  # deleted from the Runs page: forget it
        show_error(exc)
        return
    live = snap["state"] in ("queued", "running")
    drawn_queued = snap["state"] == "queued"
    config = run_config(job_id)
    sft = (config.get("data") or {}).get("task") == "sft"

    # Two timers, both slow on purpose. In Chromium every rerun of a fragment costs ~0.05-0.1 CPU-s
    # on this page, and a machine which also trains takes that from the trainer (with two OpenMP
    # threads waiting for each other it loses more than the browser takes). One 2 s timer for both
    # the progress and the charts (the figures cached and sent again unchanged) cost Chromium about
    # 1.2 CPU-s and the server 0.9 CPU-s more than this over a replayed "Fix a hallucination" run
    # (issue 22, 3 pairs): the charts follow every 10 s.
    @st.fragment(run_every=LIVE_REFRESH_S if live else None)
    def live_status() -> None:
        polled = _poll_shown(job_id)
        if polled is None:
            return
        snap, events = polled
        st.markdown(f"**{md_escape(snap['name'])}** · {snap['state']}")
        progress_block(snap, events)
        stop_button(job_id, snap)
        if live and snap["state"] not in ("queued", "running"):
            st.rerun()  # once: the page draws the result and stops polling
        if drawn_queued and snap["state"] == "running":
            st.rerun()  # once: the sidebar then leaves this job's progress to this page (app.py)

    @st.fragment(run_every=LIVE_CHARTS_S if live else None)
    def live_charts() -> None:
        polled = _poll_shown(job_id)
        if polled is None:
            return
        snap, events = polled
        charts_block(events, sft, job_id)
        if snap["state"] in ("queued", "running"):
            anatomy_block(events, config, live=True)
            return
        # The result is drawn by a fragment, so whichever run paints it last (its own timer or the
        # full rerun) shows it: drawn after the fragments, the card was sometimes missing in the
        # browser when a timer run and the full rerun crossed.
        result_block(job_id, snap, events)

    if live:
        # Streamlit's "Running..." badge comes and goes with every poll: in a room it only distracts,
        # and in Chromium it is part of what each poll costs.
        st.html(QUIET_POLLS_CSS)
    with st.container(key="tr_current_run"):
        st.subheader("Current run")
        # The class watches it on their own laptops (pages/board.py: read-only, no Stop).
        st.caption(f"Share it: [a live, read-only view of this run](./board?follow={job_id}) for others to follow.")
        if st.session_state.pop(SCROLL_TO_RUN_KEY, False):
            st.html(SCROLL_TO_RUN_JS, unsafe_allow_javascript=True)
        live_status()
        live_charts()
        if not live:
            replay.section(job_id, snap.get("name") or job_id, _recorded_events())


def _recorded_events() -> list[dict]:
    return (st.session_state.get(EVENTS_KEY) or {}).get("events") or []
