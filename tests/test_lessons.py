"""Lessons you can share: the URL holds every control (core.urlstate), lesson mode, the four lessons.

Pure round-trips first (every field of every method), then the pages through AppTest: a link sets
the widgets, a change writes the link, a bad link warns and falls back, lesson links open presets.
"""
from __future__ import annotations

import dataclasses
import os
import re

import pytest
from streamlit.testing.v1 import AppTest

from core import lessons, presets, urlstate
from core.config import DataSpec, ModelSpec, RunConfig, TrainSpec
from core.methods import all_methods, get_method
from tests.helpers.apptest import ROOT, open_app, widget

TIMEOUT = 90

pytestmark = pytest.mark.usefixtures("clean_app")


# ------------------------------------------------------------------------------ pure: round trips

def _other_value(f: dict):
    """A valid value of a schema field that differs from its default."""
    default, choices, kind = f["default"], f.get("choices"), f["type"]
    if choices:  # a single choice (IA3's targets) cannot differ: keep it
        return next((c for c in choices if c != default), default)
    if kind == "bool":
        return not default
    if kind == "str":
        return {"targets": "auto", "init_text": "Is this review kind?", "prefix": "Review:"}.get(f["name"], "x")
    lo, hi = f.get("lo"), f.get("hi")
    if kind == "int":
        value = default + 1
        return value if hi is None or value <= hi - (1 if f.get("hi_open") else 0) else default - 1
    value = default * 0.5 + 0.0125 if default else 0.0375  # not a round number: repr must round-trip it
    if hi is not None and value >= hi:
        value = hi / 3
    if lo is not None and value <= lo:
        value = lo + 0.0123
    return value


def _all_non_default(method: str) -> dict:
    base = presets.app_defaults().to_dict()
    d = RunConfig().to_dict()
    d["model"] = {"name": "org/some-model", "device": "cpu", "dtype": "float32"}
    task = "sft" if "sft" in get_method(method).tasks else "classification"  # linear_head: classification only
    d["data"] = {"source": "hub:org/reviews", "task": task, "text_column": "sentence",
                 "label_column": "stars", "prompt_column": "question", "response_column": "answer",
                 "label_map": {"0": "bad", "1": "good"}, "n_samples": 123, "val_share": 0.3125,
                 "eval_source": "hub:org/reviews-test", "max_length": 77, "truncation": "head", "hub_split": "dev"}
    schema = get_method(method).schema()
    d["method"] = {"name": method, "params": {f["name"]: _other_value(f) for f in schema}}
    train = {}
    for f in dataclasses.fields(TrainSpec):
        meta = dict(name=f.name, type=type(f.default).__name__, default=f.default, **f.metadata)
        train[f.name] = _other_value(meta)
    d["train"] = train
    d["name"] = "A lesson: r & α, 50%"
    d["experiment"] = "exp-1"
    cfg = RunConfig.from_dict(d).to_dict()  # valid as built
    for section in ("model", "data", "train"):
        for key, value in cfg[section].items():
            if (section, key) != ("data", "task") or task == "sft":
                assert value != base[section][key], f"{section}.{key} is still the default"
    return cfg


def test_every_config_field_has_a_url_key():
    fields = {("model", f.name) for f in dataclasses.fields(ModelSpec)}
    fields |= {("data", f.name) for f in dataclasses.fields(DataSpec)}
    fields |= {("train", f.name) for f in dataclasses.fields(TrainSpec)}
    fields |= {("", "name"), ("", "experiment"), ("method", "name")}
    for method in all_methods().values():
        fields |= {("method", f["name"]) for f in method.schema()}
    assert fields <= set(urlstate.KEYS), sorted(fields - set(urlstate.KEYS))
    assert len(set(urlstate.KEYS.values())) == len(urlstate.KEYS)


@pytest.mark.parametrize("method", [m for m in all_methods()])
def test_url_round_trip_with_every_field_changed(method):
    base = presets.app_defaults()
    cfg = _all_non_default(method)
    params = urlstate.encode(cfg, base)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items())
    decoded, warnings = urlstate.decode(params, base)
    assert warnings == []
    assert decoded == cfg
    assert RunConfig.from_dict(decoded) == RunConfig.from_dict(cfg)


def test_defaults_make_an_empty_query_and_a_lesson_preset_is_its_own_base():
    base = presets.app_defaults()
    assert urlstate.encode(base, base) == {}
    facts = presets.facts_defaults()
    assert urlstate.encode(facts, facts) == {}
    changed = facts.to_dict()
    changed["method"]["params"]["r"] = 4
    assert urlstate.encode(changed, facts) == {"r": "4"}
    assert urlstate.decode({"r": "4"}, facts)[0] == changed


def test_method_switch_starts_from_the_new_methods_defaults():
    base = presets.app_defaults()
    decoded, warnings = urlstate.decode({"meth": "prompt_tuning", "vt": "7"}, base)
    assert not warnings
    assert decoded["method"] == {"name": "prompt_tuning",
                                 "params": {"num_virtual_tokens": 7, "init": "random",
                                            "init_text": "Classify the sentiment of this review:"}}
    assert urlstate.encode(decoded, base) == {"meth": "prompt_tuning", "vt": "7"}


def test_floats_keep_their_exact_value():
    base = presets.app_defaults()
    for lr in (1e-4, 3e-4, 0.00123456789, 5e-5):
        cfg = base.to_dict()
        cfg["train"]["learning_rate"] = lr
        assert urlstate.decode(urlstate.encode(cfg, base), base)[0]["train"]["learning_rate"] == lr


@pytest.mark.parametrize("params,key", [
    ({"r": "abc"}, "r="), ({"r": "0"}, "r="), ({"r": "2.5"}, "r="), ({"lr": "7"}, "lr="),
    ({"lr": "nan"}, "lr="), ({"bs": "-3"}, "bs="), ({"meth": "nope"}, "meth="), ({"task": "bogus"}, "task="),
    ({"lmap": "[1, 2]"}, "lmap="), ({"dora": "maybe"}, "dora="), ({"sch": "weird"}, "sch="),
    ({"m": "../etc"}, "m="), ({"vt": "5"}, "vt="),  # LoRA has no virtual tokens
    ({"meth": "linear_head", "task": "sft"}, "meth="),  # a method that cannot do the task
])
def test_bad_url_values_fall_back_to_defaults_with_a_warning(params, key):
    base = presets.app_defaults()
    decoded, warnings = urlstate.decode(params, base)
    if key == "meth=" and "task" in params:
        assert decoded["data"]["task"] == "sft" and decoded["method"]["name"] == "lora"
    else:
        assert decoded == base.to_dict()
    assert len(warnings) == 1 and warnings[0].startswith(key), warnings


def test_one_bad_value_does_not_cost_the_others():
    base = presets.app_defaults()
    decoded, warnings = urlstate.decode({"r": "x", "a": "32", "ep": "2", "unknown": "1", "lesson": "1"}, base)
    assert decoded["method"]["params"]["alpha"] == 32.0 and decoded["train"]["epochs"] == 2.0
    assert decoded["method"]["params"]["r"] == base.method.params["r"]
    assert len(warnings) == 1


def test_lesson_values():
    assert urlstate.lesson_of({"lesson": "fix_hallucination"}) == "fix_hallucination"
    assert urlstate.lesson_of({"lesson": "1"}) == "" and urlstate.lesson_mode({"lesson": "1"})
    assert not urlstate.lesson_mode({}) and not urlstate.lesson_mode({"lesson": "0"})
    assert urlstate.lesson_mode({"lesson": "fix_hallucination"})


def test_learn_calculator_round_trip_and_bad_values():
    values = {"model": "mistral-7b", "method": "qlora", "r": 64, "alpha": 128, "layer": 3, "module": "k_proj",
              "tm": "choose", "tg": ["q_proj", "k_proj"], "batch": 16, "seq": 2048, "dtype": "float32", "vt": 50}
    params = urlstate.encode_learn(values)
    decoded, warnings = urlstate.decode_learn(params)
    assert decoded == values and not warnings
    assert urlstate.encode_learn({"r": 8, "batch": 4}) == {}  # defaults stay out of the link
    decoded, warnings = urlstate.decode_learn({"r": "500", "batch": "3", "seq": "x", "model": "gpt-9"},
                                              {"model": ["llama-2-7b"]})
    assert decoded == {} and len(warnings) == 4


# ------------------------------------------------------------------------------ the lessons

LESSON_KEYS = {"lora_sentiment", "fix_hallucination", "which_method", "how_much_data"}


def test_the_four_lessons_exist_with_guidance_and_a_valid_preset():
    from core import experiments
    found = lessons.all_lessons()
    assert set(found) == LESSON_KEYS
    titles = {k: v.title for k, v in found.items()}
    assert titles == {"lora_sentiment": "LoRA on sentiment", "fix_hallucination": "Fix a hallucination",
                      "which_method": "Which method wins?", "how_much_data": "How much data?"}
    for lesson in found.values():
        assert len(lesson.guidance) == 3 and all(g.endswith((".", "?")) for g in lesson.guidance)
        assert lesson.notice and lesson.summary
        assert lesson.url == f"{lesson.page}?lesson={lesson.key}"
        if lesson.page == "train":
            assert isinstance(lesson.preset(), RunConfig)
        else:
            assert lesson.experiment in experiments.presets()
            assert experiments.preset_runs(lesson.experiment)
    assert found["lora_sentiment"].preset() == presets.load_example("lora_sentiment")
    assert found["fix_hallucination"].preset() == presets.load_example("lora_facts")
    assert found["fix_hallucination"].then == "compare"
    assert lessons.get("nope") is None


# ------------------------------------------------------------------------------ the pages (AppTest)

def _open(page: str, **params) -> AppTest:
    """The page as a shared link opens it: the query string is there on the very first run."""
    return open_app(page, query={k: str(v) for k, v in params.items()}, direct=True, timeout=TIMEOUT)


def _values(at: AppTest) -> dict:
    out = {}
    for kind in ("slider", "select_slider", "number_input", "selectbox", "checkbox", "toggle", "text_input",
                 "radio"):
        for el in at.get(kind):
            out[el.label] = el.value
    return out


def test_app_train_widgets_take_the_values_of_the_link():
    at = _open("pages/train.py", r="4", a="8.0", do="0.1", tg="auto", lr="0.002", ep="2.0", bs="8", n="100",
               len="64", vs="0.25", seed="7", wu="0.1", dora="1", name="shared")
    values = _values(at)
    assert values["Rank r"] == 4 and values["Alpha"] == 8.0 and values["Dropout"] == 0.1
    assert values["Targets"] == "auto"
    assert values["Learning rate"] == 0.002 and values["Epochs"] == 2.0 and values["Batch size"] == 8
    assert values["N samples (0 = all)"] == 100 and values["Max length (tokens)"] == 64
    assert values["Validation share"] == 0.25 and values["Seed"] == 7
    assert values["Warmup ratio"] == 0.1 and values["DoRA"] is True
    assert values["Run name (optional)"] == "shared"
    assert not at.warning, [w.value for w in at.warning]
    draft = at.session_state["_train_draft"]
    assert draft["method"]["params"]["r"] == 4 and draft["train"]["learning_rate"] == 0.002
    assert dict(at.query_params)["r"] == "4"  # written back unchanged


def test_app_train_model_dataset_and_method_from_the_link():
    at = _open("pages/train.py", m="smollm2-135m-instruct", ds="builtin:facts-mini", task="sft",
               meth="prompt_tuning", vt="12")
    values = _values(at)
    assert values["Base model"] == "smollm2-135m-instruct" and values["Built-in dataset"] == "facts-mini"
    assert values["Method"] == "prompt_tuning" and values["Virtual tokens"] == 12


def test_app_train_changes_are_written_to_the_link():
    at = _open("pages/train.py")
    assert dict(at.query_params) == {}
    widget(at.slider, "Rank r").set_value(16).run()
    widget(at.number_input, "Epochs").set_value(2.0).run()
    assert not at.exception, at.exception
    assert dict(at.query_params) == {"r": "16", "ep": "2.0"}
    # the link, opened in a new session, gives the same draft
    again = _open("pages/train.py", **dict(at.query_params))
    assert again.session_state["_train_draft"] == at.session_state["_train_draft"]


def test_app_train_bad_link_warns_and_falls_back_to_defaults():
    at = _open("pages/train.py", r="lots", lr="9", meth="magic", lesson="no_such_lesson")
    warnings = " ".join(w.value for w in at.warning).replace("\\", "")  # markdown escapes: \= is =
    for key in ("r=", "lr=", "meth=", "no_such_lesson"):
        assert key in warnings, warnings
    values = _values(at)
    default = presets.app_defaults()
    assert values["Rank r"] == default.method.params["r"]
    assert values["Learning rate"] == default.train.learning_rate and values["Method"] == "lora"
    assert not at.error, [e.value for e in at.error]


def test_app_lesson_mode_hides_advanced_controls():
    at = _open("pages/train.py", lesson="1", wu="0.1")
    assert widget(at.toggle, "Lesson mode").value is True
    labels = {el.label for kind in ("slider", "number_input", "selectbox", "checkbox") for el in at.get(kind)}
    assert {"Rank r", "Epochs", "Batch size"} <= labels  # the basic controls stay
    for hidden in ("Warmup ratio", "Weight decay", "Grad accum", "DoRA", "rsLoRA", "Logging steps"):
        assert hidden not in labels, hidden
    assert not any(e.label == "Advanced" for e in at.expander)
    # hidden, not lost: the link's advanced value still goes into the run
    assert at.session_state["_train_draft"]["train"]["warmup_ratio"] == 0.1
    assert not widget(at.button, "Start training").disabled
    widget(at.toggle, "Lesson mode").set_value(False).run()
    labels = {el.label for kind in ("slider", "number_input", "checkbox") for el in at.get(kind)}
    assert {"Warmup ratio", "DoRA"} <= labels
    assert dict(at.query_params) == {"wu": "0.1"}


@pytest.mark.parametrize("key", sorted(LESSON_KEYS))
def test_app_each_lesson_opens_its_preset_from_the_learn_page(key):
    at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert len([b for b in at.button if b.label == "Open lesson"]) == 4
    at.button(key=f"learn_lesson_{key}").click().run()
    assert not at.exception, at.exception
    lesson = lessons.get(key)
    assert dict(at.query_params) == {"lesson": key}
    info = " ".join(i.value for i in at.info)
    # A notice's number slots ({name|words}) are filled by the page: every other part is shown as written.
    assert f"Lesson: {lesson.title}" in info and "{" not in info
    assert all(part in info for part in re.split(r"\{\w+\|[^{}]*\}", lesson.notice))
    if lesson.page == "train":
        preset = lesson.preset()
        values = _values(at)
        assert values["Base model"] == preset.model.name
        assert values["Built-in dataset"] == preset.data.source.removeprefix("builtin:")
        assert values["Method"] == preset.method.name and values["Rank r"] == preset.method.params["r"]
        assert values["Learning rate"] == preset.train.learning_rate
        assert values["Lesson mode"] is True
    else:
        assert any(m.value.endswith("← this lesson") and lesson.title in m.value for m in at.markdown)
        button = at.button(key=f"exp_preset_{lesson.experiment}")
        assert button.proto.type == "primary"


def test_app_lesson_link_opened_directly_on_its_page():
    at = _open("pages/train.py", lesson="lora_sentiment", r="4")
    values = _values(at)
    assert values["Rank r"] == 4  # the link's own change on top of the lesson's preset
    assert values["Epochs"] == presets.load_example("lora_sentiment").train.epochs
    assert dict(at.query_params) == {"lesson": "lora_sentiment", "r": "4"}
    exp = _open("pages/train.py", lesson="which_method")  # an Experiments lesson on Train goes there
    assert any("Which method wins?" in i.value for i in exp.info)


def test_app_learn_calculator_from_the_link_and_back():
    at = _open("pages/learn.py", model="mistral-7b", r="32", method="dora", batch="16")
    assert at.selectbox(key="learn_model").value == "mistral-7b"
    assert at.slider(key="learn_r").value == 32 and at.selectbox(key="learn_method").value == "dora"
    assert at.select_slider(key="learn_batch").value == 16
    at.slider(key="learn_r").set_value(64).run()
    assert dict(at.query_params) == {"model": "mistral-7b", "r": "64", "method": "dora", "batch": "16"}
    bad = _open("pages/learn.py", r="1000", model="gpt-99")
    assert len(bad.warning) == 2 and bad.slider(key="learn_r").value == 8


def _finished_like(preset: RunConfig, seconds: float, owner: str = "o") -> None:
    from core import runs
    run_dir = runs.create_run(preset, owner=owner)
    runs.write_summary(run_dir, {"wall_time_s": seconds, "train_time_s": seconds - 1})
    runs.write_status(run_dir, "completed")


def test_a_lesson_quotes_the_time_its_run_took_on_this_server(runs_dir):
    from core import runs
    preset = lessons.get("lora_sentiment").preset(hardware=False)
    assert lessons.measured_seconds(preset, runs.list_runs()) is None  # no run yet: the words stand
    for seconds in (50.0, 70.0, 400.0):
        _finished_like(preset, seconds)
    other = preset.with_overrides(["train.epochs=9"])  # another job: its time says nothing here
    _finished_like(other, 5.0)
    assert lessons.measured_seconds(preset, runs.list_runs()) == (70.0, 3)


def test_app_lesson_box_says_this_servers_time_after_a_run(clean_app):
    guidance = lambda at: " ".join(i.value for i in at.info)  # noqa: E731
    before = _open("pages/train.py", lesson="lora_sentiment")
    assert "after the first run here" in guidance(before)
    _finished_like(lessons.get("lora_sentiment").preset(), 83.0)
    after = _open("pages/train.py", lesson="lora_sentiment")
    assert "about 1 min 23 s on this server (the median of 1 earlier run of this lesson here)" in guidance(after)
