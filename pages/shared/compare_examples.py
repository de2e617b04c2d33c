"""What Compare's chat and classifier share: the two panes, and example inputs from a run's own data."""
from __future__ import annotations

import streamlit as st

from pages.shared.session import is_admin, owner_id

PENDING_KEY = "_compare_pending"   # a prompt or text an example button asked for
PANES = (("base", False, "Base model", "before fine-tuning"), ("tuned", True, "Fine-tuned", "after fine-tuning"))


@st.cache_data(show_spinner=False, max_entries=32)
def examples_for(run_id: str, data_cfg: dict, task: str, seed: int) -> list[str]:
    """A few prompts (sft) or texts (classification) from the run's own dataset (core.data's rule)."""
    from core import data
    return data.example_inputs(data_cfg, task, seed)


def is_facts_data(source: str) -> bool:
    """The hallucination lesson's built-in sets (facts, and facts-mini that its preset trains on)."""
    from core.data import FACTS_SOURCES
    return source in FACTS_SOURCES


def may_show_examples(info) -> bool:
    """Rows of a run's data are shown as examples only when they are public (the lesson's built-in
    data in assets/data) or the visitor owns the run: an upload is its owner's alone."""
    source = str(((info.config or {}).get("data") or {}).get("source", ""))
    return source.startswith("builtin:") or info.owned_by(owner_id()) or is_admin()


def shown_examples(info, task: str, seed: int) -> list[str]:
    if not may_show_examples(info):
        return []
    return examples_for(info.id, (info.config or {}).get("data") or {}, task, seed)


def short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def set_pending(value: str) -> None:
    st.session_state[PENDING_KEY] = value
