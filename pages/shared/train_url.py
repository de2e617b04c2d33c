"""Train's setup in the address bar (a shareable link, a lesson link) and the lesson header."""
from __future__ import annotations

import copy

import streamlit as st

from core import data as core_data
from core import estimate, lessons, presets, runs, urlstate
from core.config import RunConfig
from core.textsafe import md_text
from pages.shared.formatting import fmt_seconds
from pages.shared.estimate_card import estimate_method, model_config
from pages.shared.keys import JOB_KEY
from pages.shared.links import lesson_box, query_params, sync_query_params
from pages.shared.session import manager
from pages.shared.train_state import (
    LESSON_MODE_KEY,
    LESSON_MODE_SAVED,
    URL_WARNINGS_KEY,
    apply_preset,
    lesson_mode,
    train_draft,
    ui_state,
    url_state,
)


def _data_kind_for(source: str) -> str | None:
    if source.startswith("builtin:"):
        return "builtin"
    if source.startswith("hub:"):
        return "hub"
    return "local" if core_data.local_files_allowed() else None


def lesson_link() -> bool:
    """Whether the address names a lesson (whose preset is chosen by the hardware: core.gpu_shelf)."""
    return bool(urlstate.lesson_of(query_params()))


def load_url() -> None:
    """Read the query string into the draft: on the session's first view of the page, and whenever
    a different lesson link is opened. Afterwards the widgets lead and write_url follows them."""
    params = query_params()
    lesson_key = urlstate.lesson_of(params)
    state = url_state()
    if state["loaded"] and lesson_key == state["lesson"]:
        return
    warnings = []
    lesson = lessons.get(lesson_key) if lesson_key else None
    if lesson_key and (lesson is None or lesson.page != "train"):
        if lesson is not None:  # an experiments lesson opened on Train: send it where it belongs
            st.switch_page(lesson.page_path, query_params={urlstate.LESSON_KEY: lesson.key})
        warnings.append(f"the link names a lesson {lesson_key!r} that does not exist; showing the usual page")
        lesson_key, lesson = "", None
    base = (lesson.preset() if lesson else presets.app_defaults()).to_dict()
    cfg, problems = urlstate.decode(params, base)
    warnings += problems
    kind = _data_kind_for(cfg["data"]["source"])
    if kind is None:
        warnings.append("the link names a file on the server, and this server does not allow local files; "
                        "using the built-in dataset")
        cfg["data"]["source"] = base["data"]["source"]
        kind = _data_kind_for(base["data"]["source"]) or "builtin"
    if lesson or set(params) - set(urlstate.PAGE_KEYS):
        apply_preset(RunConfig.from_dict(cfg))
        for key in [k for k in st.session_state if isinstance(k, str) and k.startswith("tr_data_")]:
            del st.session_state[key]
        ui = ui_state()
        ui["data_kind"] = kind
        source = cfg["data"]["source"]
        if kind == "builtin":
            ui["builtin"] = source.removeprefix("builtin:")
        elif kind == "local":
            ui["local_path"] = source
    st.session_state[LESSON_MODE_KEY] = st.session_state[LESSON_MODE_SAVED] = urlstate.lesson_mode(params)
    state.update(loaded=True, lesson=lesson_key, base=base)
    if warnings:
        st.session_state[URL_WARNINGS_KEY] = warnings


def lesson_header() -> None:
    """Bad-link warnings, the lesson's info box and the lesson-mode toggle."""
    for text in st.session_state.pop(URL_WARNINGS_KEY, []):
        st.warning(f"This link could not be used in full: {md_text(text)}.")
    state = url_state()
    lesson = lessons.get(state["lesson"]) if state["lesson"] else None
    if lesson is not None:
        then = ("When the run has finished, press **Compare base vs tuned** below the result."
                if lesson.then == "compare" else "")
        lesson_box(lesson, " ".join(t for t in (_gpu_lesson_note(lesson), then) if t),
                   {**_lesson_facts(), **_lesson_time(lesson)})
    if LESSON_MODE_KEY not in st.session_state:  # back from another page: the widget forgot it
        st.session_state[LESSON_MODE_KEY] = bool(st.session_state.get(LESSON_MODE_SAVED))
    st.session_state[LESSON_MODE_SAVED] = st.toggle(
        "Lesson mode", key=LESSON_MODE_KEY,
        help="Hide the advanced controls, so a class sees only what the lesson is about. The setting is part "
             "of the link (lesson=1): copy the address bar to share this exact setup.")


def _gpu_lesson_note(lesson) -> str:
    """On a GPU: which shelf model the lesson trains instead of the embedded one (core.gpu_shelf)."""
    try:
        return lesson.hardware_note()
    except Exception:  # a failed GPU probe leaves the lesson as written
        return ""


def _lesson_time(lesson) -> dict[str, str]:
    """{"run_time": ...} from the completed runs of this lesson's preset on this server, if any."""
    try:
        measured = lessons.measured_seconds(lesson.preset(), runs.list_runs())
    except Exception:  # an unreadable runs folder: the lesson's own words stand
        return {}
    if measured is None:
        return {}
    seconds, n = measured
    return {"run_time": f"about {fmt_seconds(seconds)} on this server (the median of {n} earlier "
                        f"run{'s' if n != 1 else ''} of this lesson here)"}


def _lesson_facts() -> dict[str, str]:
    """The numbers a lesson's text names (core.lessons.fill): from this session's finished run, else
    from the estimate for the setup on screen, so the text agrees with the cards below it."""
    percent = None
    job_id = st.session_state.get(JOB_KEY)
    if job_id:
        try:
            percent = (manager().snapshot(job_id, events=False).get("summary") or {}).get("trainable_percent")
        except Exception:  # deleted or unreadable: the estimate below still answers
            percent = None
    if not isinstance(percent, (int, float)):
        try:
            cfg = RunConfig.from_dict(copy.deepcopy(train_draft()))
            model_cfg, _ = model_config(cfg.model.name)
            method, kwargs = estimate_method(cfg)
            percent = estimate.report(model_cfg, method, task=cfg.data.task, **kwargs)["percent"] if model_cfg else None
        except Exception:  # no estimate for this model: the lesson's own words stand
            return {}
    return {"trainable_percent": f"{percent:.3g} %"} if isinstance(percent, (int, float)) else {}


def write_url(draft: dict) -> None:
    """Put the current choices in the address bar: what differs from the lesson's (or app's) preset."""
    state = url_state()
    if state["lesson"] and not lesson_mode():
        # Leaving lesson mode leaves the lesson: the link now describes the setup on its own.
        state["lesson"] = ""
        state["base"] = None
    base = state.get("base") or presets.app_defaults().to_dict()
    try:
        params = urlstate.encode(draft, base)
    except Exception:  # a half-edited draft must never cost the page
        return
    if state["lesson"]:
        params[urlstate.LESSON_KEY] = state["lesson"]
    elif lesson_mode():
        params[urlstate.LESSON_KEY] = "1"
    sync_query_params(params)
