"""Is an uploaded file what its name says? Format, encoding and line-length checks before parsing."""
from __future__ import annotations

import os
import re

from core.data.base import CONTROL_CHARS, DataError, FORMATS, max_line_bytes, size_text


_FORMAT_NAMES = {"csv": "CSV", "tsv": "TSV", "json": "JSON", "jsonl": "JSON Lines", "parquet": "Parquet"}
_UTF8_BOM = b"\xef\xbb\xbf"


def safe_file_name(filename: str) -> str:
    base = os.path.basename(str(filename or "").replace("\\", "/"))
    base = CONTROL_CHARS.sub("", base).strip()
    return (base[:80] + "...") if len(base) > 80 else (base or "upload")


def format_of(name: str) -> str:
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


def check_content(data: bytes, fmt: str, name: str) -> None:
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


def decode_utf8(data: bytes, name: str) -> str:
    if data.startswith(_UTF8_BOM):  # Excel's "CSV UTF-8" starts with one
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise DataError(f"{name} is not UTF-8 text; re-save it as UTF-8 (the first bad byte, "
                        f"0x{data[e.start]:02x}, is on line {line})") from None


def check_line_lengths(data: bytes, name: str) -> None:
    limit = max_line_bytes()
    if len(data) <= limit:
        return
    start, line_no = 0, 1
    while start < len(data):
        end = data.find(b"\n", start)
        end = len(data) if end < 0 else end
        if end - start > limit:
            raise DataError(f"line {line_no} of {name} is {size_text(end - start)}; one line may be at most "
                            f"{size_text(limit)} (PLAYGROUND_MAX_LINE_MB): shorten or remove that row")
        start, line_no = end + 1, line_no + 1
