"""Dev/test discipline: which rows a tuning script may read, and which rows a report is made on.

IMDb (`imdb_train_4000.jsonl` of the shared data folder) is cut in two by a file, not by position or
seed: `bench/imdb_test_part.txt` lists the SHA-256 (first 20 hex digits) of the text of the 1,000
**test** reviews; the other 3,000 are the **dev** part. The 1,000 are the reviews that the shipped
`examples/lora_imdb.yaml` never read when its values were chosen: its own split (seed 42) holds out
1,000 rows for validation and trains on 2,000 of the other 3,000, and these are the remaining 1,000
(computed once with the engine's split code of 2026-12-07; variants tried during tuning with other
`n_samples` may have trained on some of them, none scored on them). The cut does not depend on the
file's order, and a changed data file is refused rather than silently re-cut.

- Tuning scripts (`TUNING_SCRIPTS`, e.g. `bench/imdb_defaults.py`) read `imdb_dev()` only. They call
  `tuning_only()` first, after which the test accessors refuse to run in that process.
- Report scripts (`bench/imdb_report.py`, `bench/engine_vs_tutorial.py`'s time-to-accuracy) train on
  dev rows and score on `imdb_test()`.

For the "Fix a hallucination" lesson the test part is two files that no tuning touched:
`assets/data/facts_fresh.jsonl` (new paraphrases of the 12 facts of facts-mini) and
`assets/data/general_broad.jsonl` (general knowledge of other kinds than the rehearsal rows). The
older held-out paraphrases and the 20 general questions are the dev part: the preset was iterated
against them (BENCHMARKS.md says so where their figures appear).

`tests/test_splits.py` checks that the parts are disjoint, fixed, and that no tuning script reads a
test part.
"""
from __future__ import annotations

import hashlib
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMDB_FILE = "imdb_train_4000.jsonl"
N_TEST = 1000
# Scripts used to choose defaults: they must read dev rows only.
TUNING_SCRIPTS = ("bench/imdb_defaults.py", "bench/facts_dev.py")
# Names a tuning script must not mention (the test accessors and the test files).
TEST_NAMES = ("imdb_test", "write_imdb_test", "facts_fresh", "general_broad", "builtin_fresh_paraphrases",
              "builtin_broad_general", "probe_facts", "probe_general")

_TUNING_ONLY = False


class TestSplitRefused(RuntimeError):
    """A tuning script asked for rows of a test part."""


def data_dir() -> str:
    """The shared data folder: $BENCH_DATA_DIR, else ../shared/data beside the repository."""
    return os.environ.get("BENCH_DATA_DIR") or os.path.abspath(os.path.join(ROOT, "..", "shared", "data"))


def tuning_only() -> None:
    """Called first by a tuning script: from now on this process cannot read a test part."""
    global _TUNING_ONLY
    _TUNING_ONLY = True
    os.environ["BENCH_TUNING_ONLY"] = "1"  # children of a tuning script inherit the refusal


def _refuse_in_tuning(what: str) -> None:
    if _TUNING_ONLY or os.environ.get("BENCH_TUNING_ONLY") == "1":
        raise TestSplitRefused(f"{what} is a test part: a tuning script may read dev rows only")


def _read(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh.read().split("\n") if line.strip()]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_hashes_file() -> str:
    return os.environ.get("BENCH_IMDB_TEST_HASHES") or os.path.join(ROOT, "bench", "imdb_test_part.txt")


def _test_hashes() -> set[str]:
    with open(test_hashes_file(), encoding="utf-8") as fh:
        return {line.strip() for line in fh if line.strip() and not line.startswith("#")}


def _imdb_parts() -> tuple[list[dict], list[dict]]:
    rows = _read(os.path.join(data_dir(), IMDB_FILE))
    wanted = _test_hashes()
    is_test = [text_hash(r["text"])[:20] in wanted for r in rows]
    test = [r for r, t in zip(rows, is_test) if t]
    if len(test) != len(wanted):
        raise ValueError(f"{IMDB_FILE} holds {len(test)} of the {len(wanted)} test reviews listed in "
                         f"{os.path.basename(test_hashes_file())}: not the file the cut was made for")
    return [r for r, t in zip(rows, is_test) if not t], test


def imdb_dev() -> list[dict]:
    """The 3,000 reviews tuning may read (file order kept)."""
    return _imdb_parts()[0]


def imdb_test() -> list[dict]:
    """The 1,000 reviews defaults are reported on (file order kept). Refused in a tuning script."""
    _refuse_in_tuning("imdb_test")
    return _imdb_parts()[1]


def _write(rows: list[dict], folder: str, name: str) -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path + ".part", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"text": r["text"], "label": r["label"]}, ensure_ascii=False) + "\n")
    os.replace(path + ".part", path)
    return path


def default_folder() -> str:
    return os.path.join(os.environ.get("BENCH_OUT") or os.path.join(ROOT, "bench", "out"), "splits")


def write_imdb_dev(folder: str | None = None) -> str:
    """imdb_dev() as a JSON Lines file a run config can name; returns its path."""
    return _write(imdb_dev(), folder or default_folder(), "imdb_dev.jsonl")


def write_imdb_test(folder: str | None = None) -> str:
    return _write(imdb_test(), folder or default_folder(), "imdb_test.jsonl")


def fingerprint(rows: list[dict]) -> str:
    """A short digest of a part's texts, printed with every report so a reader can check the rows."""
    h = hashlib.sha256()
    for t in sorted(text_hash(r["text"]) for r in rows):
        h.update(t.encode())
    return h.hexdigest()[:12]
