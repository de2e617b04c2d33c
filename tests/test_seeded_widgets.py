"""streamlit#4247 on the Learn and Runs pages: every widget seeded through session_state also tells
the browser its value as its own default, so a browser that re-creates it after an interrupted run
sends that value back, not the widget's minimum or first option (see tests/helpers/widget_defaults.py)."""
from __future__ import annotations

import pytest

from tests.helpers.apptest import open_app
from tests.helpers.widget_defaults import checked_widgets, defaults_that_differ

pytestmark = pytest.mark.usefixtures("clean_app")

LEARN = ("learn_",)


def test_learn_widgets_tell_the_browser_their_value_not_their_minimum(runs_dir):
    at = open_app()
    assert not defaults_that_differ(at, LEARN), defaults_that_differ(at, LEARN)
    # the calculator's controls were all seen, the r and alpha sliders among them
    seen = checked_widgets(at, LEARN)
    assert {"learn_model", "learn_method", "learn_r", "learn_alpha", "learn_layer", "learn_module",
            "learn_batch", "learn_seq", "learn_dtype", "learn_targets_mode"} <= set(seen), seen


def test_learn_widgets_from_a_link_tell_the_browser_the_link_values(runs_dir):
    query = {"model": "llama-2-13b", "method": "prompt_tuning", "r": "32", "alpha": "64", "layer": "5",
             "tm": "choose", "batch": "16", "seq": "1024", "dtype": "float32", "vt": "50"}
    at = open_app(query=query)
    assert at.slider(key="learn_r").value == 32 and at.slider(key="learn_layer").value == 5
    assert not defaults_that_differ(at, LEARN), defaults_that_differ(at, LEARN)
    assert {"learn_vtokens", "learn_targets"} <= set(checked_widgets(at, LEARN))
    # a value moved by the visitor is the default from the next run on
    at.slider(key="learn_alpha").set_value(100).run()
    at.select_slider(key="learn_batch").set_value(2).run()
    assert not at.exception, at.exception
    assert not defaults_that_differ(at, LEARN), defaults_that_differ(at, LEARN)


RUNS = ("runs_",)


def test_runs_widgets_tell_the_browser_their_value_not_their_first_option(runs_dir):
    import os
    from pages.shared.keys import COMPARE_RUN_KEY
    from tests.helpers.finished_runs import make_run
    made = [os.path.basename(make_run(name=f"run {i}")) for i in range(5)]
    # the run Compare shows is the one detailed here: not the first in the list
    at = open_app("pages/runs.py", state={COMPARE_RUN_KEY: made[1]})
    assert at.selectbox(key="runs_detail").value == made[1]
    assert len(at.multiselect(key="runs_curves").value) == 3  # three runs overlaid by default
    assert at.selectbox(key="runs_cmp_model").value == "minilm"  # one model, not "All models"
    assert not defaults_that_differ(at, RUNS), defaults_that_differ(at, RUNS)
    assert {"runs_detail", "runs_curves", "runs_cmp_model"} <= set(checked_widgets(at, RUNS))
