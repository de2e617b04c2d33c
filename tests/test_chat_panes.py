"""The Compare chat's two panes fed by one stream (pages/shared/chat.py `_answer_panes`, under AppTest
with a fake model): what each pane shows and records when the answer is superseded, fails or holds
markup, and how often a pane redraws while the words stream in."""
from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.test_display_safety import md_is_inert


def _script():
    import threading
    import time

    import streamlit as st
    from streamlit.delta_generator import DeltaGenerator

    from pages.shared import chat

    scenario = st.session_state["scenario"]

    class FakeModel:
        def generate_views_stream(self, prompt, histories, views, max_new_tokens, temperature, cancel,
                                  short, endings):
            st.session_state["asked"] = {"histories": histories, "views": views, "prompt": prompt, "short": short}
            if scenario == "ended":  # the base pane cut by the token limit, the tuned one said its end
                yield "base", "Words and more words"
                endings["base"] = "limit"
                yield "base", None
                yield "tuned", "A short answer."
                endings["tuned"] = None
                yield "tuned", None
            elif scenario == "sentence":
                yield "base", "One whole sentence."
                endings["base"] = "sentence"
                yield "base", None
                yield "tuned", "Another."
                endings["tuned"] = "sentence"
                yield "tuned", None
            elif scenario == "cancel":
                yield "base", "The base model "
                yield "tuned", "The tuned model "
                cancel.set()  # a newer send from the same session, mid-answer
                yield "base", None
                yield "tuned", None
            elif scenario == "escape":
                for piece in ("Look: ![pixel](http://evil.example/p.png) and ww", "w.evil.example ", "now"):
                    yield "tuned", piece
                yield "base", "plain words"
                yield "base", None
                yield "tuned", None
            elif scenario == "error":
                yield "base", "A whole answer."
                yield "base", None
                yield "tuned", "Half an"
                raise RuntimeError("the model ran out of memory")
            else:  # many: 40 words per pane, 10 ms apart
                for i in range(40):
                    yield "base", f"b{i} "
                    yield "tuned", f"t{i} "
                    time.sleep(0.01)
                yield "base", None
                yield "tuned", None

    drawn = st.session_state.setdefault("drawn", [])
    markdown = DeltaGenerator.markdown

    def counting(self, body, *a, **kw):
        drawn.append(str(body))
        return markdown(self, body, *a, **kw)

    DeltaGenerator.markdown = counting
    try:
        chats = st.session_state.setdefault("chats", {"base": [], "tuned": []})
        chat._answer_panes(FakeModel(), chats, "What now?", {"base": [], "tuned": []},
                           dict(zip(("base", "tuned"), st.columns(2))), 64, 0.0, threading.Event())
    finally:
        DeltaGenerator.markdown = markdown


def _run(scenario: str) -> AppTest:
    at = AppTest.from_function(_script, default_timeout=30)
    at.session_state["scenario"] = scenario
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _shown(at: AppTest) -> list[str]:
    """Each pane's assistant message, as rendered markdown, left to right."""
    return [" ".join(md.value for m in col.get("chat_message") if m.name == "assistant" for md in m.markdown)
            for col in at.columns]


def test_a_cancel_mid_answer_records_superseded_in_both_panes():
    from pages.shared.chat import SUPERSEDED
    at = _run("cancel")
    chats = at.session_state["chats"]
    assert chats["base"][-1]["content"] == "The base model\n\n" + SUPERSEDED
    assert chats["tuned"][-1]["content"] == "The tuned model\n\n" + SUPERSEDED
    assert all(c[-2] == {"role": "user", "content": "What now?"} for c in chats.values())
    assert all(text.endswith(SUPERSEDED) for text in _shown(at))
    assert at.session_state["asked"]["views"] == {"base": False, "tuned": True}


def test_an_answer_with_markup_stays_inert():
    at = _run("escape")
    base, tuned = _shown(at)
    assert base == "plain words"
    assert "pixel" in tuned and "evil" in tuned and tuned.rstrip().endswith("now")
    assert md_is_inert(tuned) == [], tuned
    assert all(md_is_inert(body) == [] for body in at.session_state["drawn"]), at.session_state["drawn"]
    # what goes back to the model as history is the text as generated
    assert at.session_state["chats"]["tuned"][-1]["content"] == (
        "Look: ![pixel](http://evil.example/p.png) and www.evil.example now")


def test_a_failure_keeps_the_finished_pane_and_says_why_in_the_other():
    at = _run("error")
    chats = at.session_state["chats"]
    assert chats["base"][-1]["content"] == "A whole answer."
    assert chats["tuned"][-1]["content"].startswith("_(not answered: ")
    assert "out of memory" in chats["tuned"][-1]["content"]
    assert [e.value for e in at.error] and "out of memory" in at.error[0].value
    assert _shown(at)[0].startswith("A whole answer") and "out of memory" not in _shown(at)[0]


def test_a_pane_redraws_a_few_times_not_once_a_word():
    at = _run("many")
    drawn = at.session_state["drawn"]
    tuned = [d for d in drawn if d.startswith("t0")]
    assert tuned[0].strip() == "t0", "the first words go out at once"
    assert tuned[-1].rstrip().endswith("t39")
    assert 2 <= len(tuned) <= 10, len(tuned)  # ~0.45 s of words at one redraw per 0.1 s, plus the end
    assert [t.strip() for t in _shown(at)] == [" ".join(f"{p}{i}" for i in range(40)) for p in "bt"]


@pytest.mark.parametrize("chunks", [["www", ".evil.example"], ["w", "ww.evil", ".example x"]])
def test_www_is_never_split_between_two_chunks(chunks):
    from pages.shared.chat import _InertText
    inert = _InertText()
    shown = "".join(inert.feed(c) for c in chunks) + inert.flush()
    assert md_is_inert(shown) == [] and "evil" in shown


def test_an_answer_cut_by_the_token_limit_says_so_and_no_other_does():
    from pages.shared.chat import END_NOTES
    at = _run("ended")
    base, tuned = _shown(at)
    assert "Max new tokens" in base and base.startswith("Words and more words")
    assert "Max new tokens" not in tuned and "Short answers" not in tuned and tuned.startswith("A short answer")
    chats = at.session_state["chats"]
    assert chats["base"][-1]["content"] == "Words and more words\n\n" + END_NOTES["limit"]
    assert chats["tuned"][-1]["content"] == "A short answer."


def test_an_answer_stopped_at_a_sentence_end_says_so():
    from pages.shared.chat import END_NOTES
    at = _run("sentence")
    assert all("Short answers" in text for text in _shown(at)), _shown(at)
    assert at.session_state["chats"]["tuned"][-1]["content"] == "Another.\n\n" + END_NOTES["sentence"]
    assert at.session_state["asked"]["short"] is True  # the shipped default


def test_the_end_notes_are_not_sent_back_to_the_model():
    from pages.shared.chat import END_NOTES, _history
    said = [{"role": "user", "content": "Q?"},
            {"role": "assistant", "content": "Words\n\n" + END_NOTES["limit"]},
            {"role": "user", "content": "And?"},
            {"role": "assistant", "content": "One.\n\n" + END_NOTES["sentence"]}]
    assert [m["content"] for m in _history(said, True)] == ["Q?", "Words", "And?", "One."]
    assert said[1]["content"].endswith(END_NOTES["limit"])  # the page's record keeps the note
    assert _history(said, False) == []


def test_a_recorded_end_note_is_redrawn_as_a_note_after_the_escaped_answer():
    from pages.shared.chat import END_NOTES, _shown
    drawn = _shown("*Words* [x](y)\n\n" + END_NOTES["limit"])
    assert drawn.endswith("\n\n" + END_NOTES["limit"]) and md_is_inert(drawn[: -len(END_NOTES["limit"])]) == []
