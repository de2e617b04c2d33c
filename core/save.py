"""Write a run's trained weights in a form that loads again.

adapters -> runs/<id>/adapter/ in peft's own format (PeftModel.from_pretrained);
full     -> runs/<id>/model/ (save_pretrained for transformers heads, safetensors for ours);
head     -> runs/<id>/weights/head.safetensors (the frozen base is the embedded/hub model itself).
weights.json says which, so core.infer knows how to rebuild.
"""
from __future__ import annotations

import os
import re
import uuid

from core import runs
from core.config import ConfigError
from core.errors import disk_problem
from core.distributed import is_main_process, shards_parameters


def weights_format(method) -> str:
    return method.weights_format  # each method says how its weights are saved


_DISK_FULL = re.compile(r"no space left|StorageFull|os error 28|disk quota", re.IGNORECASE)


class SaveFailed(ConfigError):
    """The weights could not be written; the message says why (disk full, read-only folder)."""


def _cause(exc: OSError) -> str:
    problem = disk_problem(exc)
    if problem == "full":
        return "disk full"
    if problem == "read-only":
        return "the runs folder is read-only"
    return exc.strerror or type(exc).__name__


def save_weights(p, run_dir: str) -> str:
    """_save_weights into a temporary folder, renamed into place only when complete: a failed save
    (a full disk) leaves no half adapter/ that would count as saved weights."""
    import shutil
    if not is_main_process():
        return _save_weights(p, run_dir)  # writes nothing
    tmp = os.path.join(run_dir, f".saving-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.makedirs(tmp)
        fmt = _save_weights(p, tmp)
        # weights.json last: it is what says "these weights load"
        for name in sorted(os.listdir(tmp), key=lambda n: n == "weights.json"):
            target = os.path.join(run_dir, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)  # an older save of the same run (a resumed one)
            os.replace(os.path.join(tmp, name), target)
    except Exception as exc:
        cause = _cause(exc) if isinstance(exc, OSError) else (
            "disk full" if _DISK_FULL.search(str(exc)) else None)  # safetensors' Rust errors are no OSError
        if cause is None:
            raise
        raise SaveFailed(f"could not save weights: {cause}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return fmt


def _save_weights(p, run_dir: str) -> str:
    from safetensors.torch import save_model

    from core.heads import PooledClassifier
    from core.methods import get_method
    method = get_method(p.cfg.method.name)
    fmt = weights_format(method)
    if not is_main_process():
        return fmt  # torchrun/accelerate: every rank holds the same weights; rank 0 writes them
    model = p.model
    if fmt == "peft":
        if not shards_parameters():  # FSDP/ZeRO-3: core.loop saved it with every rank's help
            model.save_pretrained(os.path.join(run_dir, "adapter"))
    elif fmt == "full":
        target = os.path.join(run_dir, "model")
        if isinstance(model, PooledClassifier):
            os.makedirs(target, exist_ok=True)
            save_model(model, os.path.join(target, "model.safetensors"))
        else:
            model.save_pretrained(target)
            p.tokenizer.save_pretrained(target)
    elif fmt == "head":
        head = model.classifier if hasattr(model, "classifier") else model.score
        os.makedirs(os.path.join(run_dir, "weights"), exist_ok=True)
        save_model(head, os.path.join(run_dir, "weights", "head.safetensors"))
    write_weights_meta(run_dir, fmt, p.cfg, p.kind, p.label_names)
    return fmt


def write_weights_meta(run_dir: str, fmt: str, cfg, kind: str, label_names: list | None) -> None:
    """weights.json: how core.infer.RunModel opens the run's weights ("peft", "full", "head", "none")."""
    runs.atomic_write_json(os.path.join(run_dir, "weights.json"), {
        "format": fmt, "method": cfg.method.name, "model": cfg.model.name, "kind": kind,
        "task": cfg.data.task, "label_names": label_names})
