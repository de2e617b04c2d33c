"""Compare for instruction-tuned runs: one prompt, the base and the tuned model answering side by side."""
from __future__ import annotations

import contextlib
import time

import streamlit as st

from core import chat_gate, limits
from core.chat_stream import CHAT_MAX_NEW_TOKENS, SENTENCE_STOP_AFTER, SHORT_ANSWERS
from core.textsafe import md_text
from pages.shared.compare_examples import PANES, PENDING_KEY, is_facts_data, set_pending, short, shown_examples
from pages.shared.formatting import error_text, md_escape, show_error
from pages.shared.session import owner_id

CHATS_KEY = "_compare_chats"       # run id -> {"base": [messages], "tuned": [messages]}
HISTORY_MESSAGES = 6               # earlier messages sent as context: 3 turns keep small models on track
# Why an answer ended before the model said it was done (core.chat_stream.Ending's reasons): said
# under the answer, so a class never takes a cut answer for the model's whole reply.
END_NOTES = {"limit": "_(cut here: the answer reached the “Max new tokens” limit; raise it to read on)_",
             "sentence": "_(stopped at the end of a sentence: “Short answers” is on; switch it off to read on)_"}
NO_ANSWER = "_(no answer: the model stopped at once)_"
NOTICES_KEY = "_compare_notices"   # sends the server refused: shown until the next answer
SUPERSEDED = "_(stopped: a newer message replaced this one before it was answered)_"
PANES_BY_NAME = {pane: tuned for pane, tuned, *_ in PANES}  # pane -> tuned view or not
REDRAW_SECONDS = 0.1               # a streamed answer redraws at most this often (first words at once)


class _InertText:
    """Model output as inert markdown, a chunk at a time: a model tuned on someone's data may answer
    with a markdown image or link. Trailing letters wait for the next chunk, so 'www' is never split
    between two chunks and escaped on neither."""

    def __init__(self):
        self.held = ""

    def feed(self, chunk: str) -> str:
        text = self.held + chunk
        cut = len(text.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"))
        self.held = text[cut:]
        return md_text(text[:cut], max_len=None, multiline=True) if cut else ""

    def flush(self) -> str:
        held, self.held = self.held, ""
        return md_text(held, max_len=None, multiline=True) if held else ""


def _general_question() -> str | None:
    from core import data
    try:
        questions = data.builtin_general_questions()
    except (ValueError, OSError):
        return None
    return questions[0]["prompt"] if questions else None


# ------------------------------------------------------------------------------------ chat (sft)

def chat(model, info) -> None:
    chats = st.session_state.setdefault(CHATS_KEY, {})
    chat_state = chats.setdefault(info.id, {"base": [], "tuned": []})

    s1, s2, s3, s4 = st.columns([2, 2, 1.2, 1.2])
    max_new = s1.slider("Max new tokens", 8, 512, CHAT_MAX_NEW_TOKENS, step=8, key="cmp_max_new",
                        help="How long an answer may get. Small CPUs: keep it short.")
    temperature = s2.slider("Temperature", 0.0, 1.5, 0.0, step=0.1, key="cmp_temp",
                            help="0 = greedy: the most likely token every time, so the class sees the same "
                                 "answer twice. Higher = more varied answers.")
    # The facts (hallucination) lesson asks paraphrases one after another: with the previous exchange
    # in its context the tuned model copied a wrong answer forward (issue 23). Each question fresh.
    facts = is_facts_data(str((info.config.get("data") or {}).get("source", "")))
    remember = s3.toggle("Remember chat", value=not facts, key="cmp_remember",
                         help=f"Send up to the last {HISTORY_MESSAGES} messages of each pane as context.")
    short_answers = s4.toggle("Short answers", value=SHORT_ANSWERS, key="cmp_short",
                      help=f"End an answer at the first sentence end after {SENTENCE_STOP_AFTER} tokens: the "
                           "made-up facts are in the first sentence or two, and the class reads them sooner. "
                           "Off: an answer runs to its end or to Max new tokens.")

    seed = int((info.config.get("train") or {}).get("seed", 42))
    examples = shown_examples(info, "sft", seed)
    general = _general_question()
    if examples or general:
        if not examples:  # e.g. another session's upload: its rows are not ours to show
            st.caption("Try one: a general question (a run's uploaded data is shown only to the session "
                       "that started it).")
        else:
            st.caption("Try one: questions from the run's own data"
                       + (" (held-out rephrasings — watch the base model make things up)"
                          if facts else "")
                       + ", and a general question to check that nothing else broke.")
        buttons = examples + ([general] if general else [])
        cols = st.columns(len(buttons))
        for i, (col, text) in enumerate(zip(cols, buttons)):
            # A button label renders markdown: an image in a row would load in this visitor's browser.
            label = ("General: " if text == general and i == len(buttons) - 1 else "") + md_text(short(text, 70))
            col.button(label, key=f"cmp_ex_{i}", on_click=set_pending, args=(text,), width="stretch")

    with st.form("cmp_form", clear_on_submit=True):
        typed = st.text_input("Prompt", key="cmp_prompt", placeholder="Ask both models the same question…",
                              max_chars=limits.max_prompt_chars())
        sent = st.form_submit_button("Send", key="cmp_send", type="primary")
    prompt = typed.strip() if sent and typed and typed.strip() else st.session_state.pop(PENDING_KEY, None)
    if sent and not (typed or "").strip():
        st.warning("The prompt is empty: type a question, then press Send.")

    if prompt:
        prompt = _admit(model, prompt, [_history(chat_state[p], remember) for p, *_ in PANES])
    for notice in st.session_state.get(NOTICES_KEY, []):
        st.warning(notice)

    panes = st.columns(2)
    for col, (pane, _, title, sub) in zip(panes, PANES):
        with col:
            st.subheader(title)
            st.caption(sub)
            for msg in chat_state[pane]:
                with st.chat_message(msg["role"]):
                    st.markdown(_shown(msg["content"]))

    if prompt:
        # One answer in flight per session: this send cancels the one before it (whose script run
        # Streamlit has replaced with this one), and a closed tab cancels it too (its generator closes).
        cancel = chat_gate.begin(owner_id())
        try:
            histories = {pane: _history(chat_state[pane], remember) for pane, *_ in PANES}
            _answer_panes(model, chat_state, prompt, histories, dict(zip(PANES_BY_NAME, panes)), max_new,
                          temperature, cancel, short_answers)
        finally:
            chat_gate.end(owner_id(), cancel)

    if any(chat_state.values()):
        if st.button("Clear both chats", key="cmp_clear"):
            chats[info.id] = {"base": [], "tuned": []}
            st.rerun()


def _history(messages: list[dict], remember: bool) -> list[dict]:
    """What a pane sends the model as context: its last messages, without the page's end notes."""
    if not remember:
        return []
    kept = []
    for msg in messages[-HISTORY_MESSAGES:]:
        for note in END_NOTES.values():
            if msg["role"] == "assistant" and msg["content"].endswith("\n\n" + note):
                msg = {**msg, "content": msg["content"][: -len(note) - 2]}
        kept.append(msg)
    return kept


def _admit(model, prompt: str, histories: list[list]) -> str | None:
    """The prompt if this server will answer it now; else None, with the reason kept on screen."""
    notices = st.session_state.setdefault(NOTICES_KEY, [])
    try:
        for history in histories:  # the longer history decides whether the token cap holds
            model.check_prompt(prompt, history)
        chat_gate.check_rate(owner_id())
    except Exception as exc:
        notices.append(f"Not sent: “{md_escape(short(prompt, 60))}” — {error_text(exc)}")
        del notices[:-3]
        return None
    notices.clear()
    return prompt


def _not_answered(exc: BaseException) -> str:
    return f"_(not answered: {md_escape(error_text(exc))})_"


def _shown(content: str) -> str:
    """A chat message as markdown: the model's or visitor's text escaped; the page's own notes
    (NO_ANSWER, SUPERSEDED, not answered), which end the text, keep their italics."""
    for note in (SUPERSEDED, NO_ANSWER, *END_NOTES.values()):
        if content.endswith(note):
            body = content[: -len(note)].strip()
            return (md_text(body, max_len=None, multiline=True) + "\n\n" if body else "") + note
    if content.startswith("_(not answered: ") and content.endswith(")_"):
        return content  # built by _not_answered from an escaped error text
    return md_text(content, max_len=None, multiline=True) or NO_ANSWER


def _answer_panes(model, chat_state: dict, prompt: str, histories: dict, columns: dict, max_new: int,
                  temperature: float, cancel, short_answers: bool = SHORT_ANSWERS) -> None:
    """Stream both panes' answers (at once where core.infer can: side by side in two threads, or in
    one batch; else one pane after the other) and record them; a failed or superseded answer is recorded as
    such. A pane redraws at most every REDRAW_SECONDS: each redraw is a websocket message and a
    markdown render of the whole answer so far, on the CPU the model needs."""
    boxes, raw, shown, inert, drawn, endings = {}, {}, {}, {}, {}, {}
    answers: dict[str, str | None] = {pane: None for pane in columns}
    try:
        for pane, col in columns.items():
            with col:
                with st.chat_message("user"):
                    st.markdown(md_text(prompt, max_len=None, multiline=True))
                with st.chat_message("assistant"):
                    boxes[pane] = st.empty()
            raw[pane], shown[pane], inert[pane], drawn[pane] = [], "", _InertText(), None
        stream = model.generate_views_stream(prompt, histories, {p: PANES_BY_NAME[p] for p in columns},
                                             max_new_tokens=max_new, temperature=temperature, cancel=cancel,
                                             short=short_answers, endings=endings)
        try:
            with contextlib.closing(stream):
                for pane, piece in stream:
                    if piece is None:  # this pane's answer is complete
                        answers[pane] = _finish(boxes[pane], raw[pane], shown[pane] + inert[pane].flush(), cancel,
                                                END_NOTES.get(endings.get(pane)))
                        continue
                    raw[pane].append(piece)
                    shown[pane] += inert[pane].feed(piece)
                    now = time.monotonic()
                    last = drawn[pane]
                    # The first words go out at once; then at most one redraw per REDRAW_SECONDS.
                    if shown[pane].strip() and (last is None or now - last >= REDRAW_SECONDS):
                        boxes[pane].markdown(shown[pane])
                        drawn[pane] = now
        except Exception as exc:  # the model call must never show a traceback
            for pane in columns:
                if answers[pane] is None:
                    with boxes[pane].container():
                        if shown[pane].strip():
                            st.markdown(shown[pane])
                        show_error(exc)
                        st.caption("Try a shorter prompt or fewer new tokens, or clear the chat.")
                    answers[pane] = _not_answered(exc)
            return
        for pane in columns:  # a newer send took the model before it started: nothing was said
            if answers[pane] is None:
                answers[pane] = _finish(boxes[pane], raw[pane], shown[pane] + inert[pane].flush(), cancel)
    finally:
        # Also when Streamlit stops this script run mid-answer (a newer send): never dropped silently.
        for pane in columns:
            chat_state[pane] += [{"role": "user", "content": prompt},
                                 {"role": "assistant", "content": SUPERSEDED if answers[pane] is None
                                  else answers[pane]}]


def _finish(box, raw: list[str], shown: str, cancel, note: str | None = None) -> str:
    """Draw a pane's whole answer and `note` (why it ended early) under it; what the pane records
    (the text as generated, and the note, which `_history` keeps from the model)."""
    answer = "".join(raw).strip()
    if note and answer and not cancel.is_set():
        answer, shown = f"{answer}\n\n{note}", f"{shown.strip()}\n\n{note}"
    if cancel.is_set():
        answer = (answer + "\n\n" if answer else "") + SUPERSEDED
        shown = (shown.strip() + "\n\n" if shown.strip() else "") + SUPERSEDED
    box.markdown(shown if shown.strip() else NO_ANSWER)
    return answer
