"""Datasets -> plain rows: built-in demos, uploaded or local files, and Hugging Face Hub datasets.

Classification rows come out as {"text": str, "label": int} (an index into `label_names`); SFT rows
as {"prompt": str, "response": str} plus any other plain fields of the source (e.g. fact_id,
keywords). Tokenisation happens elsewhere (core.tokenize).

Every user-caused problem raises DataError, whose message names the file, column or value and says
what to do, so the UI can show it as is. Files are parsed with csv/json/pyarrow only: never pickle,
eval or anything that runs code from the data.
"""
from __future__ import annotations

import contextlib
import csv
import io
import itertools
import json
import math
import os
import random
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import ConfigError, DataSpec
from core.errors import disk_problem
from core import hub, settings
from core.safety import HUB_ID, local_models_allowed


class DataError(ConfigError):
    """A user-caused data problem; the message names the file/column/value and says what to do."""


# Tests point this at a folder of fixtures; the app reads the files written for it.
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "assets" / "data"

# name -> (file, task, description)
_BUILTINS: dict[str, tuple[str, str, str]] = {
    "sentiment": ("sentiment.jsonl", "classification",
                  "Short reviews labelled positive or negative: text classification."),
    "facts": ("facts.jsonl", "sft",
              "Question -> answer pairs about facts the base model cannot know: supervised fine-tuning "
              "(SFT); held-out rephrasings check whether the facts were learned."),
    "facts-mini": ("facts.jsonl", "sft",
                   "The first 12 invented facts only, plus 24 ordinary questions (rehearsal): small "
                   "enough to learn in about two minutes on a laptop CPU (the 'Fix a hallucination' lesson)."),
}
_GENERAL_QUESTIONS = "general_questions.jsonl"
# Ordinary questions with their ordinary answers, mixed into the fact sets' training rows. Without
# them LoRA on 60 invented facts also rewrites the world ("the capital of France is Lunae
# obsequimur"); with them the general questions of the probe (none of which is here) stay right.
_REHEARSAL = "rehearsal.jsonl"
REHEARSAL_ID = "rehearsal"  # the fact_id of those rows
_REHEARSED = ("facts", "facts-mini")
# Built-ins that are a slice of another file: name -> how many fact_ids (in file order) they keep.
_FACT_SUBSETS = {"facts-mini": 12}

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
_FORMAT_NAMES = {"csv": "CSV", "tsv": "TSV", "json": "JSON", "jsonl": "JSON Lines", "parquet": "Parquet"}
MAX_LABELS = 100
# Common names for the text column of public datasets (SST-2 calls it "sentence"): used only when
# the default column "text" is absent, and always noted, so that hub:stanfordnlp/sst2 just works.
_TEXT_ALIASES = ("sentence", "review", "content", "document")
_PREVIEW_CHARS = 500  # the preview table is for a glance; 10 kB reviews would swamp it
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_INT_TEXT = re.compile(r"^[+-]?\d+$")
_INTEGRAL_FLOAT_TEXT = re.compile(r"^[+-]?\d+\.0*$")
_HUB_CONFIG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HUB_SPLIT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_UTF8_BOM = b"\xef\xbb\xbf"


# ---------------------------------------------------------------------------------------- limits

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


def _size(n: float) -> str:
    if n >= 2**20:
        return f"{n / 2**20:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{int(n)} bytes"


# ---------------------------------------------------------------------------------------- results

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
class _Table:
    """Raw rows of one source, before columns are picked."""
    name: str  # how messages name the source: a file name, builtin:x or hub:x
    columns: list[str]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)
    builtin_task: str | None = None  # built-ins use their own column names, whatever the spec says
    class_names: dict[str, list[str]] = field(default_factory=dict)  # column -> names (hub ClassLabel)


# ---------------------------------------------------------------------------------------- public API

def list_builtin() -> dict[str, str]:
    return {name: desc for name, (_, _, desc) in _BUILTINS.items()}


def builtin_task(name: str) -> str:
    """The task a built-in dataset is made for ("classification" or "sft")."""
    return _builtin_entry(name)[1]


def builtin_heldout(name: str) -> list[dict]:
    """Rows of a built-in dataset marked split == "heldout" (facts: rephrased questions), as SFT rows."""
    _builtin_entry(name)
    rows = [r for r in _builtin_raw(name) if r.get("split") == "heldout"]
    table = _Table(f"builtin:{name}", _columns_of(rows), rows, builtin_task="sft")
    out, _, _ = _sft_rows(table, "prompt", "response")
    return out


def without_rehearsal(rows: list[dict]) -> list[dict]:
    """The rows a demo should show: rehearsal rows are ordinary questions no base model gets wrong."""
    return [r for r in rows if r.get("fact_id") != REHEARSAL_ID]


def builtin_general_questions() -> list[dict]:
    """General-knowledge prompts with keywords, to check that tuning did not break the model."""
    rows = read_jsonl(str(BUILTIN_DIR / _GENERAL_QUESTIONS))
    out = []
    for row in rows:
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            continue
        keywords = row.get("keywords") or []
        if isinstance(keywords, str):
            keywords = [keywords]
        out.append({**row, "prompt": prompt, "keywords": [str(k) for k in keywords if k is not None]})
    return out


def read_jsonl(path: str) -> list[dict]:
    """Objects of a JSON Lines file, split on "\\n" only (str.splitlines also breaks on \\x1c, \\u2028...).

    Applies no size limits: meant for the app's own files; user files go through load_rows.
    """
    name = os.path.basename(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name} does not exist") from None
    except OSError as e:
        raise DataError(f"{name} could not be read: {e.strerror or e}") from None
    return _parse_jsonl(_decode_utf8(data, name), name)


def save_upload(data: bytes, filename: str, uploads_dir: str) -> str:
    """Check an uploaded file and store it under a server-made name; return its path.

    The user's filename only picks the format and appears in messages: it never becomes a path.
    """
    shown = _display_name(filename)
    fmt = _format_of(shown)
    data = bytes(data)
    limit = max_upload_bytes()
    if len(data) > limit:
        raise DataError(f"{shown} is {_size(len(data))}; the upload limit is {_size(limit)} "
                        "(PLAYGROUND_MAX_UPLOAD_MB): upload fewer rows")
    if not data.strip():
        raise DataError(f"{shown} is empty: it has no rows")
    _check_content(data, fmt, shown)
    if fmt != "parquet":  # say so now rather than when a run starts
        _decode_utf8(data, shown)
        if fmt != "json":
            _check_line_lengths(data, shown)
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
    return _display_name(name) if name else os.path.basename(path)


def display_name(filename: str) -> str:
    """A visitor's file name as a message may show it: its base name, no control characters, short."""
    return _display_name(filename)


def check_table(path: str) -> int:
    """Rows of a stored file, read as a run would read it; DataError (naming the user's file) if unusable."""
    return len(_read_file(path).rows)


def load_rows(spec: DataSpec, uploads_dir: str | None = None, seed: int = 42) -> LoadedData:
    """Read, validate, split and subsample the rows a run trains and evaluates on."""
    uploads_dir = uploads_dir or default_uploads_dir()
    table = _read_source(spec, spec.source, uploads_dir, seed)
    rows, label_names, dropped = _task_rows(table, spec)
    notes = list(table.notes)
    if dropped:
        notes.append(f"dropped {dropped} of {len(table.rows)} rows of {table.name} with an empty "
                     f"{_roles_text(spec.task)}")
    classification = spec.task == "classification"
    key = "text" if classification else "prompt"  # the same question in train and val is a leak

    if spec.eval_source.strip():
        eval_table = _read_source(spec, spec.eval_source, uploads_dir, seed)
        val, _, eval_dropped = _task_rows(eval_table, spec, label_names)
        notes += eval_table.notes
        if eval_dropped:
            notes.append(f"dropped {eval_dropped} rows of {eval_table.name} with an empty {_roles_text(spec.task)}")
        train = rows
        val, removed = _dedupe(train, val, key)
        if removed:
            notes.append(f"removed {removed} rows of {eval_table.name} whose {key} also appears in training")
        if not val:
            raise DataError(f"every row of {eval_table.name} also appears in {table.name}; "
                            "choose an evaluation file with different rows")
    else:
        train, val = _split(rows, spec.val_share, seed, "label" if classification else None)
        if val:
            how = ", stratified by label" if classification else ""
            notes.append(f"held out {len(val)} of {len(rows)} rows ({spec.val_share:.0%}) for validation{how}")
        elif spec.val_share > 0:
            notes.append("too few rows to hold any out for validation")
        # Deduplicate against the full training pool, before subsampling: the validation set must
        # not change with n_samples, or runs with different N would be scored on different rows.
        val, removed = _dedupe(train, val, key)
        if removed:
            notes.append(f"removed {removed} validation rows whose {key} also appears in training")

    if spec.n_samples and spec.n_samples < len(train):
        before = len(train)
        train = _subsample(train, spec.n_samples, seed, "label" if classification else None)
        how = " (stratified by label)" if classification else ""
        notes.append(f"using {len(train)} of {before} training rows{how}")
    elif spec.n_samples > len(train):
        notes.append(f"n_samples={spec.n_samples} but only {len(train)} training rows: using all of them")

    # Shuffled once, reproducibly: files are often sorted by label, and a caller taking val[:k]
    # (eval_max_rows) must not get a single class.
    train = _shuffled(train, f"{seed}:train")
    val = _shuffled(val, f"{seed}:val")
    if classification and label_names:
        present = {r["label"] for r in train}
        if len(present) < len(label_names):
            missing = [label_names[i] for i in range(len(label_names)) if i not in present]
            notes.append(f"the training rows hold no example of: {', '.join(missing)}")
    return LoadedData(task=spec.task, train=train, val=val, label_names=label_names,
                      source_rows=len(table.rows), dropped=dropped, notes=notes)


def preview(spec: DataSpec, n: int = 8, uploads_dir: str | None = None) -> dict:
    """What the UI's preview table shows: raw rows, all columns, and the label balance.

    File-level problems (not UTF-8, empty, too big...) raise DataError. Column-level problems (a
    missing column, a single label) are returned in "error" instead, so that the user still sees
    the columns to choose from.
    """
    uploads_dir = uploads_dir or default_uploads_dir()
    table = _read_source(spec, spec.source, uploads_dir, 42)
    result: dict[str, Any] = {
        "rows": [_display_row(r) for r in table.rows[:max(0, n)]],
        "total_rows": len(table.rows),
        "columns": list(table.columns),
        "label_balance": None,
        "notes": [],
        "error": None,
    }
    try:
        rows, label_names, dropped = _task_rows(table, spec)
    except DataError as e:
        result["error"] = str(e)
        result["notes"] = list(table.notes)
        return result
    result["notes"] = list(table.notes)
    if label_names:
        counts = {name: 0 for name in label_names}
        for row in rows:
            counts[label_names[row["label"]]] += 1
        result["label_balance"] = counts
    if dropped:
        result["notes"].append(f"{dropped} rows have an empty {_roles_text(spec.task)} and will be dropped")
    return result


# ---------------------------------------------------------------------------------------- sources

def _read_source(spec: DataSpec, source: str, uploads_dir: str, seed: int) -> _Table:
    source = (source or "").strip()
    if not source:
        raise DataError("data.source is empty; choose a built-in dataset, a file or a hub dataset id")
    if source.startswith("builtin:"):
        return _read_builtin(source[len("builtin:"):].strip())
    if source.startswith("hub:"):
        return _read_hub(source[len("hub:"):].strip(), spec.hub_split, seed)
    return _read_file(_resolve_path(source, uploads_dir))


def _builtin_entry(name: str) -> tuple[str, str, str]:
    if name not in _BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r}; built-in datasets: {', '.join(_BUILTINS)}")
    return _BUILTINS[name]


def _builtin_raw(name: str) -> list[dict]:
    file = _builtin_entry(name)[0]
    path = BUILTIN_DIR / file
    if not path.is_file():
        raise DataError(f"the built-in dataset file {file} is missing from assets/data; reinstall the app")
    rows = read_jsonl(str(path))
    if name in _FACT_SUBSETS:
        keep: list = []
        for r in rows:
            if r.get("fact_id") not in keep:
                keep.append(r.get("fact_id"))
        keep = keep[:_FACT_SUBSETS[name]]
        rows = [r for r in rows if r.get("fact_id") in keep]
    return rows


def _read_builtin(name: str) -> _Table:
    _, task, _ = _builtin_entry(name)
    # Rows without a split are training rows; "heldout" rows are for builtin_heldout only.
    rows = [r for r in _builtin_raw(name) if r.get("split", "train") == "train"]
    notes = []
    rehearsal = BUILTIN_DIR / _REHEARSAL
    if name in _REHEARSED and rehearsal.is_file():
        extra = [{**r, "keywords": r.get("keywords") or []} for r in read_jsonl(str(rehearsal))]
        rows = rows + extra
        notes.append(f"{len(extra)} general questions with their usual answers are mixed in (rehearsal), "
                     "so that learning the new facts does not overwrite what the model already knew")
    return _Table(f"builtin:{name}", _columns_of(rows), rows, notes=notes, builtin_task=task)


def _resolve_path(source: str, uploads_dir: str) -> str:
    if _CONTROL.search(source):
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


def _read_file(path: str) -> _Table:
    fmt = _format_of(os.path.basename(path))
    name = shown_name(path)
    limit = max_upload_bytes()
    size = os.path.getsize(path)
    if size > limit:
        raise DataError(f"{name} is {_size(size)}; the limit is {_size(limit)} (PLAYGROUND_MAX_UPLOAD_MB): "
                        "use a file with fewer rows")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)  # the file may have grown since the size check
    if len(data) > limit:
        raise DataError(f"{name} is larger than the limit of {_size(limit)} (PLAYGROUND_MAX_UPLOAD_MB)")
    return _parse_bytes(data, fmt, name)


def _parse_bytes(data: bytes, fmt: str, name: str) -> _Table:
    if not data.strip():
        raise DataError(f"{name} is empty: it has no rows")
    _check_content(data, fmt, name)
    if fmt == "parquet":
        table = _parse_parquet(data, name)
    else:
        text = _decode_utf8(data, name)
        if fmt != "json":  # json.dump writes a whole file on one line: its cells are checked instead
            _check_line_lengths(data, name)
        if fmt == "json":
            table = _parse_json(text, name)
        elif fmt == "jsonl":
            table = _parse_jsonl_table(text, name)
        else:
            table = _parse_delimited(text, name, "\t" if fmt == "tsv" else ",")
    if not table.rows:
        raise DataError(f"{name} has no data rows")
    limit = max_rows()
    if len(table.rows) > limit:
        raise DataError(f"{name} has {len(table.rows)} rows; the limit is {limit} (PLAYGROUND_MAX_ROWS): "
                        "use a file with fewer rows")
    return table


# ---------------------------------------------------------------------------------------- format checks

def _display_name(filename: str) -> str:
    base = os.path.basename(str(filename or "").replace("\\", "/"))
    base = _CONTROL.sub("", base).strip()
    return (base[:80] + "...") if len(base) > 80 else (base or "upload")


def _format_of(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if ext in FORMATS:
        return ext
    allowed = ", ".join(f".{f}" for f in FORMATS)
    if ext in ("gz", "zip", "bz2", "xz", "zst", "7z"):
        raise DataError(f"{name} is compressed (.{ext}); decompress it and use one of {allowed}")
    if ext in ("xlsx", "xls", "ods"):
        raise DataError(f"{name} is a spreadsheet; export it as 'CSV UTF-8' and use the .csv file")
    shown = f"'.{ext}'" if ext else "no extension"
    raise DataError(f"{name} has {shown}; the file types read are {allowed} (the extension must match)")


def _binary_kind(data: bytes) -> str | None:
    """What a file that is not text is, for a message that says what to do."""
    if data.startswith(b"PAR1"):
        return "a Parquet file"
    if data.startswith(b"PK\x03\x04"):
        return "a zip archive (an Excel .xlsx file?)"
    if data.startswith(b"\xd0\xcf\x11\xe0"):
        return "an old Excel .xls file"
    if data.startswith(b"\x1f\x8b"):
        return "gzip-compressed data"
    if data.startswith(b"%PDF"):
        return "a PDF document"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text"
    if b"\x00" in data[:8192]:
        return "binary data"
    return None


def _first_text(data: bytes) -> str:
    head = data[:4096]
    if head.startswith(_UTF8_BOM):
        head = head[3:]
    return head.decode("utf-8", errors="replace").lstrip()


def _guess_text_format(head: str) -> str | None:
    first_line = head.split("\n", 1)[0]
    if head.startswith("{"):
        return "jsonl"
    if head.startswith("["):
        return "json"
    if "\t" in first_line:
        return "tsv"
    if "," in first_line:
        return "csv"
    return None


def _check_content(data: bytes, fmt: str, name: str) -> None:
    """The extension says a format; check the bytes agree before a parser gets confused by them."""
    kind = _binary_kind(data)
    fmt_name = _FORMAT_NAMES[fmt]
    if fmt == "parquet":
        if data[:4] == b"PAR1" and data[-4:] == b"PAR1":
            return
        if data[:4] == b"PAR1":
            raise DataError(f"{name} is a truncated Parquet file (no footer); upload it again")
        guess = None if kind else _guess_text_format(_first_text(data))
        what = kind or (f"{_FORMAT_NAMES[guess]} text" if guess else "text")
        hint = f"; rename it to .{guess}" if guess else "; save it as Parquet or use its real extension"
        raise DataError(f"{name} is not a Parquet file: its content is {what}{hint}")
    if kind == "UTF-16 text":
        raise DataError(f"{name} is UTF-16 text, not UTF-8 text; re-save it as UTF-8")
    if kind:
        hint = "rename it to .parquet" if kind == "a Parquet file" else \
            f"save it as {', '.join(FORMATS[:-1])} text or as parquet"
        raise DataError(f"{name} has the extension .{fmt} but its content is {kind}, not {fmt_name} text; {hint}")
    head = _first_text(data)
    first_line = head.split("\n", 1)[0]
    if fmt in ("json", "jsonl") and not head.startswith(("{", "[")):
        guess = _guess_text_format(head)
        hint = f"; it looks like {_FORMAT_NAMES[guess]}: rename it to .{guess}" if guess else ""
        raise DataError(f"{name} is not {fmt_name}: it starts with {head[:30]!r}{hint}")
    if fmt in ("csv", "tsv"):
        if head.startswith(("{", "[")) and _looks_like_json(head):
            raise DataError(f"{name} looks like JSON, not {fmt_name}; rename it to .json or .jsonl")
        delim, other, other_fmt = ("," , "\t", "tsv") if fmt == "csv" else ("\t", ",", "csv")
        if delim not in first_line and other in first_line:
            raise DataError(f"{name} looks {'tab' if other == chr(9) else 'comma'}-separated, not {fmt_name}: "
                            f"its header {first_line[:60]!r} has no {'commas' if fmt == 'csv' else 'tabs'}; "
                            f"rename it to .{other_fmt}")


def _looks_like_json(head: str) -> bool:
    # A CSV header may start with "[" ("[id],text") but then is not followed by JSON punctuation.
    return bool(re.match(r'^[\[{]\s*($|["{\[\d-]|\]|})', head))


def _decode_utf8(data: bytes, name: str) -> str:
    if data.startswith(_UTF8_BOM):  # Excel's "CSV UTF-8" starts with one
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{name} is not UTF-8 text; re-save it as UTF-8 (the first bad byte, "
                        f"0x{data[e.start]:02x}, is on line {line})") from None


def _check_line_lengths(data: bytes, name: str) -> None:
    limit = max_line_bytes()
    if len(data) <= limit:
        return
    start, line_no = 0, 1
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if end - start > limit:
            raise DataError(f"line {line_no} of {name} is {_size(end - start)}; one line may be at most "
                            f"{_size(limit)} (PLAYGROUND_MAX_LINE_MB): shorten or remove that row")
        start, line_no = end + 1, line_no + 1


# ---------------------------------------------------------------------------------------- parsers

def _columns_of(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def _parse_jsonl(text: str, name: str) -> list[dict]:
    rows = []
    for line_no, line in enumerate(text.split("\n"), 1):
        line = line.strip(" \t\r")
        if not line:
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"line {line_no} of {name} is not valid JSON ({e.msg} at column {e.colno}); "
                            "each line must hold one JSON object") from None
        except RecursionError:
            raise DataError(f"line {line_no} of {name} is nested too deeply to read") from None
        if not isinstance(obj, dict):
            raise DataError(f"line {line_no} of {name} is a JSON {_json_type(obj)}, not an object; each line "
                            'must be an object with column names as keys, like {"text": "...", "label": "..."}')
        rows.append(obj)
    return rows


def _parse_jsonl_table(text: str, name: str) -> _Table:
    if text.lstrip().startswith("["):
        # A .jsonl holding one JSON array: read it as JSON rather than fail on line 1.
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            doc = None
        if doc is not None:
            table = _json_doc_table(doc, name)
            table.notes.append(f"{name} holds one JSON array, not JSON Lines; read it as JSON")
            return table
    rows = _parse_jsonl(text, name)
    return _Table(name, _columns_of(rows), rows)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _parse_json(text: str, name: str) -> _Table:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            # datasets' to_json and many tools write JSON Lines into a .json file.
            try:
                rows = _parse_jsonl(text, name)
            except DataError:
                rows = None
            if rows is not None:
                return _Table(name, _columns_of(rows), rows,
                              notes=[f"{name} holds JSON Lines (one object per line); read it as such"])
        raise DataError(f"{name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise DataError(f"{name} is nested too deeply to read") from None
    return _json_doc_table(doc, name)


def _json_doc_table(doc: Any, name: str) -> _Table:
    notes = []
    if isinstance(doc, dict):
        lists = {k: v for k, v in doc.items() if isinstance(v, list)}
        lengths = {len(v) for v in lists.values()}
        if doc and len(lists) == len(doc) and len(lengths) == 1 and len(doc) > 1:
            # Column-oriented, as pandas' to_json(orient="list") writes: {"text": [...], "label": [...]}.
            keys = list(doc)
            rows = [dict(zip(keys, values, strict=True)) for values in zip(*(doc[k] for k in keys), strict=True)]
            notes.append(f"{name} is column-oriented; read one row per position")
        elif len(lists) == 1 and all(isinstance(x, dict) for x in next(iter(lists.values()))):
            key, rows = next(iter(lists.items()))
            notes.append(f"rows read from the {key!r} field of {name}")
        elif (pandas_rows := _pandas_json_rows(doc)) is not None:
            rows = pandas_rows
            notes.append(f"{name} is pandas to_json output; read one row per index")
        else:
            raise DataError(f"{name} holds a single JSON object, not a list of rows; write a list like "
                            '[{"text": "...", "label": "..."}, ...] or use JSON Lines (.jsonl)')
    elif isinstance(doc, list):
        rows = doc
    else:
        raise DataError(f"{name} holds a JSON {_json_type(doc)}, not a list of rows")
    for i, row in enumerate(rows, 1):
        if isinstance(row, list):
            raise DataError(f"{name} is a JSON list of lists (row {i} is a list); each row must be an object "
                            'with column names as keys, like {"text": "...", "label": "..."}')
        if not isinstance(row, dict):
            raise DataError(f"row {i} of {name} is a JSON {_json_type(row)}, not an object; each row must be "
                            'an object with column names as keys, like {"text": "...", "label": "..."}')
    return _Table(name, _columns_of(rows), rows, notes=notes)


def _pandas_json_rows(doc: dict) -> list[dict] | None:
    """Rows of pandas' default to_json layouts (orient columns, index, split), or None."""
    if isinstance(doc.get("columns"), list) and isinstance(doc.get("data"), list):  # orient="split"
        columns = doc["columns"]
        if all(isinstance(r, list) and len(r) == len(columns) for r in doc["data"]):
            return [dict(zip(map(str, columns), r, strict=True)) for r in doc["data"]]
        return None
    if not doc or not all(isinstance(v, dict) for v in doc.values()):
        return None
    if all(_INT_TEXT.match(k) for k in doc):  # orient="index": {"0": {"text": ..., "label": ...}}
        return [doc[k] for k in sorted(doc, key=int)]
    index = list(next(iter(doc.values())))  # orient="columns": {"text": {"0": ...}, "label": {"0": ...}}
    if all(list(v) == index for v in doc.values()):
        return [{col: doc[col][i] for col in doc} for i in index]
    return None


def _parse_delimited(text: str, name: str, delimiter: str) -> _Table:
    # csv keeps every cell a string: pandas would turn "NA" or "null" texts into missing values.
    limit = max_line_bytes()
    if csv.field_size_limit() < limit:  # process-wide, so only ever raised
        csv.field_size_limit(limit)
    fmt_name = "TSV" if delimiter == "\t" else "CSV"
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    rows: list[dict[str, str]] = []
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # blank line
            if header is None:
                header = _header(cells, name)
                continue
            if len(cells) != len(header):
                if end > start and any("\n" in c for c in cells):
                    raise DataError(f"{name} is not valid {fmt_name}: a quote (\") opened on line {start} seems never "
                                    f"closed, so lines {start}-{end} read as one row; close or remove it")
                sep = "tab" if delimiter == "\t" else "comma"
                raise DataError(f"line {end} of {name} has {len(cells)} fields but the header has "
                                f"{len(header)}; quote texts that contain a {sep} or a line break "
                                f'(wrap them in "...")')
            rows.append(dict(zip(header, cells, strict=True)))
    except csv.Error as e:
        raise DataError(f"{name} is not valid {fmt_name} near line {reader.line_num}: {e}; "
                        'check for a quote (") that is never closed') from None
    if header is None:
        raise DataError(f"{name} is empty: it has no rows")
    if not rows:
        raise DataError(f"{name} has a header but no data rows")
    return _Table(name, header, rows)


def _header(cells: list[str], name: str) -> list[str]:
    header = []
    for i, cell in enumerate(cells, 1):
        header.append(cell.strip() or f"unnamed_{i}")  # pandas writes an unnamed index column first
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{name} has duplicate column names in its header: {', '.join(dupes)}; rename them")
    return header


def _parse_parquet(data: bytes, name: str) -> _Table:
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        pf = pq.ParquetFile(pa.BufferReader(data))
        meta = pf.metadata
        limit = max_rows()
        if meta.num_rows > limit:
            raise DataError(f"{name} has {meta.num_rows} rows; the limit is {limit} (PLAYGROUND_MAX_ROWS): "
                            "use a file with fewer rows")
        # Parquet compresses well: bound what it expands to, not only the file size.
        expanded = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if expanded > 10 * max_upload_bytes():
            raise DataError(f"{name} expands to {_size(expanded)} in memory; the limit is "
                            f"{_size(10 * max_upload_bytes())}: use a file with fewer or shorter rows")
        table = pf.read()
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{name} could not be read as Parquet ({first}); export it again") from None
    return _Table(name, list(table.column_names), table.to_pylist())


# ---------------------------------------------------------------------------------------- hub

_hub_lock = threading.Lock()


@contextmanager
def _hf_offline() -> Iterator[None]:
    """Make datasets read only its local cache, for the duration of one call.

    The flags are process-wide; this only runs when the hub is unreachable anyway, so another
    thread's download cannot be broken by it.
    """
    import datasets.config
    import huggingface_hub.constants as hub_constants
    with _hub_lock:
        saved = (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE, hub_constants.HF_HUB_OFFLINE)
        datasets.config.HF_HUB_OFFLINE = datasets.config.HF_DATASETS_OFFLINE = True
        hub_constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            (datasets.config.HF_HUB_OFFLINE, datasets.config.HF_DATASETS_OFFLINE,
             hub_constants.HF_HUB_OFFLINE) = saved


def _read_hub(ref: str, split: str, seed: int) -> _Table:
    dataset_id, _, config = ref.partition(":")
    dataset_id, config = dataset_id.strip(), config.strip()
    if not HUB_ID.match(dataset_id) or ".." in dataset_id:
        raise DataError(f"hub:{ref} is not a Hugging Face dataset id; write hub:<owner>/<name> such as "
                        "hub:stanfordnlp/sst2 (add :<config> for a dataset with several)")
    if config and not _HUB_CONFIG.match(config):
        raise DataError(f"hub:{ref}: {config!r} is not a dataset config name")
    split = (split or "train").strip()
    if not _HUB_SPLIT.match(split):
        raise DataError(f"data.hub_split={split!r} is not a split name such as train, validation or test "
                        "(slices like train[:100] are not supported: use n_samples)")
    label = f"hub:{ref}"
    offline_msg = (f"dataset {dataset_id} is not available offline; built-in datasets: "
                   f"{', '.join(_BUILTINS)}")
    try:
        import datasets
    except ImportError:
        raise DataError("hub datasets need the 'datasets' package, which is not installed") from None
    if not hub.allowed(datasets=True, cached=True):
        with _hf_offline():
            try:
                ds = datasets.load_dataset(dataset_id, config or None, split=split)
            except ValueError as e:
                if "split" in str(e).lower():
                    raise DataError(f"{label} has no split {split!r} in the local cache; set data.hub_split") from None
                raise DataError(offline_msg) from None
            except Exception:  # any cache miss (ConnectionError, FileNotFoundError, ...) means the same
                raise DataError(offline_msg) from None
        return _hub_table(ds, label, seed, streaming=False)
    from datasets.exceptions import DatasetNotFoundError
    try:
        # Streaming reads only the rows used: a hub id can name a terabyte-sized dataset.
        ds = datasets.load_dataset(dataset_id, config or None, split=split, streaming=True)
        return _hub_table(ds, label, seed, streaming=True)
    except DataError:
        raise
    except DatasetNotFoundError:
        raise DataError(f"dataset {dataset_id} was not found on the Hugging Face Hub (or it is private "
                        "or gated); check the id") from None
    except ValueError as e:  # unknown split or a missing/unknown config; datasets lists the choices
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{label} could not be loaded: {first[:400]}") from None
    except (ConnectionError, TimeoutError, OSError):
        raise DataError(f"dataset {dataset_id} could not be downloaded (network problem); built-in "
                        f"datasets: {', '.join(_BUILTINS)}") from None
    except Exception as e:  # a stream can fail mid-way in many libraries' own ways; say which dataset
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{label} could not be read: {first[:300]}") from None


def _hub_table(ds: Any, label: str, seed: int, streaming: bool) -> _Table:
    from datasets import ClassLabel
    features = getattr(ds, "features", None) or {}
    class_names = {col: list(feat.names) for col, feat in features.items() if isinstance(feat, ClassLabel)}
    limit = max_rows()
    notes = []
    if streaming:
        rows = list(itertools.islice(ds.shuffle(seed=seed, buffer_size=10_000), limit + 1))
        if len(rows) > limit:
            rows = rows[:limit]
            notes.append(f"{label} has more than {limit} rows (PLAYGROUND_MAX_ROWS): read a random {limit}")
    else:
        if len(ds) > limit:
            notes.append(f"{label} has {len(ds)} rows; read a random {limit} (PLAYGROUND_MAX_ROWS)")
            ds = ds.shuffle(seed=seed).select(range(limit))
        rows = [dict(r) for r in ds]
    if not rows:
        raise DataError(f"{label} has no rows in this split")
    columns = list(features) if features else _columns_of(rows)
    return _Table(label, columns, rows, notes=notes, class_names=class_names)


# ---------------------------------------------------------------------------------------- rows

def _roles_text(task: str) -> str:
    return "text or label" if task == "classification" else "prompt or response"


def _pick_columns(table: _Table, spec: DataSpec) -> tuple[str, str]:
    if table.builtin_task:
        if spec.task != table.builtin_task:
            raise DataError(f"{table.name} is a {table.builtin_task} dataset; set data.task to "
                            f"'{table.builtin_task}'")
        return ("text", "label") if spec.task == "classification" else ("prompt", "response")
    if spec.task == "classification":
        first, second = spec.text_column, spec.label_column
        fields, what = ("text_column", "label_column"), ("text", "label")
    else:
        first, second = spec.prompt_column, spec.response_column
        fields, what = ("prompt_column", "response_column"), ("prompt", "response")
    columns = table.columns
    if first not in columns and first == "text" and spec.task == "classification":
        aliases = [a for a in _TEXT_ALIASES if a in columns]
        if len(aliases) == 1:
            table.notes.append(f"no 'text' column in {table.name}: using '{aliases[0]}' as the text")
            first = aliases[0]
    for col, fld in ((first, fields[0]), (second, fields[1])):
        if col not in columns:
            found = ", ".join(f"'{c}'" for c in columns[:30]) + (" ..." if len(columns) > 30 else "")
            raise DataError(f"column '{col}' not found in {table.name}; columns found: {found or 'none'}. "
                            f"Set data.{fields[0]} and data.{fields[1]} to the columns that hold the "
                            f"{what[0]} and the {what[1]} (data.{fld} is '{col}')")
    if first == second:
        raise DataError(f"data.{fields[0]} and data.{fields[1]} are both '{first}'; they must differ")
    return first, second


def _task_rows(table: _Table, spec: DataSpec,
               label_names: list[str] | None = None) -> tuple[list[dict], list[str] | None, int]:
    """Rows for the task, the label names (classification) and how many rows were dropped."""
    first, second = _pick_columns(table, spec)
    if spec.task == "classification":
        label_map = {} if table.builtin_task else spec.label_map
        rows, names, dropped = _classification_rows(table, first, second, label_map, label_names)
    else:
        rows, dropped, skipped = _sft_rows(table, first, second)
        names = None
        if skipped:
            table.notes.append(f"columns with nested values not kept in the rows: {', '.join(sorted(skipped))}")
    if not rows:
        raise DataError(f"{table.name} has no usable rows: all {len(table.rows)} rows have an empty "
                        f"'{first}' or '{second}'")
    return rows, names, dropped


def _as_text(value: Any, col: str, row_no: int, name: str) -> str | None:
    """A cell as text, or None when empty; nested or binary values are refused."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        text = value
    elif isinstance(value, (bool, int, float)):
        text = str(value)
    elif isinstance(value, (dict, list, tuple)):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise DataError(f"column '{col}' of {name} holds nested values ({kind} in row {row_no}), not text; "
                        "flatten it into a text column or choose another column")
    elif isinstance(value, (bytes, bytearray)):
        raise DataError(f"column '{col}' of {name} holds binary values (row {row_no}), not text; "
                        "choose a text column")
    else:
        raise DataError(f"column '{col}' of {name} holds {type(value).__name__} values (row {row_no}), "
                        "not text; choose a text column")
    if not text.strip():
        return None
    if len(text) > max_line_bytes():
        raise DataError(f"row {row_no} of {name}: the '{col}' text is {_size(len(text))}; one text may be "
                        f"at most {_size(max_line_bytes())} (PLAYGROUND_MAX_LINE_MB): shorten or remove it")
    return text


def _raw_label(value: Any, col: str, row_no: int, name: str) -> str | None:
    """A label as the string key label_map uses, or None when empty ("1", "1.0" and 1 are one label)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        if _INTEGRAL_FLOAT_TEXT.match(text):
            return str(int(float(text)))
        if _INT_TEXT.match(text):
            return str(int(text))
        return text
    if isinstance(value, (dict, list, tuple)):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise DataError(f"column '{col}' of {name} holds nested values ({kind} in row {row_no}), not a "
                        "label; choose a column with one label per row (data.label_column)")
    raise DataError(f"column '{col}' of {name} holds {type(value).__name__} values (row {row_no}), not labels")


def _label_sort_key(raw: str) -> tuple:
    # Integers by value (so 2 < 10), everything else alphabetically (case-insensitive, then exact).
    if _INT_TEXT.match(raw):
        return (0, int(raw), "")
    return (1, raw.casefold(), raw)


def _classification_rows(table: _Table, text_col: str, label_col: str, label_map: dict[str, str],
                         label_names: list[str] | None) -> tuple[list[dict], list[str], int]:
    pairs: list[tuple[str, str]] = []
    dropped = 0
    for i, row in enumerate(table.rows, 1):
        text = _as_text(row.get(text_col), text_col, i, table.name)
        raw = _raw_label(row.get(label_col), label_col, i, table.name)
        if text is None or raw is None:
            dropped += 1
        else:
            pairs.append((text, raw))
    if not pairs:
        raise DataError(f"{table.name} has no usable rows: all {len(table.rows)} rows have an empty "
                        f"'{text_col}' or '{label_col}'")
    to_name = _label_namer(table, label_col, label_map, {raw for _, raw in pairs})
    if label_names is None:
        raws = sorted({raw for _, raw in pairs}, key=_label_sort_key)
        label_names = list(dict.fromkeys(to_name[r] for r in raws))  # two raw values may share a name
        if len(label_names) == 1:
            raise DataError(f"only one label ({label_names[0]}) in column '{label_col}': classification needs "
                            f"at least two; every usable row of {table.name} has it. Choose another label "
                            "column (data.label_column) or add rows of another class")
        if len(label_names) > MAX_LABELS:
            raise DataError(f"column '{label_col}' of {table.name} has {len(label_names)} distinct labels; "
                            f"classification supports at most {MAX_LABELS}. Is it the right column (not an id "
                            "or a score)? Set data.label_column")
    index = {name: i for i, name in enumerate(label_names)}
    unknown = sorted({to_name[raw] for _, raw in pairs} - set(index))
    if unknown:
        raise DataError(f"{table.name} has label(s) {', '.join(unknown[:10])} that the training data does not "
                        f"have (training labels: {', '.join(label_names[:20])})")
    rows = [{"text": text, "label": index[to_name[raw]]} for text, raw in pairs]
    return rows, label_names, dropped


def _label_namer(table: _Table, label_col: str, label_map: dict[str, str], raws: set[str]) -> dict[str, str]:
    """raw label -> class name, through data.label_map, else a hub ClassLabel's names, else as is."""
    if label_map:
        folded = {k.strip().casefold(): v for k, v in label_map.items()}
        out, missing = {}, []
        for raw in raws:
            name = label_map.get(raw, folded.get(raw.casefold()))
            if name is None:
                missing.append(raw)
            else:
                out[raw] = name
        if missing:
            missing.sort(key=_label_sort_key)
            raise DataError(f"label value(s) {', '.join(repr(m) for m in missing[:10])} in column '{label_col}' "
                            f"of {table.name} are not in data.label_map (keys: {', '.join(sorted(label_map))}); "
                            "add them to the map or clear it")
        return out
    names = table.class_names.get(label_col)
    if names:
        table.notes.append(f"label names from the dataset: {', '.join(names[:20])}")
        return {raw: names[int(raw)] if _INT_TEXT.match(raw) and 0 <= int(raw) < len(names) else raw
                for raw in raws}
    return {raw: raw for raw in raws}


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(v is None or isinstance(v, (str, bool, int, float)) for v in value)
    return False


def _sft_rows(table: _Table, prompt_col: str, response_col: str) -> tuple[list[dict], int, set[str]]:
    """SFT rows with extra plain fields kept (fact_id, keywords...); nested extras are left out."""
    rows, dropped, skipped = [], 0, set()
    for i, row in enumerate(table.rows, 1):
        prompt = _as_text(row.get(prompt_col), prompt_col, i, table.name)
        response = _as_text(row.get(response_col), response_col, i, table.name)
        if prompt is None or response is None:
            dropped += 1
            continue
        out: dict[str, Any] = {"prompt": prompt, "response": response}
        for key, value in row.items():
            if key in (prompt_col, response_col) or key in out:
                continue
            if _is_plain(value):
                out[key] = list(value) if isinstance(value, tuple) else value
            else:
                skipped.add(key)
        rows.append(out)
    return rows, dropped, skipped


# ---------------------------------------------------------------------------------------- split / sample

def _groups(rows: list[dict], key: str | None) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row[key] if key else None, []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0])))


def _split(rows: list[dict], share: float, seed: int, key: str | None) -> tuple[list[dict], list[dict]]:
    """Hold out `share` of the rows, per label: every label keeps a training row, and (given two
    rows) gets a validation row, so a small dataset is still scored on every class."""
    if share <= 0:
        return list(rows), []
    rng = random.Random(f"{seed}:split")
    val_idx: set[int] = set()
    for _, idx in _groups(rows, key).items():
        idx = list(idx)
        rng.shuffle(idx)
        k = round(len(idx) * share)
        if len(idx) >= 2:
            k = max(1, k)
        k = min(k, len(idx) - 1)
        val_idx.update(idx[:k])
    train = [r for i, r in enumerate(rows) if i not in val_idx]
    val = [r for i, r in enumerate(rows) if i in val_idx]
    return train, val


def _subsample(rows: list[dict], n: int, seed: int, key: str | None) -> list[dict]:
    """n rows; per label in proportion to its share (largest remainder), each label at least one
    when n allows. Each label's rows are taken from the front of one fixed shuffle, so a larger n
    keeps the rows of a smaller one."""
    groups = _groups(rows, key)
    total = len(rows)
    exact = {g: n * len(idx) / total for g, idx in groups.items()}
    quota = {g: int(x) for g, x in exact.items()}
    for g in sorted(groups, key=lambda g: exact[g] - quota[g], reverse=True)[:n - sum(quota.values())]:
        quota[g] += 1
    if n >= len(groups):
        for g in groups:
            if quota[g] == 0:  # take the row from the label with the most
                donor = max(groups, key=lambda d: quota[d])
                quota[donor] -= 1
                quota[g] = 1
    picked: list[int] = []
    for g, idx in groups.items():
        idx = list(idx)
        random.Random(f"{seed}:sample:{g}").shuffle(idx)
        picked.extend(idx[:quota[g]])
    return [rows[i] for i in sorted(picked)]


def _dedupe(train: list[dict], val: list[dict], key: str) -> tuple[list[dict], int]:
    seen = {row[key] for row in train}
    kept = [row for row in val if row[key] not in seen]
    return kept, len(val) - len(kept)


def _shuffled(rows: list[dict], seed: str) -> list[dict]:
    out = list(rows)
    random.Random(seed).shuffle(out)
    return out


def _display_row(row: dict) -> dict:
    return {k: (v[:_PREVIEW_CHARS] + "...") if isinstance(v, str) and len(v) > _PREVIEW_CHARS else v
            for k, v in row.items()}
