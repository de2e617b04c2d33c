"""streamlit#4247 in a test: a keyed widget must tell the browser its value as its own default.

When the script run that seeded a widget's session_state key is interrupted by the next click, the
browser (re)creates the widget from its proto's default and sends that back at the next
interaction. A widget seeded through session_state alone has its minimum (or first option) there,
so the visitor's value silently fell to it. `defaults_that_differ` lists every such widget."""
from __future__ import annotations

from streamlit.testing.v1 import AppTest

KINDS = ("slider", "select_slider", "selectbox", "radio", "multiselect", "checkbox", "number_input")


def _shown(w, kind: str) -> list:
    if kind in ("selectbox", "radio"):
        return [w.index]
    if kind == "multiselect":
        return list(w.indices)
    if kind == "select_slider":  # the default indexes the formatted options
        return [str(w.format_func(w.value))]
    return [w.value]


def _default(w, kind: str) -> list:
    if kind == "select_slider":
        return [w.options[int(i)] for i in w.proto.default]
    if kind in ("slider", "multiselect"):
        return list(w.proto.default)
    return [w.proto.default]


def checked_widgets(at: AppTest, prefixes: tuple[str, ...]) -> dict[str, tuple[list, list]]:
    """{key: (proto default, value shown)} for every widget whose key starts with one of `prefixes`."""
    out = {}
    for kind in KINDS:
        for w in getattr(at, kind):
            if (w.key or "").startswith(prefixes):
                out[w.key] = (_default(w, kind), _shown(w, kind))
    return out


def defaults_that_differ(at: AppTest, prefixes: tuple[str, ...]) -> dict[str, tuple[list, list]]:
    return {k: v for k, v in checked_widgets(at, prefixes).items() if v[0] != v[1]}
