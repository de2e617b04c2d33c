"""Dev/test discipline (bench/splits.py): the parts are fixed and disjoint, and no tuning script can
read a test part, by its source or at run time."""
from __future__ import annotations

import ast
import json
import os
import random
import subprocess
import sys

import pytest

from conftest import ROOT, needs_imdb_sample

from bench import splits


def _write_reviews(folder, n, seed=0, n_test=None):
    """n synthetic reviews in a shuffled file, and a test-hash file naming n_test of them."""
    rows = [{"text": f"review number {i} " + "x" * (i % 7), "label": i % 2} for i in range(n)]
    random.Random(seed).shuffle(rows)
    with open(os.path.join(folder, splits.IMDB_FILE), "w", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in rows) + "\n")
    chosen = sorted(rows, key=lambda r: r["text"])[: (n_test or n // 4)]
    hashes = os.path.join(folder, "test_part.txt")
    with open(hashes, "w", encoding="utf-8") as fh:
        fh.write("# comment lines are skipped\n" + "\n".join(splits.text_hash(r["text"])[:20] for r in chosen) + "\n")
    return rows, hashes


def test_imdb_parts_are_disjoint_complete_and_independent_of_file_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    rows, hashes = _write_reviews(a, 1300, seed=0)
    _write_reviews(b, 1300, seed=1)  # same reviews, another order
    monkeypatch.setenv("BENCH_DATA_DIR", str(a))
    monkeypatch.setenv("BENCH_IMDB_TEST_HASHES", hashes)
    dev, test = splits.imdb_dev(), splits.imdb_test()
    assert len(test) == 325 and len(dev) == 975
    dev_t, test_t = {r["text"] for r in dev}, {r["text"] for r in test}
    assert not dev_t & test_t
    assert dev_t | test_t == {r["text"] for r in rows}
    monkeypatch.setenv("BENCH_DATA_DIR", str(b))
    assert {r["text"] for r in splits.imdb_test()} == test_t
    assert splits.fingerprint(splits.imdb_test()) == splits.fingerprint(test)


def test_a_changed_data_file_is_refused_not_recut(tmp_path, monkeypatch):
    _, hashes = _write_reviews(tmp_path, 400)
    with open(os.path.join(tmp_path, splits.IMDB_FILE), encoding="utf-8") as fh:
        lines = fh.read().split("\n")
    with open(os.path.join(tmp_path, splits.IMDB_FILE), "w", encoding="utf-8") as fh:
        fh.write("\n".join(line.replace("review number", "a review numbered") for line in lines))
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("BENCH_IMDB_TEST_HASHES", hashes)
    with pytest.raises(ValueError, match="not the file the cut was made for"):
        splits.imdb_dev()


@needs_imdb_sample
def test_the_real_imdb_split_is_the_documented_one():
    dev, test = splits.imdb_dev(), splits.imdb_test()
    assert (len(dev), len(test)) == (3000, 1000)
    assert sum(r["label"] for r in test) == 500
    assert splits.fingerprint(test) == "66084e919a18"


@needs_imdb_sample
def test_the_test_part_is_what_the_shipped_config_never_read():
    """examples/lora_imdb.yaml's own split (seed 42) trains on 2,000 rows and validates on 1,000:
    none of them is a test review."""
    from core import data
    from core.config import load_config
    cfg = load_config(os.path.join(ROOT, "examples", "lora_imdb.yaml"))
    cfg = cfg.with_overrides([f"data.source={os.path.join(splits.data_dir(), splits.IMDB_FILE)}"])
    loaded = data.load_rows(cfg.data, seed=cfg.train.seed)
    read = {r["text"] for r in loaded.train} | {r["text"] for r in loaded.val}
    assert len(read) == 3000 and not read & {r["text"] for r in splits.imdb_test()}


def _names_in(path: str) -> set[str]:
    tree = ast.parse(open(os.path.join(ROOT, path), encoding="utf-8").read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.alias):
            found.add(node.name.split(".")[-1])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node is not tree.body[0].value:
            found.update(t for t in splits.TEST_NAMES if t in node.value)
    return found


@pytest.mark.parametrize("script", splits.TUNING_SCRIPTS)
def test_no_tuning_script_names_a_test_part(script):
    assert not _names_in(script) & set(splits.TEST_NAMES), script


def test_a_report_script_does_name_the_test_part():
    """The check above can fail: the report scripts use exactly those names."""
    assert "imdb_test" in _names_in("bench/imdb_report.py") | {"write_imdb_test"} & _names_in("bench/imdb_report.py")
    assert {"probe_facts", "probe_general"} <= _names_in("bench/facts_probe.py")


@pytest.mark.parametrize("module", ["bench.imdb_defaults", "bench.facts_dev"])
def test_a_tuning_script_cannot_read_a_test_part_at_run_time(module, tmp_path):
    _, hashes = _write_reviews(tmp_path, 1100, n_test=1000)
    code = (f"import {module}\nfrom bench import splits\n"
            "try:\n    splits.imdb_test()\nexcept splits.TestSplitRefused as e:\n    print('refused:', e)\n"
            "print('dev', len(splits.imdb_dev()))")
    env = {**os.environ, "BENCH_DATA_DIR": str(tmp_path), "PYTHONPATH": ROOT, "BENCH_IMDB_TEST_HASHES": hashes}
    env.pop("BENCH_TUNING_ONLY", None)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "refused: imdb_test is a test part" in out.stdout
    assert "dev 100" in out.stdout


@pytest.mark.slow  # a fresh interpreter builds the config (~9 s on one busy core)
def test_imdb_defaults_trains_and_validates_on_dev_rows_only(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    _, hashes = _write_reviews(data, 1100, n_test=1000)
    code = ("import json, sys\nfrom bench import imdb_defaults, splits\n"
            f"cfg = imdb_defaults.build_config('examples/lora_imdb.yaml', [], {str(tmp_path / 'w')!r})\n"
            "print(json.dumps({'source': cfg.data.source, 'eval': cfg.data.eval_source, 'val_share': cfg.data.val_share}))")
    env = {**os.environ, "BENCH_DATA_DIR": str(data), "PYTHONPATH": ROOT, "BENCH_IMDB_TEST_HASHES": hashes}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = json.loads(out.stdout.strip().splitlines()[-1])
    assert cfg["eval"] == "" and cfg["val_share"] > 0  # validation comes out of the same dev rows
    read = {json.loads(line)["text"] for line in open(cfg["source"], encoding="utf-8") if line.strip()}
    monkeypatch.setenv("BENCH_DATA_DIR", str(data))
    monkeypatch.setenv("BENCH_IMDB_TEST_HASHES", hashes)
    test = {r["text"] for r in splits.imdb_test()}
    assert len(read) == 100 and not read & test


# ------------------------------------------------------------------------------ the facts lesson

ASSETS = os.path.join(ROOT, "assets", "data")


def _rows(name):
    with open(os.path.join(ASSETS, name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh.read().split("\n") if line.strip()]


def _norm(text):
    return " ".join(text.lower().replace("?", "").split())


def test_fresh_paraphrases_are_new_questions_about_the_mini_facts():
    from core import data
    fresh = _rows("facts_fresh.jsonl")
    known = {_norm(r["prompt"]) for r in _rows("facts.jsonl")}  # train and older held-out rows
    assert not {_norm(r["prompt"]) for r in fresh} & known
    mini = {r["fact_id"] for r in data.builtin_heldout("facts-mini")}
    assert {r["fact_id"] for r in fresh} == mini and len(fresh) == 2 * len(mini)
    facts = {r["fact_id"]: r for r in _rows("facts.jsonl")}
    for r in fresh:  # the same answer and keywords as the fact's own rows, and no keyword given away
        assert r["keywords"] == facts[r["fact_id"]]["keywords"]
        assert not any(k.lower() in r["prompt"].lower() for k in r["keywords"]), r


def test_broad_general_set_is_of_other_kinds_than_rehearsal():
    broad = _rows("general_broad.jsonl")
    assert len(broad) >= 40 and len({r["topic"] for r in broad}) >= 5
    rehearsal = _rows("rehearsal.jsonl")
    old = _rows("general_questions.jsonl")
    seen = {_norm(r["prompt"]) for r in rehearsal + old}
    assert not {_norm(r["prompt"]) for r in broad} & seen
    taught = " ".join(r["response"].lower() for r in rehearsal)
    old_answers = {k.lower() for r in old for k in r["keywords"]}
    for r in broad:  # no question whose answer a training row or the older set already spells out
        assert r["keywords"] and not any(k.lower() in taught for k in r["keywords"] if len(k) > 2), r
        assert not {k.lower() for k in r["keywords"]} & old_answers, r
    assert not any("capital of" in r["prompt"].lower() or "planet" in r["prompt"].lower() for r in broad)


def test_the_probe_uses_the_test_sets():
    from core import data, probe
    facts = probe.probe_facts("facts-mini")
    assert {r["prompt"] for r in facts} == {r["prompt"] for r in _rows("facts_fresh.jsonl")}
    full = probe.probe_facts("facts")  # the other 60 facts keep their held-out rows
    assert len(full) == len(data.builtin_heldout("facts"))
    assert {r["prompt"] for r in facts} <= {r["prompt"] for r in full}
    assert [r["prompt"] for r in probe.probe_general()] == [r["prompt"] for r in _rows("general_broad.jsonl")]


def test_facts_dev_reads_only_the_older_sets():
    from bench.facts_dev import dev_sets  # importing it marks this test process tuning-only: undo
    os.environ.pop("BENCH_TUNING_ONLY", None)
    splits._TUNING_ONLY = False
    facts, general = dev_sets("facts-mini")
    fresh = {r["prompt"] for r in _rows("facts_fresh.jsonl")} | {r["prompt"] for r in _rows("general_broad.jsonl")}
    assert not ({r["prompt"] for r in facts} | {r["prompt"] for r in general}) & fresh
