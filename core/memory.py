"""How much memory the machine can give a run, what a run will take, and a guard while it trains.

One setting (`/train?bs=1024&len=512` on long texts) once took the whole server down: the kernel's
OOM killer ends the process, and with it every visitor's session. Two defences:
  - before anything loads, a run whose estimated peak (core.estimate, training step and the
    evaluation batch alike) is above what the machine can give is refused (core.limits.check_run);
  - while it trains, MemoryWatchdog polls the process's resident memory and stops the run when it
    passes a limit well below the machine's, so the run fails ("ran out of memory") and the
    server lives on.
Pure arithmetic and /proc reads: no torch import here (GPU figures only when torch is loaded).
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Optional

from core import estimate, models

log = logging.getLogger(__name__)

MB = 2 ** 20
# The Trainer evaluates with per_device_eval_batch_size = max(batch_size, 32) (core.train.training_args):
# the first evaluation, of the untouched model, is where a huge batch first shows (issue 25: 23 GB).
EVAL_MIN_BATCH = 32
ESTIMATE_KEYS = ("minilm", "smollm2-135m-instruct")  # embedded models whose config ships with core.estimate


# ------------------------------------------------------------------------------ the machine

def _read_int(path: str) -> Optional[int]:
    try:
        with open(path, encoding="utf-8") as fh:
            raw = fh.read().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() else None  # "max" (cgroup v2: no limit) is not a number


def _meminfo() -> dict[str, int]:
    info: dict[str, int] = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    info[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return info


def cgroup_limit() -> tuple[Optional[int], Optional[int]]:
    """(limit, usage) in bytes of this process's memory cgroup (a container's memory), or None."""
    for limit_path, usage_path in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit = _read_int(limit_path)
        if limit is not None and limit < 2 ** 60:  # cgroup v1 writes a huge number for "no limit"
            return limit, _read_int(usage_path)
    return None, None


def ram_capacity() -> Optional[int]:
    """Bytes this process may use at most: the machine's RAM, or its container's limit if lower."""
    total = _meminfo().get("MemTotal")
    limit, _ = cgroup_limit()
    values = [v for v in (total, limit) if v]
    return min(values) if values else None


def ram_available() -> Optional[int]:
    """Bytes that can be had now without swapping: MemAvailable, within the container's headroom."""
    available = _meminfo().get("MemAvailable")
    limit, usage = cgroup_limit()
    if limit is not None and usage is not None:
        headroom = max(0, limit - usage)
        available = headroom if available is None else min(available, headroom)
    return available


def process_rss() -> Optional[int]:
    """Resident memory of this process in bytes (the server and every run it trains)."""
    try:
        with open("/proc/self/statm", encoding="utf-8") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def gpu_free() -> Optional[tuple[int, int]]:
    """(free, total) bytes of the current CUDA device, only when torch is loaded and sees one."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        free, total = torch.cuda.mem_get_info()
        return int(free), int(total)
    except Exception:  # a broken driver: no GPU figure rather than no page
        return None


def gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / MB:.0f} MB"


# ------------------------------------------------------------------------------ a run's estimate

def model_config(name: str) -> Optional[dict]:
    """The config dict core.estimate reads, or None when it cannot be had without loading weights."""
    try:
        if name in ESTIMATE_KEYS:
            return estimate.load_config(name)
        cfg = models.load_config(name).to_dict()
        estimate.dims(cfg)  # an architecture the estimator does not know: no estimate
        return cfg
    except Exception:  # offline, odd family, unreadable folder: the run's own loading says why
        log.debug("no memory estimate for %s", name, exc_info=True)
        return None


def context_length(model_cfg: dict) -> Optional[int]:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = model_cfg.get(attr)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10 ** 7:
            return value
    return None


def estimate_method(method: dict) -> tuple[str, dict]:
    """Our method spec (as a dict) -> core.estimate's method name and keyword arguments."""
    return estimate.method_args(method)


def estimate_peak(cfg: dict, model_cfg: dict, device: str = "cpu", dtype: str = "float32",
                  autocast: bool = False) -> dict[str, int]:
    """{"train", "eval", "peak"} bytes for a run config dict: the training step, and the evaluation
    batch (forward only, but max(batch, 32) rows: one block's intermediates and, for a language
    model, the fp32 logits of every token)."""
    data, train = cfg.get("data") or {}, cfg.get("train") or {}
    bs, seq = int(train.get("batch_size") or 8), int(data.get("max_length") or 256)
    task = data.get("task") or "classification"
    method, kwargs = estimate_method(cfg.get("method") or {})
    where = "cpu" if device == "cpu" else "cuda"
    common = dict(dtype=dtype, task=task, flash_attention=True, device=where,
                  autocast=autocast and method != "qlora")
    trained = estimate.memory_estimate(model_cfg, method, batch_size=bs, seq_len=seq, **common, **kwargs)
    eval_bs = max(bs, EVAL_MIN_BATCH)
    one_block = estimate.workspace_bytes(model_cfg, "linear_head", 0, batch_size=eval_bs, seq_len=seq,
                                         dtype=dtype, device="cpu", flash_attention=True)
    logits = 4 * eval_bs * seq * estimate.dims(model_cfg).vocab if task == "sft" else 0
    evaluated = trained["weights"] + one_block + logits
    return {"train": int(trained["total"]), "eval": int(evaluated), "peak": int(max(trained["total"], evaluated)),
            "eval_batch": eval_bs}


# ------------------------------------------------------------------------------ the guard

# One decision for the whole process. Every run's guard watches the same RSS (runs in parallel
# workers share the process), so without this, one spike stopped every run at once. A trip stops
# only the run with the largest estimated peak (the newest on a tie); while that run is still
# stopping (up to TRIP_COOLDOWN_S), no other is stopped: its memory is about to come back.
TRIP_COOLDOWN_S = 10.0
_trip_lock = threading.Lock()
_active: list["MemoryWatchdog"] = []


def _trip_one(used: int) -> None:
    with _trip_lock:
        now = time.monotonic()
        if any(w.tripped_at is not None and now - w.tripped_time < TRIP_COOLDOWN_S for w in _active):
            return
        candidates = [w for w in _active if w._inside and w.tripped_at is None]
        if not candidates:
            return
        victim = max(candidates, key=lambda w: (w.weight, w.started))
        with victim._lock:
            if not victim._inside:
                return
            victim.tripped_at, victim.tripped_time = used, now
            # Sets the run's stop flag: the trainer stops at its next step. An exception sent
            # into the training thread from outside (PyThreadState_SetAsyncExc) was tried and
            # dropped: landing inside an import, it left the module lock held and hung the server.
            victim.on_trip(used)


class MemoryWatchdog:
    """Polls the process's RSS while a run trains; above `limit_bytes` it stops one run of the
    process (see _trip_one): the one with the largest `weight` (its estimated peak, bytes), calling
    that run's on_trip once (the job manager sets the stop flag and the message). Use as a context
    manager around the training call only: leaving it (under its lock) ends the window in which it
    may trip."""

    def __init__(self, limit_bytes: int, on_trip: Callable[[int], None], interval_s: float = 0.2,
                 rss: Callable[[], Optional[int]] = process_rss, weight: int = 0):
        self.limit = int(limit_bytes)
        self.on_trip = on_trip
        self.interval = interval_s
        self.rss = rss
        self.weight = int(weight or 0)
        self.started = time.monotonic()
        self.tripped_at: Optional[int] = None
        self.tripped_time = 0.0
        self._lock = threading.Lock()
        self._inside = False
        self._done = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "MemoryWatchdog":
        self._inside = True
        self.started = time.monotonic()
        with _trip_lock:
            _active.append(self)
        self._thread = threading.Thread(target=self._watch, name="playground-memory-guard", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            self._inside = False
        with _trip_lock:
            if self in _active:
                _active.remove(self)
        self._done.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            if self.tripped_at is not None:
                return
            used = self.rss()
            if used is None or used <= self.limit:
                continue
            _trip_one(used)
