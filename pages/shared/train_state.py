"""The Train page's own session state: the draft RunConfig, the picker choices, the URL bookkeeping.

Widget state is lost when the user leaves the page, so every choice is also copied into a draft
RunConfig dict under a key no widget owns; widgets are seeded from it when they come back.
"""
from __future__ import annotations

import streamlit as st

from core import presets
from core.config import RunConfig
from pages.shared.keys import TRAIN_DRAFT_KEY, TRAIN_EVENTS_KEY, TRAIN_URL_KEY

DRAFT_KEY = TRAIN_DRAFT_KEY         # the RunConfig dict being edited
UI_KEY = "_train_ui"                # choices that are not part of a RunConfig (which picker, file name)
EVENTS_KEY = TRAIN_EVENTS_KEY       # {"id": run id, "events": [...]}: fetch only what is new
UPLOADS_KEY = "_train_uploads"      # uploader file_id -> (saved path, shown name): save each upload once
URL_KEY = TRAIN_URL_KEY             # {"loaded", "lesson", "base"}: what the URL was read against
URL_WARNINGS_KEY = "_train_url_warnings"
LESSON_MODE_KEY = "tr_lesson_mode"  # the lesson-mode toggle's widget key
LESSON_MODE_SAVED = "_train_lesson_mode"  # its value, kept when the page (and the widget) is left
SCROLL_TO_RUN_KEY = "_train_scroll_to_run"  # set on Start: bring the live progress into view once


def train_draft() -> dict:
    if DRAFT_KEY not in st.session_state:
        st.session_state[DRAFT_KEY] = presets.app_defaults().to_dict()
    return st.session_state[DRAFT_KEY]


def ui_state() -> dict:
    return st.session_state.setdefault(UI_KEY, {"method_params": {}})


def apply_preset(cfg: RunConfig) -> None:
    """Replace the draft by a preset and drop the widgets' own values so they re-seed from it."""
    st.session_state[DRAFT_KEY] = cfg.to_dict()
    ui_state()["method_params"] = {}
    widget_prefixes = ("tr_m_", "tr_method", "tr_t_", "tr_d_", "tr_model")
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(widget_prefixes)]:
        del st.session_state[key]


def lesson_mode() -> bool:
    return bool(st.session_state.get(LESSON_MODE_KEY))


def url_state() -> dict:
    return st.session_state.setdefault(URL_KEY, {"loaded": False, "lesson": "", "base": None})


def seed(key: str, value, options: list | None = None):
    """Give a keyed widget its starting value, unless it already holds a valid one. Returns the
    value to pass as the widget's own default as well (see pages/shared/widgets.py, streamlit#4247)."""
    if options is not None and value not in options:
        value = options[0]
    current = st.session_state.get(key, None)
    if key in st.session_state and (options is None or current in options):
        return value
    st.session_state[key] = value
    return value


def seed_index(key: str, value, options: list) -> int:
    """seed() for a selectbox or radio: the index of its default option."""
    return options.index(seed(key, value, options))
