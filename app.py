"""PEFT Playground: the router and the sidebar every page shares (device, current job, queue)."""
from __future__ import annotations

import streamlit as st

from core import urlstate
from core.device import gpu_driver_present
from pages import present
from pages.classroom import admin_box, queue_lines, sidebar_class
from pages.shared.formatting import fmt_seconds, md_escape, show_error
from pages.shared.keys import GPU_PARTS_SKIPPED_KEY, JOB_KEY
from pages.shared.legacy import leave_legacy_multipage_mode
from pages.shared.links import query_params
from pages.shared.session import (
    device_info,
    engine_ready,
    manager,
    owner_id,
    page_drawn,
    wait_for_engine,
    wait_for_warm_up,
    warm_up,
)

DEVICE_NOTE = "Loading the engine (torch)…"
_device_slot = None  # this script run's sidebar note standing in for the device line
SIDEBAR_REFRESH_S = 5.0  # a summary; each poll costs the browser CPU (see pages/train.py: job_panel)
# A progress bar eases into each new value with a CSS transition; redrawn every few seconds while a
# run trains, that easing was more than half of what a progress update cost Chromium (0.035 -> 0.015
# cores in a one-bar app). The bar jumps instead: on a machine that also trains, that CPU is the trainer's.
STEADY_PROGRESS_BARS = "<style>[data-testid='stProgress'] * { transition: none !important; }</style>"

# Before anything is drawn: on the first request after a start, Streamlit may still be in its old
# pages/ mode (see pages/shared/legacy.py); this turns it off and asks for the rerun through st.navigation.
leave_legacy_multipage_mode()
st.set_page_config(page_title="PEFT Playground", layout="wide")
if urlstate.lesson_of(query_params()) and gpu_driver_present():
    # A lesson link's page waits for torch before its form (the lesson's model depends on the GPU):
    # its import starts now, beside the sidebar and the page's own imports, not after them. Without
    # a GPU driver the form needs no torch and draws first, like the plain Train page (no import
    # holding the interpreter lock meanwhile).
    warm_up()


def sidebar_device() -> None:
    """The device line, or, while torch still imports, a note in its place, filled by
    finish_sidebar_device() once the page is drawn."""
    global _device_slot
    if engine_ready():
        draw_device()
        return
    _device_slot = st.empty()
    _device_slot.caption(DEVICE_NOTE)


def finish_sidebar_device() -> None:
    if _device_slot is None:
        return
    wait_for_engine(lambda waited: _device_slot.caption(f"{DEVICE_NOTE} {waited:.0f} s"))
    with _device_slot.container():
        draw_device()
    if st.session_state.pop(GPU_PARTS_SKIPPED_KEY, False) and _has_gpu():
        st.rerun()  # the page left out what a GPU adds (shelf models, lesson hints): now it can ask


def _has_gpu() -> bool:
    try:
        return device_info().get("device") == "cuda"
    except Exception:  # draw_device() has shown the error
        return False


def draw_device() -> None:
    try:
        dev = device_info()
    except Exception as exc:  # a broken driver must not hide the pages
        show_error(exc)
        return
    memory = dev.get("total_memory_gb")
    if dev.get("device") == "cuda":
        st.markdown(f"**GPU** · {dev.get('name')}  \n{memory} GB"
                    + (f", {dev.get('free_memory_gb')} GB free" if dev.get("free_memory_gb") else ""))
    else:
        kind = "Apple GPU" if dev.get("device") == "mps" else "CPU"
        cores = dev.get("cores")
        st.markdown(f"**{kind}** · {dev.get('name')}  \n{cores} core{'' if cores == 1 else 's'}"
                    + (f", {memory} GB RAM" if memory else ""))


def _job_status(active: dict | None, queue: list[dict], shown_on_page: bool = False) -> None:
    if active is None:
        # A run that was just submitted sits in the queue for a moment before a worker takes it:
        # "No job is training" beside a page saying "queued" read as a contradiction (issue 23).
        st.caption("The next run is starting…" if queue else "No job is training.")
    elif shown_on_page:  # no progress bar here: it would not move (see sidebar_jobs)
        st.markdown(f"**{md_escape(active.get('name'))}** · training")
        st.caption("Its progress and charts are on this page.")
    else:
        prog = active.get("progress") or {}
        step, max_steps = prog.get("step"), prog.get("max_steps")
        text = f"**{md_escape(active.get('name'))}** · {active.get('state')}"
        if active.get("nickname"):
            text += f" · {md_escape(active['nickname'])}"
        if active.get("stopping"):
            text += " (stopping)"
        st.markdown(text)
        if step is not None and max_steps:
            eta = active.get("eta_s")
            st.progress(prog.get("fraction") or 0.0,
                        text=f"step {step}/{max_steps}" + (f" · ETA {fmt_seconds(eta)}" if eta is not None else ""))
        else:
            st.progress(0.0, text=active.get("status_message") or "starting…")
    others = len(manager().running()) - 1 if active is not None else 0
    if others > 0:
        st.caption(f"… and {others} more training side by side")
    if queue:
        queue_lines(queue)


def _busy() -> bool:
    try:
        return manager().active() is not None or bool(manager().queue())
    except Exception:  # not lost: status() in sidebar_jobs asks again and shows the error in words
        return False


def _train_page_follows_the_running_job(page) -> bool:
    """Train draws the job it follows (this session's latest, else the running one) with its own
    progress line, and reruns the whole page when that job starts and when it ends: the sidebar
    need not poll it as well."""
    if page.title != "Train":
        return False
    try:
        active = manager().active()
    except Exception:  # as in _busy: status() shows this failure
        return False
    # After a reload JOB_KEY is unset until the page runs: the page will follow this owner's run then.
    followed = st.session_state.get(JOB_KEY) or manager().latest_for(owner_id()) or active["id"] if active else None
    return active is not None and followed == active["id"]


def sidebar_jobs(page) -> None:
    # run_every is fixed when the fragment is declared, so it is declared per rerun: it polls only
    # while something trains and asks for one full rerun when the queue empties.
    busy = _busy()
    on_page = _train_page_follows_the_running_job(page)

    @st.fragment(run_every=SIDEBAR_REFRESH_S if busy and not on_page else None)
    def status() -> None:
        try:
            active, queue = manager().active(), manager().queue()
        except Exception as exc:
            show_error(exc)
            return
        _job_status(active, queue, shown_on_page=on_page)
        if busy and active is None and not queue:
            st.rerun()

    status()


def sidebar_ray() -> None:
    """Where runs train when a Ray cluster was asked for (PLAYGROUND_RAY_ADDRESS)."""
    from core import ray_backend
    ray = ray_backend.status()
    if ray["error"]:
        st.error(f"Ray cluster not used: {ray['error']}. Runs train here, on this machine, instead.")
    elif ray["cluster"]:
        st.caption(f"Runs train on the Ray cluster at {md_escape(ray['address'])} ({ray['cluster']}).")


def sidebar(page) -> None:
    with st.sidebar:
        sidebar_device()
        st.divider()
        sidebar_jobs(page)
        sidebar_ray()
        sidebar_class()
        present.sidebar_controls()
        admin_box()


pages = [
    st.Page("pages/learn.py", title="Learn", default=True),
    st.Page("pages/train.py", title="Train"),
    st.Page("pages/experiments.py", title="Experiments"),
    st.Page("pages/compare.py", title="Compare"),
    st.Page("pages/runs.py", title="Runs"),
    st.Page("pages/board.py", title="Class board"),
]
page = st.navigation(pages)
st.html(STEADY_PROGRESS_BARS)  # style only: Streamlit puts it where it takes no space
present.apply()  # presentation mode and theme, from the link or the sidebar, before any page draws
sidebar(page)
try:
    if page.title in ("Learn", "Train"):
        # Learn loads no model, and the Train form needs no torch (tests/test_cold_start.py): both draw
        # first and start the import after, so it does not compete with the drawing (Train waits for
        # it at its end, for the estimate). The device line in the sidebar follows.
        page.run()
        warm_up()
    else:
        # The other pages may load models, and must not import the same big packages as the warm-up
        # thread at the same moment.
        warm_up()
        with st.spinner("Loading the engine (torch, transformers, PEFT): the page is ready in a few seconds…"):
            wait_for_warm_up()
        page.run()
    finish_sidebar_device()
finally:
    # The warm-up imports transformers and peft now (pages/shared/session.py), also when the page
    # stopped early (st.stop, st.rerun, a switch of page).
    page_drawn()
