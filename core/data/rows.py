"""From a raw table to training rows (columns, labels, prompts), then split, subsample and dedupe."""
from __future__ import annotations

import math
import random
import re
from typing import Any

from core.config import DataSpec
from core.data.base import DataError, INT_TEXT, MAX_LABELS, max_line_bytes, size_text, Table


# Common names for the text column of public datasets (SST-2 calls it "sentence"): used only when
# the default column "text" is absent, and always noted, so that hub:stanfordnlp/sst2 just works.
_TEXT_ALIASES = ("sentence", "review", "content", "document")
_PREVIEW_CHARS = 500  # the preview table is for a glance; 10 kB reviews would swamp it
_INTEGRAL_FLOAT_TEXT = re.compile(r"^[+-]?\d+\.0*$")


def roles_text(task: str) -> str:
    return "text or label" if task == "classification" else "prompt or response"


def _pick_columns(table: Table, spec: DataSpec) -> tuple[str, str]:
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


def task_rows(table: Table, spec: DataSpec,
               label_names: list[str] | None = None) -> tuple[list[dict], list[str] | None, int]:
    """Rows for the task, the label names (classification) and how many rows were dropped."""
    first, second = _pick_columns(table, spec)
    if spec.task == "classification":
        label_map = {} if table.builtin_task else spec.label_map
        rows, names, dropped = _classification_rows(table, first, second, label_map, label_names)
    else:
        rows, dropped, skipped = sft_rows(table, first, second)
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
        raise DataError(f"row {row_no} of {name}: the '{col}' text is {size_text(len(text))}; one text may be "
                        f"at most {size_text(max_line_bytes())} (PLAYGROUND_MAX_LINE_MB): shorten or remove it")
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
        if INT_TEXT.match(text):
            return str(int(text))
        return text
    if isinstance(value, (dict, list, tuple)):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise DataError(f"column '{col}' of {name} holds nested values ({kind} in row {row_no}), not a "
                        "label; choose a column with one label per row (data.label_column)")
    raise DataError(f"column '{col}' of {name} holds {type(value).__name__} values (row {row_no}), not labels")


def _label_sort_key(raw: str) -> tuple:
    # Integers by value (so 2 < 10), everything else alphabetically (case-insensitive, then exact).
    if INT_TEXT.match(raw):
        return (0, int(raw), "")
    return (1, raw.casefold(), raw)


def _classification_rows(table: Table, text_col: str, label_col: str, label_map: dict[str, str],
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


def _label_namer(table: Table, label_col: str, label_map: dict[str, str], raws: set[str]) -> dict[str, str]:
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
        return {raw: names[int(raw)] if INT_TEXT.match(raw) and 0 <= int(raw) < len(names) else raw
                for raw in raws}
    return {raw: raw for raw in raws}


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(v is None or isinstance(v, (str, bool, int, float)) for v in value)
    return False


def sft_rows(table: Table, prompt_col: str, response_col: str) -> tuple[list[dict], int, set[str]]:
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


def _groups(rows: list[dict], key: str | None) -> dict[Any, list[int]]:
    groups: dict[Any, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row[key] if key else None, []).append(i)
    return dict(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0])))


def split_rows(rows: list[dict], share: float, seed: int, key: str | None) -> tuple[list[dict], list[dict]]:
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


def subsample(rows: list[dict], n: int, seed: int, key: str | None) -> list[dict]:
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


def dedupe(train: list[dict], val: list[dict], key: str) -> tuple[list[dict], int]:
    seen = {row[key] for row in train}
    kept = [row for row in val if row[key] not in seen]
    return kept, len(val) - len(kept)


def shuffled(rows: list[dict], seed: str) -> list[dict]:
    out = list(rows)
    random.Random(seed).shuffle(out)
    return out


def display_row(row: dict) -> dict:
    return {k: (v[:_PREVIEW_CHARS] + "...") if isinstance(v, str) and len(v) > _PREVIEW_CHARS else v
            for k, v in row.items()}
