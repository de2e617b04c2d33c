"""CUDA policy in one place: which 16-bit format a card computes in, how much memory it has free,
and a CUDA out-of-memory error turned into what to lower.

torch is imported inside the functions, so the UI can import this module at start-up for free.
"""
from __future__ import annotations

import functools
import gc
import logging
import os
import re
import traceback
from typing import Any, Callable, TypeVar

from core.schema import ConfigError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

# The cards a GPU Space offers, with their compute capability and memory: what the tests mock and
# what the README and BENCHMARKS.md talk about. bf16 needs tensor cores of Ampere (8.0) or newer.
GPU_CARDS: dict[str, dict[str, Any]] = {
    "Tesla T4": {"capability": (7, 5), "memory_gb": 16},
    "NVIDIA A10G": {"capability": (8, 6), "memory_gb": 24},
    "NVIDIA L4": {"capability": (8, 9), "memory_gb": 24},
    "NVIDIA A100-SXM4-40GB": {"capability": (8, 0), "memory_gb": 40},
    "NVIDIA H100 80GB HBM3": {"capability": (9, 0), "memory_gb": 80},
}


class GpuOutOfMemory(ConfigError):
    """A run asked for more GPU memory than the card had; the message says what to lower."""


def native_bf16() -> bool:
    """True when the GPU computes bf16 in hardware (Ampere, compute capability 8.0, and newer).

    torch.cuda.is_bf16_supported() alone also answers True on a T4 (7.5), where bf16 is only
    emulated: matmuls fall back to slow kernels and Trainer(bf16=True) runs several times slower
    than fp16 with a loss scaler. Asking without emulation gives the card's real answer.
    """
    import torch

    if not torch.cuda.is_available():
        return False
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def cuda_half_dtype() -> str:
    """"bfloat16" on cards with native bf16, else "float16" (which trains with a loss scaler)."""
    return "bfloat16" if native_bf16() else "float16"


# What a GPU driver puts on a machine: NVIDIA's (also inside a container given a GPU, as on a GPU
# Space), WSL's paravirtual GPU, AMD's ROCm. With none of them torch cannot see a GPU either.
GPU_DRIVER_PATHS = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/dxg", "/dev/kfd")


def gpu_driver_present() -> bool:
    """Whether this machine shows any GPU driver. Asked before importing torch: on a CPU-only
    server (the free Space tier) a lesson link then picks its CPU preset without waiting 2-3 s for
    torch to load, and the Train form is usable sooner on a cold start."""
    return any(os.path.exists(p) for p in GPU_DRIVER_PATHS)


def free_gpu_bytes() -> int | None:
    """Free memory on the current GPU as the driver reports it (other processes included); None
    without a GPU or when the driver cannot be asked."""
    if not gpu_driver_present():
        return None
    import torch

    try:
        if not torch.cuda.is_available():
            return None
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    except Exception:  # a broken driver: no GPU offer rather than a crashed page
        log.debug("cuda mem_get_info failed", exc_info=True)
        return None


def _cuda_available(torch) -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken driver: not a GPU run
        return False


def gpu_name() -> str:
    import torch

    try:
        return str(torch.cuda.get_device_name(0))
    except Exception:  # noqa: BLE001 - only for a message
        return "the GPU"


def release_cuda_memory() -> None:
    """Hand cached blocks back to the driver, so the next run (or another process) can have them."""
    gc.collect()
    import torch

    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # a broken driver must not turn a clear error into another one
        log.debug("cuda empty_cache failed", exc_info=True)


def oom_advice(cfg: Any) -> str:
    """What to lower, in the order that saves the most for the least change, with the run's values."""
    steps = []
    try:
        t, d, m = cfg.train, cfg.data, cfg.method
        if t.batch_size > 1:
            steps.append(f"halve train.batch_size (now {t.batch_size}; raise train.grad_accum to keep the "
                         "same effective batch)")
        steps.append(f"lower data.max_length (now {d.max_length})")
        method = m.method  # the method's own facts, through the config (no import of core.methods here)
        if not getattr(t, "gradient_checkpointing", False) and method.backprops_through_base:
            steps.append("turn on train.gradient_checkpointing (recomputes activations: less memory, ~30% slower)")
        if method.lighter:
            steps.append(f"choose {method.lighter}")
        steps.append("or pick a smaller model")
    except AttributeError:  # called without a RunConfig: the generic advice
        steps = ["lower train.batch_size or data.max_length", "turn on train.gradient_checkpointing",
                 "choose qlora, or a smaller model"]
    return "; ".join(steps)


def explain_cuda_oom(run: F) -> F:
    """Wrap run(cfg, ...): a CUDA out-of-memory error becomes GpuOutOfMemory naming what to lower.

    The GPU's cached blocks are released before the error leaves, so the next queued run starts
    on an empty card; the failed run's frames (activations, gradients) are cleared first, since
    a traceback that keeps them alive would keep their GPU memory too.
    """
    @functools.wraps(run)
    def wrapped(cfg, *args, **kwargs):
        import torch

        message = ""
        try:
            return run(cfg, *args, **kwargs)
        except torch.OutOfMemoryError as exc:  # torch.cuda.OutOfMemoryError is this class
            if not _cuda_available(torch):
                raise  # not a GPU's memory: the job manager explains a CPU out-of-memory itself
            tried = re.search(r"Tried to allocate ([\d.]+ [KMGT]?i?B)", str(exc))
            message = (f"{gpu_name()} ran out of memory"
                       + (f" (it needed {tried.group(1)} more)" if tried else "") + f": {oom_advice(cfg)}")
            traceback.clear_frames(exc.__traceback__)
        # Raised outside the except block: the new error does not chain (and keep) the old frames.
        release_cuda_memory()
        raise GpuOutOfMemory(message)
    return wrapped  # type: ignore[return-value]
