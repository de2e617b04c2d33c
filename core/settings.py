"""Every PLAYGROUND_* and HF_* environment variable the app reads, in one place.

Values are read at call time, never cached at import: tests and deployments change the environment
without re-importing. A value that cannot be used falls back to its default (a typo in a deployment
must never lift a limit) and logs one warning naming the variable and what it accepts.
`tests/test_settings.py` checks that no other module reads these variables, and
`python -m core.settings` prints the table in docs/settings.md.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Setting:
    name: str
    default: str   # as the documentation shows it
    meaning: str


SETTINGS: dict[str, Setting] = {}


def _setting(name: str, default: str, meaning: str) -> str:
    SETTINGS[name] = Setting(name, default, meaning)
    return name


# ------------------------------------------------------------------------------- the variables

ALLOW_LOCAL_MODELS = _setting("PLAYGROUND_ALLOW_LOCAL_MODELS", "1",
                              "0/false/no: model.name may not name a folder on the server (a public Space)")
ALLOW_LOCAL_DATA = _setting("PLAYGROUND_ALLOW_LOCAL_DATA", "unset",
                            "0/false/no: data sources may not name server files; unset: as ALLOW_LOCAL_MODELS")
CACHE_DIR = _setting("PLAYGROUND_CACHE_DIR", "~/.cache/peft-playground", "converted models (SmolLM2) and the probe's base-model answers (probe-base/) are kept here")
RUNS_DIR = _setting("PLAYGROUND_RUNS_DIR", "./runs", "run folders")
UPLOADS_DIR = _setting("PLAYGROUND_UPLOADS_DIR", ".cache/uploads", "uploaded data files")
MAX_UPLOAD_MB = _setting("PLAYGROUND_MAX_UPLOAD_MB", "20", "largest data file accepted (MB)")
MAX_ROWS = _setting("PLAYGROUND_MAX_ROWS", "200000", "most rows read from one data source")
MAX_LINE_MB = _setting("PLAYGROUND_MAX_LINE_MB", "1", "longest line or text cell accepted (MB)")
MAX_EPOCHS = _setting("PLAYGROUND_MAX_EPOCHS", "20", "train.epochs per run")
MAX_STEPS = _setting("PLAYGROUND_MAX_STEPS", "5000", "optimizer steps per run")
MAX_LENGTH = _setting("PLAYGROUND_MAX_LENGTH", "1024", "data.max_length (tokens per example)")
MODEL_ALLOW = _setting("PLAYGROUND_MODEL_ALLOW", "", "hub ids visitors may train: globs, 're:<regex>', 'none'; "
                       "empty: any hub id that can be had")
MAX_PROMPT_CHARS = _setting("PLAYGROUND_MAX_PROMPT_CHARS", "2000", "characters in one chat prompt")
MAX_PROMPT_TOKENS = _setting("PLAYGROUND_MAX_PROMPT_TOKENS", "512", "tokens of one chat request")
CHAT_PER_MINUTE = _setting("PLAYGROUND_CHAT_PER_MINUTE", "12", "chat sends per session per minute")
GENERATION_SECONDS = _setting("PLAYGROUND_GENERATION_SECONDS", "60", "time budget of one answer")
MODEL_WAIT_SECONDS = _setting("PLAYGROUND_MODEL_WAIT_SECONDS", "5", "how long a request waits for a busy model")
MEMORY_MARGIN_MB = _setting("PLAYGROUND_MEMORY_MARGIN_MB", "1024", "kept free when judging whether a run fits")
MEMORY_GUARD_PERCENT = _setting("PLAYGROUND_MEMORY_GUARD_PERCENT", "85",
                                "a run is stopped when the server's RSS passes this share of the RAM")
MEMORY_GUARD_MB = _setting("PLAYGROUND_MEMORY_GUARD_MB", "unset", "the same guard as an absolute figure (wins)")
UPLOAD_QUOTA_MB = _setting("PLAYGROUND_UPLOAD_QUOTA_MB", "50", "uploads kept per session (MB)")
UPLOAD_MAX_AGE_HOURS = _setting("PLAYGROUND_UPLOAD_MAX_AGE_HOURS", "48", "uploads older than this are deleted")
ADMIN_TOKEN = _setting("PLAYGROUND_ADMIN_TOKEN", "unset", "the teacher's admin secret; unset: nobody is admin")
MAX_QUEUE = _setting("PLAYGROUND_MAX_QUEUE", "100", "waiting runs in the queue")
MAX_QUEUED_PER_OWNER = _setting("PLAYGROUND_MAX_QUEUED_PER_OWNER", "24", "waiting runs per visitor")
MAX_RUNS_PER_HOUR = _setting("PLAYGROUND_MAX_RUNS_PER_HOUR", "48", "runs a visitor may start per hour")
OWNER_TIMEOUT_S = _setting("PLAYGROUND_OWNER_TIMEOUT_S", "900", "waiting runs of someone away this long leave the queue (0: never)")
MAX_RUN_SECONDS = _setting("PLAYGROUND_MAX_RUN_SECONDS", "0", "a run is stopped after this long (0: no limit)")
TRAIN_NICE = _setting("PLAYGROUND_TRAIN_NICE", "10", "nice level of the training thread (0-19)")
TRAIN_THREADS = _setting("PLAYGROUND_TRAIN_THREADS", "all cores", "CPU threads a run trains with")
WORKERS = _setting("PLAYGROUND_WORKERS", "from the cores", "runs trained at the same time")
MODEL_CACHE_SIZE = _setting("PLAYGROUND_MODEL_CACHE_SIZE", "2", "trained models kept loaded for chat")
RAY_ADDRESS = _setting("PLAYGROUND_RAY_ADDRESS", "unset", "train on a Ray cluster (auto or ray://host:10001)")
RAY_CPUS_PER_RUN = _setting("PLAYGROUND_RAY_CPUS_PER_RUN", "1", "CPUs a Ray task asks for")
DEBUG = _setting("PLAYGROUND_DEBUG", "unset", "the CLI shows the full traceback of a failed run")
HF_HUB_OFFLINE = _setting("HF_HUB_OFFLINE", "unset", "1: never contact the Hugging Face Hub")
HF_DATASETS_OFFLINE = _setting("HF_DATASETS_OFFLINE", "unset", "1: hub datasets come from the local cache only")
TRANSFORMERS_OFFLINE = _setting("TRANSFORMERS_OFFLINE", "unset", "1: as HF_HUB_OFFLINE (older spelling)")
HF_ENDPOINT = _setting("HF_ENDPOINT", "https://huggingface.co", "the Hub (or a mirror) to reach")
HF_TOKEN = _setting("HF_TOKEN", "unset", "a Hub token (gated models); HUGGING_FACE_HUB_TOKEN also counts")
HUGGING_FACE_HUB_TOKEN = _setting("HUGGING_FACE_HUB_TOKEN", "unset", "older spelling of HF_TOKEN")

# Read only to find where a Hub request would go: not settings of ours, listed for completeness.
PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


# ------------------------------------------------------------------------------- readers

def raw(name: str, default: str | None = None) -> str | None:
    """The variable's text as set, or default. The one read of os.environ for these variables."""
    if name not in SETTINGS and name not in PROXY_VARS:
        raise KeyError(f"{name} is not a known setting; add it to core.settings")
    return os.environ.get(name, default)


_warned: set[tuple[str, str]] = set()


def _fallback(name: str, value: str, accepted: str, default):
    if (name, value) not in _warned:
        _warned.add((name, value))
        log.warning("%s=%r: %s; using the default %s", name, value, accepted, default)
    return default


def limit(name: str, default: int) -> int:
    """A positive whole limit: anything but a number >= 1 means the default (never 'no limit')."""
    text = (raw(name) or "").strip()
    try:
        value = float(text)
    except ValueError:
        return default if not text else _fallback(name, text, "must be a number >= 1", default)
    if math.isfinite(value) and value >= 1:
        return int(value)
    return _fallback(name, text, "must be a number >= 1", default)


def positive(name: str, default: float) -> float:
    """A number > 0; anything else means the default."""
    text = (raw(name) or "").strip()
    try:
        value = float(text)
    except ValueError:
        return default if not text else _fallback(name, text, "must be a number > 0", default)
    if math.isfinite(value) and value > 0:
        return value
    return _fallback(name, text, "must be a number > 0", default)


def _no(name: str) -> bool:
    return (raw(name) or "").strip().lower() in ("0", "false", "no")


def _yes(name: str) -> bool:
    return (raw(name) or "").strip().lower() in ("1", "true", "yes", "on")


# ------------------------------------------------------------------------------- accessors

def allow_local_models() -> bool:
    # Compared as set (not stripped): what the app has always done.
    return raw(ALLOW_LOCAL_MODELS, "1") not in ("0", "false", "no")


def allow_local_data() -> bool | None:
    """None when unset: the caller follows allow_local_models()."""
    if not (raw(ALLOW_LOCAL_DATA) or "").strip():
        return None
    return not _no(ALLOW_LOCAL_DATA)


def cache_dir() -> Path:
    return Path(raw(CACHE_DIR) or "~/.cache/peft-playground").expanduser()


def runs_dir() -> str:
    return os.path.abspath(raw(RUNS_DIR) or "./runs")


def uploads_dir() -> str:
    # .cache/ is git-ignored; a deployment can move uploads to a volume.
    return os.path.abspath(raw(UPLOADS_DIR) or os.path.join(".cache", "uploads"))


def max_upload_mb() -> float:
    return positive(MAX_UPLOAD_MB, 20)


def max_rows() -> float:
    return positive(MAX_ROWS, 200_000)


def max_line_mb() -> float:
    return positive(MAX_LINE_MB, 1)


def model_allow() -> str:
    return (raw(MODEL_ALLOW) or "").strip()


def admin_token() -> str:
    return raw(ADMIN_TOKEN) or ""


def debug() -> bool:
    return bool(raw(DEBUG))


def hub_offline(datasets: bool = False) -> bool:
    """HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set (for datasets, HF_DATASETS_OFFLINE too)."""
    names = (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE) + ((HF_DATASETS_OFFLINE,) if datasets else ())
    return any(_yes(n) for n in names)


def hf_endpoint() -> str:
    return raw(HF_ENDPOINT) or "https://huggingface.co"


def https_proxy() -> str:
    for var in PROXY_VARS:
        value = raw(var)
        if value:
            return value
    return ""


def hf_token_set() -> bool:
    return any((raw(v) or "").strip() for v in (HF_TOKEN, HUGGING_FACE_HUB_TOKEN))


def environ() -> dict[str, str]:
    """A copy of the whole environment, for handing on to a worker process."""
    return dict(os.environ)


def table_markdown() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{s.name}` | {s.default or '(empty)'} | {s.meaning} |" for s in SETTINGS.values()]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table_markdown(), end="")
