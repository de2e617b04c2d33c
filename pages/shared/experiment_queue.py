"""Queueing an experiment's runs; those the queue has no room for wait in the session."""
from __future__ import annotations

import streamlit as st

from core.config import RunConfig
from pages.shared.formatting import error_text
from pages.shared.session import manager, owner_id

PICK_KEY = "exp_pick"               # the results selectbox
WANTED_KEY = "_exp_wanted"          # an experiment just queued: the results show it
PENDING_KEY = "_exp_pending"        # experiment id -> [config dicts] waiting for room in the queue
FLASH_KEY = "_exp_flash"            # (kind, text) to show once after a rerun


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
