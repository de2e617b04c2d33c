"""SmolLM2 ships as GGUF: converted once into a plain safetensors folder that from_pretrained loads."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from core.config import ConfigError
from core.models.registry import EMBEDDED, SMOLLM2
from core.models.locate import CACHE_FORMAT, SMOLLM2_GGUF, smollm2_cache_dir, smollm2_gguf

log = logging.getLogger("core.models")


_CACHE_MARKER = "playground-cache.json"
_CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json", _CACHE_MARKER)


def cache_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _CACHE_FILES)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Only one process converts at a time; the others wait, then find the cache built."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps the cache whole
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def drop_quantizer_markers(model: Any) -> None:
    """Make a dequantized GGUF model an ordinary one, which `save_pretrained` accepts.

    transformers 5.23 refuses to save a model whose `hf_quantizer` is not serializable (GGUF's is
    not), and reloads a config carrying `quantization_config` through a quantizer again. With
    `dequantize=True` transformers already clears these; this also covers its fallback paths.
    """
    for attr in ("hf_quantizer", "quantization_method"):
        with contextlib.suppress(AttributeError):
            delattr(model, attr)
    model.hf_quantizer = None
    model.is_quantized = False
    configs = [model.config]
    with contextlib.suppress(Exception):
        configs.append(model.config.get_text_config(decoder=True))
    for config in configs:
        if hasattr(config, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(config, "quantization_config")


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = smollm2_gguf()
    extra: dict[str, Any] = {}
    try:
        from transformers import GgufConfig

        # Ask for plain dense weights: with the `kernels` package installed transformers would
        # otherwise keep them packed, which can be neither saved nor trained.
        extra["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf, dtype=torch.float32,
                                                 trust_remote_code=False, **extra)
    drop_quantizer_markers(model)
    packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise RuntimeError(f"GGUF weights stayed packed (e.g. {packed[0]}); cannot build the cache")
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template; cannot build the cache")
    # The GGUF names the model after its training run; use the name people know it by.
    model.config._name_or_path = EMBEDDED[SMOLLM2].hf_id
    # GGUF tokenizers come without a length limit; the model's context is the real one.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    marker = {"source": str(folder / gguf), "gguf_bytes": (folder / gguf).stat().st_size,
              "format": CACHE_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with contextlib.suppress(Exception):
        import transformers

        marker["transformers"] = transformers.__version__
    (out / _CACHE_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


def _finish_tree(folder: Path) -> None:
    """Make the files readable by all and durable, before the rename publishes them.

    mkdtemp makes a private (0700) folder: a cache built as root in a Docker build must still be
    readable by the user the app runs as. The rename is atomic for a crash of this process;
    syncing first makes it so for a power loss too.
    """
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
            continue
        path.chmod(0o644)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_smollm2_cache() -> Path:
    """Build (once) and return the safetensors folder of SmolLM2; plain `from_pretrained` loads it.

    The folder is written under a temporary name and renamed into place, so a crash never leaves
    a half-written cache behind; concurrent callers wait on a lock rather than convert twice.
    """
    target = smollm2_cache_dir()
    if cache_complete(target):
        return target
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = root / f".{SMOLLM2}.lock"
        lock.touch(exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write the model cache in {root} ({e.strerror}); set PLAYGROUND_CACHE_DIR "
                          "to a writable folder") from None
    with _file_lock(lock):
        if cache_complete(target):
            return target  # built by another process while this one waited
        # Holding the lock, any temp folder left is from a crashed build.
        for stale in root.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # incomplete, e.g. touched by hand: move it out of the way
            shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        log.info("converting %s to a safetensors cache in %s (once)", SMOLLM2_GGUF, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
        try:
            _convert_smollm2(tmp)
            _finish_tree(tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built %s in %.1f s", target, time.monotonic() - started)
    return target
