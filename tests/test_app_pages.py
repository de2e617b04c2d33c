"""App tests for the Learn, Runs and Compare pages (streamlit.testing AppTest, tiny random models)."""
from __future__ import annotations

import os

import pytest
from streamlit.testing.v1 import AppTest

from tests.helpers.apptest import OWNER_KEY, open_app
from tests.helpers.finished_runs import trained_run

pytestmark = pytest.mark.usefixtures("clean_app")


def _app(page: str | None = None, **state) -> AppTest:
    return open_app(page, state=state)


def _bert_run(tiny_bert: str, sentiment_file: str, owner: str = "") -> str:
    return trained_run({"model": {"name": tiny_bert},
                        "data": {"source": sentiment_file, "task": "classification", "max_length": 32},
                        "method": {"name": "lora", "params": {"r": 4}},
                        "train": {"epochs": 1, "batch_size": 32, "logging_steps": 1}}, owner)


def _metric(at: AppTest, label: str) -> str:
    found = [m.value for m in at.metric if m.label == label]
    assert found, f"no metric labelled {label!r}: {[m.label for m in at.metric]}"
    return found[0]


def _count(text: str) -> int:
    return int(text.replace(",", ""))


# ------------------------------------------------------------------------------------- Learn

def test_learn_r_slider_moves_the_trainable_count(runs_dir):
    at = _app()
    assert at.slider(key="learn_r").value == 8
    before = _count(_metric(at, "Trainable parameters"))
    at.slider(key="learn_r").set_value(16).run()
    assert not at.exception
    after = _count(_metric(at, "Trainable parameters"))
    # LoRA's A and B both grow linearly with r.
    assert after == 2 * before
    assert len(at.get("plotly_chart")) >= 2  # the LoRA picture and the memory bars


def test_learn_calculator_offers_gradient_checkpointing(runs_dir):
    """The QLoRA claim needs recomputed activations: the calculator offers them and its memory drops."""
    at = _app()
    at.selectbox(key="learn_model").set_value("llama-2-70b").run()
    at.selectbox(key="learn_method").set_value("qlora").run()
    at.select_slider(key="learn_batch").set_value(4).run()
    at.select_slider(key="learn_seq").set_value(512).run()
    label = next(m.label for m in at.metric if m.label.startswith("Training memory"))
    without = float(_metric(at, label).split()[0])
    at.checkbox(key="learn_gc").check().run()
    assert not at.exception
    with_gc = float(_metric(at, label).split()[0])
    assert with_gc < 0.6 * without, (without, with_gc)
    assert with_gc < 48  # one 48 GB GPU, as the page's QLoRA sentence says
    assert any("gradient checkpointing" in md.value for md in at.markdown)


def test_learn_lora_picture_says_so_when_another_method_is_picked(runs_dir):
    at = _app()
    assert not [i for i in at.info if "This picture is LoRA's" in i.value]
    at.selectbox(key="learn_method").set_value("prompt_tuning").run()
    notes = [i.value for i in at.info if "This picture is LoRA's" in i.value]
    assert notes and "virtual token" in notes[0], [i.value for i in at.info]


@pytest.mark.slow  # a sweep: every model, then every method (~15 s on one busy core)
def test_learn_every_model_and_method_renders(runs_dir):
    from core.estimate import list_models
    at = _app()
    for key in list_models():
        at.selectbox(key="learn_model").set_value(key).run()
        assert not at.exception, key
        assert not at.error, (key, [e.value for e in at.error])
    for method in ("full", "linear_head", "dora", "qlora", "prompt_tuning", "prefix_tuning", "ia3"):
        at.selectbox(key="learn_method").set_value(method).run()
        assert not at.exception, method
        assert _count(_metric(at, "Trainable parameters")) > 0, method
    at.radio(key="learn_targets_mode").set_value("All linear layers").run()
    assert not at.exception and not at.error


# -------------------------------------------------------------------------------------- Runs

def test_runs_lists_a_run_and_its_owner_can_delete_it(runs_dir, tiny_bert, sentiment_file):
    run_id = _bert_run(tiny_bert, sentiment_file, owner="owner-a")
    at = _app("pages/runs.py", **{OWNER_KEY: "owner-a"})
    table = at.dataframe[0].value
    row = table[table["Run"] == run_id]
    assert len(row) == 1
    assert row["Method"].iloc[0] == "lora" and row["Status"].iloc[0] == "completed"
    assert row["r"].iloc[0] == 4 and row["N train"].iloc[0] == 32
    assert row["Yours"].iloc[0]
    assert any("core.train --config" in c.value and run_id in c.value for c in at.code)
    assert len(at.get("plotly_chart")) >= 4  # curves, method comparison, anatomy
    assert any("low-rank" in c.value for c in at.caption)  # the anatomy is explained to the class

    at.checkbox(key="runs_confirm_delete").check().run()
    at.button(key="runs_delete").click().run()
    assert not at.exception
    assert not os.path.exists(os.path.join(runs_dir, run_id))
    assert any("Deleted" in s.value for s in at.success)


def test_runs_downloads_only_for_the_owner(runs_dir, tiny_bert, sentiment_file):
    _bert_run(tiny_bert, sentiment_file, owner="owner-a")
    at = _app("pages/runs.py", **{OWNER_KEY: "owner-b"})
    assert any("Only the session that started this run" in i.value for i in at.info)
    assert not [b for b in at.button if b.key == "runs_delete"]


# ----------------------------------------------------------------------------------- Compare

def _assistant_texts(at: AppTest) -> list[list[str]]:
    """The assistant answers of each column that holds a chat pane, left to right."""
    panes = []
    for col in at.columns:
        messages = [m for m in col.get("chat_message") if m.name == "assistant"]
        if messages:
            panes.append([" ".join(md.value for md in m.markdown) for m in messages])
    return panes


def test_compare_chat_shows_two_answers(runs_dir, tiny_llama, facts_file):
    run_id = trained_run({"model": {"name": tiny_llama},
                          "data": {"source": facts_file, "task": "sft", "max_length": 32},
                          "method": {"name": "lora"},
                          "train": {"max_steps": 1, "batch_size": 4}})
    at = _app("pages/compare.py", compare_run=run_id)
    assert at.selectbox(key="compare_pick").value == run_id
    assert at.button(key="cmp_ex_0")  # an example prompt from the run's data
    at.slider(key="cmp_max_new").set_value(16)
    at.text_input(key="cmp_prompt").input("Who founded Quillmere?")
    at.button(key="cmp_send").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    panes = _assistant_texts(at)
    assert len(panes) == 2
    assert all(len(p) == 1 for p in panes)
    for (answer,) in panes:  # random weights: gibberish, but generated text, not a placeholder or an echo
        # (pages/compare.py is a page script: importing it for NO_ANSWER would run the page)
        assert answer.strip() and "no answer" not in answer and "Who founded Quillmere?" not in answer, answer

    at.button(key="cmp_clear").click().run()
    assert not at.exception and _assistant_texts(at) == []


def test_compare_classifier_shows_two_probability_bars(runs_dir, tiny_bert, sentiment_file):
    run_id = _bert_run(tiny_bert, sentiment_file)
    at = _app("pages/compare.py", compare_run=run_id)
    at.text_area(key="cmp_text").input("a wonderful joyful film")
    at.button(key="cmp_classify").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    import json
    for chart in charts:
        bars = json.loads(chart.proto.spec)["data"][0]
        assert sorted(bars["y"]) == ["negative", "positive"]
        assert sum(bars["x"]) == pytest.approx(1.0, abs=1e-4)


def test_compare_without_finished_runs_says_what_to_do(runs_dir):
    at = _app("pages/compare.py")
    assert any("Train" in i.value for i in at.info)


def test_compare_classifier_scores_held_out_rows_base_vs_tuned(runs_dir, tiny_bert, sentiment_file):
    run_id = _bert_run(tiny_bert, sentiment_file)
    at = _app("pages/compare.py", compare_run=run_id)
    at.button(key="cmp_confusion_go").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    import json
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("Base: ") for t in titles) and any(t.startswith("Tuned: ") for t in titles), titles
    # the matrices count every scored row once
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if spec["layout"]["title"]["text"].startswith(("Base", "Tuned")):
            n = int(spec["layout"]["title"]["text"].split(" of ")[1].split()[0])
            assert sum(map(sum, spec["data"][0]["z"])) == n
