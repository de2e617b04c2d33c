"""Visitor text made inert for the place it is shown: markdown, Plotly labels, CSV cells.

One function per place, pure (no Streamlit, no pandas), so the pages and core share them without
an import cycle. A run name, a nickname, an uploaded row or a label is shown to *other* visitors:
whatever it holds must reach their screen as the characters typed, never as a link, an image, HTML,
a formula or styling.
"""
from __future__ import annotations

import re
from typing import Any

# U+2060 WORD JOINER: invisible, not a word character, not whitespace (so it breaks no line).
# Streamlit's markdown turns bare URLs, www. names and e-mail addresses into links *after* parsing,
# on the decoded text, so a backslash or an HTML entity in front of ':' does not stop it: the
# letters that make the pattern must themselves be kept apart.
JOINER = "\u2060"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
# Every ASCII punctuation character may be backslash-escaped in CommonMark; escaping all of them
# leaves no link, image, emphasis, heading, table, HTML tag, entity or $math$ syntax standing.
_MD_PUNCT = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")
_WWW = re.compile(r"(?i)\b(w)(ww)")
DEFAULT_MAX = 300


def _plain(text: Any, max_len: int | None) -> str:
    s = _CONTROL.sub(" ", "" if text is None else str(text))
    if max_len is not None and len(s) > max_len:
        s = s[: max_len - 1] + "…"
    return s


def md_text(text: Any, max_len: int | None = DEFAULT_MAX, multiline: bool = False) -> str:
    """Text for st.markdown, captions, button labels and messages: shown literally, one line.

    Newlines and control characters become spaces (a name must not start a heading or a list),
    every punctuation mark is backslash-escaped, and ':' '@' 'www' are split by an invisible
    joiner so no autolink (http://2130706433:8701/…, www.x, a@b.c), emoji code or Streamlit
    directive (:red[…], :material/…:) can form. `multiline` (a chat message) keeps the line
    breaks as markdown hard breaks.
    """
    if multiline:
        lines = str("" if text is None else text).replace("\r\n", "\n").split("\n")
        return "  \n".join(md_text(line, None) for line in lines)[: max_len or None]
    s = _plain(text, max_len)
    s = _WWW.sub(r"\1" + JOINER + r"\2", s)
    s = s.replace("@", JOINER + "@").replace(":", ":" + JOINER)
    return _MD_PUNCT.sub(r"\\\1", s)


def plotly_text(text: Any, max_len: int | None = 80) -> str:
    """Text for Plotly trace names, legend entries, axis categories, titles and hover labels.

    Plotly draws a subset of HTML in all of these (<a href>, <br>, <b>, <span style>, <img> is
    dropped but <a> is live); it decodes &lt; &gt; &amp; back to the characters, so escaping those
    three shows the text as typed.
    """
    s = _plain(text, max_len)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A spreadsheet reads a cell starting with one of these as a formula (=HYPERLINK(...), +cmd|...,
# -2+3, @SUM), tab and CR included (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A table cell that a visitor may download as CSV: a text starting like a formula gets a
    leading apostrophe (spreadsheets then show it as text); numbers and other values pass as is."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def csv_row(row: dict) -> dict:
    return {k: csv_cell(v) for k, v in row.items()}
