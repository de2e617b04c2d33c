"""The Runs page's table: one row per run, as shown and as downloaded (no CSV formula, no HTML)."""
from __future__ import annotations

import os

import pandas as pd
import streamlit as st

from core import runs
from core.textsafe import csv_row, plotly_text
from pages.shared.formatting import finite_or_none, short_path


@st.cache_data(show_spinner=False, max_entries=256)
def _read_metrics(run_dir: str, mtime: float, size: int) -> list[dict]:
    return runs.read_metrics(run_dir)


def metrics(run_dir: str) -> list[dict]:
    """read_metrics, re-read only when metrics.jsonl changed (a running job appends to it)."""
    try:
        st_ = os.stat(os.path.join(run_dir, "metrics.jsonl"))
    except OSError:
        return []
    return _read_metrics(run_dir, st_.st_mtime, st_.st_size)


def short_label(info) -> str:
    """A legend-sized name: the run's own name, else method · model · last id digits."""
    own = (info.status or {}).get("name") or (info.config or {}).get("name")
    if own:
        return str(own)
    method = ((info.config or {}).get("method") or {}).get("name", "?")
    return f"{method} · {short_path(((info.config or {}).get('model') or {}).get('name'))} · #{info.id[-4:]}"


def _experiment_title(info) -> str | None:
    """'Which method wins? · which_method-2026…' for a run queued by the Experiments page, else None."""
    experiment = (info.config or {}).get("experiment")
    if not experiment:
        return None
    name = str((info.config or {}).get("name") or "")
    title = name.split(": ", 1)[0] if ": " in name else ""
    return f"{title} · {experiment}" if title else experiment


def table_rows(infos: list, me: str) -> list[dict]:
    rows = []
    for info in infos:
        cfg, s = info.config or {}, info.summary or {}
        params = (cfg.get("method") or {}).get("params") or {}
        train = cfg.get("train") or {}
        final = s.get("final") or {}
        peak = finite_or_none(s.get("peak_cuda_mb")) or finite_or_none(s.get("peak_rss_mb"))
        rows.append({
            "Run": info.name, "Model": short_path((cfg.get("model") or {}).get("name")),
            "Method": (cfg.get("method") or {}).get("name", "?"),
            "r": finite_or_none(params.get("r")), "alpha": finite_or_none(params.get("alpha")),
            "LR": finite_or_none(train.get("learning_rate")), "Epochs": finite_or_none(train.get("epochs")),
            "Batch": finite_or_none(train.get("batch_size")), "N train": finite_or_none(s.get("n_train")),
            "Accuracy": finite_or_none(final.get("eval_accuracy")), "Val loss": finite_or_none(final.get("eval_loss")),
            "Trainable": finite_or_none(s.get("trainable_params")), "Trainable %": finite_or_none(s.get("trainable_percent")),
            "Train time (s)": finite_or_none(s.get("train_time_s")), "Peak memory (MB)": peak,
            "Latency (ms)": finite_or_none(s.get("latency_ms_per_sample")),
            "Busy": bool(s.get("machine_load").get("busy")) if isinstance(s.get("machine_load"), dict) else None,
            "Experiment": _experiment_title(info), "Status": info.state, "Yours": info.owned_by(me),
            "By": str((info.status or {}).get("nickname") or ""),
            "id": info.id,
        })
    return rows


def table_frame(rows: list[dict]) -> pd.DataFrame:
    """The table as shown: its CSV download (the table's toolbar) must not carry a formula."""
    return pd.DataFrame([csv_row(r) for r in rows])


def chart_frame(rows: list[dict]) -> pd.DataFrame:
    """The rows for Plotly, whose labels and hover text render HTML: every text made inert."""
    return pd.DataFrame([{k: plotly_text(v) if isinstance(v, str) and k != "id" else v for k, v in r.items()}
                         for r in rows])
