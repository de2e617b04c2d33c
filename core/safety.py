"""Checks on user-given strings that name a model, a file or a run.

No user-given string ever becomes a path unchecked: these run before anything touches disk or
the network, and raise ConfigError with a message that can be shown as is.
"""
from __future__ import annotations

import os
import re

from core import settings
from core.schema import ConfigError

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# owner/name as the Hub spells it: letters, digits, '-', '_', '.'; at most one slash.
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")


def local_models_allowed() -> bool:
    # A public Space sets this to 0 so that visitors cannot point the loader at the server's disk.
    return settings.allow_local_models()


def check_display_text(value: str, field: str) -> None:
    if _CONTROL.search(value or ""):
        raise ConfigError(f"{field} contains control characters; use plain text")


def check_model_id(name: str) -> None:
    """Accept an embedded key, a hub id (owner/name) or, where allowed, an existing local folder."""
    if _CONTROL.search(name):
        raise ConfigError("model.name contains control characters (NUL, newline, ...); give a model key or hub id")
    if "://" in name or name.lower().startswith(("http:", "https:", "file:", "ftp:")):
        raise ConfigError(f"model.name={name!r} is a URL; give a hub id such as 'distilbert-base-uncased' "
                          "or an embedded model key")
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        raise ConfigError(f"model.name={name!r} contains '..'; paths that climb out of a folder are refused")
    if HUB_ID.match(name):
        return
    looks_like_path = os.path.isabs(name) or name.startswith(("./", "~")) or os.sep in name
    if looks_like_path:
        if not local_models_allowed():
            raise ConfigError(f"model.name={name!r}: local model folders are disabled on this server")
        return
    raise ConfigError(f"model.name={name!r} is not an embedded model key, a hub id (owner/name) or a folder")


_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_path_component(value: str, field: str) -> str:
    """A single file or folder name: no separators, no '..', no control characters."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or value in (".", ".."):
        raise ConfigError(f"{field}={value!r} is not a valid name (letters, digits, '.', '_', '-')")
    return value
