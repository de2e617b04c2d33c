"""Widgets built from a schema (core.config.params_schema): one control per hyperparameter,
picked from its type and range metadata; basic ones in columns, advanced ones in an expander."""
from __future__ import annotations

import streamlit as st

from pages import present
from pages.shared.train_state import lesson_mode, seed

LR_GRID = [1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 1e-1]
LABELS = {"learning_rate": "Learning rate", "n_samples": "N samples (0 = all)", "val_share": "Validation share",
          "max_length": "Max length (tokens)", "r": "Rank r", "num_virtual_tokens": "Virtual tokens",
          "use_dora": "DoRA", "use_rslora": "rsLoRA", "lr_scheduler": "LR schedule"}


def _label(f: dict) -> str:
    return LABELS.get(f["name"], f["name"].replace("_", " ").capitalize())


def _log_options(lo, hi, value) -> list[float]:
    grid = [v for v in LR_GRID if (lo is None or v > lo) and (hi is None or v <= hi)]
    if isinstance(value, (int, float)) and value not in grid and value > 0:
        grid = sorted(grid + [float(value)])
    return grid


def _clamp(value, lo, hi):
    if lo is not None and value < lo:
        value = lo
    if hi is not None and value > hi:
        value = hi
    return value


def control(f: dict, key: str, value, where=st):
    """One widget for one hyperparameter, picked from its type and range metadata."""
    label, help_ = _label(f), f.get("help")
    value = f["default"] if value is None else value
    choices, kind = f.get("choices"), f["type"]
    lo, hi, step = f.get("lo"), f.get("hi"), f.get("step")
    # Each widget gets the draft's value both ways: seeded into its key, and as its own default.
    # The default is what the browser shows when it (re)creates the widget without being sent a
    # value, which happens when the run that seeded the key was interrupted by the next click
    # (streamlit#4247); without it the browser showed the minimum and sent it back at the next
    # interaction: every hyperparameter of the form fell to its minimum (alpha 0, lr 1e-6).
    if choices:
        options = list(choices)
        seed(key, value, options)
        index = options.index(value) if value in options else 0
        return where.selectbox(label, options, index=index, key=key, help=help_)
    if kind == "bool":
        seed(key, bool(value))
        return where.checkbox(label, value=bool(value), key=key, help=help_)
    if kind == "str":
        seed(key, str(value))
        return where.text_input(label, value=str(value), key=key, help=help_)
    if f.get("log"):
        options = _log_options(lo, hi, value)
        seed(key, float(value), options)
        shown = float(value) if float(value) in options else options[0]
        return where.select_slider(label, options, value=shown, key=key, help=help_,
                                   format_func=lambda v: f"{v:.0e}")
    if kind == "int":
        lo_i = None if lo is None else int(lo) + (1 if f.get("lo_open") else 0)
        hi_i = None if hi is None else int(hi) - (1 if f.get("hi_open") else 0)
        shown = int(_clamp(int(value), lo_i, hi_i))
        seed(key, shown)
        if lo_i is not None and hi_i is not None and hi_i - lo_i <= 256:
            return where.slider(label, lo_i, hi_i, value=shown, key=key, step=int(step or 1), help=help_)
        return where.number_input(label, lo_i, hi_i, value=shown, key=key, step=int(step or 1), help=help_)
    step_f = float(step or (0.01 if lo is not None and hi is not None and hi - lo <= 1 else 0.5))
    # Open bounds are left to the config check, which then names the allowed range in its error.
    lo_f = None if lo is None or f.get("lo_open") else float(lo)
    hi_f = None if hi is None else float(hi) - (step_f if f.get("hi_open") else 0.0)
    shown = float(_clamp(float(value), lo_f, hi_f))
    seed(key, shown)
    if lo_f is not None and hi_f is not None and hi_f - lo_f <= 1:
        return where.slider(label, lo_f, hi_f, value=shown, key=key, step=step_f, help=help_)
    return where.number_input(label, lo_f, hi_f, value=shown, key=key, step=step_f, help=help_)


def controls(schema: list[dict], values: dict, prefix: str, advanced_title: str = "Advanced",
             columns: int = 3) -> dict:
    """Widgets for a schema: basic ones in columns, advanced ones in an expander."""
    out = {}
    basic = [f for f in schema if not f.get("advanced")]
    advanced = [f for f in schema if f.get("advanced")]
    cols = st.columns(columns) if basic else []
    for i, f in enumerate(basic):
        out[f["name"]] = control(f, f"{prefix}{f['name']}", values.get(f["name"]), cols[i % columns])
    if advanced and (lesson_mode() or present.enabled()):
        # Hidden, not reset: a lesson link's advanced values (or the user's earlier ones) still apply.
        for f in advanced:
            value = st.session_state.get(f"{prefix}{f['name']}", values.get(f["name"]))
            out[f["name"]] = f["default"] if value is None else value
    elif advanced:
        # Keyed: a keyless expander's open state follows its position, so the "Current run" block
        # appearing above on Start would hand it to the method's Advanced expander.
        with st.expander(advanced_title, key=f"{prefix}advanced"):
            acols = st.columns(columns)
            for i, f in enumerate(advanced):
                out[f["name"]] = control(f, f"{prefix}{f['name']}", values.get(f["name"]), acols[i % columns])
    return out
