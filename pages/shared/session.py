"""Who is asking (the owner token, admin), the process-wide job manager, and the background
import of torch/transformers/peft. No torch at import: pages import this on every rerun."""
from __future__ import annotations

import os
import re
import secrets
import threading

import streamlit as st

from core.jobs import OPENMP_SPINCOUNT
from pages.shared.keys import ADMIN_TOKEN_KEY, OWNER_KEY

# libgomp reads it once, when torch loads: set here, before any page imports torch.
os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)

OWNER_COOKIE = "peft_playground_owner"  # pages/classroom.py writes it; see owner_id()
_OWNER_TOKEN = re.compile(r"[0-9a-f]{48}")


def owner_id() -> str:
    """The owner token of this browser: it owns the runs submitted from any of its tabs.

    Kept in a cookie (pages/classroom.remember_owner writes it), so a reload, a new tab or a browser
    restart on the same machine keeps the runs; not in the URL, which people share (a copied link
    would hand over Stop and Delete). 192 random bits: unguessable. A cookie that does not look like
    one of ours is ignored (hostile input), and without cookies it is one token per session."""
    if OWNER_KEY not in st.session_state:
        try:
            cookie = st.context.cookies.get(OWNER_COOKIE)
        except Exception:  # no request context (AppTest, a bare script run)
            cookie = None
        ok = isinstance(cookie, str) and _OWNER_TOKEN.fullmatch(cookie)
        st.session_state[OWNER_KEY] = cookie if ok else secrets.token_hex(24)
    return st.session_state[OWNER_KEY]


def manager():
    """The process-wide job manager. Each call also tells it this owner still has a page open
    (pages poll through here), so their queued runs are not dropped as abandoned."""
    from core import jobs
    mgr = jobs.get_manager()
    try:
        mgr.heartbeat(owner_id())
    except Exception:  # outside a script run there is no session: nothing to report
        pass
    return mgr


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    """core.models.device_summary(), once per server: it imports torch and probes the hardware."""
    from core.models import device_summary
    return device_summary()


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Import torch, transformers and peft (via the method registry) in the background, once.

    That takes several seconds; app.py starts it on the first page view so the Train page is quick.
    Call wait_for_warm_up() before importing them yourself: two threads importing the same big
    package at once can see it half-initialised.
    """
    def load() -> None:
        try:
            from core.methods import all_methods
            all_methods()
        except Exception:  # the page that needs them will report the problem itself
            pass
    thread = threading.Thread(target=load, name="playground-warm-up", daemon=True)
    thread.start()
    return thread


def wait_for_warm_up() -> None:
    warm_up().join()


def is_admin() -> bool:
    from core import jobs
    token = st.session_state.get(ADMIN_TOKEN_KEY) or ""
    return jobs.is_admin(token)

