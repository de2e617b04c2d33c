"""Everything an AppTest page sends to the browser, as one string (labels, help, values, chart specs)."""
from __future__ import annotations


def _walk(node, out: list[str]) -> None:
    proto = getattr(node, "proto", None)
    if proto is not None:
        out.append(str(proto))
    children = getattr(node, "children", None) or {}
    for child in (children.values() if isinstance(children, dict) else children):
        _walk(child, out)


def page_text(at) -> str:
    out: list[str] = []
    _walk(at._tree, out)
    return "\n".join(out)
