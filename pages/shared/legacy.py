"""Switching off Streamlit's old multipage mode: app.py calls it, and so does every page script,
because in that mode a first request for /train runs pages/train.py without app.py."""
from __future__ import annotations

import functools

import streamlit as st


@functools.cache  # once per process: afterwards the flag stays off (a rerun each time would cost a run)
def leave_legacy_multipage_mode() -> None:
    """Make app.py route every request, even the first one after a server start.

    Streamlit still supports its old multipage mode: while a `pages/` folder sits next to the main
    script and no script has called st.navigation yet, a request for /train runs pages/train.py
    directly, skipping app.py (no page config, no shared sidebar, and every file in pages/ listed as
    a page; pages/shared/ never is: the old mode reads pages/*.py only). Every page calls this before
    drawing, so the first such request lands here: turn the old mode off and rerun, which goes
    through app.py's st.navigation.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # a Streamlit without the old mode
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        ctx = get_script_run_ctx()
        if ctx is None:
            return
        # Ask for the rerun without raising here (st.rerun() would). When this ran on import,
        # a rerun raised mid-import left the module half-built in sys.modules, and every session
        # importing it at that moment (30 first visits at once after a start) got an ImportError.
        # The runner raises the rerun at the page's next st.* call instead.
        try:
            from streamlit.runtime.scriptrunner_utils.script_requests import RerunData
            ctx.script_requests.request_rerun(RerunData(query_string=ctx.query_string,
                                                        page_script_hash=ctx.page_script_hash))
        except (ImportError, AttributeError, TypeError):  # a Streamlit whose internals moved
            st.rerun()

