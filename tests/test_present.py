"""Presentation mode (pages/present.py) and per-method defaults on a switch (core/recommend.py).

The real-browser checks (font sizes, no sideways scrolling, Start in the first viewport) are in
tests/test_e2e_present.py; these are the quick ones, through AppTest and plain functions.
"""
from __future__ import annotations

import os

import plotly.graph_objects as go
import pytest
from streamlit.testing.v1 import AppTest

from core import jobs, presets, recommend
from core.experiments import method_overrides
from pages import present
from tests.helpers.apptest import ROOT, TIMEOUT, open_app, widget


def train_page(query: dict | None = None) -> AppTest:
    return open_app("pages/train.py", query=query)


# ------------------------------------------------------------------------- per-method defaults

def test_recommended_rates_come_from_the_experiments_table():
    base = presets.app_defaults().to_dict()
    assert recommend.recommended("full", base)["train.learning_rate"] == method_overrides("full")["train.learning_rate"]
    # LoRA overrides nothing: it goes back to the preset's own rate, so LoRA -> full -> LoRA round-trips.
    assert recommend.recommended("lora", base)["train.learning_rate"] == base["train"]["learning_rate"]


def test_on_switch_reports_what_changed():
    base = presets.app_defaults().to_dict()
    draft = presets.app_defaults().to_dict()
    changes = recommend.on_switch("prompt_tuning", draft, base)
    assert ("train.learning_rate", base["train"]["learning_rate"], 1e-2) in changes
    assert draft["train"]["learning_rate"] == 1e-2
    assert "learning rate" in recommend.describe(changes)
    assert recommend.on_switch("prompt_tuning", draft, base) == []


@pytest.mark.parametrize("method, rate, bad", [("full", 5e-4, True), ("full", 5e-5, False),
                                                ("prompt_tuning", 5e-4, True), ("lora", 2e-3, False),
                                                ("lora", 1e-6, True), ("zero_shot", 1.0, False)])
def test_learning_rate_warning(method, rate, bad):
    assert bool(recommend.learning_rate_warning(method, rate)) is bad


def test_switching_lora_to_full_loads_fulls_learning_rate(clean_app):
    at = train_page()
    lr = widget(at.select_slider, "Learning rate")
    assert lr.value == pytest.approx(2e-3)
    widget(at.selectbox, "Method").select("full").run()
    assert not at.exception, at.exception
    assert widget(at.select_slider, "Learning rate").value == pytest.approx(5e-5)
    assert any("Switched to" in i.value and "5e-05" in i.value for i in at.info), [i.value for i in at.info]
    assert not any("probably too high" in w.value for w in at.warning)
    widget(at.selectbox, "Method").select("lora").run()
    assert widget(at.select_slider, "Learning rate").value == pytest.approx(2e-3)


def test_switching_to_linear_head_sets_its_epochs_as_a_number_the_widget_takes(clean_app):
    at = train_page()
    widget(at.selectbox, "Method").select("linear_head").run()
    assert not at.exception, at.exception
    assert widget(at.number_input, "Epochs").value == 5.0
    assert widget(at.select_slider, "Learning rate").value == pytest.approx(1e-3)


def test_a_rate_outside_the_methods_range_is_warned(clean_app):
    at = train_page()
    widget(at.selectbox, "Method").select("full").run()
    widget(at.select_slider, "Learning rate").set_value(5e-4).run()
    assert any("probably too high" in w.value for w in at.warning), [w.value for w in at.warning]


# ------------------------------------------------------------------------- presentation mode

def test_present_link_turns_presentation_mode_on_and_hides_advanced(clean_app):
    first = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=TIMEOUT)
    first.query_params["present"] = "1"
    first.run()
    assert widget(first.sidebar.toggle, "Presentation mode").value is True
    at = train_page({"present": "1"})
    assert at.session_state[present.PRESENT_KEY] is True
    # The advanced expanders of the form are hidden, as in lesson mode.
    assert not [e for e in at.expander if e.label == "Advanced"]
    plain = train_page()
    assert [e for e in plain.expander if e.label == "Advanced"]


def test_style_figure_makes_every_chart_text_large():
    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2], text=["1", "2"]))
    fig.update_layout(title=dict(text="t"), height=260)
    fig.add_hline(y=1, annotation_text="16 GB")
    present.style_figure(fig)
    assert fig.layout.xaxis.tickfont.size >= 16 and fig.layout.yaxis.tickfont.size >= 16
    assert fig.layout.title.font.size >= 16 and fig.layout.font.size >= 16
    assert all(a.font.size >= 16 for a in fig.layout.annotations)
    assert fig.data[0].textfont.size >= 16
    assert fig.layout.height >= present.CHART_MIN_HEIGHT
    untouched = go.Figure(layout=dict(height=260))
    assert present.style_figure(untouched, on=False).layout.height == 260


def test_table_cells_show_a_dash_not_none():
    assert present._cell(None) == "—" and present._cell(float("nan")) == "—"
    assert present._cell(0.123456) == "0.123"


# ------------------------------------------------------------------------- lesson text

def test_lesson_slots_take_the_pages_number_or_their_words():
    from core.lessons import fill
    assert fill("{trainable_percent|A small share} train", {"trainable_percent": "1.45 %"}) == "1.45 % train"
    assert fill("{trainable_percent|A small share} train", {}) == "A small share train"


def test_lora_lesson_asserts_no_share_of_its_own():
    from core import lessons
    notice = lessons.get("lora_sentiment").notice
    assert "{trainable_percent|" in notice and "one percent" not in notice


def test_how_much_data_text_names_every_method_and_axis_of_its_grid():
    from core import experiments, lessons
    preset = experiments.presets()["how_much_data"]
    methods = {preset.base["method"]["name"]} | {g["method"] for g in preset.extra_grids}
    words = {"lora": "LoRA", "prompt_tuning": "prompt tuning"}
    lesson = " ".join(lessons.get("how_much_data").guidance).replace("-", " ")
    for method in methods:
        assert words[method] in preset.question and words[method] in lesson, method
    assert "dropout" in preset.question and "virtual tokens" in preset.question
    for n in preset.axes["n_samples"]:
        assert str(n) in lesson


def test_learn_states_qlora_with_the_setting_that_makes_it_true():
    text = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=TIMEOUT)
    text.run()
    body = " ".join(m.value for m in text.markdown)
    assert "65B model be tuned on one GPU" not in body
    assert "batch 1 and 256 tokens needs about" in body and "48 GB GPU" in body


# ------------------------------------------------------------------------- charts and replay

def test_one_colour_and_shape_per_method():
    from pages import palette
    colours = [palette.colour(m) for m in ("full", "linear_head", "lora", "qlora", "prompt_tuning", "ia3")]
    assert len(set(colours)) == len(colours)
    args = palette.px_method_args(["qlora", "lora", "lora"])
    assert args["color_discrete_map"] == {"lora": palette.colour("lora"), "qlora": palette.colour("qlora")}
    assert args["symbol_map"]["lora"] != args["symbol_map"]["qlora"]  # overlapping points stay apart


def test_a_single_step_gets_a_whole_non_negative_axis():
    from pages.ui import metrics_charts
    fig = metrics_charts([{"type": "eval", "step": 0, "eval_loss": 0.7}])["eval_loss"]
    lo, hi = fig.layout.xaxis.range
    assert lo >= -0.5 and hi <= 0.5 and fig.layout.xaxis.dtick == 1


def test_machine_load_is_recorded_and_flags_other_work(monkeypatch):
    from core import train
    monkeypatch.setattr(train.os, "getloadavg", lambda: (9.0, 0, 0))
    monkeypatch.setattr(train.os, "cpu_count", lambda: 2)
    assert train.machine_load(2) == {"loadavg_1m": 9.0, "cores": 2, "busy": True}
    monkeypatch.setattr(train.os, "getloadavg", lambda: (2.1, 0, 0))
    assert train.machine_load(2)["busy"] is False


def test_replay_reveals_events_in_recorded_time():
    from pages import replay
    events = [{"type": "log", "time": 100.0 + i, "step": i, "loss": 1.0 / (i + 1)} for i in range(10)]
    assert replay.timeline(events) == (100.0, 109.0)
    assert len(replay.shown_at(events, 1.0, 5.0)) == 6      # 5 recorded seconds at 5x after 1 s
    assert len(replay.shown_at(events, 1.0, 20.0)) == 10
    assert len(replay.shown_at(events, 0.0, 1.0)) == 1


def test_a_finished_run_can_be_replayed_and_says_so(clean_app, tiny_bert, sentiment_file):
    import time as _time
    at = train_page()
    widget(at.selectbox, "Base model").select("Hub id or local folder…").run()
    widget(at.text_input, "Hub id or local folder").input(tiny_bert).run()
    widget(at.radio, "Dataset").set_value("local").run()
    widget(at.text_input, "Local file path (on the server)").input(sentiment_file).run()
    for label, value in (("N samples (0 = all)", 40), ("Max length (tokens)", 32), ("Epochs", 1.0),
                         ("Batch size", 8), ("Logging steps", 1)):
        widget(at.number_input, label).set_value(value)
    at.run()
    widget(at.button, "Start training").click().run()
    job_id = at.session_state["_train_job"]
    end = _time.time() + 60
    while jobs.get_manager().snapshot(job_id, events=False)["state"] in ("queued", "running"):
        assert _time.time() < end
        _time.sleep(0.2)
    at.run()
    assert not at.exception, at.exception
    assert any("Replay this run" in e.label for e in at.expander)
    widget(at.button, "Replay").click().run()
    assert not at.exception, at.exception
    assert any("Replay of a recorded run" in i.value and "Nothing is training now" in i.value for i in at.info)
