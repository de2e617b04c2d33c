"""Limits for a public server: how big one run may get, and which models visitors may load.

A class shares one box: one student's 100-epoch run on 8k-token inputs must not hold it all day,
and no visitor may make the server download an arbitrary 70B model. JobManager.submit calls
check_run() before a run is queued, so the UI, the CLI and any other caller get the same
ConfigError naming the limit and its environment variable. Runs whose total step count is known
only once the data is loaded are checked again on their first progress event (check_event).

Environment (read at call time; an unusable value falls back to the default, never to "no limit"):
  PLAYGROUND_MAX_EPOCHS   default 20     train.epochs per run
  PLAYGROUND_MAX_STEPS    default 5000   optimizer steps per run (train.max_steps, or as computed)
  PLAYGROUND_MAX_LENGTH   default 1024   data.max_length (tokens per example)
  PLAYGROUND_MODEL_ALLOW  default ""     hub ids visitors may train; "" = any hub id that can be
                                         had (cached, or the hub is online). Comma-separated globs
                                         ("HuggingFaceTB/*,distilbert-*"), "re:<regex>" for a
                                         regular expression (full match), or "none" for embedded
                                         models only. Embedded models are always allowed; local
                                         folders follow PLAYGROUND_ALLOW_LOCAL_MODELS.
Upload size, row count and queue length live with the code they guard (core.data, core.jobs).
"""
from __future__ import annotations

import fnmatch
import math
import os
import re
from typing import Any

from core.config import ConfigError

DEFAULT_MAX_EPOCHS = 20
DEFAULT_MAX_STEPS = 5000
DEFAULT_MAX_LENGTH = 1024


class LimitExceeded(ConfigError):
    """A run asks for more than this server allows; the message names the limit and its variable."""


def _env_limit(name: str, default: int) -> int:
    # A typo in a deployment must not lift a limit: anything but a positive number means the default.
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw)
    except ValueError:
        return default
    return int(value) if math.isfinite(value) and value >= 1 else default


def max_epochs() -> int:
    return _env_limit("PLAYGROUND_MAX_EPOCHS", DEFAULT_MAX_EPOCHS)


def max_steps() -> int:
    return _env_limit("PLAYGROUND_MAX_STEPS", DEFAULT_MAX_STEPS)


def max_length() -> int:
    return _env_limit("PLAYGROUND_MAX_LENGTH", DEFAULT_MAX_LENGTH)


def summary() -> dict:
    """The limits in force, for a page that wants to show them."""
    return {"max_epochs": max_epochs(), "max_steps": max_steps(), "max_length": max_length(),
            "model_allow": os.environ.get("PLAYGROUND_MODEL_ALLOW", "").strip()}


# ------------------------------------------------------------------------------------ models

def _allow_patterns() -> list[str] | None:
    """None: any hub id; []: none; else the patterns a hub id must match."""
    raw = os.environ.get("PLAYGROUND_MODEL_ALLOW", "").strip()
    if not raw or raw == "*":
        return None
    if raw.lower() in ("none", "embedded"):
        return []
    if raw.startswith("re:"):
        return [raw]  # a regex may itself hold commas: never split it
    return [p.strip() for p in raw.split(",") if p.strip()]


def _matches(name: str, pattern: str) -> bool:
    if pattern.startswith("re:"):
        try:
            return re.fullmatch(pattern[3:], name, flags=re.IGNORECASE) is not None
        except re.error:
            return False  # a broken pattern allows nothing rather than everything
    return fnmatch.fnmatchcase(name.lower(), pattern.lower())


def check_model_allowed(name: str) -> None:
    """Embedded keys always; local folders as PLAYGROUND_ALLOW_LOCAL_MODELS says; hub ids when
    they match PLAYGROUND_MODEL_ALLOW and can be had (in the local cache, or the hub is online)."""
    from core import models
    loc = models._locate(name)  # refuses empty names, URLs, '..', control characters, disabled folders
    if loc.origin != "hub":
        return
    patterns = _allow_patterns()
    if patterns is not None and not any(_matches(loc.name, p) for p in patterns):
        shown = os.environ.get("PLAYGROUND_MODEL_ALLOW", "").strip()
        raise LimitExceeded(f"model {loc.name} is not allowed on this server (PLAYGROUND_MODEL_ALLOW={shown!r}); "
                            f"use an embedded model ({', '.join(models.EMBEDDED)})"
                            + ("" if not patterns else " or a hub id matching it"))
    if models.is_available_offline(loc.name):
        return
    # Offline and not cached: say so now rather than after the run waited its turn in the queue.
    if models._offline_mode() or not models._hub_reachable(timeout=2.0):
        raise models.ModelNotAvailable(models._offline_message(loc.name))


# ------------------------------------------------------------------------------------- runs

from core.runs import _cfg_dict  # noqa: E402  (one way to read a config or its dict)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_run(cfg: Any) -> None:
    """Raise LimitExceeded (a ConfigError) when cfg asks for more than this server allows."""
    d = _cfg_dict(cfg)
    train = d.get("train") or {}
    data = d.get("data") or {}
    epochs = _number(train.get("epochs"))
    if epochs is not None and epochs > max_epochs():
        raise LimitExceeded(f"train.epochs={train['epochs']!r} is above this server's limit of {max_epochs()} "
                            "epochs per run (PLAYGROUND_MAX_EPOCHS); use fewer epochs")
    steps = _number(train.get("max_steps"))
    if steps is not None and steps > max_steps():
        raise LimitExceeded(f"train.max_steps={train['max_steps']!r} is above this server's limit of "
                            f"{max_steps()} steps per run (PLAYGROUND_MAX_STEPS); use fewer steps")
    length = _number(data.get("max_length"))
    if length is not None and length > max_length():
        raise LimitExceeded(f"data.max_length={data['max_length']!r} is above this server's limit of "
                            f"{max_length()} tokens (PLAYGROUND_MAX_LENGTH); use a shorter max length")
    name = (d.get("model") or {}).get("name")
    if isinstance(name, str):
        check_model_allowed(name)


def check_event(event: dict) -> None:
    """A run's total step count is known once its data is loaded: refuse it at the first step."""
    total = _number(event.get("max_steps"))
    if total is not None and total > max_steps():
        raise LimitExceeded(f"this run needs {int(total)} optimizer steps (epochs × rows ÷ batch size); this "
                            f"server allows at most {max_steps()} per run (PLAYGROUND_MAX_STEPS): use fewer "
                            "epochs or rows (n_samples), or a larger batch size")
