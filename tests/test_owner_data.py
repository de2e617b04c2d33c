"""Owners' data stays theirs (issue 25): every download of a run checks its owner in core, the
config download holds no server path, and no page shows the runs folder's or the repository's
absolute path to a visitor."""
from __future__ import annotations

import os

import pytest
import yaml
from streamlit.testing.v1 import AppTest

from core import export, jobs, runs
from tests.helpers.apptest import APP, OWNER_KEY, ROOT
from tests.helpers.finished_runs import trained_run
from tests.page_text import page_text

JOB_KEY = "_train_job"

pytestmark = pytest.mark.usefixtures("clean_app")


@pytest.fixture
def uploaded_run(tiny_bert, sentiment_file, tmp_path, monkeypatch) -> str:
    """A finished LoRA run of owner-a on a file in the uploads folder (<uuid>.jsonl, as the Train page saves it)."""
    from core import data
    uploads = tmp_path / "uploads"
    monkeypatch.setenv("PLAYGROUND_UPLOADS_DIR", str(uploads))
    with open(sentiment_file, "rb") as fh:
        path = data.save_upload(fh.read(), "my reviews.jsonl", str(uploads))
    return trained_run({"model": {"name": tiny_bert},
                        "data": {"source": path, "task": "classification", "max_length": 32},
                        "method": {"name": "lora", "params": {"r": 4}},
                        "train": {"epochs": 1, "batch_size": 32, "logging_steps": 1}}, owner="owner-a")


def test_every_download_checks_the_owner_in_core(uploaded_run):
    mgr = jobs.get_manager()
    refused = [lambda: mgr.weights_zip(uploaded_run, "owner-b"),
               lambda: mgr.config_yaml(uploaded_run, "owner-b"),
               lambda: export.script_for(uploaded_run, "owner-b"),
               lambda: export.merged_zip_for(uploaded_run, "owner-b"),
               lambda: export.script_for(uploaded_run, None),
               lambda: mgr.config_yaml(uploaded_run, "")]
    for call in refused:
        with pytest.raises(Exception, match="belongs to another session"):
            call()
    assert mgr.weights_zip(uploaded_run, "owner-a")
    assert "lora" in mgr.config_yaml(uploaded_run, "owner-a")
    assert "ROWS = " in export.script_for(uploaded_run, "owner-a")
    assert "lora" in mgr.config_yaml(uploaded_run, "owner-b", admin=True)  # a teacher may


def test_the_config_download_and_the_headless_command_hold_no_server_path(uploaded_run, tiny_bert):
    text = jobs.get_manager().config_yaml(uploaded_run, "owner-a")
    cfg = yaml.safe_load(text)
    source = cfg["data"]["source"]
    assert not os.path.isabs(source) and source.endswith(".jsonl") and "/" not in source, source
    assert runs.runs_root() not in text and os.path.dirname(tiny_bert) not in text
    assert cfg["model"]["name"] == os.path.basename(tiny_bert)
    assert runs.headless_command(uploaded_run) == f"python -m core.train --config runs/{uploaded_run}/config.json"
    script = export.script_for(uploaded_run, "owner-a")
    assert runs.runs_root() not in script and os.environ["PLAYGROUND_UPLOADS_DIR"] not in script
    # The name kept is the one data.load_rows finds again in the uploads folder.
    from core import data
    from core.config import DataSpec
    assert data.load_rows(DataSpec(source=source, task="classification")).train


@pytest.mark.parametrize("viewer", ["owner-a", "owner-b"])
def test_no_page_shows_the_runs_folder_or_the_repository_path(uploaded_run, viewer):
    runs.create_run({"name": "failed one", "model": {"name": "minilm"}, "method": {"name": "lora"},
                     "data": {"source": "builtin:sentiment"}}, owner="owner-a")
    failed = runs.list_runs()[0]
    runs.write_status(failed.dir, "failed", message="the data file could not be read",
                      hint="upload it again")
    secrets = [runs.runs_root(), ROOT, os.environ["PLAYGROUND_UPLOADS_DIR"]]
    at = AppTest.from_file(APP, default_timeout=90)
    at.session_state[OWNER_KEY] = viewer
    at.session_state[JOB_KEY] = uploaded_run  # the Train page shows this run's result
    at.session_state["compare_run"] = uploaded_run
    at.run()
    for page in ("pages/learn.py", "pages/train.py", "pages/experiments.py", "pages/compare.py", "pages/runs.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        text = page_text(at)
        assert uploaded_run in text or page not in ("pages/runs.py", "pages/compare.py")  # runs present
        for secret in secrets:
            assert secret not in text, (page, secret, text[max(0, text.find(secret) - 300): text.find(secret) + 200])
    for run_id in (uploaded_run, failed.id):
        at.selectbox(key="runs_detail").set_value(run_id).run()
        text = page_text(at)
        assert not at.exception and not any(s in text for s in secrets), run_id
        assert f"python -m core.train --config runs/{run_id}/config.json" in text
