"""Helpers every page shares: session identity, the job manager, errors, labels, charts, units.

No torch here: pages import this module on every rerun, so it must stay cheap.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import threading
import uuid
from collections.abc import Iterable
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from core.config import ConfigError

def _leave_legacy_multipage_mode() -> None:
    """Make app.py route every request, even the first one after a server start.

    Streamlit still supports its old multipage mode: while a `pages/` folder sits next to the main
    script and no script has called st.navigation yet, a request for /train runs pages/train.py
    directly, skipping app.py (no page config, no shared sidebar, and every file in pages/, this one
    included, listed as a page). Every page imports this module, so the first such request lands
    here: turn the old mode off and rerun, which goes through app.py's st.navigation.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # a Streamlit without the old mode
        return
    if getattr(PagesManager, "uses_pages_directory", None):
        PagesManager.uses_pages_directory = False
        if get_script_run_ctx() is not None:
            st.rerun()


_leave_legacy_multipage_mode()

_OWNER_KEY = "_playground_owner_id"
ADMIN_TOKEN_KEY = "_playground_admin_token"  # the sidebar text_input's widget key


# ------------------------------------------------------------------------------------ identity

def owner_id() -> str:
    """A random id per browser session: it owns the runs this session submits."""
    if _OWNER_KEY not in st.session_state:
        st.session_state[_OWNER_KEY] = uuid.uuid4().hex
    return st.session_state[_OWNER_KEY]


def manager():
    """The process-wide job manager."""
    # Set before the first training thread starts: train.default_threads leaves a core to the
    # Streamlit server when it knows it runs inside the app, so pages stay responsive.
    os.environ["PLAYGROUND_IN_APP"] = "1"
    from core import jobs
    return jobs.get_manager()


@st.cache_resource(show_spinner=False)
def device_info() -> dict:
    """core.models.device_summary(), once per server: it imports torch and probes the hardware."""
    from core.models import device_summary
    return device_summary()


@st.cache_resource(show_spinner=False)
def warm_up() -> threading.Thread:
    """Import torch, transformers and peft (via the method registry) in the background, once.

    That takes several seconds; app.py starts it on the first page view so the Train page is quick.
    Call wait_for_warm_up() before importing them yourself: two threads importing the same big
    package at once can see it half-initialised.
    """
    def load() -> None:
        try:
            from core.methods import all_methods
            all_methods()
        except Exception:  # the page that needs them will report the problem itself
            pass
    thread = threading.Thread(target=load, name="playground-warm-up", daemon=True)
    thread.start()
    return thread


def wait_for_warm_up() -> None:
    warm_up().join()


def is_admin() -> bool:
    from core import jobs
    token = st.session_state.get(ADMIN_TOKEN_KEY) or ""
    return jobs.is_admin(token)


# -------------------------------------------------------------------------------------- errors

def error_text(exc: BaseException) -> str:
    """Plain words for any exception: a ConfigError as is, anything else via explain_failure."""
    if isinstance(exc, ConfigError):
        return str(exc)
    from core import jobs
    message, hint = jobs.explain_failure(exc)
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
        parts.append(f"{method or '?'} on {_short_model(model)}")
    if state:
        parts.append(state)
    if created:
        try:
            parts.append(_dt.datetime.fromtimestamp(float(created)).strftime("%d %b %H:%M"))
        except (TypeError, ValueError, OSError):
            pass
    return " · ".join(parts)


def _short_model(model: str) -> str:
    # A local folder path is long and says little; its last part is what people recognise.
    text = str(model or "?").rstrip("/\\")
    looks_local = text.startswith((".", "/", "~")) or os.sep in text and os.path.isabs(text)
    return os.path.basename(text) or text if looks_local else text


def md_escape(text: Any) -> str:
    """User text (run names, file names) shown inside st.markdown without turning into links or bold."""
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$])", r"\\\1", str(text))


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


# -------------------------------------------------------------------------------------- charts

def _series(events: Iterable[dict], key: str, types: tuple[str, ...] | None = None) -> tuple[list, list]:
    xs, ys = [], []
    for ev in events or ():
        if types and ev.get("type") not in types:
            continue
        value = ev.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            xs.append(ev.get("step", len(xs)))
            ys.append(value)
    return xs, ys


def _figure(title: str, y_title: str, height: int = 260) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(title=dict(text=title, x=0.0), height=height, margin=dict(l=10, r=10, t=40, b=10),
                      xaxis_title="step", yaxis_title=y_title, showlegend=False)
    return fig


def _line(fig: go.Figure, xs: list, ys: list, name: str) -> go.Figure:
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 30 else "lines", name=name))
    return fig


def loss_chart(events: Iterable[dict]) -> go.Figure:
    """Training loss (and validation loss where known) against the step."""
    events = list(events or ())
    fig = _figure("Training loss", "loss")
    _line(fig, *_series(events, "loss", ("log",)), "training loss")
    vx, vy = _series(events, "eval_loss", ("eval",))
    if vx:
        _line(fig, vx, vy, "validation loss")
        fig.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.25))
    return fig


def metrics_charts(events: Iterable[dict]) -> dict[str, go.Figure]:
    """Figures keyed by the event key they plot: train_loss, eval_loss, eval_accuracy,
    eval_perplexity, learning_rate.

    Only series with at least one point are returned, so a page can lay out what exists.
    """
    events = list(events or ())
    out: dict[str, go.Figure] = {}
    tx, ty = _series(events, "loss", ("log",))
    if tx:
        out["train_loss"] = _line(_figure("Training loss", "loss"), tx, ty, "training loss")
    for key, title, y_title in (("eval_loss", "Validation loss", "loss"),
                                ("eval_accuracy", "Validation accuracy", "accuracy"),
                                ("eval_perplexity", "Validation perplexity", "perplexity"),
                                ("learning_rate", "Learning rate", "learning rate")):
        xs, ys = _series(events, key, ("log",) if key == "learning_rate" else ("eval",))
        if not xs:
            continue
        fig = _line(_figure(title, y_title), xs, ys, title)
        if key == "eval_accuracy":
            fig.update_yaxes(range=[0, 1.02])
        if key == "learning_rate":
            fig.update_yaxes(exponentformat="e")
        out[key] = fig
    return out
