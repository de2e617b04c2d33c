"""Learn's lesson cards and the calculator's values in the address bar."""
from __future__ import annotations

import streamlit as st

from core import estimate, lessons, urlstate
from core.textsafe import md_text
from pages import present
from pages.shared.formatting import show_error
from pages.shared.keys import EXPERIMENTS_URL_KEY, TRAIN_URL_KEY
from pages.shared.links import query_params, sync_query_params
from pages.shared.session import gpu_probe_allowed
from pages.shared.method_names import learn_method_labels

TARGET_MODES = ("Default targets", "All linear layers", "Choose modules")
URL_TARGET_MODES = ("default", "all", "choose")  # TARGET_MODES as they appear in a link
SAVED_KEY = "_learn_values"       # the calculator's values by URL key: they outlive the widgets
URL_LOADED_KEY = "_learn_url_loaded"
# Pages' own "read the URL again" markers, cleared when a lesson card opens them.
PAGE_URL_STATE = {"train": TRAIN_URL_KEY, "experiments": EXPERIMENTS_URL_KEY}


def _full_link(relative: str) -> str:
    """A lesson link a teacher can paste: the address this page was opened at, plus the lesson
    (and present=1 while presentation mode is on)."""
    from urllib.parse import urljoin, urlsplit
    link = relative + ("&present=1" if present.enabled() else "")
    try:
        here = str(st.context.url or "")
    except Exception:  # no browser context (AppTest): the relative link
        return link
    if not urlsplit(here).scheme:
        return link
    base = here.split("?", 1)[0].rstrip("/")
    if base.endswith("/learn"):  # this page's own path: the lesson pages are its siblings
        base = base[: -len("/learn")]
    return urljoin(base + "/", link)


def _open_lesson(lesson) -> None:
    st.session_state.pop(PAGE_URL_STATE.get(lesson.page, ""), None)  # the target page applies it afresh
    st.switch_page(lesson.page_path, query_params={urlstate.LESSON_KEY: lesson.key})


def _lesson_gpu_model(lesson) -> str:
    """The GPU shelf model this machine's lesson link uses ("" on a CPU, or when nothing fits)."""
    try:
        entry = lesson.preset_and_gpu_model()[1]
    except Exception:  # the card is a hint: a failed probe must not cost the page
        return ""
    return entry.label.split(" (")[0] if entry else ""


def lessons_section() -> None:
    try:
        found = list(lessons.all_lessons().values())
    except Exception as exc:  # a broken lessons file must not hide the page
        show_error(exc)
        return
    st.subheader("Lessons for a class")
    st.caption("Each opens its page with the settings already chosen and a short guide. The address bar then "
               "holds the whole setup: copy it and share it with the class.")
    cols = st.columns(len(found) or 1)
    for col, lesson in zip(cols, found):
        with col.container(border=True):
            st.markdown(f"**{lesson.title}**")
            st.caption(lesson.summary)
            if st.button("Open lesson", key=f"learn_lesson_{lesson.key}", type="primary"):
                _open_lesson(lesson)
            st.caption(f"Link: `{_full_link(lesson.url)}`")
            gpu_model = _lesson_gpu_model(lesson) if gpu_probe_allowed() else ""
            if gpu_model:
                st.caption(f"On this GPU: {gpu_model}, scaled up (more data, longer inputs, larger batches).")


def load_url() -> dict:
    """Seed the calculator's widgets: from the URL on the session's first view, else from before."""
    saved = st.session_state.setdefault(SAVED_KEY, {})
    fresh: dict = {}
    if not st.session_state.get(URL_LOADED_KEY):
        st.session_state[URL_LOADED_KEY] = True
        fresh, warnings = urlstate.decode_learn(query_params(), {"model": list(estimate.list_models()),
                                                                 "method": list(learn_method_labels())})
        for text in warnings:
            st.warning(f"This link could not be used in full: {md_text(text)}.")  # a link anyone can craft
        saved.update(fresh)
    for url_key, (state_key, default, _) in urlstate.LEARN_FIELDS.items():
        if state_key in st.session_state:
            continue
        value = saved.get(url_key)
        if value is None and url_key in ("model", "module", "tg", "layer"):
            continue  # the page picks these from the model below
        value = default if value is None else value
        if url_key == "tm":
            value = TARGET_MODES[URL_TARGET_MODES.index(value)] if value in URL_TARGET_MODES else TARGET_MODES[0]
        st.session_state[state_key] = value
    return fresh


def write_url(implied: dict | None = None) -> None:
    """The calculator's values into the address bar; `implied` values (what the page picks by
    itself for this model) are left out to keep the link short."""
    values = {}
    for url_key, (state_key, _, _) in urlstate.LEARN_FIELDS.items():
        if state_key not in st.session_state:
            continue
        value = st.session_state[state_key]
        if url_key == "tm":
            value = URL_TARGET_MODES[TARGET_MODES.index(value)] if value in TARGET_MODES else "default"
        values[url_key] = value
    st.session_state[SAVED_KEY] = values
    shown = {k: v for k, v in values.items() if (implied or {}).get(k, object()) != v}
    sync_query_params(urlstate.encode_learn(shown))
