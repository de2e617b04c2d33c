"""Which device and dtype a run uses, and what this machine has (for the sidebar and the estimate)."""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from core.config import ConfigError
from core.device import native_bf16

if TYPE_CHECKING:
    import torch


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(pref: str = "auto") -> str:
    """"cuda" if there is a GPU, else "mps" (Apple), else "cpu"; an explicit choice is checked."""
    import torch

    pref = (pref or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if pref == "cpu":
        return "cpu"
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref} requested but no GPU is available (torch sees no CUDA "
                              "device); choose device auto or cpu")
        if ":" in pref:
            index = pref.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ConfigError(f"device {pref} requested but this machine has "
                                  f"{torch.cuda.device_count()} GPU(s) (cuda:0 ...)")
        return pref
    if pref == "mps":
        if not _mps_available():
            raise ConfigError("device mps requested but MPS (Apple GPU) is not available")
        return "mps"
    raise ConfigError(f"device={pref!r} is not known; choose one of auto, cpu, cuda, mps")


DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def pick_dtype(device: str, pref: "str | torch.dtype" = "auto") -> "torch.dtype":
    """Weights dtype: bf16 (or fp16 without bf16) on CUDA, fp32 on CPU/MPS, unless told otherwise."""
    import torch

    on_cuda = device.startswith("cuda")
    if isinstance(pref, torch.dtype):
        dtype = pref
    else:
        text = (pref or "auto").strip().lower().removeprefix("torch.")
        if text == "auto":
            if on_cuda:
                return torch.bfloat16 if native_bf16() else torch.float16  # T4: fp16 (see native_bf16)
            return torch.float32
        if text not in DTYPE_NAMES:
            raise ConfigError(f"dtype={pref!r} is not known; choose one of auto, float32, bfloat16, float16")
        dtype = getattr(torch, DTYPE_NAMES[text])
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"dtype {dtype} is not a floating-point weights dtype; choose float32, bfloat16 "
                          "or float16")
    if dtype == torch.float16 and device == "cpu":
        # fp16 kernels on CPU are slow or missing, and fp16 training without a GPU scaler diverges.
        raise ConfigError("dtype float16 is not supported on CPU; use float32 (or bfloat16)")
    return dtype


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX).

    There oneDNN's bf16 matmuls make a training step ~1.3x and an evaluation ~2x faster than fp32
    (bench/engine_vs_tutorial.py); elsewhere bf16 is emulated and slower than fp32.
    """
    import torch
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: assume no
        return False


def mixed_precision(device: str, dtype: "str | torch.dtype" = "auto",
                    quantized_base: bool = False) -> dict[str, bool]:
    """The Trainer's autocast flags for a device and a weights-dtype choice.

    CUDA, dtype auto: bf16 where the GPU supports it (Ampere and newer), else fp16 with a dynamic
    loss scaler (Trainer fp16=True; see upcast_trainable_params). dtype bfloat16/float16 asks
    for that one; float32 means no autocast at all. CPU, dtype auto: fp32 weights with bf16
    autocast where the CPU has native bf16, except under a 4-bit base (bitsandbytes' CPU kernels
    are fp32). MPS: none.
    """
    import torch

    explicit = isinstance(dtype, torch.dtype) or (dtype or "auto").strip().lower() != "auto"
    if not str(device).startswith("cuda"):
        cpu_bf16 = device == "cpu" and not explicit and not quantized_base and cpu_has_native_bf16()
        return {"bf16": cpu_bf16, "fp16": False}
    weights = pick_dtype(device, dtype)
    if weights == torch.float32 and explicit:
        return {"bf16": False, "fp16": False}
    if weights == torch.bfloat16:
        if not native_bf16():
            raise ConfigError(f"this GPU ({torch.cuda.get_device_name(0)}) does not support bfloat16; "
                              "choose dtype auto or float16")
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def upcast_trainable_params(model: Any) -> int:
    """Trainable fp16 parameters -> fp32; returns how many tensors changed.

    fp16 training keeps fp32 master weights: the loss scaler refuses to unscale fp16 gradients.
    peft already keeps adapters in fp32; this covers what else trains on an fp16 base (a new
    classification head, modules_to_save, every weight under full fine-tuning). Under autocast
    the matmuls still run in fp16.
    """
    import torch

    changed = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.float16:
            param.data = param.data.float()
            changed += 1
    return changed


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"


def _ram_bytes() -> tuple[int | None, int | None]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pass
    try:
        info: dict[str, int] = {}
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        return info.get("MemTotal"), info.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        return None, None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def device_summary() -> dict[str, Any]:
    """What the sidebar shows: device, its name, memory (GiB) and CPU cores."""
    import torch

    device = pick_device("auto")
    gib = 1024 ** 3
    peak = None
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        bf16 = native_bf16()
        peak = round(torch.cuda.max_memory_allocated() / gib, 2)  # this process, since start or the last run
    else:
        total, free = _ram_bytes()
        name = "Apple GPU (MPS)" if device == "mps" else _cpu_name()
        bf16 = False
    return {
        "device": device,
        "name": name,
        "total_memory_gb": round(total / gib, 1) if total else None,
        "free_memory_gb": round(free / gib, 1) if free else None,
        "cores": _cores(),
        "gpu_count": torch.cuda.device_count() if device == "cuda" else 0,
        "bf16": bf16,
        "dtype": str(pick_dtype(device)).removeprefix("torch."),
        "peak_cuda_memory_gb": peak,
        "torch": torch.__version__,
    }
