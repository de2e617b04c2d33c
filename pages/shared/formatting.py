"""Plain words for errors, run labels, user text made inert for markdown, and units."""
from __future__ import annotations

import datetime as _dt
import math
import os
from typing import Any

import streamlit as st

from core.config import ConfigError
from core.textsafe import md_text


# -------------------------------------------------------------------------------------- errors

def error_text(exc: BaseException) -> str:
    """Plain words for any exception: a ConfigError as is, anything else via explain_failure."""
    if isinstance(exc, ConfigError):
        return str(exc)
    from core.cli import explain_failure
    message, hint = explain_failure(exc)
    return f"{message} — {hint}" if hint else message


def show_error(exc: BaseException) -> None:
    """st.error with a message a user can act on; never a traceback."""
    st.error(error_text(exc))


# -------------------------------------------------------------------------------------- labels

def run_label(info: Any) -> str:
    """'name · method on model · state · 14:03' for a RunInfo (or a snapshot dict)."""
    if isinstance(info, dict):
        name, state = info.get("name") or info.get("id", "?"), info.get("state", "")
        status, config, created = info, {}, info.get("created")
    else:
        name, state = info.name, info.state
        status, config, created = info.status or {}, info.config or {}, info.created
    method = status.get("method") or (config.get("method") or {}).get("name", "")
    model = status.get("model") or (config.get("model") or {}).get("name", "")
    parts = [str(name)]
    if method or model:
        parts.append(f"{method or '?'} on {short_path(model)}")
    if state:
        parts.append(state)
    if created:
        try:
            parts.append(_dt.datetime.fromtimestamp(float(created)).strftime("%d %b %H:%M"))
        except (TypeError, ValueError, OSError):
            pass
    return " · ".join(parts)


def md_escape(text: Any) -> str:
    """User text (run names, file names) shown inside st.markdown without turning into links or bold.

    core.textsafe.md_text does the work (also for core's messages); this name stays for the pages."""
    return md_text(text, max_len=None)


# --------------------------------------------------------------------------------------- units

def fmt_params(n: Any) -> str:
    if not isinstance(n, (int, float)) or (isinstance(n, float) and not math.isfinite(n)):
        return "—"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g}{unit}"
    return f"{int(n)}"


def fmt_bytes(n: Any) -> str:
    if not isinstance(n, (int, float)) or (isinstance(n, float) and not math.isfinite(n)):
        return "—"
    for unit, size in (("GB", 1024 ** 3), ("MB", 1024 ** 2), ("KB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def fmt_seconds(s: Any) -> str:
    if not isinstance(s, (int, float)) or (isinstance(s, float) and not math.isfinite(s)) or s < 0:
        return "—"
    if s < 60:
        return f"{s:.0f} s" if s >= 10 else f"{s:.1f} s"
    minutes, sec = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes} min {sec:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def finite_or_none(value):
    """A number that can be shown and plotted, or None (a bool, NaN, inf or text is None)."""
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def short_path(value) -> str:
    # A server path says little to a class and more than needed to a visitor: keep its last part.
    text = str(value or "?").rstrip("/\\")
    return os.path.basename(text) if os.path.isabs(text) or text.startswith((".", "~")) else text


def compute_note(summary: dict) -> str | None:
    """Where and how the run computed, e.g. "cpu, 2 threads, bf16 mixed precision"."""
    parts = [str(summary["device"])] if summary.get("device") else []
    if isinstance(summary.get("threads"), int) and not str(summary.get("device", "")).startswith("cuda"):
        parts.append(f"{summary['threads']} thread{'s' if summary['threads'] != 1 else ''}")
    if summary.get("precision"):
        parts.append(f"{summary['precision']} precision")
    return ", ".join(parts) or None

