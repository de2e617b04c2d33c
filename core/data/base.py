"""Data loading's shared pieces: the error type, the server's size limits, the result types."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from core.config import ConfigError
from core import settings
from core.safety import local_models_allowed


class DataError(ConfigError):
    """A user-caused data problem; the message names the file/column/value and says what to do."""


FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
MAX_LABELS = 100
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
INT_TEXT = re.compile(r"^[+-]?\d+$")


def max_upload_bytes() -> int:
    return int(settings.max_upload_mb() * 2**20)


def max_rows() -> int:
    return int(settings.max_rows())


def max_line_bytes() -> int:
    """The longest single line (or text cell) accepted; nothing trainable is that long."""
    return int(settings.max_line_mb() * 2**20)


def local_files_allowed() -> bool:
    """May a data source name a file on the server's disk (outside the uploads folder)?

    PLAYGROUND_ALLOW_LOCAL_DATA decides when set; otherwise follow PLAYGROUND_ALLOW_LOCAL_MODELS, so a
    public Space that locks models to the hub also stops visitors from reading the server's files.
    """
    allowed = settings.allow_local_data()
    return local_models_allowed() if allowed is None else allowed


def default_uploads_dir() -> str:
    return settings.uploads_dir()


def size_text(n: float) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{int(n)} bytes"


@dataclass
class LoadedData:
    task: str
    train: list[dict]
    val: list[dict]
    label_names: list[str] | None
    source_rows: int  # rows in the main source (built-in facts: its train split)
    dropped: int  # rows of the main source dropped for an empty text/label (prompt/response)
    notes: list[str] = field(default_factory=list)

    def label_counts(self, which: str = "train") -> dict[str, int]:
        """{label name: rows} for train or val; empty for SFT."""
        if not self.label_names:
            return {}
        counts = {name: 0 for name in self.label_names}
        for row in getattr(self, which):
            counts[self.label_names[row["label"]]] += 1
        return counts


@dataclass
class Table:
    """Raw rows of one source, before columns are picked."""
    name: str  # how messages name the source: a file name, builtin:x or hub:x
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    builtin_task: str | None = None  # built-ins use their own column names, whatever the spec says
    class_names: dict[str, list[str]] = field(default_factory=dict)  # column -> names (hub ClassLabel)


def columns_of(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)
