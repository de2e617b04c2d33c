"""A bounded LRU of loaded finished-run models (core.infer.RunModel), shared by every session.

Thirty students each opening a different run on the Compare page must not load thirty models: at
most PLAYGROUND_MODEL_CACHE_SIZE (default 2) stay loaded, the least recently used goes first, and
an evicted model is really released (its last reference dropped, gc run, the CUDA cache emptied)
rather than left for a later garbage collection. A session still generating with an evicted
model keeps it alive until it is done; the memory goes when that call returns.

Two sessions asking for the same run at once load it once: the second waits for the first.
Models are shared: treat them as read-only (RunModel's own lock orders calls into one model).
"""
from __future__ import annotations

import collections
import gc
import logging
import os
import sys
import threading
import types
from typing import Any, Callable, Optional

from core import settings

log = logging.getLogger(__name__)

DEFAULT_SIZE = 2


def cache_size() -> int:
    """PLAYGROUND_MODEL_CACHE_SIZE, read at call time; anything unusable means the default."""
    try:
        value = int(settings.raw("PLAYGROUND_MODEL_CACHE_SIZE", "").strip())
    except ValueError:
        return DEFAULT_SIZE
    return value if value >= 1 else DEFAULT_SIZE


def _load_run_model(run_dir: str) -> Any:
    from core.infer import RunModel  # lazy: torch
    return RunModel(run_dir)


def release_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")  # never import torch just to free memory
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # a broken driver must not turn an eviction into an error page
        log.debug("cuda empty_cache failed", exc_info=True)


class ModelCache:
    def __init__(self, size: Optional[int] = None, loader: Optional[Callable[[str], Any]] = None):
        self._fixed_size = size
        self._loader = loader or _load_run_model
        self._lock = threading.Lock()
        self._models: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self._loading: dict[str, threading.Lock] = {}
        self.loads = 0
        self.hits = 0
        self.evictions = 0

    @property
    def size(self) -> int:
        return self._fixed_size if self._fixed_size else cache_size()

    @staticmethod
    def _key(run_dir: str) -> str:
        return os.path.realpath(run_dir)

    def get(self, run_dir: str) -> Any:
        """The loaded model of a run, loading it (and evicting the least recently used) if needed."""
        key = self._key(run_dir)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                self.hits += 1
                return self._models[key]
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:  # one load per run; a second session asking for it waits here
            with self._lock:
                if key in self._models:
                    self._models.move_to_end(key)
                    self.hits += 1
                    return self._models[key]
                # Make room before loading, so that at most `size` models are ever held by the cache.
                evicted = self._pop_lru(self.size - 1)
            self._release(evicted)
            try:
                model = self._loader(key)  # outside the cache lock: loading takes seconds
            finally:
                with self._lock:
                    self._loading.pop(key, None)
            with self._lock:
                self._models[key] = model
                self.loads += 1
                evicted = self._pop_lru(self.size)  # another run may have been loaded meanwhile
            self._release(evicted)
            return model

    def _pop_lru(self, keep: int) -> list:
        """Take the least recently used models out until `keep` remain. Caller holds the lock."""
        out = []
        while len(self._models) > max(0, keep):
            key, model = self._models.popitem(last=False)
            log.info("model cache: evicting %s", key)
            out.append(model)
            self.evictions += 1
        return out

    @staticmethod
    def _release(models: list) -> None:
        if not models:
            return
        models.clear()  # the cache's last references; gc then frees their tensors
        release_memory()

    def discard(self, run_dir: str) -> bool:
        """Forget one run's model (e.g. the run was deleted); True if it was loaded."""
        with self._lock:
            found = [m for m in (self._models.pop(self._key(run_dir), None),) if m is not None]
        if not found:
            return False
        self._release(found)
        return True

    def clear(self) -> None:
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        self._release(models)

    def loaded(self) -> list[str]:
        """Run folders whose model is loaded, least recently used first."""
        with self._lock:
            return list(self._models)

    def stats(self) -> dict:
        with self._lock:
            return {"size": self.size, "loaded": len(self._models), "loads": self.loads, "hits": self.hits,
                    "evictions": self.evictions}


# Kept outside this module's globals, like the job manager: if Streamlit re-imports this module (a
# file changed), a second cache would hold a second copy of every model.
_REGISTRY_NAME = "_peft_playground_model_cache"
_registry = sys.modules.setdefault(_REGISTRY_NAME, types.ModuleType(_REGISTRY_NAME))
if not hasattr(_registry, "cache"):
    _registry.cache = ModelCache()


def shared() -> ModelCache:
    return _registry.cache


def get(run_dir: str) -> Any:
    return _registry.cache.get(run_dir)


def discard(run_dir: str) -> bool:
    return _registry.cache.discard(run_dir)


def clear() -> None:
    _registry.cache.clear()


def stats() -> dict:
    return _registry.cache.stats()
