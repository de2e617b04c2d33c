"""The lesson datasets shipped in assets/data, their held-out questions and rehearsal rows."""
from __future__ import annotations

import os
from pathlib import Path

from core.data.base import columns_of, DataError, Table
from core.data.sniff import decode_utf8
from core.data.parsers import parse_jsonl
from core.data.rows import sft_rows


# Tests point this at a folder of fixtures; the app reads the files written for it.
BUILTIN_DIR = Path(__file__).resolve().parent.parent.parent / "assets" / "data"

# name -> (file, task, description)
BUILTINS: dict[str, tuple[str, str, str]] = {
    "sentiment": ("sentiment.jsonl", "classification",
                  "Short reviews labelled positive or negative: text classification."),
    "facts": ("facts.jsonl", "sft",
              "Question -> answer pairs about facts the base model cannot know: supervised fine-tuning "
              "(SFT); held-out rephrasings check whether the facts were learned."),
    "facts-mini": ("facts.jsonl", "sft",
                   "The first 12 invented facts only, plus 48 ordinary questions (rehearsal): small "
                   "enough to learn in about a minute on a laptop CPU (the 'Fix a hallucination' lesson)."),
}
_GENERAL_QUESTIONS = "general_questions.jsonl"
# Ordinary questions with their ordinary answers, mixed into the fact sets' training rows. Without
# them LoRA on 60 invented facts also rewrites the world ("the capital of France is Lunae
# obsequimur"); with them the general questions of the probe (none of which is here) stay right.
# Half of them ask who wrote, composed or painted something: the facts' answers name invented
# people, and without those rows ordinary who-questions got invented names too.
_REHEARSAL = "rehearsal.jsonl"
REHEARSAL_ID = "rehearsal"  # the fact_id of those rows
_REHEARSED = ("facts", "facts-mini")
# Built-ins that are a slice of another file: name -> how many fact_ids (in file order) they keep.
_FACT_SUBSETS = {"facts-mini": 12}


def list_builtin() -> dict[str, str]:
    return {name: desc for name, (_, _, desc) in BUILTINS.items()}


def builtin_task(name: str) -> str:
    """The task a built-in dataset is made for ("classification" or "sft")."""
    return _builtin_entry(name)[1]


def builtin_heldout(name: str) -> list[dict]:
    """Rows of a built-in dataset marked split == "heldout" (facts: rephrased questions), as SFT rows."""
    _builtin_entry(name)
    rows = [r for r in _builtin_raw(name) if r.get("split") == "heldout"]
    table = Table(f"builtin:{name}", columns_of(rows), rows, builtin_task="sft")
    out, _, _ = sft_rows(table, "prompt", "response")
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
    return parse_jsonl(decode_utf8(data, name), name)


def _builtin_entry(name: str) -> tuple[str, str, str]:
    if name not in BUILTINS:
        raise DataError(f"unknown built-in dataset {name!r}; built-in datasets: {', '.join(BUILTINS)}")
    return BUILTINS[name]


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


def read_builtin(name: str) -> Table:
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
    return Table(f"builtin:{name}", columns_of(rows), rows, notes=notes, builtin_task=task)
