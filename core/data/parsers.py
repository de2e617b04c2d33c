"""Parsers for CSV, TSV, JSON, JSON Lines and Parquet into a raw table."""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any

from core.data.base import columns_of, DataError, INT_TEXT, max_line_bytes, max_rows, max_upload_bytes, size_text, Table
from core.data.sniff import check_content, check_line_lengths, decode_utf8, format_of
from core.data.files import shown_name


def read_file(path: str) -> Table:
    fmt = format_of(os.path.basename(path))
    name = shown_name(path)
    limit = max_upload_bytes()
    size = os.path.getsize(path)
    if size > limit:
        raise DataError(f"{name} is {size_text(size)}; the limit is {size_text(limit)} (PLAYGROUND_MAX_UPLOAD_MB): "
                        "use a file with fewer rows")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)  # the file may have grown since the size check
    if len(data) > limit:
        raise DataError(f"{name} is larger than the limit of {size_text(limit)} (PLAYGROUND_MAX_UPLOAD_MB)")
    return _parse_bytes(data, fmt, name)


def _parse_bytes(data: bytes, fmt: str, name: str) -> Table:
    if not data.strip():
        raise DataError(f"{name} is empty: it has no rows")
    check_content(data, fmt, name)
    if fmt == "parquet":
        table = _parse_parquet(data, name)
    else:
        text = decode_utf8(data, name)
        if fmt != "json":  # json.dump writes a whole file on one line: its cells are checked instead
            check_line_lengths(data, name)
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


def parse_jsonl(text: str, name: str) -> list[dict]:
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


def _parse_jsonl_table(text: str, name: str) -> Table:
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
    rows = parse_jsonl(text, name)
    return Table(name, columns_of(rows), rows)


def _json_type(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number")


def _parse_json(text: str, name: str) -> Table:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":
            # datasets' to_json and many tools write JSON Lines into a .json file.
            try:
                rows = parse_jsonl(text, name)
            except DataError:
                rows = None
            if rows is not None:
                return Table(name, columns_of(rows), rows,
                              notes=[f"{name} holds JSON Lines (one object per line); read it as such"])
        raise DataError(f"{name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise DataError(f"{name} is nested too deeply to read") from None
    return _json_doc_table(doc, name)


def _json_doc_table(doc: Any, name: str) -> Table:
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
    return Table(name, columns_of(rows), rows, notes=notes)


def _pandas_json_rows(doc: dict) -> list[dict] | None:
    """Rows of pandas' default to_json layouts (orient columns, index, split), or None."""
    if isinstance(doc.get("columns"), list) and isinstance(doc.get("data"), list):  # orient="split"
        columns = doc["columns"]
        if all(isinstance(r, list) and len(r) == len(columns) for r in doc["data"]):
            return [dict(zip(map(str, columns), r, strict=True)) for r in doc["data"]]
        return None
    if not doc or not all(isinstance(v, dict) for v in doc.values()):
        return None
    if all(INT_TEXT.match(k) for k in doc):  # orient="index": {"0": {"text": ..., "label": ...}}
        return [doc[k] for k in sorted(doc, key=int)]
    index = list(next(iter(doc.values())))  # orient="columns": {"text": {"0": ...}, "label": {"0": ...}}
    if all(list(v) == index for v in doc.values()):
        return [{col: doc[col][i] for col in doc} for i in index]
    return None


def _parse_delimited(text: str, name: str, delimiter: str) -> Table:
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
    return Table(name, header, rows)


def _header(cells: list[str], name: str) -> list[str]:
    header = []
    for i, cell in enumerate(cells, 1):
        header.append(cell.strip() or f"unnamed_{i}")  # pandas writes an unnamed index column first
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise DataError(f"{name} has duplicate column names in its header: {', '.join(dupes)}; rename them")
    return header


def _parse_parquet(data: bytes, name: str) -> Table:
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
            raise DataError(f"{name} expands to {size_text(expanded)} in memory; the limit is "
                            f"{size_text(10 * max_upload_bytes())}: use a file with fewer or shorter rows")
        table = pf.read()
    except (pa.ArrowException, OSError, ValueError) as e:
        if isinstance(e, DataError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"{name} could not be read as Parquet ({first}); export it again") from None
    return Table(name, list(table.column_names), table.to_pylist())
