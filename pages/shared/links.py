"""The address bar (shareable state) and a lesson's info box."""
from __future__ import annotations

import streamlit as st

from pages import present


def query_params() -> dict[str, str]:
    """The page's query string as a plain dict."""
    from core import urlstate
    return urlstate.query_dict(st.query_params)


def sync_query_params(values: dict[str, str]) -> None:
    """Make the URL hold exactly `values` (only when it differs: every write is a browser history step)."""
    values = {str(k): str(v) for k, v in values.items()}
    values.update(present.url_params())  # a copied link presents the way the room sees it
    if query_params() != values:
        st.query_params.from_dict(values)


def lesson_box(lesson, where: str = "", facts: dict[str, str] | None = None) -> None:
    """The lesson's guidance and what to notice, in an info box at the top of its page; `facts`
    fills the text's number slots from what the page shows (core.lessons.fill)."""
    from core.lessons import fill
    text = f"**Lesson: {lesson.title}**\n\n" + fill(" ".join(lesson.guidance), facts)
    if where:
        text += f"\n\n{where}"
    text += f"\n\n**What to notice:** {fill(lesson.notice, facts)}"
    st.info(text, icon=":material/school:")  # an emoji showed as an empty box where the font lacks it
