"""The app under Streamlit's AppTest: a fresh process-wide state, and the app opened on a page."""
from __future__ import annotations

import os

import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APP = os.path.join(ROOT, "app.py")
OWNER_KEY = "_playground_owner_id"  # pages.ui keeps the session's owner id here
TIMEOUT = 60  # the first script run imports torch, transformers and peft


def reset_app_state() -> None:
    """Streamlit's caches and the job manager live as long as the process: empty them between tests."""
    from core import jobs
    st.cache_data.clear()
    st.cache_resource.clear()
    jobs.reset_manager()


def open_app(page: str | None = None, *, query: dict | None = None, state: dict | None = None,
             direct: bool = False, timeout: float = TIMEOUT) -> AppTest:
    """app.py with `state` in the session and `query` in the URL. With `direct` the first script run
    is `page`, as a shared link opens it; otherwise the app runs once on Learn and then switches to
    `page`, as a click in the sidebar does."""
    at = AppTest.from_file(APP, default_timeout=timeout)
    for key, value in (state or {}).items():
        at.session_state[key] = value
    for key, value in (query or {}).items():
        at.query_params[key] = value
    if direct and page:
        at.switch_page(page)
    at.run()
    if page and not direct:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def widget(elements, label):
    """The element of `elements` (e.g. at.selectbox) with this label."""
    for el in elements:
        if el.label == label:
            return el
    raise AssertionError(f"no widget labelled {label!r}; have {[e.label for e in elements]}")
