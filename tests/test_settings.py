"""core.settings is the one reader of PLAYGROUND_* / HF_* variables; its table is the documented one."""
from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest

from core import limits, settings

ROOT = Path(__file__).resolve().parent.parent
OURS = ("PLAYGROUND_", "HF_", "HUGGING_FACE_", "TRANSFORMERS_OFFLINE")
# Reads only the launcher's variables (torchrun / accelerate), handed to it by name.
LAUNCHER_ONLY = {"core/distributed.py"}


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ"
            and isinstance(node.value, ast.Name) and node.value.id == "os")


def _key_is_ours(key: ast.AST | None) -> bool:
    # A key that is not a literal (a variable, a loop name) could be any of ours: count it.
    if isinstance(key, ast.Constant) and isinstance(key.value, str):
        return key.value.startswith(OURS)
    return True


def env_reads(tree: ast.AST) -> list[int]:
    """Lines that read one of our variables (or the whole environment) through os.environ / getenv."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            f = node.func
            key = node.args[0] if node.args else None
            if _is_environ(f.value) and f.attr == "get" and _key_is_ours(key):
                lines.append(node.lineno)
            elif _is_environ(f.value) and f.attr in ("items", "keys", "values", "copy"):
                lines.append(node.lineno)
            elif (f.attr == "getenv" and isinstance(f.value, ast.Name) and f.value.id == "os"
                  and _key_is_ours(key)):
                lines.append(node.lineno)
        elif (isinstance(node, ast.Subscript) and _is_environ(node.value)
              and isinstance(node.ctx, ast.Load) and _key_is_ours(node.slice)):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" \
                and node.args and _is_environ(node.args[0]):
            lines.append(node.lineno)
    return sorted(lines)


def _product_files() -> list[Path]:
    return sorted([*ROOT.glob("core/**/*.py"), *ROOT.glob("pages/**/*.py"), ROOT / "app.py"])


def test_only_settings_reads_our_environment_variables():
    offenders = []
    for path in _product_files():
        rel = path.relative_to(ROOT).as_posix()
        if rel in ("core/settings.py", *LAUNCHER_ONLY):
            continue
        for line in env_reads(ast.parse(path.read_text(encoding="utf-8"))):
            offenders.append(f"{rel}:{line}")
    assert not offenders, ("read PLAYGROUND_*/HF_* variables through core.settings (add an accessor there): "
                           + ", ".join(offenders))


def test_the_scan_sees_each_kind_of_read():
    src = ('import os\nos.environ.get("PLAYGROUND_X")\nos.getenv("HF_Y")\nos.environ["PLAYGROUND_Z"]\n'
           'os.environ.get(name)\ndict(os.environ)\nos.environ.get("PYTHONPATH")\nos.environ["HF_W"] = "1"\n')
    assert env_reads(ast.parse(src)) == [2, 3, 4, 5, 6]


def test_unusable_limit_falls_back_and_names_the_variable(monkeypatch, caplog):
    # A value no other test sets: settings warns once per (variable, value) and process.
    monkeypatch.setenv("PLAYGROUND_MAX_EPOCHS", "lots-for-test-settings")
    with caplog.at_level(logging.WARNING, logger="core.settings"):
        assert limits.max_epochs() == limits.DEFAULT_MAX_EPOCHS
    assert "PLAYGROUND_MAX_EPOCHS='lots-for-test-settings'" in caplog.text and ">= 1" in caplog.text
    monkeypatch.setenv("PLAYGROUND_MAX_EPOCHS", "3")
    assert limits.max_epochs() == 3  # read at call time, not at import


def test_positive_numbers_and_flags(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_UPLOAD_MB", "-5")
    assert settings.max_upload_mb() == 20
    monkeypatch.setenv("PLAYGROUND_MAX_UPLOAD_MB", "0.5")
    assert settings.max_upload_mb() == 0.5
    monkeypatch.delenv("PLAYGROUND_ALLOW_LOCAL_DATA", raising=False)
    assert settings.allow_local_data() is None
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_DATA", " No ")
    assert settings.allow_local_data() is False
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert settings.hub_offline(datasets=True) and not settings.hub_offline()


def test_unknown_variable_is_refused():
    with pytest.raises(KeyError, match="PLAYGROUND_NOPE"):
        settings.raw("PLAYGROUND_NOPE")


def test_docs_table_is_generated_from_settings():
    doc = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    assert settings.table_markdown() in doc, "regenerate the table: python -m core.settings"
    assert len(settings.SETTINGS) >= 30
