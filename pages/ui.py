"""Helpers every page shares: session identity, the job manager, errors, labels, charts, units.

No torch here: pages import this module on every rerun, so it must stay cheap.
"""
from __future__ import annotations

import datetime as _dt
import math
import os
import re
import secrets
import threading
from collections.abc import Iterable
from typing import Any

# pandas in full before any chart: plotly peeks at sys.modules["pandas"] while drawing, and a
# first import of pandas by another session's thread at that moment (the Runs page, 30 first
# visits at once) hands it a half-initialised module: "pandas has no attribute 'Series'".
import pandas  # noqa: F401
import plotly.graph_objects as go
import streamlit as st

from core.config import ConfigError
from core.jobs import OPENMP_SPINCOUNT
from core.textsafe import md_text
from pages import present

# libgomp reads it once, when torch loads: set here, before any page imports torch.
os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)


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
        ctx = get_script_run_ctx()
        if ctx is None:
            return
        # Ask for the rerun without raising here (st.rerun() would): this import must finish.
        # Raised mid-import, the module left sys.modules half-built, and every session importing
        # it at that moment (30 first visits at once after a start) got an ImportError. The
        # runner raises the rerun at the page's next st.* call instead.
        try:
            from streamlit.runtime.scriptrunner_utils.script_requests import RerunData
            ctx.script_requests.request_rerun(RerunData(query_string=ctx.query_string,
                                                        page_script_hash=ctx.page_script_hash))
        except (ImportError, AttributeError, TypeError):  # a Streamlit whose internals moved
            st.rerun()


_leave_legacy_multipage_mode()

_OWNER_KEY = "_playground_owner_id"
ADMIN_TOKEN_KEY = "_playground_admin_token"  # the sidebar text_input's widget key
JOB_KEY = "_train_job"  # id of the latest run this session submitted: the Train page follows it live


# ------------------------------------------------------------------------------------ identity

OWNER_COOKIE = "peft_playground_owner"  # pages/classroom.py writes it; see owner_id()
_OWNER_TOKEN = re.compile(r"[0-9a-f]{48}")


def owner_id() -> str:
    """The owner token of this browser: it owns the runs submitted from any of its tabs.

    Kept in a cookie (pages/classroom.remember_owner writes it), so a reload, a new tab or a browser
    restart on the same machine keeps the runs; not in the URL, which people share (a copied link
    would hand over Stop and Delete). 192 random bits: unguessable. A cookie that does not look like
    one of ours is ignored (hostile input), and without cookies it is one token per session."""
    if _OWNER_KEY not in st.session_state:
        try:
            cookie = st.context.cookies.get(OWNER_COOKIE)
        except Exception:  # no request context (AppTest, a bare script run)
            cookie = None
        ok = isinstance(cookie, str) and _OWNER_TOKEN.fullmatch(cookie)
        st.session_state[_OWNER_KEY] = cookie if ok else secrets.token_hex(24)
    return st.session_state[_OWNER_KEY]


def manager():
    """The process-wide job manager. Each call also tells it this owner still has a page open
    (pages poll through here), so their queued runs are not dropped as abandoned."""
    from core import jobs
    mgr = jobs.get_manager()
    try:
        mgr.heartbeat(owner_id())
    except Exception:  # outside a script run there is no session: nothing to report
        pass
    return mgr


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


def _line(fig: go.Figure, xs: list, ys: list, name: str, color: str | None = None) -> go.Figure:
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers" if len(xs) < 30 else "lines", name=name,
                             line=dict(color=color) if color else None))
    return fig


def loss_chart(events: Iterable[dict]) -> go.Figure:
    """Training loss (and validation loss where known) against the step."""
    events = list(events or ())
    fig = _figure("Training loss", "loss")
    _line(fig, *_series(events, "loss", ("log",)), "training loss")
    vx, vy = _series(events, "eval_loss", ("eval",))
    if vx:
        # Streamlit's theme gives a second trace a paler shade of the first: a class at the back of
        # the room must tell at a glance which curve turns up when the model overfits.
        _line(fig, vx, vy, "validation loss", color="#e67e22")
        # Below the x-axis title: at y=-0.25 the legend sat on the word "step".
        fig.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.35, yanchor="top"))
    return fig


def metrics_charts(events: Iterable[dict]) -> dict[str, go.Figure]:
    """Figures keyed by the event key they plot: train_loss, eval_loss, eval_accuracy,
    eval_perplexity, learning_rate.

    Only series with at least one point are returned, so a page can lay out what exists. Once the
    training loss exists, validation loss is drawn on its chart (loss_chart), not on one of its own:
    overfitting shows at a glance, and a live page has one figure fewer to redraw (each costs
    Chromium ~0.1 CPU-s that a shared machine takes from training).
    """
    events = list(events or ())
    out: dict[str, go.Figure] = {}
    if _series(events, "loss", ("log",))[0]:
        out["train_loss"] = loss_chart(events)
    for key, title, y_title in (("eval_loss", "Validation loss", "loss"),
                                ("eval_accuracy", "Validation accuracy", "accuracy"),
                                ("eval_perplexity", "Validation perplexity", "perplexity"),
                                ("learning_rate", "Learning rate", "learning rate")):
        xs, ys = _series(events, key, ("log",) if key == "learning_rate" else ("eval",))
        if not xs or (key == "eval_loss" and "train_loss" in out):
            continue
        fig = _line(_figure(title, y_title), xs, ys, title)
        if key == "eval_accuracy":
            fig.update_yaxes(range=[0, 1.02])
        if key == "learning_rate":
            fig.update_yaxes(exponentformat="e")
        out[key] = fig
    for fig in out.values():
        _whole_steps(fig)
    return out


def _whole_steps(fig: go.Figure) -> None:
    """Steps are whole and never negative: one point at step 0 drew an axis from -1 to 1."""
    xs = [x for trace in fig.data for x in (trace.x or ()) if isinstance(x, (int, float))]
    if xs and max(xs) - min(xs) < 6:
        lo, hi = min(xs), max(xs)
        fig.update_xaxes(dtick=1, range=[max(lo - 0.5, -0.5) if lo >= 0 else lo - 0.5, hi + 0.5])



# ----------------------------------------------------------------------------- LoRA anatomy

ANATOMY_CAPTION = ("Each cell: how much LoRA changed that weight matrix relative to its size (‖ΔW‖ / ‖W‖, "
                   "with ΔW = (α/r)·B·A). The energy curve: how much of the change lives in the top 1, 2, … "
                   "directions (singular values of ΔW). It climbs to nearly 100 % within a few directions: the "
                   "update is low-rank, which is why a small r is enough.")
DORA_NOTE = ("This run uses DoRA: the picture shows its low-rank update B·A only; the learned magnitude vector "
             "(one scale per output unit) is not included.")


def _finite(value) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def anatomy_samples(events: Iterable[dict], fallback: list | dict | None = None) -> list[dict]:
    """The anatomy events with usable layers, one per step (the last one wins), oldest first.

    `fallback`: layers from elsewhere (a summary) used when the events hold none."""
    by_step: dict = {}
    for ev in events or ():
        if ev.get("type") != "anatomy":
            continue
        layers = [e for e in ev.get("layers") or [] if isinstance(e, dict) and _finite(e.get("rel_norm")) is not None]
        if layers:
            by_step[ev.get("step")] = {"step": ev.get("step"), "layers": layers}
    if not by_step and fallback:
        layers = fallback.get("layers") if isinstance(fallback, dict) else fallback
        layers = [e for e in layers or [] if isinstance(e, dict) and _finite(e.get("rel_norm")) is not None]
        if layers:
            return [{"step": None, "layers": layers}]
    return sorted(by_step.values(), key=lambda s: (s["step"] is None, s["step"] or 0))


def _module_labels(layers: list[dict]) -> list[str]:
    """Module names for the heatmap; bert's three 'dense' layers by their path inside the block."""
    names = [str(e.get("module", "?")) for e in layers]
    seen: dict[tuple, int] = {}
    for e, n in zip(layers, names):
        seen[(e.get("layer"), n)] = seen.get((e.get("layer"), n), 0) + 1
    if all(c == 1 for c in seen.values()):
        return names
    out = []
    for e, n in zip(layers, names):
        full = str(e.get("name", n))
        marker = f".{e.get('layer')}."
        out.append(full.split(marker, 1)[1] if marker in full else n)
    return out


def anatomy_figures(layers: list[dict], zmax: float | None = None) -> tuple[go.Figure, go.Figure, dict]:
    """(heatmap layers × modules of rel_norm, energy curve of the most changed module, that module)."""
    labels = _module_labels(layers)
    rows = sorted({int(e.get("layer", -1)) for e in layers})
    cols = list(dict.fromkeys(labels))
    grid: list[list] = [[None] * len(cols) for _ in rows]
    for e, label in zip(layers, labels):
        grid[rows.index(int(e.get("layer", -1)))][cols.index(label)] = _finite(e.get("rel_norm"))
    heat = go.Figure(go.Heatmap(z=grid, x=cols, y=[f"layer {r}" if r >= 0 else "other" for r in rows],
                                colorscale="Viridis", zmin=0, zmax=zmax, colorbar=dict(title="‖ΔW‖/‖W‖"),
                                hovertemplate="%{y} · %{x}: %{z:.3g}<extra></extra>"))
    heat.update_layout(height=140 + 26 * len(rows), margin=dict(l=10, r=10, t=40, b=10),
                       title=dict(text="How much LoRA changed each weight matrix", x=0.0))
    best = max(range(len(layers)), key=lambda i: _finite(layers[i].get("rel_norm")) or 0.0)
    # The heatmap's column name ("attention.output.dense"), not the last word, which two columns share.
    top = {**layers[best], "module": labels[best]}
    energy = [v for v in (top.get("energy") or []) if _finite(v) is not None]
    curve = go.Figure(go.Scatter(x=list(range(1, len(energy) + 1)), y=[100 * v for v in energy],
                                 mode="lines+markers", line=dict(color="#e67e22")))
    # Label on the left: the curve is low there, while on the right it runs along the line.
    curve.add_hline(y=90, line_dash="dot", line_color="#7f8c8d", annotation_text="90 %",
                    annotation_position="top left")
    curve.update_layout(height=300, margin=dict(l=10, r=10, t=60, b=10), yaxis_range=[0, 102],
                        xaxis=dict(title="top k directions (singular values of ΔW)", dtick=1),
                        yaxis_title="% of the update's energy",
                        # Two lines: in a half-width column one line was cut off mid-title.
                        title=dict(text=f"Energy of ΔW<br><sup>layer {top.get('layer', '?')} · "
                                        f"{top.get('module', '?')}, the most changed</sup>", x=0.0))
    return heat, curve, top


def anatomy_view(events: Iterable[dict], key: str, dora: bool = False, fallback: list | dict | None = None,
                 live: bool = False) -> bool:
    """The LoRA anatomy of a run: heatmap, energy curve, a slider over the samples. False if none.

    Used by Train (while a run trains and after) and Runs, so both show the same picture."""
    samples = anatomy_samples(events, fallback)
    if not samples:
        return False
    chosen = samples[-1]
    if len(samples) > 1:
        steps = [s["step"] for s in samples]
        # While a run trains, each new sample resets the slider to it (the key changes), so the view
        # follows the run unless the user looks back.
        slider_key = f"{key}_step_{len(samples)}" if live else f"{key}_step"
        if st.session_state.get(slider_key) not in steps:
            st.session_state[slider_key] = steps[-1]
        step = st.select_slider("Sample (training step)", options=steps, key=slider_key,
                                help="The anatomy is sampled during training; move back in time to see it grow")
        chosen = next(s for s in samples if s["step"] == step)
    zmax = max((_finite(e.get("rel_norm")) or 0.0) for s in samples for e in s["layers"]) or None
    try:
        heat, curve, top = anatomy_figures(chosen["layers"], zmax=zmax)
    except Exception as exc:  # old or hand-edited files must not break the page
        show_error(exc)
        return False
    c1, c2 = st.columns([3, 2])
    c1.plotly_chart(present.figure(heat), key=f"{key}_heat")
    c2.plotly_chart(present.figure(curve), key=f"{key}_energy")
    energy = [v for v in (top.get("energy") or []) if _finite(v) is not None]
    where = f"layer {top.get('layer', '?')} · {top.get('module', '?')}"
    headline = (f"In {where}, the most changed matrix"
                + (f" (‖ΔW‖/‖W‖ = {_finite(top.get('rel_norm')):.3g})" if _finite(top.get("rel_norm")) else "")
                + (f", the top-1 direction holds **{100 * energy[0]:.0f} %** of the change." if energy else "."))
    st.markdown(headline + (f" Sampled at step {chosen['step']}." if chosen["step"] is not None else ""))
    st.caption(ANATOMY_CAPTION + (" " + DORA_NOTE if dora else ""))
    return True


def uses_dora(config: dict | None) -> bool:
    method = (config or {}).get("method") or {}
    return bool(method.get("name") in ("lora", "qlora") and (method.get("params") or {}).get("use_dora"))


# ------------------------------------------------------------------------------ URL and lessons

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


def compute_note(summary: dict) -> str | None:
    """Where and how the run computed, e.g. "cpu, 2 threads, bf16 mixed precision"."""
    parts = [str(summary["device"])] if summary.get("device") else []
    if isinstance(summary.get("threads"), int) and not str(summary.get("device", "")).startswith("cuda"):
        parts.append(f"{summary['threads']} thread{'s' if summary['threads'] != 1 else ''}")
    if summary.get("precision"):
        parts.append(f"{summary['precision']} precision")
    return ", ".join(parts) or None


def poll_events(run_id: str, cache_key: str) -> tuple[dict, list[dict]]:
    """A run's snapshot and all its events so far, kept in this session under cache_key: only the
    events new since the last poll cross the manager's lock."""
    cache = st.session_state.get(cache_key)
    if not cache or cache.get("id") != run_id:
        cache = {"id": run_id, "events": []}
    snap = manager().snapshot(run_id, since=len(cache["events"]))
    if snap["n_events"] < len(cache["events"]):  # read back from disk with fewer lines: start over
        snap = manager().snapshot(run_id, since=0)
        cache["events"] = []
    cache["events"].extend(snap["events"])
    st.session_state[cache_key] = cache
    return snap, cache["events"]
