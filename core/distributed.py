"""Rank helpers: the engine under `torchrun` / `accelerate launch` (DDP; gloo on CPU, nccl on GPU).

Every process of a multi-process run trains and evaluates (the Trainer shards batches and
all-reduces gradients and metrics); only the main process (global rank 0) touches the run
folder: it creates it, writes config.json, metrics.jsonl, status.json and summary.json and saves
the weights. Nothing here waits on a barrier that only some ranks reach: writes are guarded with
`is_main_process()`, never followed by a collective.

Without a launcher (the app, `python -m core.train`, the tests) every function here is a cheap
no-op: world size 1, rank 0, main process. torch is imported only when a process group is needed.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            try:
                return int(value)
            except ValueError:
                continue
    return default


def _dist():
    """torch.distributed if a process group is up, else None (torch not imported for nothing)."""
    import sys
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    dist = getattr(torch, "distributed", None)
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def world_size() -> int:
    """Number of processes of this run: the process group's, else the launcher's WORLD_SIZE, else 1."""
    dist = _dist()
    if dist is not None:
        return dist.get_world_size()
    return max(1, _env_int("WORLD_SIZE", default=1))


def rank() -> int:
    """Global rank: the process group's, else RANK (else LOCAL_RANK) set by the launcher, else 0."""
    dist = _dist()
    if dist is not None:
        return dist.get_rank()
    return _env_int("RANK", "LOCAL_RANK", default=0)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", default=0)


def local_world_size() -> int:
    """Processes on this machine (they share its cores)."""
    return max(1, _env_int("LOCAL_WORLD_SIZE", default=world_size()))


def is_distributed() -> bool:
    return world_size() > 1


def is_main_process() -> bool:
    """True in a single-process run and on global rank 0 of a multi-process one."""
    return rank() == 0


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def shards_parameters() -> bool:
    """True under FSDP (any sharding but NO_SHARD) or DeepSpeed ZeRO-3, as `accelerate launch` sets.

    There no rank holds whole weights after training: saving must gather them with every rank
    taking part (Trainer.save_model), and a forward pass on rank 0 alone would wait forever for
    the others' all-gathers. DDP and ZeRO-1/2 keep whole parameters on every rank.
    """
    if _env_true("ACCELERATE_USE_FSDP"):
        strategy = os.environ.get("FSDP_SHARDING_STRATEGY", "FULL_SHARD").strip().upper()
        return strategy not in ("NO_SHARD", "3")
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        return os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "").strip() == "3"
    return False


def main_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Run `fn` on the main process only; elsewhere return None without calling it.

    Only for side effects (writing files, printing): the guarded function must not run a
    collective operation, or the other ranks would wait for it forever.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> T | None:
        if not is_main_process():
            return None
        return fn(*args, **kwargs)

    return wrapper


def init_process_group(device: str = "auto") -> bool:
    """Start the process group now (as the Trainer would later) when launched with >1 process.

    Goes through accelerate's PartialState, the same shared state TrainingArguments uses, so the
    Trainer finds the group already up and reuses it: gloo on CPU, nccl (and the process's own
    GPU, LOCAL_RANK) on cuda ("auto": cuda when there is a GPU). Returns True when a group is up.
    """
    if world_size() <= 1:
        return False
    if _dist() is not None:
        return True
    import torch
    from accelerate import PartialState

    device = str(device or "auto")
    on_gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    PartialState(cpu=not on_gpu)
    return _dist() is not None


def broadcast_object(obj: T, device: str = "auto") -> T:
    """The main process's `obj` on every rank (e.g. the run folder it just created)."""
    if not init_process_group(device):
        return obj
    dist = _dist()
    box = [obj if is_main_process() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank; a no-op in a single process. Call it on all ranks or on none."""
    dist = _dist()
    if dist is not None:
        dist.barrier()


def shutdown() -> None:
    """Tear the process group down at the end of a launched run (all ranks call it)."""
    dist = _dist()
    if dist is not None:
        dist.destroy_process_group()
