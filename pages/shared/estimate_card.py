"""Train's parameter and memory estimate for the setup on screen (core.estimate)."""
from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

from core import estimate, models
from core.config import RunConfig
from pages import present
from pages.shared.formatting import error_text, fmt_bytes, fmt_params
from pages.shared.session import device_info

ESTIMATE_KEYS = ("minilm", "smollm2-135m-instruct")  # embedded models whose config ships with estimate


@st.cache_data(ttl=120, max_entries=64, show_spinner=False)
def model_config(name: str) -> tuple[dict | None, str]:
    """The config dict core.estimate reads, or None and why it cannot be had (offline, odd family)."""
    try:
        from core import gpu_shelf
        if name in ESTIMATE_KEYS or gpu_shelf.get(name):  # shipped configs: no Hub call
            return estimate.load_config(name), ""
        cfg = models.load_config(name).to_dict()
        estimate.dims(cfg)  # an architecture estimate does not know fails here, once
        return cfg, ""
    except Exception as exc:  # the estimate is a side card: say why it is missing, keep the form
        return None, error_text(exc)


def estimate_method(cfg: RunConfig) -> tuple[str, dict]:
    """Our method spec -> core.estimate's method name and keyword arguments."""
    return estimate.method_args({"name": cfg.method.name, "params": cfg.method.params})


def _estimate_compute(cfg: RunConfig) -> tuple[dict, str]:
    """The run's weights dtype, autocast and device, as core.estimate takes them, and a note when
    they had to be assumed."""
    dtype = cfg.model.dtype
    # The hardware probe or the method lookup can fail on an odd machine: the estimate then
    # assumes plain fp32 on a CPU rather than losing the card, and says so.
    try:
        from core.trainer_setup import precision_label
        device = device_info().get("device") or "cpu"
        if dtype == "auto":
            dtype = device_info().get("dtype") or "float32"
        autocast = "mixed" in precision_label(cfg, device)
    except Exception as exc:
        assumed = {"dtype": "float32" if dtype == "auto" else dtype, "device": "cpu", "flash_attention": True}
        return assumed, f"Estimated for a CPU without mixed precision: the hardware check failed ({error_text(exc)})."
    # transformers attends with SDPA by default; the estimator knows its fused and fallback paths
    return {"dtype": dtype, "autocast": autocast, "device": "cpu" if device == "cpu" else "cuda",
            "flash_attention": True}, ""


def estimate_panel(cfg: RunConfig, preview: dict | None) -> None:
    model_cfg, why = model_config(cfg.model.name)
    if model_cfg is None:
        st.caption(f"Parameter and memory estimate unavailable for this model: {why}")
        return
    method, kwargs = estimate_method(cfg)
    balance = (preview or {}).get("label_balance") or {}
    compute, assumed = _estimate_compute(cfg)
    try:
        rep = estimate.report(model_cfg, method, batch_size=cfg.train.batch_size, seq_len=cfg.data.max_length,
                              num_labels=max(2, len(balance)), task=cfg.data.task, **compute, **kwargs,
                              gradient_checkpointing=cfg.train.gradient_checkpointing)
    except Exception as exc:
        st.caption(f"Parameter and memory estimate unavailable for this choice: {error_text(exc)}")
        return
    mem = rep["memory"]
    c1, c2 = st.columns(2)
    c1.metric("Trainable parameters", fmt_params(rep["trainable"]), help=f"of {fmt_params(rep['total'])} in all")
    c1.caption(f"{rep['percent']:.3g}% of {fmt_params(rep['total'])}")
    c2.metric("Training memory (estimate)", fmt_bytes(mem["total"]),
              help="Weights + gradients + AdamW states + activations for one batch, and on a CPU the "
                   "freed memory the allocator keeps (workspace). Not counted: the process itself (on a CPU "
                   f"about {estimate.CPU_PROCESS_FLOOR_MB / 1000:.1f} GB for Python, torch and the libraries)")
    parts = ["weights", "gradients", "optimizer", "activations"] + (["workspace"] if mem["workspace"] else [])
    fig = go.Figure(go.Bar(x=parts, y=[mem[p] / 2**20 for p in parts], text=[fmt_bytes(mem[p]) for p in parts],
                           textposition="auto"))
    fig.update_layout(height=220, margin=dict(l=10, r=10, t=10, b=10), yaxis_title="MB")
    st.plotly_chart(present.figure(fig), key="tr_estimate_chart")
    if assumed:
        st.caption(assumed)
