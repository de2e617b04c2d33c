"""Limits for a public Space (issue 25, part 2): memory refusal and guard, chat limits, disk hygiene.

Each test reproduces a defect the issue found (it failed before the fix), with tiny models.
"""
from __future__ import annotations

import errno
import os
import re
import threading
import time

import pytest

from core import cli, jobs, limits, memory, runs
from core.config import ConfigError, RunConfig
from tests.helpers.finished_runs import runs_folder, write_facts

BIG = {"model": {"name": "minilm"}, "data": {"source": "builtin:sentiment", "task": "classification",
                                            "max_length": 512},
       "method": {"name": "lora", "params": {"r": 8}}, "train": {"epochs": 1, "batch_size": 1024}}


@pytest.fixture(autouse=True)
def clean_env(tmp_path, monkeypatch):
    for var in ("PLAYGROUND_MEMORY_GUARD_MB", "PLAYGROUND_MEMORY_GUARD_PERCENT", "PLAYGROUND_MEMORY_MARGIN_MB",
                "PLAYGROUND_MAX_LENGTH", "PLAYGROUND_MAX_PROMPT_CHARS", "PLAYGROUND_MAX_PROMPT_TOKENS",
                "PLAYGROUND_CHAT_PER_MINUTE", "PLAYGROUND_UPLOAD_QUOTA_MB", "PLAYGROUND_UPLOAD_MAX_AGE_HOURS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", str(tmp_path / "runs"))
    jobs.reset_manager()
    yield
    jobs.reset_manager()


def _wait(mgr, job_id, states, timeout=60.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        snap = mgr.snapshot(job_id, events=False)
        if snap["state"] in states:
            return snap
        time.sleep(0.05)
    raise AssertionError(f"{job_id} stuck in {mgr.snapshot(job_id, events=False)['state']}")


# ------------------------------------------------------------------------------------ memory

def test_the_oom_setting_is_refused_before_anything_loads(tmp_path):
    """/train?bs=1024&len=512 on MiniLM: the card said hundreds of GB and Start stayed enabled."""
    def never(*_):
        raise AssertionError("a run that cannot fit was started")
    mgr = jobs.JobManager(never)
    try:
        with pytest.raises(limits.LimitExceeded) as caught:
            mgr.submit(RunConfig.from_dict(BIG), "student-a")
    finally:
        mgr.shutdown()
    message = str(caught.value)
    assert "GB of memory" in message and "this server can give" in message
    assert "batch size (now 1024)" in message and "max length (now 512)" in message
    assert not os.path.exists(tmp_path / "runs") or os.listdir(tmp_path / "runs") == []


def test_the_first_evaluation_batch_is_counted(monkeypatch):
    """Memory reached 23 GB while scoring the untouched model: the eval batch is max(bs, 32) rows,
    and a language model's eval keeps fp32 logits of every token."""
    cfg = {"model": {"name": "smollm2-135m-instruct"}, "data": {"source": "builtin:facts", "task": "sft",
                                                                 "max_length": 1024},
           "method": {"name": "lora", "params": {"r": 8}}, "train": {"epochs": 1, "batch_size": 1}}
    peak = memory.estimate_peak(cfg, memory.model_config("smollm2-135m-instruct"))
    assert peak["eval"] > peak["train"] and peak["eval_batch"] == 32
    between = (peak["train"] + peak["eval"]) // 2 + limits.memory_margin_bytes()
    monkeypatch.setattr(memory, "ram_capacity", lambda: between)
    with pytest.raises(limits.LimitExceeded, match="the first evaluation"):
        limits.check_run(RunConfig.from_dict(cfg))


def test_max_length_above_the_models_limit_names_both_numbers():
    """len=1024 on MiniLM (512 positions) was allowed and died in a raw PyTorch RuntimeError."""
    d = {**BIG, "data": {**BIG["data"], "max_length": 1024}, "train": {"epochs": 1, "batch_size": 8}}
    with pytest.raises(limits.LimitExceeded) as caught:
        limits.check_run(RunConfig.from_dict(d))
    assert "data.max_length=1024" in str(caught.value) and "512 tokens" in str(caught.value)


def test_a_small_run_still_fits():
    d = {**BIG, "data": {**BIG["data"], "max_length": 128}, "train": {"epochs": 1, "batch_size": 8}}
    limits.check_run(RunConfig.from_dict(d))


def test_watchdog_trips_once_and_only_while_inside():
    seen = []
    with memory.MemoryWatchdog(100, seen.append, interval_s=0.02, rss=lambda: 200):
        deadline = time.time() + 3
        while not seen and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)  # a second poll above the limit must not trip again
    assert seen == [200]
    quiet = []
    with memory.MemoryWatchdog(100, quiet.append, interval_s=0.02, rss=lambda: 50):
        time.sleep(0.1)
    assert quiet == []


def test_with_two_runs_in_the_process_a_trip_stops_only_the_heavier_one():
    """Parallel workers share one process RSS: one spike must stop one run, not every run."""
    light, heavy = [], []
    over = lambda: 200  # noqa: E731
    with memory.MemoryWatchdog(100, light.append, interval_s=0.02, rss=over, weight=10):
        with memory.MemoryWatchdog(100, heavy.append, interval_s=0.02, rss=over, weight=1000):
            deadline = time.time() + 3
            while not heavy and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(0.2)  # both guards keep polling above the limit meanwhile
            assert heavy == [200] and light == []
        # the heavy run has stopped and left; still above the limit, the light one is next
        deadline = time.time() + 3
        while not light and time.time() < deadline:
            time.sleep(0.01)
    assert light == [200] and heavy == [200]


def test_a_run_past_the_memory_guard_fails_and_the_next_one_runs(tmp_path, monkeypatch, tiny_bert,
                                                                   sentiment_file):
    """An OOM in one run killed the server; now the guard stops the run and the manager serves on."""
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_DATA", "1")
    d = {"model": {"name": tiny_bert}, "data": {"source": sentiment_file, "task": "classification",
                                                  "max_length": 32},
         "method": {"name": "lora", "params": {"r": 4}}, "train": {"batch_size": 4, "max_steps": 400,
                                                                    "eval_steps": 1000}}
    mgr = jobs.get_manager()
    monkeypatch.setenv("PLAYGROUND_MEMORY_GUARD_MB", "1")  # far below any process: trips at once
    first = mgr.submit(RunConfig.from_dict(d), "student-a")
    snap = _wait(mgr, first, ("failed", "completed", "stopped"))
    assert snap["state"] == "failed", snap
    assert snap["error"].startswith("ran out of memory") and "PLAYGROUND_MEMORY_GUARD" in snap["error"]
    assert "batch size" in snap["hint"]
    assert runs.read_status(runs.run_dir_for(first))["state"] == "failed"
    monkeypatch.delenv("PLAYGROUND_MEMORY_GUARD_MB")
    d["train"]["max_steps"] = 2
    second = mgr.submit(RunConfig.from_dict(d), "student-a")
    assert _wait(mgr, second, ("failed", "completed", "stopped"))["state"] == "completed"


# ------------------------------------------------------------------------------------ messages

@pytest.mark.parametrize("exc, words", [
    (OSError(errno.ENOSPC, "No space left on device", "/srv/runs/x/adapter/model.safetensors"),
     "the disk is full"),
    (OSError(errno.EROFS, "Read-only file system", "/srv/runs/x/status.json"), "read-only"),
    (PermissionError(errno.EACCES, "Permission denied", "/srv/runs"), "read-only or not writable"),
])
def test_failures_name_their_real_cause(exc, words):
    message, hint = cli.explain_failure(exc)
    assert words in message and "/srv" not in message and "smaller model" not in hint
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = exc
    assert words in cli.explain_failure(wrapped)[0]


def test_long_values_in_messages_are_shortened():
    message, _ = cli.explain_failure(ValueError("bad link " + "x" * 20_000))
    assert len(message) < 400 and "characters left out" in message


# ------------------------------------------------------------------------------------ chat

@pytest.fixture(scope="module")
def chat_model(tmp_path_factory, tiny_llama):
    from core.infer import RunModel
    from core.train import run
    folder = tmp_path_factory.mktemp("chat")
    facts = write_facts(folder / "facts.jsonl")
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama}, "data": {"source": str(facts), "task": "sft",
                                                                        "max_length": 32},
                               "method": {"name": "lora", "params": {"r": 4}},
                               "train": {"batch_size": 4, "max_steps": 2, "eval_steps": 100}})
    with runs_folder(str(folder / "runs")):
        run(cfg, str(folder / "run"))
    return RunModel(str(folder / "run"))


@pytest.fixture
def slow_model(chat_model):
    """20 ms per forward pass: a tiny model that answers at a small CPU's pace."""
    from core import chat_gate
    chat_gate.reset()
    hook = chat_model.model.get_base_model().register_forward_pre_hook(lambda *_: time.sleep(0.02))
    yield chat_model
    hook.remove()
    chat_gate.reset()


def _ask(model, session: str, prompt: str, max_new_tokens: int = 64) -> str:
    """What the Compare page does for one send (core part): rate limit, one in flight, stream."""
    from core import chat_gate
    model.check_prompt(prompt)
    chat_gate.check_rate(session)
    cancel = chat_gate.begin(session)
    try:
        return "".join(model.generate_stream(prompt, max_new_tokens=max_new_tokens, cancel=cancel))
    finally:
        chat_gate.end(session, cancel)


def test_over_long_prompts_are_refused_naming_the_limit(chat_model, monkeypatch):
    with pytest.raises(limits.LimitExceeded, match="PLAYGROUND_MAX_PROMPT_CHARS") as caught:
        chat_model.generate("x" * 20_000)
    assert "20,000 characters" in str(caught.value) and "2,000" in str(caught.value)
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "20")
    with pytest.raises(limits.LimitExceeded, match="PLAYGROUND_MAX_PROMPT_TOKENS"):
        chat_model.check_prompt("who founded quillmere " * 10)
    with pytest.raises(limits.LimitExceeded, match="PLAYGROUND_MAX_PROMPT_CHARS"):
        chat_model.classify("y" * 50_000) if chat_model.task != "sft" else limits.check_prompt_chars("y" * 50_000)


def test_a_flood_from_one_session_does_not_starve_another(slow_model):
    """Session A: a 20k prompt and 30 rapid sends; session B's "hi" is answered within seconds."""
    from core import chat_gate
    outcomes: list = []

    def flood(i: int) -> None:
        try:
            outcomes.append(("answer", _ask(slow_model, "A", f"flood {i}")))
        except ConfigError as exc:
            outcomes.append(("refused", str(exc)))
    with pytest.raises(ConfigError):
        _ask(slow_model, "A", "z" * 20_000)
    threads = [threading.Thread(target=flood, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    t0 = time.time()
    answer = _ask(slow_model, "B", "hi", max_new_tokens=8)
    waited = time.time() - t0
    for t in threads:
        t.join(30)
    assert waited < 4.0, f"session B waited {waited:.1f} s"
    assert isinstance(answer, str)
    assert len(outcomes) == 30, "every send gets an answer or a refusal: none dropped silently"
    refused = [text for kind, text in outcomes if kind == "refused"]
    assert len(refused) >= 30 - limits.chat_per_minute()
    assert all("PLAYGROUND_CHAT_PER_MINUTE" in t or "busy" in t for t in refused), refused[:3]
    assert not any(t.is_alive() for t in threading.enumerate() if t.name == "playground-generate")
    assert not chat_gate.in_flight("A") and not chat_gate.in_flight("B")


def test_an_answer_stops_when_its_reader_goes_away(slow_model):
    stream = slow_model.generate_stream("tell me everything", max_new_tokens=200)
    next(stream)
    t0 = time.time()
    stream.close()  # what a closed tab or a superseded script run does to the generator
    assert time.time() - t0 < 1.0
    assert not any(t.is_alive() for t in threading.enumerate() if t.name == "playground-generate")
    with slow_model.view(True):  # the lock is free again
        pass


def test_an_answer_has_a_time_budget(slow_model, monkeypatch):
    monkeypatch.setenv("PLAYGROUND_GENERATION_SECONDS", "1")
    t0 = time.time()
    text = "".join(slow_model.generate_stream("tell me everything", max_new_tokens=200))
    assert time.time() - t0 < 2.5
    assert "PLAYGROUND_GENERATION_SECONDS" in text


def test_a_busy_model_says_so_within_the_wait(slow_model, monkeypatch):
    from core.infer import ModelBusy
    monkeypatch.setenv("PLAYGROUND_MODEL_WAIT_SECONDS", "1")
    holder = threading.Thread(target=lambda: slow_model.generate("hold it", max_new_tokens=150))
    holder.start()
    time.sleep(0.3)
    t0 = time.time()
    with pytest.raises(ModelBusy, match="busy"):
        slow_model.generate("me too", max_new_tokens=4)
    assert time.time() - t0 < 2.0
    holder.join(30)


# ------------------------------------------------------------------------------------ disk

ROWS = "".join(f'{{"text": "review {i}", "label": "{"pos" if i % 2 else "neg"}"}}\n' for i in range(20)).encode()


@pytest.fixture
def uploads_dir(tmp_path, monkeypatch):
    folder = tmp_path / "uploads"
    monkeypatch.setenv("PLAYGROUND_UPLOADS_DIR", str(folder))
    return folder


def _all_files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_disk_full_upload_leaves_no_part_file(uploads_dir, monkeypatch):
    from core import data, uploads

    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: FullDisk(real_fdopen(fd, *a, **k)))
    with pytest.raises(data.DataError) as caught:
        uploads.save_for("student-a", ROWS, "my reviews.jsonl")
    assert "my reviews.jsonl" in str(caught.value) and "disk is full" in str(caught.value)
    assert _all_files(uploads_dir) == []


def test_a_refused_upload_is_deleted_and_messages_name_the_users_file(uploads_dir):
    from core import data, uploads
    with pytest.raises(data.DataError) as caught:
        uploads.save_for("student-a", b'{"text": "ok"}\n{broken\n', "holiday notes.jsonl")
    assert "holiday notes.jsonl" in str(caught.value)
    assert not re.search(r"[0-9a-f]{32}", str(caught.value)), "the server's <uuid> name is shown"
    assert _all_files(uploads_dir) == []
    path = uploads.save_for("student-a", ROWS, "good.jsonl")
    with open(path, "ab") as fh:
        fh.write(b"{not json\n")
    with pytest.raises(data.DataError) as caught:
        data.check_table(path)
    assert "good.jsonl" in str(caught.value) and os.path.basename(path) not in str(caught.value)


def test_uploads_have_a_per_session_quota(uploads_dir, monkeypatch):
    from core import data, uploads
    monkeypatch.setenv("PLAYGROUND_UPLOAD_QUOTA_MB", "1")
    big = ROWS * (600_000 // len(ROWS))
    first = uploads.save_for("student-a", big, "one.jsonl")
    # used by a run: it stays, so the second does not fit
    runs.create_run(RunConfig.from_dict({**BIG, "data": {"source": first, "task": "classification",
                                                         "max_length": 64}}), "student-a")
    with pytest.raises(data.DataError, match="PLAYGROUND_UPLOAD_QUOTA_MB"):
        uploads.save_for("student-a", big, "two.jsonl")
    assert os.path.exists(first)
    uploads.save_for("student-b", big, "other.jsonl")  # another visitor has a quota of their own


def test_uploads_go_with_their_runs_and_with_age(uploads_dir, monkeypatch):
    from core import uploads
    path = uploads.save_for("student-a", ROWS, "mine.jsonl")
    cfg = RunConfig.from_dict({**BIG, "data": {"source": path, "task": "classification", "max_length": 64}})
    run_a = os.path.basename(runs.create_run(cfg, "student-a"))
    run_b = os.path.basename(runs.create_run(cfg, "student-a"))
    for run_id in (run_a, run_b):
        runs.write_status(runs.run_dir_for(run_id), "completed")
    mgr = jobs.JobManager(lambda *a: {})
    try:
        mgr.delete(run_a, "student-a")
        assert os.path.exists(path), "another run still uses it"
        mgr.delete(run_b, "student-a")
        assert not os.path.exists(path) and _all_files(uploads_dir) == []
    finally:
        mgr.shutdown()
    old = uploads.save_for("student-a", ROWS, "old.jsonl")
    monkeypatch.setenv("PLAYGROUND_UPLOAD_MAX_AGE_HOURS", "1")
    assert uploads.sweep(now=time.time() + 1800) == 0 and os.path.exists(old)
    assert uploads.sweep(now=time.time() + 7200) == 1 and not os.path.exists(old)


def test_a_failed_weights_save_fails_the_run_and_leaves_no_half_adapter(tmp_path, monkeypatch, tiny_bert,
                                                                         sentiment_file):
    """peft writes README.md first: a full disk after it left an adapter/ that counted as weights."""
    import peft
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_DATA", "1")

    def full_disk(self, folder, *a, **k):
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "README.md"), "w") as fh:
            fh.write("# model card\n")
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(folder, "adapter_model.safetensors"))
    monkeypatch.setattr(peft.PeftModel, "save_pretrained", full_disk)
    d = {"model": {"name": tiny_bert}, "data": {"source": sentiment_file, "task": "classification",
                                                  "max_length": 32},
         "method": {"name": "lora", "params": {"r": 4}}, "train": {"batch_size": 4, "max_steps": 2,
                                                                    "eval_steps": 100}}
    mgr = jobs.get_manager()
    job = mgr.submit(RunConfig.from_dict(d), "student-a")
    snap = _wait(mgr, job, ("failed", "completed", "stopped"))
    assert snap["state"] == "failed" and snap["error"] == "could not save weights: disk full", snap
    folder = runs.run_dir_for(job)
    assert not os.path.exists(os.path.join(folder, "adapter"))
    assert not [n for n in os.listdir(folder) if n.startswith(".saving")]
    assert not runs.get_run(job).has_weights


def test_an_adapter_folder_with_only_a_readme_is_not_saved_weights(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "README.md").write_text("# card")
    assert runs.weights_dir(str(tmp_path)) is None
    (tmp_path / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    assert runs.weights_dir(str(tmp_path)) == str(tmp_path / "adapter")


def test_generate_on_a_missing_run_says_so(tmp_path, capsys):
    from core import generate
    assert generate.main(["--run", str(tmp_path / "nope"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "training failed" not in err
    (tmp_path / "empty").mkdir()
    assert generate.main(["--run", str(tmp_path / "empty"), "--prompt", "hi"]) == 2
    err = capsys.readouterr().err
    assert "is not a run folder" in err and "training failed" not in err


def test_a_20kb_bad_link_value_is_not_echoed_back():
    from core import urlstate
    _, warnings = urlstate.decode({"lr": "9" * 20_000 + "x", "name": "n" * 20_000}, RunConfig())
    assert len(warnings) == 2 and all(len(w) < 400 for w in warnings), warnings
    assert all("characters left out" in w for w in warnings)


def test_the_train_page_disables_start_for_the_oom_setting(tmp_path, monkeypatch):
    """/train?bs=1024&len=512: the card said hundreds of GB and Start stayed enabled."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PLAYGROUND_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.chdir(root)
    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
    at.query_params.update({"bs": "1024", "len": "512"})
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("GB of memory" in e and "batch size (now 1024)" in e for e in errors), errors
    assert at.button(key="tr_start").disabled
    at.query_params.clear()


def test_compare_keeps_refused_sends_on_screen(tmp_path, monkeypatch, tiny_llama, facts_file):
    """99 of 100 sends were dropped without a word: a refused send now says why and stays shown."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import chat_gate, train
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(root)
    config = RunConfig.from_dict({"model": {"name": tiny_llama},
                                  "data": {"source": facts_file, "task": "sft", "max_length": 32},
                                  "method": {"name": "lora"}, "train": {"max_steps": 1, "batch_size": 4}})
    run_dir = runs.create_run(config, owner="")
    runs.write_status(run_dir, train.run(config, run_dir)["state"])
    st.cache_data.clear()
    st.cache_resource.clear()
    chat_gate.reset()
    monkeypatch.setenv("PLAYGROUND_CHAT_PER_MINUTE", "1")
    at = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
    at.session_state["compare_run"] = os.path.basename(run_dir)
    at.run()
    at.switch_page("pages/compare.py").run()
    at.slider(key="cmp_max_new").set_value(8)
    at.text_input(key="cmp_prompt").input("Who founded Quillmere?")
    at.button(key="cmp_send").click().run()
    assert not at.exception and not [w for w in at.warning if w.value.startswith("Not sent")]
    at.text_input(key="cmp_prompt").input("And when?")
    at.button(key="cmp_send").click().run()
    warnings = [w.value for w in at.warning]
    assert any("And when" in w and "PLAYGROUND_CHAT_PER_MINUTE" in w for w in warnings), warnings
    chat_gate.reset()
    # The prompt box stops typing at the cap; an example button (or a crafted request) does not
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_CHARS", "10")
    at.button(key="cmp_ex_0").click().run()
    assert not at.exception
    warnings = [w.value for w in at.warning]
    assert any(w.startswith("Not sent") and "PLAYGROUND_MAX_PROMPT_CHARS" in w for w in warnings), warnings
    user_turns = [m for m in at.get("chat_message") if m.name == "user"]
    assert len(user_turns) == 2, "only the admitted send is in the chat (once per pane)"
    chat_gate.reset()
