"""Replay a finished run's recorded progress on the Train page, at 1x, 5x or 20x.

For a room where the CPU is slow or the network is down: the events in metrics.jsonl carry their
wall-clock time, so the charts can be redrawn as they grew, without training anything. The replay
is labelled as such on every frame, with the run's name and when it was recorded.
"""
from __future__ import annotations

import datetime as _dt
import time

import streamlit as st

from pages import present
from pages.shared.charts import metrics_charts
from pages.shared.formatting import md_escape

SPEEDS = {"1x": 1.0, "5x": 5.0, "20x": 20.0}
STATE_KEY = "_train_replay"     # {"id", "speed", "started"}: the replay running in this session
FRAME_S = 1.0                   # one redraw a second: enough for a curve, cheap for the browser
CHART_ORDER = ("train_loss", "eval_loss", "eval_accuracy", "eval_perplexity", "learning_rate")


def timeline(events: list[dict]) -> tuple[float, float]:
    """(first, last) event time of a run: what a replay covers."""
    times = [float(e["time"]) for e in events if isinstance(e.get("time"), (int, float))]
    return (min(times), max(times)) if times else (0.0, 0.0)


def shown_at(events: list[dict], elapsed_s: float, speed: float) -> list[dict]:
    """The events a replay `elapsed_s` seconds in, at `speed`, has revealed."""
    t0, _ = timeline(events)
    horizon = t0 + elapsed_s * speed
    return [e for e in events if isinstance(e.get("time"), (int, float)) and float(e["time"]) <= horizon]


def section(job_id: str, name: str, events: list[dict]) -> None:
    """The replay controls under a finished run, and the replay itself while one runs."""
    t0, t1 = timeline(events)
    if t1 <= t0:
        return
    state = st.session_state.get(STATE_KEY)
    if state and state.get("id") != job_id:
        state = None
    with st.expander("Replay this run (no training: its recorded progress)", expanded=bool(state)):
        c1, c2, c3 = st.columns([2, 1, 1], vertical_alignment="bottom")
        speed = c1.segmented_control("Speed", list(SPEEDS), default="5x", key="tr_replay_speed")
        if c2.button("Replay", key="tr_replay_start", type="primary"):
            st.session_state[STATE_KEY] = {"id": job_id, "speed": SPEEDS.get(speed or "5x", 5.0),
                                           "started": time.monotonic()}
            state = st.session_state[STATE_KEY]
        if state and c3.button("Stop replay", key="tr_replay_stop"):
            st.session_state.pop(STATE_KEY, None)
            state = None
        st.caption(f"The run took {_duration(t1 - t0)}; at 20x the replay takes {_duration((t1 - t0) / 20)}.")
        if state:
            _frames(name, events, state, t1 - t0)


def _duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _frames(name: str, events: list[dict], state: dict, length_s: float) -> None:
    @st.fragment(run_every=None if state.get("finished") else FRAME_S)
    def frame() -> None:
        current = st.session_state.get(STATE_KEY)
        if not current:
            return
        elapsed = time.monotonic() - current["started"]
        speed = current["speed"]
        shown = shown_at(events, elapsed, speed)
        done = elapsed * speed >= length_s
        t0, _ = timeline(events)
        when = _dt.datetime.fromtimestamp(t0).strftime("%d %b %H:%M")
        st.info(f"**Replay of a recorded run** · {md_escape(name)} · trained {when} · shown at "
                f"{speed:g}x" + (" · finished" if done else "") + ". Nothing is training now.",
                icon=":material/replay:")
        st.progress(min(1.0, elapsed * speed / length_s) if length_s else 1.0,
                    text=f"{_duration(min(elapsed * speed, length_s))} of {_duration(length_s)} recorded")
        figs = metrics_charts(shown)
        for key in CHART_ORDER:
            if key in figs:
                st.plotly_chart(present.figure(figs[key]), key=f"tr_replay_chart_{key}")
        if done and not current.get("finished"):
            current["finished"] = True
            st.rerun()  # once: the last frame stays, without a timer
    frame()
