"""Uploads on a shared disk: a quota per visitor, and nothing kept that nobody needs.

core.data.save_upload checks a file and stores it; this module decides where and for how long:
  - each owner's files live in uploads/<hash of the owner id>/, and together may take at most
    PLAYGROUND_UPLOAD_QUOTA_MB (files no run uses are dropped first to make room);
  - a file that cannot be read as a table is deleted at once (a refused upload leaves nothing);
  - a file is deleted with the last run that used it (JobManager.delete -> release), and any
    upload older than PLAYGROUND_UPLOAD_MAX_AGE_HOURS that no queued or running run needs goes.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from typing import Iterable, Optional

from core import data, limits, runs
from core.config import ConfigError

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")


def owner_folder(owner: str, uploads_dir: Optional[str] = None) -> str:
    root = uploads_dir or data.default_uploads_dir()
    # A hash: the folder name must not reveal the owner's token to whoever lists the disk
    return os.path.join(root, hashlib.sha256(owner.encode("utf-8")).hexdigest()[:16])


def _files(folder: str) -> list[os.DirEntry]:
    try:
        return [e for e in os.scandir(folder) if e.is_file(follow_symlinks=False)
                and not e.name.endswith((data.NAME_SUFFIX, ".part"))]
    except OSError:
        return []


def _remove(path: str) -> None:
    for p in (path, path + data.NAME_SUFFIX):
        with contextlib.suppress(OSError):
            os.unlink(p)


def _used_sources(states: Optional[Iterable[str]] = None) -> set[str]:
    """Real paths of the data files that runs (in `states`, or any) name."""
    used = set()
    try:
        infos = runs.list_runs()
    except OSError:
        return used
    for info in infos:
        if states is not None and info.state not in states:
            continue
        d = info.config.get("data") if isinstance(info.config, dict) else None
        for key in ("source", "eval_source"):
            value = d.get(key) if isinstance(d, dict) else None
            if isinstance(value, str) and value:
                used.add(os.path.realpath(value))
    return used


def sweep(uploads_dir: Optional[str] = None, now: Optional[float] = None) -> int:
    """Delete uploads older than PLAYGROUND_UPLOAD_MAX_AGE_HOURS that no queued or running run needs,
    and .part files a crash left. Returns how many files went."""
    root = uploads_dir or data.default_uploads_dir()
    now = time.time() if now is None else now
    max_age = limits.upload_max_age_seconds()
    active = None
    removed = 0
    try:
        folders = [root] + [e.path for e in os.scandir(root) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return 0
    for folder in folders:
        try:
            entries = [e for e in os.scandir(folder) if e.is_file(follow_symlinks=False)]
        except OSError:
            continue
        for entry in entries:
            try:
                age = now - entry.stat(follow_symlinks=False).st_mtime
            except OSError:
                continue
            if entry.name.endswith(data.NAME_SUFFIX) or age <= max_age:
                continue
            if active is None:
                active = _used_sources(ACTIVE)
            if os.path.realpath(entry.path) in active:
                continue
            _remove(entry.path)
            removed += 1
    return removed


def save_for(owner: str, content: bytes, filename: str, uploads_dir: Optional[str] = None) -> str:
    """Check, store and read back one visitor's upload within their quota; return its path."""
    if not isinstance(owner, str) or not owner:
        raise ConfigError("an owner id is needed to upload a file")
    folder = owner_folder(owner, uploads_dir)
    sweep(uploads_dir)
    quota = limits.upload_quota_bytes()
    size = len(content)
    held = _files(folder)
    if sum(e.stat().st_size for e in held) + size > quota:
        used = _used_sources()
        for entry in sorted(held, key=lambda e: e.stat().st_mtime):  # oldest unused first
            if os.path.realpath(entry.path) not in used:
                _remove(entry.path)
        held = _files(folder)
    total = sum(e.stat().st_size for e in held)
    if total + size > quota:
        raise data.DataError(f"{data.display_name(filename)} would bring your uploads to "
                             f"{(total + size) / 2**20:.1f} MB; this server keeps at most {quota / 2**20:.0f} MB "
                             "per visitor (PLAYGROUND_UPLOAD_QUOTA_MB): delete runs that use your older "
                             "uploads on the Runs page, then upload again")
    path = data.save_upload(content, filename, folder)
    try:
        data.check_table(path)
    except ConfigError:
        _remove(path)  # refused: nothing of it stays on the server
        raise
    return path


def release(config: dict) -> list[str]:
    """After a run is deleted: delete the uploads it used that no other run uses. Returns them."""
    d = config.get("data") if isinstance(config, dict) else None
    if not isinstance(d, dict):
        return []
    root = os.path.realpath(data.default_uploads_dir())
    candidates = []
    for key in ("source", "eval_source"):
        value = d.get(key)
        if isinstance(value, str) and value:
            real = os.path.realpath(value)
            if real.startswith(root + os.sep) and os.path.isfile(real):
                candidates.append(real)
    if not candidates:
        return []
    used = _used_sources()
    gone = [p for p in candidates if p not in used]
    for path in gone:
        _remove(path)
    return gone
