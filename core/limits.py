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
Limits for a public Space (issue 25), read here too: see the section "public Space" below.
"""
from __future__ import annotations

import fnmatch
import re
from typing import Any

from core import hub, memory, models, settings
from core.config import ConfigError
from core.methods import get_method
from core.runs import cfg_dict

DEFAULT_MAX_EPOCHS = 20
DEFAULT_MAX_STEPS = 5000
DEFAULT_MAX_LENGTH = 1024


class LimitExceeded(ConfigError):
    """A run asks for more than this server allows; the message names the limit and its variable."""


def max_epochs() -> int:
    return settings.limit("PLAYGROUND_MAX_EPOCHS", DEFAULT_MAX_EPOCHS)


def max_steps() -> int:
    return settings.limit("PLAYGROUND_MAX_STEPS", DEFAULT_MAX_STEPS)


def max_length() -> int:
    return settings.limit("PLAYGROUND_MAX_LENGTH", DEFAULT_MAX_LENGTH)


def summary() -> dict:
    """The limits in force, for a page that wants to show them."""
    return {"max_epochs": max_epochs(), "max_steps": max_steps(), "max_length": max_length(),
            "model_allow": settings.model_allow()}


# ------------------------------------------------------------------------------------ models

def _allow_patterns() -> list[str] | None:
    """None: any hub id; []: none; else the patterns a hub id must match."""
    raw = settings.model_allow()
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
    loc = models.locate(name)  # refuses empty names, URLs, '..', control characters, disabled folders
    if loc.origin != "hub":
        return
    patterns = _allow_patterns()
    if patterns is not None and not any(_matches(loc.name, p) for p in patterns):
        shown = settings.model_allow()
        raise LimitExceeded(f"model {loc.name} is not allowed on this server (PLAYGROUND_MODEL_ALLOW={shown!r}); "
                            f"use an embedded model ({', '.join(models.EMBEDDED)})"
                            + ("" if not patterns else " or a hub id matching it"))
    if models.is_available_offline(loc.name):
        return
    # Offline and not cached: say so now rather than after the run waited its turn in the queue.
    if not hub.allowed(timeout=2.0):
        raise models.ModelNotAvailable(models.offline_message(loc.name))


# ------------------------------------------------------------------------------------- runs

def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def check_run(cfg: Any, fits: bool = True) -> None:
    """Raise LimitExceeded (a ConfigError) when cfg asks for more than this server allows.
    fits=False leaves out the memory check (check_fits), which asks torch for the device."""
    d = cfg_dict(cfg)
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
        if fits:
            check_fits(d)


def check_event(event: dict) -> None:
    """A run's total step count is known once its data is loaded: refuse it at the first step."""
    total = _number(event.get("max_steps"))
    if total is not None and total > max_steps():
        raise LimitExceeded(f"this run needs {int(total)} optimizer steps (epochs × rows ÷ batch size); this "
                            f"server allows at most {max_steps()} per run (PLAYGROUND_MAX_STEPS): use fewer "
                            "epochs or rows (n_samples), or a larger batch size")


# ------------------------------------------------------------------------- public Space (issue 25)
# Every request has a cost ceiling checked before the work starts. Environment (read at call time;
# an unusable value means the default):
#   PLAYGROUND_MAX_PROMPT_CHARS    default 2000  characters in one chat prompt (5x for a text to classify)
#   PLAYGROUND_MAX_PROMPT_TOKENS   default 512   tokens of one chat request (history + prompt)
#   PLAYGROUND_CHAT_PER_MINUTE     default 12    chat sends per session per minute
#   PLAYGROUND_GENERATION_SECONDS  default 60    time budget of one answer (it stops there)
#   PLAYGROUND_MODEL_WAIT_SECONDS  default 5     how long a request waits for a busy model
#   PLAYGROUND_MEMORY_MARGIN_MB    default 1024  kept free when judging whether a run fits
#   PLAYGROUND_MEMORY_GUARD_PERCENT default 85   a training run is stopped when the server's RSS
#                                                passes this share of the RAM (or container limit)
#   PLAYGROUND_MEMORY_GUARD_MB     default unset the same guard as an absolute figure (wins)
#   PLAYGROUND_UPLOAD_QUOTA_MB     default 50    uploads kept per session
#   PLAYGROUND_UPLOAD_MAX_AGE_HOURS default 48   uploads older than this are deleted

DEFAULT_MAX_PROMPT_CHARS = 2000
DEFAULT_MAX_PROMPT_TOKENS = 512
DEFAULT_CHAT_PER_MINUTE = 12
DEFAULT_GENERATION_SECONDS = 60
DEFAULT_MODEL_WAIT_SECONDS = 5
DEFAULT_MEMORY_MARGIN_MB = 1024
DEFAULT_MEMORY_GUARD_PERCENT = 85
DEFAULT_UPLOAD_QUOTA_MB = 50
DEFAULT_UPLOAD_MAX_AGE_HOURS = 48


def max_prompt_chars() -> int:
    return settings.limit("PLAYGROUND_MAX_PROMPT_CHARS", DEFAULT_MAX_PROMPT_CHARS)


def max_prompt_tokens() -> int:
    return settings.limit("PLAYGROUND_MAX_PROMPT_TOKENS", DEFAULT_MAX_PROMPT_TOKENS)


def chat_per_minute() -> int:
    return settings.limit("PLAYGROUND_CHAT_PER_MINUTE", DEFAULT_CHAT_PER_MINUTE)


def generation_seconds() -> int:
    return settings.limit("PLAYGROUND_GENERATION_SECONDS", DEFAULT_GENERATION_SECONDS)


def model_wait_seconds() -> int:
    return settings.limit("PLAYGROUND_MODEL_WAIT_SECONDS", DEFAULT_MODEL_WAIT_SECONDS)


def memory_margin_bytes() -> int:
    return settings.limit("PLAYGROUND_MEMORY_MARGIN_MB", DEFAULT_MEMORY_MARGIN_MB) * 2**20


def memory_guard_bytes() -> int | None:
    """The RSS above which a training run is stopped; None when the machine's RAM is unknown."""
    fixed = settings.limit("PLAYGROUND_MEMORY_GUARD_MB", 0)
    if fixed:
        return fixed * 2**20
    capacity = memory.ram_capacity()
    if not capacity:
        return None
    percent = min(settings.limit("PLAYGROUND_MEMORY_GUARD_PERCENT", DEFAULT_MEMORY_GUARD_PERCENT), 99)
    return capacity * percent // 100


def upload_quota_bytes() -> int:
    return settings.limit("PLAYGROUND_UPLOAD_QUOTA_MB", DEFAULT_UPLOAD_QUOTA_MB) * 2**20


def upload_max_age_seconds() -> float:
    return settings.limit("PLAYGROUND_UPLOAD_MAX_AGE_HOURS", DEFAULT_UPLOAD_MAX_AGE_HOURS) * 3600.0


CLASSIFY_CHARS_FACTOR = 5  # a text to classify is cut to max_length tokens anyway: reviews may be long


def check_prompt_chars(text: str, what: str = "the prompt", factor: int = 1) -> None:
    limit = max_prompt_chars() * factor
    if len(text) > limit:
        raise LimitExceeded(f"{what} is {len(text):,} characters long; this server takes at most {limit:,} "
                            "(PLAYGROUND_MAX_PROMPT_CHARS): shorten it")


def check_prompt_tokens(n_tokens: int) -> None:
    limit = max_prompt_tokens()
    if n_tokens > limit:
        raise LimitExceeded(f"this request is {n_tokens:,} tokens long (the prompt and the chat history); this "
                            f"server takes at most {limit:,} (PLAYGROUND_MAX_PROMPT_TOKENS): shorten the prompt, "
                            "or clear the chat or turn off Remember chat")


def _compute(d: dict) -> dict:
    """Device, dtype and autocast as the run will train: the Train page's estimate card makes the
    same choice, so the refusal and the card show the same figure."""
    try:
        model = d.get("model") or {}
        device = models.pick_device(str(model.get("device") or "auto"))
        wanted = str(model.get("dtype") or "auto")
        flags = models.mixed_precision(device, wanted, get_method((d.get("method") or {}).get("name")).quantized_base)
        dtype = str(models.pick_dtype(device, wanted)).removeprefix("torch.")
        on_gpu = device != "cpu" and memory.gpu_free() is not None
        return {"device": "cuda" if on_gpu else "cpu", "dtype": dtype, "autocast": bool(flags["bf16"] or flags["fp16"])}
    except Exception:  # an odd machine or config: plain fp32 on a CPU, the largest figure
        return {"device": "cpu", "dtype": "float32", "autocast": False}


def _what_to_lower(d: dict) -> str:
    data, train = d.get("data") or {}, d.get("train") or {}
    try:
        lighter = get_method(str((d.get("method") or {}).get("name"))).lighter
    except ConfigError:  # an unknown method is refused elsewhere; here only the advice is at stake
        lighter = ""
    other = f"use {lighter}, or a smaller model" if lighter else "use a smaller model"
    return (f"lower the batch size (now {train.get('batch_size')}) or max length (now {data.get('max_length')}), "
            f"or {other}")


def check_fits(cfg: Any, available: int | None = None) -> None:
    """Refuse, before anything loads, a max length above the model's own limit and a run whose
    estimated peak memory (the training step or the evaluation batch) is above what this machine
    can give: its RAM (or container limit, or free GPU memory) minus PLAYGROUND_MEMORY_MARGIN_MB.
    `available` (bytes) replaces the machine's capacity: the worker passes what is free right now."""
    d = cfg_dict(cfg)
    name = (d.get("model") or {}).get("name")
    model_cfg = memory.model_config(name) if isinstance(name, str) else None
    if model_cfg is None:
        return  # no estimate: loading the model will say what is wrong, if anything
    length = _number((d.get("data") or {}).get("max_length"))
    context = memory.context_length(model_cfg)
    if length is not None and context is not None and length > context:
        raise LimitExceeded(f"data.max_length={int(length)} is above what {name} can read: {context} tokens "
                            f"(its max_position_embeddings); use a max length of {context} or less")
    compute = _compute(d)
    device = compute["device"]
    if available is None:
        if device == "cuda":
            gpu = memory.gpu_free()
            available = gpu[1] if gpu else None
        else:
            available = memory.ram_capacity()
    if not available:
        return
    try:
        peak = memory.estimate_peak(d, model_cfg, device, compute["dtype"], compute["autocast"])
    except (ConfigError, ValueError, TypeError, KeyError):
        return  # an option the estimator does not model: no refusal on a guess
    budget = available - memory_margin_bytes()
    if peak["peak"] > budget:
        part = ("the first evaluation (batch of %d rows, before training)" % peak["eval_batch"]
                if peak["eval"] >= peak["train"] else "one training step")
        where = "GPU memory" if device == "cuda" else "memory"
        raise LimitExceeded(f"this run needs about {memory.gb(peak['peak'])} of {where} for {part}; this server "
                            f"can give {memory.gb(max(budget, 0))} ({memory.gb(available)} minus a "
                            f"{memory.gb(memory_margin_bytes())} margin, PLAYGROUND_MEMORY_MARGIN_MB): "
                            + _what_to_lower(d))


def check_fits_now(cfg: Any) -> None:
    """check_fits against the memory free at this moment (the worker, just before a run loads)."""
    if _compute(cfg_dict(cfg))["device"] == "cuda":
        gpu = memory.gpu_free()
        available = gpu[0] if gpu else None
    else:
        available = memory.ram_available()
    if available:
        check_fits(cfg, available=available)
