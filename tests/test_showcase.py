"""The Compare page's showcase sentences are classified right by the shipped preset (slow: it trains
the app's default recipe, MiniLM + LoRA on the built-in reviews, as a class would)."""
from __future__ import annotations

import pytest

from core import showcase


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["app_defaults", "lora_sentiment"])
def test_shipped_preset_classifies_every_showcase_sentence_right(preset, tmp_path, runs_dir):
    """Both presets that train on the built-in reviews: the Train page's defaults and the lesson's."""
    from core import presets
    from core.infer import RunModel
    from core.train import run
    cfg = presets.app_defaults() if preset == "app_defaults" else presets.load_example(preset)
    assert cfg.data.source in showcase.SHOWCASE
    run(cfg, str(tmp_path / "run"))
    model = RunModel(str(tmp_path / "run"))
    wrong = {}
    for text, label in showcase.SHOWCASE[cfg.data.source]:
        probs = model.classify(text, tuned=True)
        if max(probs, key=probs.get) != label:
            wrong[text] = probs
    assert not wrong, wrong


def test_the_sentence_the_preset_gets_wrong_is_gone():
    offered = showcase.sentences("builtin:sentiment")
    assert offered and "I expected to hate it, and somehow I loved every minute." not in offered
