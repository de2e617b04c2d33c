"""The LoRA anatomy picture (heatmap, energy curve, a slider over samples): Train and Runs."""
from __future__ import annotations

import math
from collections.abc import Iterable

import plotly.graph_objects as go
import streamlit as st

from pages import present
from pages.shared.formatting import show_error

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
