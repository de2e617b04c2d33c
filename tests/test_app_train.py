"""The app through Streamlit's AppTest: pages render, the Train page starts, shows and stops a job.

AppTest does not fire `run_every` fragments by itself, so the tests poll the job manager and call
at.run() to redraw, as the fragment would.
"""
from __future__ import annotations

import json
import os
import time

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from tests.helpers.apptest import open_app, widget

OTHER_MODEL = "Hub id or local folder…"

pytestmark = pytest.mark.usefixtures("clean_app")


def app() -> AppTest:
    return open_app()


def train_page() -> AppTest:
    return open_app("pages/train.py")


def choose_model(at: AppTest, name: str) -> None:
    widget(at.selectbox, "Base model").select(OTHER_MODEL).run()
    widget(at.text_input, "Hub id or local folder").input(name).run()
    assert not at.exception, at.exception


def choose_local_file(at: AppTest, path: str) -> None:
    widget(at.radio, "Dataset").set_value("local").run()
    widget(at.text_input, "Local file path (on the server)").input(path).run()
    assert not at.exception, at.exception


def set_training(at: AppTest, **values) -> None:
    labels = {"n_samples": "N samples (0 = all)", "max_length": "Max length (tokens)", "epochs": "Epochs",
              "batch_size": "Batch size", "logging_steps": "Logging steps", "eval_steps": "Eval steps"}
    for key, value in values.items():
        widget(at.number_input, labels[key]).set_value(value)
    at.run()
    assert not at.exception, at.exception


def start(at: AppTest) -> str:
    button = widget(at.button, "Start training")
    assert not button.disabled, [e.value for e in at.error]
    button.click().run()
    assert not at.exception, at.exception
    assert "_train_job" in at.session_state, [e.value for e in at.error]
    active = jobs.get_manager().active() or (jobs.get_manager().queue() or [None])[0]
    job_id = at.session_state["_train_job"]
    assert active is None or active["id"] == job_id
    return job_id


def wait_for(job_id: str, done, timeout: float = 30.0) -> dict:
    end = time.time() + timeout
    while time.time() < end:
        snap = jobs.get_manager().snapshot(job_id)
        if done(snap):
            return snap
        time.sleep(0.1)
    raise AssertionError(f"timed out; job state {snap['state']}, {snap.get('error')}")


def has_log(snap: dict) -> bool:
    return any(e.get("type") == "log" for e in snap["events"]) or snap["state"] not in ("queued", "running")


def finished(snap: dict) -> bool:
    return snap["state"] not in ("queued", "running")


def chart_titles(at: AppTest) -> list[str]:
    titles = []
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec).get("layout", {})
        titles.append(((layout.get("title") or {}).get("text")) or "")
    return titles


def texts(at: AppTest) -> str:
    return " ".join(str(getattr(el, "value", "")) for el in at.markdown) + " ".join(
        str(el.value) for el in at.caption)


# ------------------------------------------------------------------------------------------ tests

@pytest.mark.parametrize("page", ["pages/learn.py", "pages/train.py", "pages/compare.py", "pages/runs.py"])
def test_every_page_renders(page):
    at = app()
    assert any("CPU" in m.value or "GPU" in m.value for m in at.sidebar.markdown)  # the shared sidebar
    at.switch_page(page)
    at.run()
    assert not at.exception, at.exception


def test_train_page_defaults_are_valid():
    at = train_page()
    assert not at.error, [e.value for e in at.error]
    assert not widget(at.button, "Start training").disabled
    # The estimate for the default choice (MiniLM + LoRA) is shown before launch.
    assert any(m.label == "Trainable parameters" for m in at.metric)


def test_train_from_local_file_shows_live_charts_and_result(tiny_bert, sentiment_file):
    at = train_page()
    choose_model(at, tiny_bert)
    choose_local_file(at, sentiment_file)
    assert not at.error, [e.value for e in at.error]
    assert "40 rows" in texts(at)
    set_training(at, n_samples=40, max_length=32, epochs=1.0, batch_size=8, logging_steps=1)
    job_id = start(at)

    snap = wait_for(job_id, has_log)
    at.run()  # what the live fragment would draw now
    assert not at.exception, at.exception
    assert "Training loss" in chart_titles(at)
    assert "Learning rate" in chart_titles(at)
    assert at.session_state["_train_events"]["id"] == job_id
    assert any(e["type"] == "log" for e in at.session_state["_train_events"]["events"])

    snap = wait_for(job_id, finished)
    assert snap["state"] == "completed", snap.get("error")
    at.run()
    assert not at.exception, at.exception
    labels = [m.label for m in at.metric]
    assert "Validation accuracy" in labels and "Trainable" in labels
    assert any(b.label == "Compare base vs tuned" for b in at.button)
    assert os.path.isdir(os.path.join(os.environ["PLAYGROUND_RUNS_DIR"], job_id))


def test_progress_shows_while_running_and_stop_stops(tiny_bert, sentiment_file):
    at = train_page()
    choose_model(at, tiny_bert)
    choose_local_file(at, sentiment_file)
    set_training(at, n_samples=40, max_length=32, epochs=20.0, batch_size=4, logging_steps=1)
    job_id = start(at)
    wait_for(job_id, lambda s: s["state"] == "running" and (s["progress"]["step"] or 0) >= 1)
    at.run()
    assert not at.exception, at.exception
    assert at.get("progress"), "a progress bar while the job runs"
    assert "Training loss" in chart_titles(at)
    widget(at.button, "Stop").click().run()
    assert not at.exception, at.exception
    snap = wait_for(job_id, finished, timeout=20)
    assert snap["state"] == "stopped"
    assert snap["progress"]["step"] < snap["progress"]["max_steps"]
    at.run()
    assert not at.exception, at.exception
    assert any("stopped" in str(i.value) for i in at.info)


def test_offline_hub_id_shows_error_and_disables_start():
    at = train_page()
    choose_model(at, "no-such-org/no-such-model")
    assert at.error, "an unavailable model is reported"
    assert "not available" in at.error[0].value or "offline" in at.error[0].value.lower()
    assert widget(at.button, "Start training").disabled


def test_server_limit_is_shown_before_the_click():
    at = train_page()
    widget(at.number_input, "Epochs").set_value(50.0).run()
    assert not at.exception, at.exception
    assert any("PLAYGROUND_MAX_EPOCHS" in e.value for e in at.error), [e.value for e in at.error]
    assert widget(at.button, "Start training").disabled


def test_bad_hyperparameter_shows_config_error():
    at = train_page()
    widget(at.number_input, "Epochs").set_value(0.0).run()
    assert not at.exception, at.exception
    assert any("train.epochs" in e.value for e in at.error), [e.value for e in at.error]
    assert widget(at.button, "Start training").disabled
    assert jobs.get_manager().active() is None


def test_draft_survives_a_page_switch():
    at = train_page()
    widget(at.number_input, "Max length (tokens)").set_value(64).run()
    at.switch_page("pages/learn.py")
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert widget(at.number_input, "Max length (tokens)").value == 64
    assert at.session_state["_train_draft"]["data"]["max_length"] == 64


# ------------------------------------------------- with a fake trainer: failures and rare events

def fake_trainer(events=(), result=None, exc=None):
    def run(cfg, run_dir, on_event, stop):
        for ev in events:
            on_event(dict(ev))
        if exc is not None:
            raise exc
        return result or {}
    return run


def test_failed_run_shows_message_and_hint():
    jobs.get_manager(run_fn=fake_trainer(exc=MemoryError()))  # the app's manager() returns this one
    at = train_page()
    job_id = start(at)
    wait_for(job_id, finished)
    at.run()
    assert not at.exception, at.exception
    message = " ".join(e.value for e in at.error)
    assert "out of memory" in message and "batch size" in message


def test_summary_and_lora_anatomy_from_events():
    layers = [{"name": f"l{i}.{m}", "layer": i, "module": m, "rel_norm": 0.01 * (i + 1), "singular_values": [],
               "energy": []} for i in range(2) for m in ("query", "value")]
    events = [{"type": "eval", "step": 0, "eval_loss": 0.7, "eval_accuracy": 0.5},
              {"type": "log", "step": 1, "max_steps": 2, "loss": 0.69, "learning_rate": 1e-3},
              {"type": "eval", "step": 2, "max_steps": 2, "eval_loss": 0.4, "eval_accuracy": 0.9},
              {"type": "anatomy", "step": 2, "layers": layers}]
    summary = {"task": "classification", "final": {"eval_loss": 0.4, "eval_accuracy": 0.9}, "initial": {},
               "trainable_params": 1000, "total_params": 100000, "trainable_percent": 1.0, "train_time_s": 3.0,
               "peak_rss_mb": 500.0, "latency_ms_per_sample": 2.5, "n_train": 8, "n_val": 2}
    jobs.get_manager(run_fn=fake_trainer(events, summary))
    at = train_page()
    job_id = start(at)
    wait_for(job_id, finished)
    at.run()
    assert not at.exception, at.exception
    accuracy = widget(at.metric, "Validation accuracy")
    assert accuracy.value == "90.0%" and "+40.0" in accuracy.delta  # against the step-0 evaluation
    assert any(e.label == "LoRA anatomy" for e in at.expander)
    assert "Validation accuracy" in chart_titles(at)
    # Validation loss is drawn once, beside the training loss, not again on a chart of its own.
    assert "Validation loss" not in chart_titles(at)
    loss = next(c for c in at.get("plotly_chart") if "Training loss" in c.proto.spec)
    train_trace, val_trace = json.loads(loss.proto.spec)["data"]
    assert (train_trace["name"], val_trace["name"]) == ("training loss", "validation loss")
    assert val_trace["line"]["color"] == "#e67e22"  # not the theme's paler shade of the training curve
    widget(at.button, "Compare base vs tuned").click().run()
    assert at.session_state["compare_run"] == job_id  # what the Compare page opens with


def test_full_queue_is_an_error_not_a_traceback(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_QUEUE", "0")
    at = train_page()
    widget(at.button, "Start training").click().run()
    assert not at.exception, at.exception
    assert any("queue is full" in e.value for e in at.error)


def test_unreadable_run_folder_is_said_not_swallowed(monkeypatch):
    # While a run trains its folder turns unreadable (a disk error): the live view says so in words
    # instead of drawing the run as if it had no config, and shows no traceback.
    import threading
    from core import runs
    release = threading.Event()

    def trainer(cfg, run_dir, on_event, stop):
        on_event({"type": "log", "step": 1, "max_steps": 2, "loss": 0.5})
        release.wait(30)
        return {"task": "classification", "final": {}}
    jobs.get_manager(run_fn=trainer)
    at = train_page()
    job_id = start(at)
    try:
        wait_for(job_id, lambda s: s["state"] == "running")

        def unreadable(run_id):
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(runs, "get_run", unreadable)
        at.run()
        assert not at.exception, at.exception
        assert any("the disk is full" in e.value for e in at.error), [e.value for e in at.error]
    finally:
        release.set()
        wait_for(job_id, finished)


def test_estimate_card_says_why_it_is_missing(tmp_path):
    # A model the trainer could load but the estimator does not know: the card names the reason
    # (the family and the supported ones), not just "unavailable", and the form stays usable.
    # (roberta was the example until the GPU shelf taught the estimator roberta; gpt2 it does not know)
    from transformers import GPT2Config
    folder = tmp_path / "tiny-gpt2"
    GPT2Config(vocab_size=100, n_embd=32, n_layer=1, n_head=2, n_positions=64).save_pretrained(folder)
    at = train_page()
    choose_model(at, str(folder))
    captions = [c.value for c in at.caption if "estimate unavailable" in c.value]
    assert captions, [c.value for c in at.caption]
    assert "gpt2" in captions[0] and "supported" in captions[0], captions
    assert not at.exception


def test_gradient_checkpointing_checkbox_reaches_the_config_and_the_estimate():
    at = train_page()
    before = widget(at.metric, "Training memory (estimate)").value
    widget(at.checkbox, "Gradient checkpointing").check().run()
    assert not at.exception, at.exception
    assert at.session_state["_train_draft"]["train"]["gradient_checkpointing"] is True
    assert widget(at.metric, "Training memory (estimate)").value != before  # the estimator was told


def test_every_form_widget_tells_the_browser_its_value_not_its_minimum():
    """streamlit#4247: when the run that seeded a widget's key is interrupted by the next click, the
    browser (re)creates the widget from its proto's default and sends that back at the next
    interaction. With no default given that was the minimum: in a real browser every hyperparameter
    fell to it (alpha 0, learning rate 1e-6) and Start stayed disabled. The default must be the value."""
    at = train_page()
    assert not at.exception, at.exception
    checked = set()
    for kind in ("number_input", "slider", "select_slider", "selectbox", "checkbox"):
        for w in getattr(at, kind):
            if not (w.key or "").startswith(("tr_t_", "tr_m_")):
                continue
            many = kind in ("slider", "select_slider")  # a range's two ends; one value otherwise
            default = list(w.proto.default) if many else [w.proto.default]
            if kind == "selectbox":
                shown = [w.index]
            elif kind == "select_slider":  # the default indexes the formatted options
                default, shown = [w.options[int(i)] for i in default], [f"{w.value:.0e}"]
            else:
                shown = [w.value]
            assert default == shown, (w.key, default, shown)
            checked.add(w.key)
    # the method's and the training section's controls were all seen, the learning rate among them
    assert len(checked) >= 8 and "tr_t_learning_rate" in checked, checked
