"""load_rows and preview: a DataSpec's source read, checked, turned into rows and split."""
from __future__ import annotations

from typing import Any

from core.config import DataSpec
from core.data.base import DataError, default_uploads_dir, LoadedData, Table
from core.data.files import resolve_path
from core.data.parsers import read_file
from core.data.rows import dedupe, display_row, roles_text, shuffled, split_rows, subsample, task_rows
from core.data.builtin import builtin_heldout, read_builtin, without_rehearsal
from core.data.hub_datasets import read_hub


def check_table(path: str) -> int:
    """Rows of a stored file, read as a run would read it; DataError (naming the user's file) if unusable."""
    return len(read_file(path).rows)


def load_rows(spec: DataSpec, uploads_dir: str | None = None, seed: int = 42) -> LoadedData:
    """Read, validate, split and subsample the rows a run trains and evaluates on."""
    uploads_dir = uploads_dir or default_uploads_dir()
    table = _read_source(spec, spec.source, uploads_dir, seed)
    rows, label_names, dropped = task_rows(table, spec)
    notes = list(table.notes)
    if dropped:
        notes.append(f"dropped {dropped} of {len(table.rows)} rows of {table.name} with an empty "
                     f"{roles_text(spec.task)}")
    classification = spec.task == "classification"
    key = "text" if classification else "prompt"  # the same question in train and val is a leak

    if spec.eval_source.strip():
        eval_table = _read_source(spec, spec.eval_source, uploads_dir, seed)
        val, _, eval_dropped = task_rows(eval_table, spec, label_names)
        notes += eval_table.notes
        if eval_dropped:
            notes.append(f"dropped {eval_dropped} rows of {eval_table.name} with an empty {roles_text(spec.task)}")
        train = rows
        val, removed = dedupe(train, val, key)
        if removed:
            notes.append(f"removed {removed} rows of {eval_table.name} whose {key} also appears in training")
        if not val:
            raise DataError(f"every row of {eval_table.name} also appears in {table.name}; "
                            "choose an evaluation file with different rows")
    else:
        train, val = split_rows(rows, spec.val_share, seed, "label" if classification else None)
        if val:
            how = ", stratified by label" if classification else ""
            notes.append(f"held out {len(val)} of {len(rows)} rows ({spec.val_share:.0%}) for validation{how}")
        elif spec.val_share > 0:
            notes.append("too few rows to hold any out for validation")
        # Deduplicate against the full training pool, before subsampling: the validation set must
        # not change with n_samples, or runs with different N would be scored on different rows.
        val, removed = dedupe(train, val, key)
        if removed:
            notes.append(f"removed {removed} validation rows whose {key} also appears in training")

    if spec.n_samples and spec.n_samples < len(train):
        before = len(train)
        train = subsample(train, spec.n_samples, seed, "label" if classification else None)
        how = " (stratified by label)" if classification else ""
        notes.append(f"using {len(train)} of {before} training rows{how}")
    elif spec.n_samples > len(train):
        notes.append(f"n_samples={spec.n_samples} but only {len(train)} training rows: using all of them")

    # Shuffled once, reproducibly: files are often sorted by label, and a caller taking val[:k]
    # (eval_max_rows) must not get a single class.
    train = shuffled(train, f"{seed}:train")
    val = shuffled(val, f"{seed}:val")
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
        "rows": [display_row(r) for r in table.rows[:max(0, n)]],
        "total_rows": len(table.rows),
        "columns": list(table.columns),
        "label_balance": None,
        "notes": [],
        "error": None,
    }
    try:
        rows, label_names, dropped = task_rows(table, spec)
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
        result["notes"].append(f"{dropped} rows have an empty {roles_text(spec.task)} and will be dropped")
    return result


def _read_source(spec: DataSpec, source: str, uploads_dir: str, seed: int) -> Table:
    source = (source or "").strip()
    if not source:
        raise DataError("data.source is empty; choose a built-in dataset, a file or a hub dataset id")
    if source.startswith("builtin:"):
        return read_builtin(source[len("builtin:"):].strip())
    if source.startswith("hub:"):
        return read_hub(source[len("hub:"):].strip(), spec.hub_split, seed)
    return read_file(resolve_path(source, uploads_dir))


FACTS_SOURCES = ("builtin:facts", "builtin:facts-mini")  # the hallucination lesson's built-in sets


def example_inputs(data_cfg: dict, task: str, seed: int = 42) -> list[str]:
    """Up to three prompts (sft) or texts (classification) from a run's own data, as Compare offers
    them: for the facts lesson, one held-out rephrasing per fact (a question the base cannot know and
    the tuned model never saw verbatim); else the run's validation rows, or its training rows, never
    its rehearsal rows. [] for a Hub dataset (not worth a download) or data that no longer loads."""
    source = str(data_cfg.get("source", ""))
    if task == "sft" and source in FACTS_SOURCES:
        seen, out = set(), []
        for row in builtin_heldout(source.removeprefix("builtin:")):
            if row.get("fact_id") not in seen:
                seen.add(row.get("fact_id"))
                out.append(row["prompt"])
        return out[:3]
    if source.startswith("hub:"):
        return []
    try:
        loaded = load_rows(DataSpec(**data_cfg), seed=seed)
    except (ValueError, OSError, TypeError):
        return []
    key = "prompt" if task == "sft" else "text"
    return [str(r[key]) for r in without_rehearsal(loaded.val or loaded.train) if r.get(key)][:3]
