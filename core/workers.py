"""How many runs train at once on this machine, and what parallel runs must not share unsafely.

PLAYGROUND_WORKERS sets the pool size. By default: on a CPU, 1 up to 4 cores (two runs on two
cores each train slower than one after the other, and pages need a core), then one per 4 cores;
on a GPU, as many copies of the app's default run as the estimator fits in the free memory
(80 % of it: the CUDA context and the allocator's cache take the rest). Capped at MAX_WORKERS.

Parallel runs share one process, so three things are process-wide and handled here:
- torch.set_num_threads: each run asks for its share of the cores (run_threads), so two runs
  setting it at once set the same value instead of fighting over it.
- the global RNG: torch.manual_seed + model build + adapter init happen under seeded_build, one
  run at a time, so a seed still gives the same initial weights. (Dropout and shuffling during
  training draw from the same global generator, so two runs training at once are not bit-for-bit
  reproducible; one run alone is.)
- the run store: core.runs writes status.json and metrics.jsonl under its own locks.
- accelerate's state (the device, mixed precision, gradient-sync flags): one dict per process that
  every TrainingArguments clears when it sets up, so a run starting would pull it from under a run
  training ("`AcceleratorState` object has no attribute `distributed_type`"). Side by side, each
  training thread gets its own (separate_accelerate_state), as accelerate does for TPU threads.
No Streamlit and no torch import at module level.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

from core import settings

log = logging.getLogger(__name__)

MAX_WORKERS = 8
GPU_DEFAULT_CAP = 4
CPU_CORES_PER_WORKER = 4
GPU_MEMORY_SHARE = 0.8

# Runs this process trains side by side: set by the job manager; 1 for the CLI.
_pool_size = 1

# One run at a time seeds the global RNG and builds its model (see the module docstring).
seeded_build = threading.RLock()


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _gpu_free_bytes() -> int | None:
    torch = sys.modules.get("torch")  # only if the app already loaded it: never import torch here
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    except Exception:  # a broken driver: behave as a CPU box
        log.debug("cuda mem_get_info failed", exc_info=True)
        return None


def _default_run_bytes() -> int | None:
    """Estimated training memory of the app's default run (what most of a class starts)."""
    try:
        from core import estimate, presets
        cfg = presets.app_defaults()
        rep = estimate.report(estimate.load_config(cfg.model.name), cfg.method.name,
                              batch_size=cfg.train.batch_size, seq_len=cfg.data.max_length, task=cfg.data.task)
        return int(rep["memory"]["total"])
    except Exception:  # an estimate that cannot be made: one worker, the safe choice
        log.debug("no memory estimate for the default run", exc_info=True)
        return None


def default_workers(cores: int | None = None, gpu_free: int | None = None, run_bytes: int | None = None) -> int:
    """The pool size when PLAYGROUND_WORKERS is not set (arguments: for tests; None = measure)."""
    gpu_free = _gpu_free_bytes() if gpu_free is None else gpu_free
    if gpu_free:
        run_bytes = _default_run_bytes() if run_bytes is None else run_bytes
        if not run_bytes or run_bytes <= 0:
            return 1
        return max(1, min(GPU_DEFAULT_CAP, int(gpu_free * GPU_MEMORY_SHARE // run_bytes)))
    cores = _cores() if cores is None else cores
    if cores <= CPU_CORES_PER_WORKER:
        return 1
    return max(1, min(MAX_WORKERS, cores // CPU_CORES_PER_WORKER))


def worker_count() -> int:
    """PLAYGROUND_WORKERS if it is a number from 1 to MAX_WORKERS (clamped), else default_workers()."""
    raw = settings.raw("PLAYGROUND_WORKERS", "").strip()
    if raw:
        try:
            return max(1, min(MAX_WORKERS, int(raw)))
        except ValueError:
            log.warning("PLAYGROUND_WORKERS=%r is not a whole number; using the default", raw)
    return default_workers()


def set_pool_size(n: int) -> None:
    global _pool_size
    _pool_size = max(1, int(n))


_separate_lock = threading.Lock()


def separate_accelerate_state() -> bool:
    """When runs train side by side, give each thread its own accelerate state (see the module
    docstring); call it in the training thread before its TrainingArguments. accelerate keeps the
    state in a class attribute that is a plain dict, or a per-thread one (ThreadLocalSharedDict)
    under PyTorch/XLA's threads: this swaps in the per-thread kind. An Accelerator made before
    keeps the dict it holds. True when the state is per thread."""
    if _pool_size <= 1:
        return False
    from accelerate import state
    per_thread = getattr(state, "ThreadLocalSharedDict", None)
    classes = [getattr(state, name, None) for name in ("PartialState", "AcceleratorState", "GradientState")]
    if per_thread is None or any(cls is None or "_shared_state" not in vars(cls) for cls in classes):
        log.warning("this accelerate keeps its state otherwise: runs side by side share it")
        return False
    with _separate_lock:
        for cls in classes:
            if not isinstance(vars(cls)["_shared_state"], per_thread):
                cls._shared_state = per_thread()
    return True


def run_threads(wanted: int, workers: int | None = None, cores: int | None = None) -> int:
    """Threads one run may use: what it wants, at most its share of the cores when runs train side by side."""
    workers = _pool_size if workers is None else workers
    if workers <= 1:
        return max(1, wanted)
    share = max(1, (_cores() if cores is None else cores) // workers)
    return max(1, min(wanted, share))
