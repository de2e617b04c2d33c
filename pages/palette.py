"""One colour (and one marker shape) per method, on every chart of every page.

Plotly's and Streamlit's default colour cycles hand out colours by order of appearance, so the same
method was blue on one chart and red on the one beside it (issue 23). Shapes as well as colours:
points that sit on each other (LoRA and QLoRA often do) stay told apart, and so do colour-blind eyes.
"""
from __future__ import annotations

# Okabe-Ito colours, distinguishable with the common colour-vision deficiencies.
METHOD_COLOURS: dict[str, str] = {
    "full": "#D55E00",           # vermillion
    "linear_head": "#7F7F7F",    # grey
    "lora": "#0072B2",           # blue
    "qlora": "#56B4E9",          # sky blue
    "prompt_tuning": "#E69F00",  # orange
    "prefix_tuning": "#CC79A7",  # purple
    "ia3": "#009E73",            # green
    "zero_shot": "#000000",
    "dora": "#332288",
}
METHOD_SYMBOLS: dict[str, str] = {
    "full": "square", "linear_head": "diamond", "lora": "circle", "qlora": "x", "prompt_tuning": "triangle-up",
    "prefix_tuning": "triangle-down", "ia3": "star", "zero_shot": "cross", "dora": "pentagon",
}
OTHER = "#8c564b"


def colour(method: str) -> str:
    return METHOD_COLOURS.get(str(method), OTHER)


def symbol(method: str) -> str:
    return METHOD_SYMBOLS.get(str(method), "circle")


def px_method_args(methods) -> dict:
    """color_discrete_map and symbol_map for plotly express, covering the methods present."""
    names = sorted({str(m) for m in methods})
    return {"color_discrete_map": {m: colour(m) for m in names}, "symbol_map": {m: symbol(m) for m in names}}
