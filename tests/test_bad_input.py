"""Bad input and abuse, as one table: every row is something a visitor can type, upload or send.

Each case must be refused with a ConfigError whose message holds the expected fragment (a message
a student can act on, never a traceback), and must write nothing anywhere: the whole sandbox
(runs folder, uploads folder, working directory) is snapshotted before and after. After the whole
table the app, served by the same job manager, still renders.

Paths a case goes through are the ones the app uses: RunConfig.from_dict + JobManager.submit for
settings (what the Train page's Start button calls), core.data.save_upload / load_rows for files,
and runs.run_dir_for / JobManager methods for run ids.
"""
from __future__ import annotations

import copy
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest

from core import data, jobs, runs
from core.config import ConfigError, DataSpec, RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = {"model": {"name": "minilm"},
        "data": {"source": "builtin:sentiment", "task": "classification", "max_length": 64},
        "method": {"name": "lora", "params": {"r": 4}},
        "train": {"epochs": 1, "batch_size": 8}}
A_RUN_ID = "20250101-000000-lora-minilm-abcd"  # well-formed, never created


def _parquet(table: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq
    buf = io.BytesIO()
    pq.write_table(pa.table(table), buf)
    return buf.getvalue()


def _jsonl(rows: list[dict]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


GOOD_ROWS = [{"text": f"review number {i}", "label": "pos" if i % 2 else "neg"} for i in range(12)]
HOSTILE_RUNS = {"PLAYGROUND_RUNS_DIR": "runs-hostile"}  # relative to the sandbox (the working directory)


@dataclass
class Case:
    id: str
    kind: str  # config | model | upload | rows | run
    arg: Any
    expect: str  # a fragment of the message the visitor sees
    env: dict = field(default_factory=dict)


# One row per bad input. `config`: dotted overrides of BASE; `model`: model.name; `upload`:
# (file name, bytes) to save_upload; `rows`: (file name, bytes, DataSpec overrides) to load_rows;
# `run`: (operation, run id).
CASES: list[Case] = [
    # --------------------------------------------------------------- settings (RunConfig + submit)
    Case("r-zero", "config", {"method.params.r": 0}, "method.params.r=0 is out of range; allowed: in [1, 256]"),
    Case("r-huge", "config", {"method.params.r": 1000}, "method.params.r=1000 is out of range"),
    Case("r-fraction", "config", {"method.params.r": 2.5}, "must be a whole number"),
    Case("r-text", "config", {"method.params.r": "eight"}, "r='eight' is not a number"),
    Case("alpha-zero", "config", {"method.params.alpha": 0}, "method.params.alpha=0.0 is out of range"),
    Case("alpha-negative", "config", {"method.params.alpha": -16}, "method.params.alpha=-16.0 is out of range"),
    Case("dropout-one", "config", {"method.params.dropout": 1.0}, "method.params.dropout=1.0 is out of range"),
    Case("dropout-nan", "config", {"method.params.dropout": float("nan")}, "dropout=nan must be a number"),
    Case("lr-zero", "config", {"train.learning_rate": 0}, "train.learning_rate=0.0 is out of range"),
    Case("lr-huge", "config", {"train.learning_rate": 5}, "train.learning_rate=5.0 is out of range"),
    Case("lr-text", "config", {"train.learning_rate": "fast"}, "learning_rate='fast' is not a number"),
    Case("epochs-zero", "config", {"train.epochs": 0}, "train.epochs=0.0 is out of range"),
    Case("epochs-negative", "config", {"train.epochs": -1}, "train.epochs=-1.0 is out of range"),
    Case("epochs-inf", "config", {"train.epochs": float("inf")}, "train.epochs=inf is out of range"),
    Case("batch-zero", "config", {"train.batch_size": 0}, "train.batch_size=0 is out of range"),
    Case("batch-huge", "config", {"train.batch_size": 100_000}, "train.batch_size=100000 is out of range"),
    Case("batch-bool", "config", {"train.batch_size": True}, "train.batch_size=True must be a number"),
    Case("grad-accum-zero", "config", {"train.grad_accum": 0}, "train.grad_accum=0 is out of range"),
    Case("warmup-too-long", "config", {"train.warmup_ratio": 0.9}, "train.warmup_ratio=0.9 is out of range"),
    Case("scheduler-unknown", "config", {"train.lr_scheduler": "exotic"},
         "train.lr_scheduler='exotic' is not allowed; choose one of"),
    Case("max-length-tiny", "config", {"data.max_length": 4}, "data.max_length=4 is out of range"),
    Case("max-length-huge", "config", {"data.max_length": 100_000}, "data.max_length=100000 is out of range"),
    Case("n-samples-negative", "config", {"data.n_samples": -5}, "data.n_samples=-5 is out of range"),
    Case("val-share-high", "config", {"data.val_share": 0.95}, "data.val_share=0.95 is out of range"),
    Case("val-share-negative", "config", {"data.val_share": -0.1}, "data.val_share=-0.1 is out of range"),
    Case("task-unknown", "config", {"data.task": "regression"}, "data.task='regression' is not allowed"),
    Case("device-unknown", "config", {"model.device": "tpu"}, "model.device='tpu' is not allowed"),
    Case("method-unknown", "config", {"method.name": "lora2"}, "method 'lora2' is unknown; choose one of"),
    Case("method-param-unknown", "config", {"method.params.rank": 4}, "unknown hyperparameter(s) ['rank']"),
    Case("field-unknown", "config", {"train.epoch": 3}, "train: unknown field(s) ['epoch']"),
    Case("section-unknown", "config", {"optimizer": {"name": "sgd"}}, "unknown config section(s) ['optimizer']"),
    Case("section-not-mapping", "config", {"train": [1, 2]}, "train must be a mapping"),
    Case("params-not-mapping", "config", {"method.params": [1]}, "method.params=[1] must be a mapping"),
    Case("label-map-not-mapping", "config", {"data.label_map": [1, 2]}, "data.label_map=[1, 2] must be a mapping"),
    Case("source-empty", "config", {"data.source": "  "}, "data.source is empty"),
    Case("name-control-chars", "config", {"name": "\x1b[31mred\x07"}, "name contains control characters"),
    Case("name-newline", "config", {"name": "my run\nrm -rf /"}, "name contains control characters"),
    Case("name-too-long", "config", {"name": "x" * 500}, "name must be text of at most 200 characters"),
    Case("experiment-nul", "config", {"experiment": "grid\x00"}, "experiment contains control characters"),
    # ------------------------------------------------------------------ public-hosting limits
    Case("limit-epochs", "config", {"train.epochs": 50}, "above this server's limit of 20 epochs per run "
         "(PLAYGROUND_MAX_EPOCHS)"),
    Case("limit-epochs-env", "config", {"train.epochs": 3}, "limit of 2 epochs", env={"PLAYGROUND_MAX_EPOCHS": "2"}),
    Case("limit-steps", "config", {"train.max_steps": 6000}, "limit of 5000 steps per run (PLAYGROUND_MAX_STEPS)"),
    Case("limit-length", "config", {"data.max_length": 2048}, "limit of 1024 tokens (PLAYGROUND_MAX_LENGTH)"),
    Case("limit-env-typo-keeps-default", "config", {"train.epochs": 30}, "limit of 20 epochs",
         env={"PLAYGROUND_MAX_EPOCHS": "lots"}),
    Case("limit-queue", "config", {}, "the training queue is full", env={"PLAYGROUND_MAX_QUEUE": "0"}),
    Case("limit-model-allow", "model", "roberta-base", "not allowed on this server (PLAYGROUND_MODEL_ALLOW",
         env={"PLAYGROUND_MODEL_ALLOW": "HuggingFaceTB/*"}),
    Case("limit-model-allow-regex", "model", "roberta-base", "not allowed on this server",
         env={"PLAYGROUND_MODEL_ALLOW": r"re:^(Qwen|HuggingFaceTB)/.+$"}),
    Case("limit-model-embedded-only", "model", "distilbert-base-uncased", "not allowed on this server",
         env={"PLAYGROUND_MODEL_ALLOW": "none"}),
    Case("limit-local-models-off", "model", "/srv/models/secret", "local model folders are disabled",
         env={"PLAYGROUND_ALLOW_LOCAL_MODELS": "0"}),
    # --------------------------------------------------------------------------- model ids
    Case("model-path-climb", "model", "../../etc/passwd", "contains '..'; paths that climb out of a folder"),
    Case("model-url", "model", "http://example.com/model", "is a URL; give a hub id"),
    Case("model-file-url", "model", "file:///etc/passwd", "is a URL"),
    Case("model-hub-offline", "model", "some-org/not-cached", "model some-org/not-cached is not available offline"),
    Case("model-empty", "model", "", "model.name is empty"),
    Case("model-nul", "model", "minilm\x00", "model.name contains control characters"),
    Case("model-newline", "model", "minilm\nroberta-base", "model.name contains control characters"),
    Case("model-too-long", "model", "a" * 300, "is not an embedded model key, a hub id"),
    Case("model-missing-folder", "model", "/nonexistent/model/dir", "model folder /nonexistent/model/dir does not exist"),
    # ------------------------------------------------------------------------ uploads (save_upload)
    Case("upload-empty", "upload", ("empty.csv", b""), "empty.csv is empty: it has no rows"),
    Case("upload-whitespace", "upload", ("blank.jsonl", b" \n\n\t\n"), "blank.jsonl is empty"),
    Case("upload-binary", "upload", ("data.csv", bytes(range(256)) * 8), "its content is binary data"),
    Case("upload-png", "upload", ("photo.csv", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), "its content is binary data"),
    Case("upload-latin1", "upload", ("reviews.csv", "text,label\ncafé crème très bon,pos\n".encode("latin-1")),
         "reviews.csv is not UTF-8 text; re-save it as UTF-8"),
    Case("upload-utf16", "upload", ("reviews.csv", "text,label\nok,pos\n".encode("utf-16")),
         "is UTF-16 text, not UTF-8"),
    Case("upload-10mb-line", "upload", ("long.jsonl", lambda: b'{"text": "' + b"a" * (10 * 2**20) + b'", "label": 1}\n'),
         "line 1 of long.jsonl is 10.0 MB; one line may be at most 1.0 MB (PLAYGROUND_MAX_LINE_MB)"),
    Case("upload-over-limit", "upload", ("big.csv", lambda: b"text,label\n" + b"x,1\n" * (300 * 1024)),
         "the upload limit is 1.0 MB (PLAYGROUND_MAX_UPLOAD_MB)", env={"PLAYGROUND_MAX_UPLOAD_MB": "1"}),
    Case("upload-json-as-csv", "upload", ("rows.csv", _jsonl(GOOD_ROWS)), "looks like JSON, not CSV"),
    Case("upload-csv-as-jsonl", "upload", ("rows.jsonl", b"text,label\nhello,1\n"),
         "rows.jsonl is not JSON Lines: it starts with 'text,label"),
    Case("upload-csv-as-parquet", "upload", ("rows.parquet", b"text,label\nhello,1\n"),
         "rows.parquet is not a Parquet file: its content is CSV text; rename it to .csv"),
    Case("upload-parquet-as-csv", "upload", ("rows.csv", lambda: _parquet({"text": ["a"], "label": [1]})),
         "its content is a Parquet file, not CSV text; rename it to .parquet"),
    Case("upload-truncated-parquet", "upload", ("rows.parquet", b"PAR1" + b"\x00" * 100),
         "truncated Parquet file"),
    Case("upload-xlsx", "upload", ("grades.xlsx", b"PK\x03\x04" + b"\x00" * 64), "is a spreadsheet; export it"),
    Case("upload-exe", "upload", ("setup.exe", b"MZ\x90\x00"), "has '.exe'; the file types read are"),
    Case("upload-gz", "upload", ("rows.csv.gz", b"\x1f\x8b\x08\x00"), "is compressed (.gz)"),
    Case("upload-no-extension", "upload", ("README", b"text,label\nx,1\n"), "has no extension"),
    Case("upload-path-in-name", "upload", ("../../etc/cron.d/evil.exe", b"x"), "evil.exe has '.exe'"),
    # ------------------------------------------------------------------------ rows (load_rows)
    Case("rows-no-usable", "rows", ("blank.jsonl", _jsonl([{"text": "", "label": "pos"}, {"text": " ", "label": "neg"}]), {}),
         "has no usable rows"),
    Case("rows-one-label", "rows", ("one.jsonl", _jsonl([{"text": f"t{i}", "label": "pos"} for i in range(6)]), {}),
         "only one label (pos) in column 'label'"),
    Case("rows-missing-column", "rows", ("cols.jsonl", _jsonl([{"body": "ok", "stars": 5}, {"body": "no", "stars": 1}]), {}),
         "column 'text' not found in cols.jsonl; columns found: 'body', 'stars'"),
    Case("rows-ragged-csv", "rows", ("ragged.csv", b"text,label\ngood film,pos\nbad,film,neg,extra\n", {}),
         "line 3 of ragged.csv has 4 fields but the header has 2"),
    Case("rows-header-only-csv", "rows", ("head.csv", b"text,label\n", {}), "has a header but no data rows"),
    Case("rows-json-list-of-lists", "rows", ("lol.json", b'[["good film", "pos"], ["bad film", "neg"]]', {}),
         "is a JSON list of lists"),
    Case("rows-json-single-object", "rows", ("one.json", b'{"text": "good", "label": "pos"}', {}),
         "holds a single JSON object, not a list of rows"),
    Case("rows-jsonl-bad-line", "rows", ("bad.jsonl", b'{"text": "a", "label": 1}\n{"text": oops}\n', {}),
         "line 2 of bad.jsonl is not valid JSON"),
    Case("rows-parquet-nested", "rows", ("nested.parquet", lambda: _parquet({"text": [["a", "b"], ["c"]],
                                                                          "label": ["pos", "neg"]}), {}),
         "column 'text' of nested.parquet holds nested values"),
    Case("rows-too-many", "rows", ("many.jsonl", _jsonl(GOOD_ROWS), {}), "the limit is 5 (PLAYGROUND_MAX_ROWS)",
         env={"PLAYGROUND_MAX_ROWS": "5"}),
    Case("rows-file-over-limit", "rows", ("big.csv", lambda: b"text,label\n" + b"xy,1\n" * (250 * 1024), {}),
         "the limit is 1.0 MB (PLAYGROUND_MAX_UPLOAD_MB)", env={"PLAYGROUND_MAX_UPLOAD_MB": "1"}),
    Case("rows-same-columns", "rows", ("ok.jsonl", _jsonl(GOOD_ROWS), {"text_column": "label"}),
         "data.text_column and data.label_column are both 'label'; they must differ"),
    Case("rows-server-file", "rows", (None, None, {"source": "/etc/passwd"}),
         "reading files from the server's disk is disabled here"),
    Case("rows-path-climb", "rows", (None, None, {"source": "../../../../etc/passwd"}), "is not an uploaded file"),
    Case("rows-url", "rows", (None, None, {"source": "https://example.com/data.csv"}), "is a URL; download the file"),
    Case("rows-nul", "rows", (None, None, {"source": "rows.csv\x00.txt"}), "data.source contains control characters"),
    Case("rows-builtin-unknown", "rows", (None, None, {"source": "builtin:../../secrets"}), "unknown built-in dataset"),
    # ------------------------------------------------------------------------------- run ids
    Case("run-id-climb", "run", ("run_dir_for", "../../etc"), "'../../etc' is not a run id"),
    Case("run-id-slash", "run", ("run_dir_for", f"{A_RUN_ID}/../../x"), "is not a run id"),
    Case("run-id-absolute", "run", ("run_dir_for", "/etc/passwd"), "'/etc/passwd' is not a run id"),
    Case("run-id-newline", "run", ("run_dir_for", A_RUN_ID + "\n"), "is not a run id"),
    Case("run-id-nul", "run", ("run_dir_for", A_RUN_ID + "\x00"), "is not a run id"),
    Case("run-id-dot", "run", ("run_dir_for", "."), "'.' is not a run id"),
    Case("run-id-missing", "run", ("get_run", A_RUN_ID), f"run {A_RUN_ID} does not exist"),
    Case("run-delete-climb", "run", ("delete", "../runs"), "'../runs' is not a run id"),
    Case("run-stop-absolute", "run", ("stop", "/tmp"), "'/tmp' is not a run id"),
    Case("run-download-climb", "run", ("weights_zip", "../../.ssh"), "is not a run id"),
    Case("run-cancel-missing", "run", ("cancel", A_RUN_ID), "does not exist"),
    Case("run-resume-climb", "run", ("resume", "../../etc"), "is not a run id"),
    Case("run-resume-missing", "run", ("resume", A_RUN_ID), "does not exist"),
    Case("run-owner-empty", "run", ("submit-no-owner", ""), "an owner id is needed"),
    # --------------------------------------- public-Space limits (issue 25: memory, chat, uploads, runs)
    Case("memory-oom-setting", "config", {"data.max_length": 512, "train.batch_size": 1024},
         "GB of memory for one training step"),
    Case("length-above-model", "config", {"data.max_length": 1024},
         "data.max_length=1024 is above what minilm can read: 512 tokens"),
    Case("prompt-20k-chars", "limit", ("prompt", "x" * 20_000), "at most 2,000 (PLAYGROUND_MAX_PROMPT_CHARS)"),
    Case("prompt-too-many-tokens", "limit", ("tokens", 5000), "(PLAYGROUND_MAX_PROMPT_TOKENS)"),
    Case("chat-flood", "limit", ("rate", 30), "(PLAYGROUND_CHAT_PER_MINUTE)"),
    Case("upload-over-quota", "limit", ("quota", b'{"text": "a", "label": "b"}\n' * 50_000),
         "(PLAYGROUND_UPLOAD_QUOTA_MB)", env={"PLAYGROUND_UPLOAD_QUOTA_MB": "1"}),
    Case("generate-missing-run", "limit", ("generate", "runs/nope"), "run folder runs/nope does not exist"),
    # ------------------------------------- issue 25, part 1: run files are untrusted, downloads are the owner's
    # `runfile`: (file, JSON text) written over a finished run's file, then read as every page reads a run;
    # `download`: another session's run asked for through a core download function. Both in their own
    # runs folder (HOSTILE_RUNS), so the table's runs folder stays empty.
    Case("runfile-owner-number", "runfile", ("status.json", '{"state": "completed", "owner": 12345}'),
         "status.json: owner is a number, not a text", env=HOSTILE_RUNS),
    Case("runfile-final-text", "runfile", ("summary.json", '{"final": "0.99"}'),
         "summary.json: final is a text, not an object", env=HOSTILE_RUNS),
    Case("runfile-accuracy-text", "runfile", ("summary.json", '{"final": {"eval_accuracy": "99%"}}'),
         "summary.json: final.eval_accuracy='99%' is not a number", env=HOSTILE_RUNS),
    Case("runfile-config-list", "runfile", ("config.json", "[1, 2]"), "config.json holds a list, not an object",
         env=HOSTILE_RUNS),
    Case("runfile-status-garbage", "runfile", ("status.json", "\x00\xff{"), "status.json is not valid JSON",
         env=HOSTILE_RUNS),
    Case("runfile-summary-huge", "runfile", ("summary.json", lambda: " " * (runs.MAX_RUN_JSON_BYTES + 1) + "{}"),
         "more than a run file may hold", env=HOSTILE_RUNS),
    Case("download-weights-not-owner", "download", "weights_zip", "belongs to another session", env=HOSTILE_RUNS),
    Case("download-config-not-owner", "download", "config_yaml", "belongs to another session", env=HOSTILE_RUNS),
    Case("download-script-not-owner", "download", "script_for", "belongs to another session", env=HOSTILE_RUNS),
    Case("download-merged-not-owner", "download", "merged_zip_for", "belongs to another session",
         env=HOSTILE_RUNS),
]


def _apply(overrides: dict) -> dict:
    d = copy.deepcopy(BASE)
    for path, value in overrides.items():
        node = d
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return d


def _payload(value: Any) -> Any:
    return value() if callable(value) else value


def _snapshot(root: str) -> dict[str, tuple]:
    """Every file and folder under root with its size and mtime: a write anywhere shows up."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            out[os.path.relpath(path, root)] = (st.st_size if name in filenames else 0, st.st_mtime_ns)
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """A whole server in tmp_path, locked down as for a public Space; cwd is the sandbox too."""
    for var in ("PLAYGROUND_MAX_EPOCHS", "PLAYGROUND_MAX_STEPS", "PLAYGROUND_MAX_LENGTH", "PLAYGROUND_MAX_QUEUE",
                "PLAYGROUND_MODEL_ALLOW", "PLAYGROUND_ADMIN_TOKEN", "PLAYGROUND_MAX_UPLOAD_MB",
                "PLAYGROUND_MAX_ROWS", "PLAYGROUND_MAX_LINE_MB", "PLAYGROUND_ALLOW_LOCAL_MODELS"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "runs").mkdir()
    (tmp_path / "uploads").mkdir()
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("PLAYGROUND_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_DATA", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)

    def never(cfg, run_dir, on_event, stop):  # a bad input that reached the trainer is a bug
        raise AssertionError(f"a bad input was queued and started: {run_dir}")

    jobs.reset_manager()
    mgr = jobs.get_manager(run_fn=never)
    yield tmp_path, mgr
    jobs.reset_manager()


def _attempt(case: Case, root, mgr: jobs.JobManager) -> Callable[[], Any]:
    """Prepare the case's inputs (before the snapshot) and return the call that must fail."""
    uploads = str(root / "uploads")
    if case.kind == "config":
        return lambda: mgr.submit(RunConfig.from_dict(_apply(case.arg)), "student-a")
    if case.kind == "model":
        return lambda: mgr.submit(RunConfig.from_dict(_apply({"model.name": case.arg})), "student-a")
    if case.kind == "upload":
        filename, payload = case.arg
        content = _payload(payload)
        return lambda: data.save_upload(content, filename, uploads)
    if case.kind == "rows":
        filename, payload, overrides = case.arg
        spec = {"source": filename, "task": "classification", **overrides}
        if filename is not None:
            with open(os.path.join(uploads, filename), "wb") as fh:
                fh.write(_payload(payload))
        return lambda: data.load_rows(DataSpec(**spec), uploads_dir=uploads)
    if case.kind == "run":
        op, value = case.arg
        calls = {
            "run_dir_for": lambda: runs.run_dir_for(value),
            "get_run": lambda: runs.get_run(value),
            "delete": lambda: mgr.delete(value, "student-a"),
            "stop": lambda: mgr.stop(value, "student-a"),
            "cancel": lambda: mgr.cancel(value, "student-a"),
            "weights_zip": lambda: mgr.weights_zip(value, "student-a"),
            "resume": lambda: mgr.submit(RunConfig.from_dict(BASE), "student-a", resume_from=value),
            "submit-no-owner": lambda: mgr.submit(RunConfig.from_dict(BASE), value),
        }
        return calls[op]
    if case.kind == "limit":
        return _limit_attempt(*case.arg)
    if case.kind == "runfile":
        file, text = case.arg
        run_dir = _finished_run("student-a")
        with open(os.path.join(run_dir, file), "w", encoding="utf-8") as fh:
            fh.write(_payload(text))
        return lambda: runs.read_run_files(run_dir)
    if case.kind == "download":
        from core import export
        run_id = os.path.basename(_finished_run("student-b"))
        calls = {"weights_zip": lambda: mgr.weights_zip(run_id, "student-a"),
                 "config_yaml": lambda: mgr.config_yaml(run_id, "student-a"),
                 "script_for": lambda: export.script_for(run_id, "student-a"),
                 "merged_zip_for": lambda: export.merged_zip_for(run_id, "student-a")}
        return calls[case.arg]
    raise AssertionError(f"unknown case kind {case.kind}")


def _limit_attempt(op: str, value: Any) -> Callable[[], Any]:
    """`limit` cases: a chat, upload or CLI call against a public-Space limit (issue 25)."""
    from core import chat_gate, generate, limits, uploads
    if op == "prompt":
        return lambda: limits.check_prompt_chars(value)
    if op == "tokens":
        return lambda: limits.check_prompt_tokens(value)
    if op == "rate":
        chat_gate.reset()
        for _ in range(limits.chat_per_minute()):
            chat_gate.check_rate("flooder")  # the sends the minute allows, before the snapshot
        return lambda: chat_gate.check_rate("flooder")
    if op == "quota":
        return lambda: uploads.save_for("student-a", value, "big.jsonl")
    if op == "generate":
        return lambda: generate.generate(value, "hi")
    raise AssertionError(f"unknown limit case {op}")


def _finished_run(owner: str) -> str:
    """A completed run folder with a saved adapter, written by hand (no training)."""
    run_dir = runs.create_run(BASE, owner)
    runs.write_summary(run_dir, {"final": {"eval_accuracy": 0.5}})
    os.makedirs(os.path.join(run_dir, "adapter"))
    with open(os.path.join(run_dir, "adapter", "adapter_config.json"), "w") as fh:
        fh.write("{}")
    runs.write_status(run_dir, "completed")
    return run_dir


def check_case(case: Case, root, mgr: jobs.JobManager, monkeypatch) -> str:
    with monkeypatch.context() as mp:
        for key, value in case.env.items():
            mp.setenv(key, value)
        call = _attempt(case, root, mgr)
        before = _snapshot(str(root))
        with pytest.raises(ConfigError) as caught:
            call()
        after = _snapshot(str(root))
    message = str(caught.value)
    assert case.expect in message, f"{case.id}: expected {case.expect!r} in {message!r}"
    assert "Traceback" not in message and len(message) < 1000, message
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"{case.id} wrote to disk: {changed}"
    assert not mgr.queue() and mgr.active() is None, f"{case.id} reached the queue"
    return message


def test_table_is_big_and_covers_every_kind():
    assert len(CASES) >= 40
    assert len({c.id for c in CASES}) == len(CASES), "case ids must be unique"
    kinds = {c.kind for c in CASES}
    assert {"config", "model", "upload", "rows", "run", "limit", "runfile", "download"} <= kinds


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_plain_words(case, sandbox, monkeypatch):
    root, mgr = sandbox
    check_case(case, root, mgr, monkeypatch)


def test_app_still_serves_after_the_whole_table(sandbox, monkeypatch):
    """All the abuse against one manager, then the app (same process, same manager) still works."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    root, mgr = sandbox
    for case in CASES:
        check_case(case, root, mgr, monkeypatch)
    assert os.listdir(root / "runs") == []

    st.cache_data.clear()
    st.cache_resource.clear()
    try:
        at = AppTest.from_file(os.path.join(ROOT, "app.py"), default_timeout=120)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        for page in ("pages/train.py", "pages/runs.py", "pages/compare.py"):
            at.switch_page(page).run()
            assert not at.exception, (page, [e.value for e in at.exception])
        at.switch_page("pages/train.py").run()
        assert at.button(key="tr_start") is not None  # the Start button is there for the next student
        assert jobs.get_manager() is mgr  # the same manager served the page: nothing was replaced
    finally:
        st.cache_data.clear()
        st.cache_resource.clear()
