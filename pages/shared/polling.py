"""Reading a run's progress for a page: only the events new since the last poll."""
from __future__ import annotations

import streamlit as st

from pages.shared.session import manager


def poll_events(run_id: str, cache_key: str) -> tuple[dict, list[dict]]:
    """A run's snapshot and all its events so far, kept in this session under cache_key: only the
    events new since the last poll cross the manager's lock."""
    cache = st.session_state.get(cache_key)
    if not cache or cache.get("id") != run_id:
        cache = {"id": run_id, "events": []}
    snap = manager().snapshot(run_id, since=len(cache["events"]))
    if snap["n_events"] < len(cache["events"]):  # read back from disk with fewer lines: start over
        snap = manager().snapshot(run_id, since=0)
        cache["events"] = []
    cache["events"].extend(snap["events"])
    st.session_state[cache_key] = cache
    return snap, cache["events"]
