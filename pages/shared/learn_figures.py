"""Learn's pictures: LoRA's W, A and B drawn to scale, and the memory of each method, stacked."""
from __future__ import annotations

import plotly.graph_objects as go

from pages.shared.formatting import fmt_bytes, fmt_params
from pages.shared.method_names import learn_method_labels

PART_COLOURS = {"weights": "#7f8c8d", "gradients": "#e67e22", "optimizer": "#c0392b", "activations": "#2980b9"}
PART_LABELS = {"weights": "weights", "gradients": "gradients", "optimizer": "optimizer states (AdamW)",
               "activations": "activations"}
GPU_LINES = ((16, "16 GB (T4 / laptop GPU)"), (24, "24 GB (RTX 4090)"), (80, "80 GB (A100 / H100)"))
GB = 1024 ** 3


def _box(fig: go.Figure, x0: float, y0: float, x1: float, y1: float, fill: str, text: str,
         text_pos: str = "inside") -> None:
    fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line=dict(color="#2c3e50", width=1),
                  fillcolor=fill, opacity=0.85)
    if text_pos == "inside":
        fig.add_annotation(x=(x0 + x1) / 2, y=(y0 + y1) / 2, text=text, showarrow=False,
                           font=dict(size=13, color="white"))
    elif text_pos == "below":
        fig.add_annotation(x=(x0 + x1) / 2, y=y0, text=text, showarrow=False, yshift=-22,
                           font=dict(size=12))
    else:  # above
        fig.add_annotation(x=(x0 + x1) / 2, y=y1, text=text, showarrow=False, yshift=22, font=dict(size=12))


def lora_figure(pic: dict) -> tuple[go.Figure, bool]:
    """W (d×k) beside B (d×r) and A (r×k), to scale; returns the figure and whether r was thickened."""
    d, k, r = pic["d"], pic["k"], pic["r"]
    unit = 10.0 / max(d, k)                   # the largest side of W is 10 plot units
    w_w, w_h = k * unit, d * unit
    min_thick = 0.25                          # r = 8 next to 4096 is 0.02 units: invisible
    thick = max(r * unit, min_thick)
    exaggerated = r * unit < min_thick
    gap = 1.6
    fig = go.Figure()
    top = w_h
    _box(fig, 0, 0, w_w, w_h, "#95a5a6",
         f"<b>W</b> frozen<br>{d:,} × {k:,}<br>{fmt_params(pic['params_W'])} weights")
    fig.add_annotation(x=w_w + gap / 2, y=top / 2, text=f"<b>+ {pic['scale']:.3g} ·</b>", showarrow=False,
                       font=dict(size=16))
    bx0 = w_w + gap
    _box(fig, bx0, 0, bx0 + thick, w_h, "#e67e22", "", "inside")
    fig.add_annotation(x=bx0 + thick / 2, y=0, text=f"<b>B</b> trained<br>{d:,} × {r}<br>{d * r:,}",
                       showarrow=False, yshift=-34, font=dict(size=12))
    ax0 = bx0 + thick + 0.35
    _box(fig, ax0, top - thick, ax0 + w_w, top, "#d35400", "", "inside")
    fig.add_annotation(x=ax0 + w_w / 2, y=top - thick, text=f"<b>A</b> trained<br>{r} × {k:,}<br>{r * k:,}",
                       showarrow=False, yshift=-34, font=dict(size=12))
    fig.update_xaxes(visible=False, range=[-0.5, ax0 + w_w + 0.5])
    fig.update_yaxes(visible=False, range=[-2.2, top + 0.8], scaleanchor="x", scaleratio=1)
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10), plot_bgcolor="rgba(0,0,0,0)",
                      title=dict(text=f"W′ = W + (α/r)·B·A  with α/r = {pic['alpha']:g}/{r} = {pic['scale']:.3g}",
                                 x=0.0))
    return fig, exaggerated


def memory_figure(memory: dict[str, dict[str, int]]) -> go.Figure:
    methods = list(memory)
    labels = [learn_method_labels().get(m, m).split(" (")[0] for m in methods]
    fig = go.Figure()
    for part in ("weights", "gradients", "optimizer", "activations"):
        values = [memory[m][part] / GB for m in methods]
        fig.add_trace(go.Bar(x=labels, y=values, name=PART_LABELS[part], marker_color=PART_COLOURS[part],
                             hovertemplate="%{x}: %{y:.2f} GB<extra>" + PART_LABELS[part] + "</extra>"))
    totals = [memory[m]["total"] for m in methods]
    fig.add_trace(go.Scatter(x=labels, y=[t / GB for t in totals], mode="text", showlegend=False,
                             text=[fmt_bytes(t) for t in totals], textposition="top center", hoverinfo="skip"))
    top = max(totals) / GB if totals else 0
    # GPU sizes as legend entries, not labels on the lines: on a 70B model the 16/24/80 GB labels
    # piled onto the bars' totals (issue 23).
    for (size, name), dash in zip(GPU_LINES, ("dot", "dash", "longdash")):
        if size <= top * 1.15:
            fig.add_hline(y=size, line_dash=dash, line_color="#7f8c8d")
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=name, hoverinfo="skip",
                                     line=dict(color="#7f8c8d", dash=dash)))
    fig.update_layout(barmode="stack", height=380, margin=dict(l=10, r=10, t=40, b=10),
                      yaxis_title="GB", title=dict(text="Estimated training memory", x=0.0),
                      yaxis_range=[0, top * 1.18 if top else 1],
                      legend=dict(orientation="h", y=-0.15))
    return fig
