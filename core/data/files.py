"""Uploaded files on disk: saving them under server-made names, and the names visitors gave them."""
from __future__ import annotations

import contextlib
import os
import uuid

from core.errors import disk_problem
from core.data.base import CONTROL_CHARS, DataError, local_files_allowed, max_upload_bytes, size_text
from core.data.sniff import check_content, check_line_lengths, decode_utf8, safe_file_name, format_of


def save_upload(data: bytes, filename: str, uploads_dir: str) -> str:
    """Check an uploaded file and store it under a server-made name; return its path.

    The user's filename only picks the format and appears in messages: it never becomes a path.
    """
    shown = safe_file_name(filename)
    fmt = format_of(shown)
    data = bytes(data)
    limit = max_upload_bytes()
    if len(data) > limit:
        raise DataError(f"{shown} is {size_text(len(data))}; the upload limit is {size_text(limit)} "
                        "(PLAYGROUND_MAX_UPLOAD_MB): upload fewer rows")
    if not data.strip():
        raise DataError(f"{shown} is empty: it has no rows")
    check_content(data, fmt, shown)
    if fmt != "parquet":  # say so now rather than when a run starts
        decode_utf8(data, shown)
        if fmt != "json":
            check_line_lengths(data, shown)
    path = os.path.join(uploads_dir, f"{uuid.uuid4().hex}.{fmt}")
    part = path + ".part"
    try:
        os.makedirs(uploads_dir, exist_ok=True)
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # The user's own file name, for messages: never the server's <uuid>.csv
        with open(path + NAME_SUFFIX, "w", encoding="utf-8") as fh:
            fh.write(shown)
        os.replace(part, path)  # readers never see a half-written file
    except OSError as exc:
        for leftover in (part, path + NAME_SUFFIX):  # a full disk must not keep half a file
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        raise DataError(f"{shown} could not be stored: {_os_reason(exc)}") from None
    return path


NAME_SUFFIX = ".name"  # beside an upload: the file name its visitor gave


def _os_reason(exc: OSError) -> str:
    problem = disk_problem(exc)
    if problem == "full":
        return "the server's disk is full; try again later or ask the server's admin"
    if problem == "read-only":
        return "the server's uploads folder is read-only; ask the server's admin (PLAYGROUND_UPLOADS_DIR)"
    return exc.strerror or type(exc).__name__


def shown_name(path: str) -> str:
    """The name a visitor knows a file by: the one they uploaded it as, else its own base name."""
    try:
        with open(str(path) + NAME_SUFFIX, encoding="utf-8") as fh:
            name = fh.read(200).strip()
    except OSError:
        name = ""
    return safe_file_name(name) if name else os.path.basename(path)


def display_name(filename: str) -> str:
    """A visitor's file name as a message may show it: its base name, no control characters, short."""
    return safe_file_name(filename)


def resolve_path(source: str, uploads_dir: str) -> str:
    if CONTROL_CHARS.search(source):
        raise DataError("data.source contains control characters (newline, NUL...); give a file path")
    if "://" in source or source.lower().startswith(("http:", "https:", "ftp:", "file:")):
        raise DataError(f"data.source={source!r} is a URL; download the file and upload it, "
                        "or use hub:<dataset id> for a Hugging Face dataset")
    path = None
    base = os.path.realpath(uploads_dir)
    candidate = os.path.realpath(os.path.join(base, source))  # an absolute source stays itself
    if candidate.startswith(base + os.sep) and os.path.exists(candidate):
        path = candidate
    if path is None:
        if not local_files_allowed():
            raise DataError(f"{os.path.basename(source) or source!r} is not an uploaded file, and reading "
                            "files from the server's disk is disabled here; upload the file instead")
        path = os.path.expanduser(source)
    name = os.path.basename(path) or source
    if not os.path.exists(path):
        raise DataError(f"data file {name} does not exist; check the path or upload the file")
    if not os.path.isfile(path):
        raise DataError(f"{name} is not a regular file; give a csv, tsv, json, jsonl or parquet file")
    return path
