""""Which method wins?" (issue 22): each method races with its own tuned training settings, on the
same data and seed, and the settings one method needs do not leak into another's run."""
from __future__ import annotations

import math

import pytest

from core import experiments
from core.config import ConfigError
from core.methods import get_method

METHODS = ["full", "linear_head", "lora", "qlora", "prompt_tuning"]


def _get(d: dict, path: str):
    for part in path.split("."):
        d = d[part]
    return d


@pytest.fixture(scope="module")
def runs() -> dict:
    return {c.method.name: c for c in experiments.preset_runs("which_method")}


def test_each_method_gets_its_recommended_settings_then_the_lessons_own(runs):
    preset = experiments.presets()["which_method"]
    assert list(runs) == METHODS
    for name, cfg in runs.items():
        want = {**get_method(name).recommended_train, **preset.method_settings.get(name, {})}
        d = cfg.to_dict()
        for path, value in want.items():
            assert _get(d, path) == value, (name, path)


def test_each_method_learns_at_its_own_rate_inside_its_known_range(runs):
    rates = {name: cfg.train.learning_rate for name, cfg in runs.items()}
    for name, rate in rates.items():
        lo, hi = get_method(name).learning_rate_range or (0.0, math.inf)
        assert lo <= rate <= hi, (name, rate)
    # not one shared rate: full fine-tuning moves every weight and needs the gentlest one, the few
    # virtual tokens of prompt tuning the boldest (issue 23: either at 5e-4 stayed at chance)
    assert rates["full"] < rates["lora"] < rates["prompt_tuning"]
    assert rates["full"] == get_method("full").recommended_train["train.learning_rate"]
    assert rates["prompt_tuning"] == get_method("prompt_tuning").recommended_train["train.learning_rate"]


def test_the_tuned_budget_is_the_one_measured(runs):
    """The values bench/which_method.py --dev chose; change them only with a new measurement."""
    settings = {name: (cfg.train.learning_rate, cfg.train.epochs) for name, cfg in runs.items()}
    assert settings == {"full": (5e-5, 3.0), "linear_head": (1e-2, 10.0), "lora": (2e-3, 3.0),
                        "qlora": (2e-3, 3.0), "prompt_tuning": (1e-2, 3.0)}
    # LoRA and QLoRA adapt the top 3 of MiniLM's 6 blocks: backpropagation stops halfway
    assert runs["lora"].method.params["top_layers"] == runs["qlora"].method.params["top_layers"] == 3


def test_a_methods_lesson_settings_stay_with_that_method(runs):
    """top_layers belongs to LoRA and QLoRA; every other method keeps its own params."""
    for name in ("full", "linear_head", "prompt_tuning"):
        assert "top_layers" not in runs[name].method.params
    # and the race stays fair: the same rows, split, seed, batch and length for everyone
    shared = {(c.data.source, c.data.val_share, c.data.max_length, c.train.seed, c.train.batch_size,
               c.train.eval_max_rows) for c in runs.values()}
    assert len(shared) == 1


def test_grid_method_settings_apply_only_to_the_named_method():
    from core import presets
    configs = experiments.grid(presets.app_defaults(), {"method": ["lora", "full"]},
                               method_settings={"lora": {"train.epochs": 7.0}})
    lora, full = configs
    assert lora.train.epochs == 7.0 and full.train.epochs == presets.app_defaults().train.epochs
    with pytest.raises(ConfigError, match="top_layers"):  # a setting the method does not have is named
        experiments.grid(presets.app_defaults(), {"method": ["full"]},
                         method_settings={"full": {"method.params.top_layers": 3}})


# The Trainer evaluates once more at the final step, right after the last scheduled evaluation
# (steps 68 and 69 of 69): the near-copy must not hide a run that climbed in its last quarter.
# Curves measured on the lesson (bench/which_method.py, validation rows).
LORA_AFTER = ([0.542, 0.712, 0.78, 0.788, 0.814, 0.814], [0, 17, 34, 51, 68, 69])
FULL_BEFORE = ([0.542, 0.653, 0.661, 0.805, 0.771, 0.771], [0, 17, 34, 51, 68, 69])
HEAD_AFTER = ([0.542, 0.729, 0.788, 0.805, 0.797, 0.797], [0, 57, 114, 171, 228, 230])


def test_still_rising_looks_past_the_trainers_end_of_training_evaluation():
    curve, steps = LORA_AFTER
    assert experiments.still_rising(curve, steps=steps)
    assert not experiments.still_rising(curve)  # without the steps the near-copy hides the climb
    for curve, steps in (FULL_BEFORE, HEAD_AFTER):  # past their best, or level: converged
        assert not experiments.still_rising(curve, steps=steps)
    # a final evaluation far enough from the one before it still counts as a point of the trend
    assert experiments.still_rising([0.5, 0.6, 0.7], steps=[0, 10, 20])
    assert not experiments.still_rising([0.5, 0.7, 0.705], steps=[0, 10, 20])


def test_results_flags_a_run_whose_curve_climbed_at_its_end(runs_dir):
    from core import runs as store
    from core import presets
    cfg = experiments.grid(presets.app_defaults(), {"r": [2]}, experiment="exp-rising")[0]
    run_dir = store.create_run(cfg, owner="")
    curve, steps = LORA_AFTER
    for acc, step in zip(curve, steps):
        store.append_metric(run_dir, {"type": "eval", "step": step, "eval_accuracy": acc})
    store.write_summary(run_dir, {"final": {"eval_accuracy": curve[-1]}, "state": "completed"})
    store.write_status(run_dir, "completed")
    (row,) = experiments.results("exp-rising")
    assert row["still_rising"] is True
