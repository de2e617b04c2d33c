"""The class board's data: every finished run on this server as one row, and the teacher's hidden list.

A row is plain data read through core.runs (validated); the page draws it. Hidden runs stay on
disk and on the Runs page; only the board leaves them out. The hidden list is one JSON file in the
runs folder, so it survives a restart and is shared by every session and worker.
"""
from __future__ import annotations

import json
import math
import os
import threading
from typing import Any

from core import runs
from core.config import ConfigError
from core.methods import get_method

HIDDEN_FILE = "board_hidden.json"
# A stopped run that reached its final evaluation has a real score: it belongs on the board too.
BOARD_STATES = ("completed", "stopped")
_SETTING_KEYS = ("learning_rate", "epochs", "max_steps", "batch_size")
_lock = threading.Lock()


def _hidden_path() -> str:
    return os.path.join(runs.runs_root(), HIDDEN_FILE)


def hidden_ids() -> set[str]:
    try:
        with open(_hidden_path(), encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        return set()  # a damaged file hides nothing rather than breaking the board
    ids = data.get("hidden") if isinstance(data, dict) else None
    return {i for i in ids if runs.is_valid_run_id(i)} if isinstance(ids, list) else set()


def set_hidden(run_id: str, hidden: bool) -> None:
    """Hide a run from the board (or show it again). The caller checks that it is the admin."""
    if not runs.is_valid_run_id(run_id):
        raise runs.NotFound(f"no run with id {str(run_id)[:80]!r}")
    with _lock:  # read-modify-write: two teachers' clicks must not lose one
        ids = hidden_ids()
        (ids.add if hidden else ids.discard)(run_id)
        os.makedirs(runs.runs_root(), exist_ok=True)
        runs.atomic_write_json(_hidden_path(), {"hidden": sorted(ids)})


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _method_label(config: dict, summary: dict) -> str:
    method = config.get("method") or {}
    name = str(summary.get("method") or method.get("name") or "?")
    try:
        return get_method(name).variant_name(method.get("params") if isinstance(method.get("params"), dict) else {})
    except ConfigError:  # a method this version does not know: shown by its name
        return name


def row(info: runs.RunInfo) -> dict | None:
    """One board point, or None when the run has no held-out accuracy (no validation rows, SFT)."""
    summary, config = info.summary or {}, info.config or {}
    final = summary.get("final") if isinstance(summary.get("final"), dict) else {}
    accuracy = _number(final.get("eval_accuracy"))
    trainable = _number(summary.get("trainable_params"))
    if accuracy is None or trainable is None:
        return None
    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    method = config.get("method") if isinstance(config.get("method"), dict) else {}
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    params = method.get("params") if isinstance(method.get("params"), dict) else {}
    settings = {k: train[k] for k in _SETTING_KEYS if k in train and train[k] not in (None, 0)}
    settings.update({k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))})
    nickname = info.status.get("nickname")
    return {
        "id": info.id, "name": info.name, "state": info.state,
        "method": _method_label(config, summary),
        "model": str(summary.get("model") or (config.get("model") or {}).get("name") or ""),
        "data": str(data.get("source") or ""),
        "accuracy": accuracy, "trainable_params": int(trainable),
        "train_time_s": _number(summary.get("train_time_s")),
        "n_train": summary.get("n_train"),
        "nickname": nickname if isinstance(nickname, str) else "",
        "settings": settings, "created": info.created,
    }


def rows(include_hidden: bool = False) -> list[dict]:
    """Board rows of every finished run with an accuracy, oldest first; each with `hidden`."""
    hidden = hidden_ids()
    out = []
    for info in runs.list_runs():
        if info.state not in BOARD_STATES:
            continue
        r = row(info)
        if r is None:
            continue
        r["hidden"] = info.id in hidden
        if include_hidden or not r["hidden"]:
            out.append(r)
    out.sort(key=lambda r: (r["created"], r["id"]))
    return out
