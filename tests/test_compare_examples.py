"""The Compare page's example questions for the hallucination lesson (pages/shared/compare_examples.py)."""
from __future__ import annotations

import pytest

from core import data
from core.config import DataSpec
from pages.shared.compare_examples import examples_for, is_facts_data


@pytest.mark.parametrize("name", ["facts", "facts-mini"])
def test_the_lesson_offers_rephrasings_the_tuned_model_never_trained_on(name):
    """The lesson trains on facts-mini (val_share 0): its examples once came from the training rows, so
    the tuned model answered a question it had memorised, and chat memory stayed on."""
    source = f"builtin:{name}"
    assert is_facts_data(source)
    shown = examples_for(f"run-{name}", {"source": source, "task": "sft", "val_share": 0.0}, "sft", 42)
    trained = {r["prompt"] for r in data.load_rows(DataSpec(source=source, task="sft", val_share=0.0), seed=42).train}
    assert len(shown) == 3 and not set(shown) & trained, shown
    assert not is_facts_data("builtin:sentiment")
