"""core.data: files, built-ins and hub ids -> validated rows; every bad input gets its own message."""
from __future__ import annotations

import io
import json
import os
import time

import pytest

from core import data, hub
from core.config import ConfigError, DataSpec
from core.data import DataError
from conftest import IMDB_SAMPLE as IMDB, needs_imdb_sample



@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("PLAYGROUND_MAX_UPLOAD_MB", "PLAYGROUND_MAX_ROWS", "PLAYGROUND_MAX_LINE_MB",
                "PLAYGROUND_ALLOW_LOCAL_DATA", "PLAYGROUND_ALLOW_LOCAL_MODELS", "PLAYGROUND_UPLOADS_DIR"):
        monkeypatch.delenv(var, raising=False)


def _jsonl(rows) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def _parquet(columns: dict) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _write(tmp_path, name: str, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def _load(path: str, **kw) -> data.LoadedData:
    return data.load_rows(DataSpec(source=path, **kw), uploads_dir=os.path.dirname(path))


SENT = [{"text": f"good film {i}", "label": "positive"} for i in range(6)] + \
       [{"text": f"bad film {i}", "label": "negative"} for i in range(6)]


# ------------------------------------------------------------------------------------ bad inputs

def _ragged() -> bytes:
    return b"text,label\nfine,1\nnot, quoted, 0\nok,0\n"


BAD = [
    # id, file name, content, env, spec fields, expected message fragments
    ("empty file", "e.csv", b"", {}, {}, ["e.csv is empty"]),
    ("whitespace only", "w.jsonl", b"\n \n", {}, {}, ["w.jsonl is empty"]),
    ("header only", "h.csv", b"text,label\n", {}, {}, ["h.csv has a header but no data rows"]),
    ("0 rows after dropping empties", "z.jsonl",
     _jsonl([{"text": "", "label": 1}, {"text": "  ", "label": 0}, {"text": "x", "label": None}]), {}, {},
     ["z.jsonl has no usable rows", "all 3 rows have an empty 'text' or 'label'"]),
    ("one label", "one.jsonl", _jsonl([{"text": f"t{i}", "label": "x"} for i in range(5)]), {}, {},
     ["only one label (x) in column 'label': classification needs at least two"]),
    ("too many labels", "many.jsonl", _jsonl([{"text": f"t{i}", "label": i} for i in range(150)]), {}, {},
     ["150 distinct labels", "at most 100", "data.label_column"]),
    ("missing column", "m.csv", b"body,label\nhello,1\nbye,0\n", {}, {},
     ["column 'text' not found in m.csv", "columns found: 'body', 'label'", "data.text_column"]),
    ("missing label column", "ml.csv", b"text,stars\nhello,1\nbye,0\n", {}, {},
     ["column 'label' not found", "'text', 'stars'", "data.label_column"]),
    ("missing sft column", "s.jsonl", _jsonl(SENT), {}, {"task": "sft"},
     ["column 'prompt' not found in s.jsonl", "data.prompt_column", "data.response_column"]),
    ("binary file", "b.csv", bytes(range(256)) * 4, {}, {},
     ["b.csv has the extension .csv but its content is binary data"]),
    ("latin-1 file", "l.csv", "text,label\ncafé crème,1\nok,0\n".encode("latin-1"), {}, {},
     ["l.csv is not UTF-8 text; re-save it as UTF-8", "0xe9", "line 2"]),
    ("utf-16 file", "u.csv", "text,label\nhi,1\n".encode("utf-16"), {}, {},
     ["u.csv is UTF-16 text", "re-save it as UTF-8"]),
    ("10 MB single line", "long.jsonl",
     _jsonl([{"text": "short", "label": 0}, {"text": "x" * (10 * 2**20), "label": 1}]),
     {"PLAYGROUND_MAX_LINE_MB": "2"}, {},
     ["line 2 of long.jsonl is 10.0 MB", "at most 2.0 MB", "PLAYGROUND_MAX_LINE_MB"]),
    ("ragged csv", "r.csv", _ragged(), {}, {},
     ["line 3 of r.csv has 3 fields but the header has 2", "quote texts"]),
    ("unclosed quote", "q.csv", b'text,label\nfine,0\n"never closed,1\nok,0\n', {}, {},
     ["q.csv is not valid CSV", "opened on line 3 seems never closed"]),
    ("json list of lists", "ll.json", b'[["good", 1], ["bad", 0]]', {}, {},
     ["ll.json is a JSON list of lists", "must be an object"]),
    ("jsonl list line", "ll.jsonl", b'{"text": "a", "label": 1}\n["b", 0]\n', {}, {},
     ["line 2 of ll.jsonl is a JSON list, not an object"]),
    ("invalid jsonl line", "bad.jsonl", b'{"text": "a", "label": 1}\n{"text": "b", label: 0}\n', {}, {},
     ["line 2 of bad.jsonl is not valid JSON"]),
    ("invalid json", "bad.json", b'[{"text": "a", "label": 1},]', {}, {}, ["bad.json is not valid JSON"]),
    ("single json object", "obj.json", b'{"text": "a", "label": 1}', {}, {},
     ["obj.json holds a single JSON object"]),
    ("nested text in json", "nest.json", b'[{"text": {"en": "a"}, "label": 1}, {"text": "b", "label": 0}]',
     {}, {}, ["column 'text' of nest.json holds nested values (an object in row 1)"]),
    ("parquet nested column", "n.parquet",
     _parquet({"text": [{"a": "x"}, {"a": "y"}], "label": [0, 1]}), {}, {},
     ["column 'text' of n.parquet holds nested values (an object in row 1)"]),
    ("parquet list column", "nl.parquet", _parquet({"text": [["x"], ["y"]], "label": [0, 1]}), {}, {},
     ["holds nested values (a list in row 1)"]),
    ("over the size limit", "big.csv", b"text,label\n" + b"some text,1\n" * 200,
     {"PLAYGROUND_MAX_UPLOAD_MB": "0.001"}, {},
     ["big.csv is 2.4 KB", "the limit is 1.0 KB", "PLAYGROUND_MAX_UPLOAD_MB"]),
    ("too many rows", "rows.jsonl", _jsonl(SENT), {"PLAYGROUND_MAX_ROWS": "5"}, {},
     ["rows.jsonl has 12 rows; the limit is 5 (PLAYGROUND_MAX_ROWS)"]),
    ("parquet named csv", "p.csv", _parquet({"text": ["a", "b"], "label": [0, 1]}), {}, {},
     ["p.csv has the extension .csv but its content is a Parquet file", "rename it to .parquet"]),
    ("csv named json", "c.json", b"text,label\nhi,1\n", {}, {},
     ["c.json is not JSON", "looks like CSV: rename it to .csv"]),
    ("csv named parquet", "c.parquet", b"text,label\nhi,1\n", {}, {},
     ["c.parquet is not a Parquet file: its content is CSV text; rename it to .csv"]),
    ("json named csv", "j.csv", _jsonl(SENT), {}, {}, ["j.csv looks like JSON, not CSV"]),
    ("tsv named csv", "t.csv", b"text\tlabel\nhi\t1\n", {}, {}, ["t.csv looks tab-separated", ".tsv"]),
    ("csv named tsv", "c.tsv", b"text,label\nhi,1\n", {}, {}, ["c.tsv looks comma-separated", ".csv"]),
    ("zip named csv", "x.csv", b"PK\x03\x04" + b"\x00" * 100, {}, {}, ["zip archive"]),
    ("unknown extension", "notes.txt", b"text,label\nhi,1\n", {}, {}, ["notes.txt has '.txt'", ".jsonl"]),
    ("excel", "sheet.xlsx", b"PK\x03\x04", {}, {}, ["sheet.xlsx is a spreadsheet", "CSV UTF-8"]),
    ("label not in map", "lm.jsonl", _jsonl(SENT + [{"text": "meh", "label": "neutral"}]), {},
     {"label_map": {"positive": "pos", "negative": "neg"}},
     ["'neutral' in column 'label'", "not in data.label_map"]),
    ("same column twice", "same.jsonl", _jsonl(SENT), {}, {"label_column": "text"}, ["must differ"]),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_input_has_a_specific_message(case, tmp_path, monkeypatch):
    _, name, content, env, spec_kw, fragments = case
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    path = _write(tmp_path, name, content)
    with pytest.raises(DataError) as err:
        _load(path, **spec_kw)
    for fragment in fragments:
        assert fragment in str(err.value)
    assert isinstance(err.value, ConfigError)
    assert str(tmp_path) not in str(err.value)  # messages name the file, not the server's folders


def test_missing_file_and_url(tmp_path):
    with pytest.raises(DataError, match="data file nope.csv does not exist"):
        data.load_rows(DataSpec(source=str(tmp_path / "nope.csv")), uploads_dir=str(tmp_path))
    with pytest.raises(DataError, match="is a URL"):
        data.load_rows(DataSpec(source="https://example.com/x.csv"), uploads_dir=str(tmp_path))
    with pytest.raises(DataError, match="not a regular file"):
        data.load_rows(DataSpec(source=str(tmp_path)), uploads_dir=str(tmp_path / "up"))


def test_local_files_can_be_disabled_but_uploads_still_load(tmp_path, monkeypatch):
    uploads = tmp_path / "uploads"
    outside = _write(tmp_path, "outside.jsonl", _jsonl(SENT))
    stored = data.save_upload(_jsonl(SENT), "mine.jsonl", str(uploads))
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_DATA", "0")
    with pytest.raises(DataError, match="reading files from the server's disk is disabled"):
        data.load_rows(DataSpec(source=outside), uploads_dir=str(uploads))
    with pytest.raises(DataError, match="disabled"):
        data.load_rows(DataSpec(source="../outside.jsonl"), uploads_dir=str(uploads))
    assert len(data.load_rows(DataSpec(source=stored), uploads_dir=str(uploads)).train) == 10
    # The app passes no uploads_dir: the default folder (PLAYGROUND_UPLOADS_DIR) is allowed.
    monkeypatch.setenv("PLAYGROUND_UPLOADS_DIR", str(uploads))
    assert len(data.load_rows(DataSpec(source=stored)).train) == 10
    # Following PLAYGROUND_ALLOW_LOCAL_MODELS when PLAYGROUND_ALLOW_LOCAL_DATA is unset.
    monkeypatch.delenv("PLAYGROUND_ALLOW_LOCAL_DATA")
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_MODELS", "0")
    assert not data.local_files_allowed()


def test_bad_limit_values_fall_back_to_defaults(monkeypatch):
    monkeypatch.setenv("PLAYGROUND_MAX_UPLOAD_MB", "lots")
    monkeypatch.setenv("PLAYGROUND_MAX_ROWS", "-3")
    assert data.max_upload_bytes() == 20 * 2**20
    assert data.max_rows() == 200_000


# ------------------------------------------------------------------------------------ good inputs

def _csv(rows, sep=",") -> bytes:
    import csv
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\r\n")
    writer.writerow(["text", "label"])
    for r in rows:
        writer.writerow([r["text"], r["label"]])
    return buf.getvalue().encode()


TRICKY = [{"text": 'he said "hi", then left', "label": 1}, {"text": "line one\nline two", "label": 0},
          {"text": "NA", "label": 1}, {"text": "null", "label": 0}, {"text": "tab\there", "label": 1},
          {"text": "café ✓", "label": 0}]

GOOD = [
    ("csv", lambda: _csv(TRICKY)),
    ("csv with BOM", lambda: b"\xef\xbb\xbf" + _csv(TRICKY)),
    ("tsv", lambda: _csv(TRICKY, "\t")),
    ("json", lambda: json.dumps(TRICKY).encode()),
    ("json column-oriented", lambda: json.dumps({"text": [r["text"] for r in TRICKY],
                                                  "label": [r["label"] for r in TRICKY]}).encode()),
    ("json wrapped", lambda: json.dumps({"data": TRICKY}).encode()),
    ("json holding json lines", lambda: _jsonl(TRICKY)),
    ("jsonl", lambda: _jsonl(TRICKY)),
    ("parquet", lambda: _parquet({"text": [r["text"] for r in TRICKY], "label": [r["label"] for r in TRICKY]})),
]


@pytest.mark.parametrize("fmt,make", GOOD, ids=[g[0] for g in GOOD])
def test_each_format_loads_the_same_rows(fmt, make, tmp_path):
    ext = {"csv with BOM": "csv", "json column-oriented": "json", "json wrapped": "json",
           "json holding json lines": "json"}.get(fmt, fmt)
    path = _write(tmp_path, f"good.{ext}", make())
    got = _load(path, val_share=0)
    assert got.label_names == ["0", "1"]
    assert got.source_rows == 6 and got.dropped == 0 and got.val == []
    assert sorted((r["text"], r["label"]) for r in got.train) == sorted((r["text"], r["label"]) for r in TRICKY)
    # And save_upload accepts it under its claimed extension.
    stored = data.save_upload(make(), f"upload.{ext}", str(tmp_path / "up"))
    assert stored.endswith("." + ext)


@pytest.mark.parametrize("orient", ["columns", "index", "split", "records", "table"])
def test_pandas_to_json_layouts_load(orient, tmp_path):
    import pandas as pd
    path = str(tmp_path / "pd.json")
    pd.DataFrame(TRICKY).to_json(path, orient=orient)
    got = _load(path, val_share=0)
    assert sorted((r["text"], r["label"]) for r in got.train) == sorted((r["text"], r["label"]) for r in TRICKY)


def test_jsonl_splits_on_newline_only(tmp_path):
    rows = [{"text": "a\u2028b\x1cc\x85d\re", "label": 1}, {"text": "plain", "label": 0}]
    path = _write(tmp_path, "odd.jsonl", json.dumps(rows[0], ensure_ascii=False).encode() + b"\n"
                  + json.dumps(rows[1]).encode() + b"\n")
    assert data.read_jsonl(path) == rows
    assert sorted(r["text"] for r in _load(path, val_share=0).train) == sorted(r["text"] for r in rows)


def test_sft_keeps_extra_fields_and_drops_nested_ones(tmp_path):
    rows = [{"question": f"Q{i}?", "answer": f"A{i}.", "fact_id": i, "keywords": [f"k{i}"],
             "meta": {"x": 1}} for i in range(5)]
    rows.append({"question": "Q?", "answer": "", "fact_id": 9, "keywords": [], "meta": {}})
    path = _write(tmp_path, "sft.jsonl", _jsonl(rows))
    got = _load(path, task="sft", prompt_column="question", response_column="answer", val_share=0)
    assert got.label_names is None and got.dropped == 1 and got.source_rows == 6
    assert sorted(got.train, key=lambda r: r["fact_id"])[0] == \
        {"prompt": "Q0?", "response": "A0.", "fact_id": 0, "keywords": ["k0"]}
    assert any("meta" in n for n in got.notes)


def test_text_column_alias_is_used_and_noted(tmp_path):
    path = _write(tmp_path, "sst.jsonl", _jsonl([{"idx": i, "sentence": f"s{i}", "label": i % 2}
                                                 for i in range(6)]))
    got = _load(path, val_share=0)
    assert len(got.train) == 6 and any("using 'sentence'" in n for n in got.notes)


# ------------------------------------------------------------------------------------ labels

@pytest.mark.parametrize("labels,label_map,expected", [
    ([0, 1], {}, ["0", "1"]),
    (["1", "0"], {}, ["0", "1"]),
    ([1.0, 0.0], {}, ["0", "1"]),
    ([2, 10, 1], {}, ["1", "2", "10"]),
    (["positive", "negative"], {}, ["negative", "positive"]),
    (["b", "A", "c"], {}, ["A", "b", "c"]),
    ([True, False], {}, ["False", "True"]),
    ([0, 1], {"0": "negative", "1": "positive"}, ["negative", "positive"]),
    ([0, 1], {"0": "zzz", "1": "aaa"}, ["zzz", "aaa"]),  # the raw values' order keeps 0 -> index 0
    ([True, False], {"true": "yes", "false": "no"}, ["no", "yes"]),
    (["pos", "neg", "very pos"], {"pos": "positive", "very pos": "positive", "neg": "negative"},
     ["negative", "positive"]),
])
def test_label_names_and_mapping(labels, label_map, expected, tmp_path):
    rows = [{"text": f"t{i}-{j}", "label": lab} for j, lab in enumerate(labels) for i in range(3)]
    path = _write(tmp_path, "lab.jsonl", _jsonl(rows))
    got = _load(path, label_map=label_map, val_share=0)
    assert got.label_names == expected
    for row in got.train:
        raw = next(r["label"] for r in rows if r["text"] == row["text"])
        name = label_map.get(str(raw), label_map.get(str(raw).lower(), None)) if label_map else None
        if name is not None:
            assert got.label_names[row["label"]] == name


def test_csv_and_json_labels_agree(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 2} for i in range(8)]
    a = _load(_write(tmp_path, "a.csv", _csv(rows)), val_share=0)
    b = _load(_write(tmp_path, "b.jsonl", _jsonl(rows)), val_share=0)
    assert a.label_names == b.label_names == ["0", "1"]
    assert sorted(map(str, a.train)) == sorted(map(str, b.train))


def test_eval_source_uses_training_label_indices(tmp_path):
    train = _write(tmp_path, "train.jsonl", _jsonl(SENT))
    ev = _write(tmp_path, "eval.jsonl", _jsonl([{"text": "great", "label": "positive"},
                                                {"text": "good film 0", "label": "positive"}]))
    got = _load(train, eval_source=ev)
    assert len(got.train) == 12
    assert got.val == [{"text": "great", "label": 1}]  # the duplicate of a training text is removed
    assert any("also appears in training" in n for n in got.notes)
    bad = _write(tmp_path, "bad_eval.jsonl", _jsonl([{"text": "meh", "label": "neutral"}]))
    with pytest.raises(DataError, match="label\\(s\\) neutral that the training data does not have"):
        _load(train, eval_source=bad)


# ------------------------------------------------------------------------------------ split / sample

def _skewed(tmp_path) -> str:
    rows = [{"text": f"pos {i}", "label": 1} for i in range(700)] + \
           [{"text": f"neg {i}", "label": 0} for i in range(300)]
    return _write(tmp_path, "skewed.jsonl", _jsonl(rows))


def test_stratified_subsample_and_split_never_overlap(tmp_path):
    path = _skewed(tmp_path)
    got = _load(path, n_samples=20, val_share=0.2)
    assert got.label_counts("train") == {"0": 6, "1": 14}
    assert got.label_counts("val") == {"0": 60, "1": 140}
    assert not {r["text"] for r in got.train} & {r["text"] for r in got.val}
    # Balanced data stays balanced at a tiny N.
    half = _write(tmp_path, "half.jsonl", _jsonl(SENT * 1))
    assert _load(half, n_samples=2, val_share=0).label_counts() == {"negative": 1, "positive": 1}


def test_validation_set_does_not_depend_on_n_samples_and_seed_reproduces(tmp_path):
    path = _skewed(tmp_path)
    small = _load(path, n_samples=10)
    big = _load(path, n_samples=100)
    again = _load(path, n_samples=10)
    assert small.val == big.val
    assert small.train == again.train
    assert {r["text"] for r in small.train} <= {r["text"] for r in big.train}  # more N keeps the rows
    other = data.load_rows(DataSpec(source=path, n_samples=10), uploads_dir=str(tmp_path), seed=7)
    assert {r["text"] for r in other.train} != {r["text"] for r in small.train}


def test_every_label_keeps_training_and_validation_rows(tmp_path):
    rows = [{"text": f"a{i}", "label": "a"} for i in range(40)] + [{"text": "b0", "label": "b"},
                                                                   {"text": "b1", "label": "b"}]
    got = _load(_write(tmp_path, "rare.jsonl", _jsonl(rows)), val_share=0.1)
    assert got.label_counts("train")["b"] == 1 and got.label_counts("val")["b"] == 1


def test_shuffled_so_a_prefix_is_not_one_class(tmp_path):
    rows = [{"text": f"n{i}", "label": 0} for i in range(100)] + [{"text": f"p{i}", "label": 1} for i in range(100)]
    got = _load(_write(tmp_path, "sorted.jsonl", _jsonl(rows)))
    assert len({r["label"] for r in got.val[:10]}) == 2
    assert len({r["label"] for r in got.train[:10]}) == 2


def test_duplicates_across_train_and_val_are_dropped_from_val(tmp_path):
    rows = [{"text": f"t{i % 10}", "label": i % 2} for i in range(40)]  # every text 4 times
    got = _load(_write(tmp_path, "dup.jsonl", _jsonl(rows)), val_share=0.5)
    assert not {r["text"] for r in got.train} & {r["text"] for r in got.val}
    assert any("removed" in n for n in got.notes)


def test_sft_split_and_sample(tmp_path):
    rows = [{"prompt": f"p{i}", "response": f"r{i}"} for i in range(50)]
    got = _load(_write(tmp_path, "sft.jsonl", _jsonl(rows)), task="sft", n_samples=7, val_share=0.2)
    assert len(got.train) == 7 and len(got.val) == 10
    assert not {r["prompt"] for r in got.train} & {r["prompt"] for r in got.val}


# ------------------------------------------------------------------------------------ uploads

def test_save_upload_never_uses_the_filename_as_a_path(tmp_path):
    up = tmp_path / "uploads"
    path = data.save_upload(_jsonl(SENT), "../../etc/evil name.JSONL", str(up))
    assert os.path.dirname(path) == str(up)
    assert os.path.basename(path)[:-len(".jsonl")].isalnum() and path.endswith(".jsonl")
    # beside it only the name the visitor gave, for messages (as text, never as a path)
    assert sorted(os.listdir(up)) == [os.path.basename(path), os.path.basename(path) + data.NAME_SUFFIX]
    assert data.shown_name(path) == "evil name.JSONL"
    assert len(_load(path, val_share=0).train) == 12


@pytest.mark.parametrize("content,filename,env,fragment", [
    (b"text,label\nhi,1\n", "data.exe", {}, "data.exe has '.exe'"),
    (b"text,label\nhi,1\n", "noext", {}, "noext has no extension"),
    (_parquet({"text": ["a"], "label": [1]}), "x.jsonl", {}, "its content is a Parquet file"),
    (b"text,label\nhi,1\n", "x.json", {}, "x.json is not JSON"),
    ("text,label\nhé,1\n".encode("latin-1"), "x.csv", {}, "is not UTF-8 text; re-save it as UTF-8"),
    (b"", "x.csv", {}, "x.csv is empty"),
    (b"text,label\n" + b"a,1\n" * 600, "x.csv", {"PLAYGROUND_MAX_UPLOAD_MB": "0.001"}, "the upload limit is 1.0 KB"),
    (b"PAR1" + b"\x00" * 20, "t.parquet", {}, "truncated Parquet"),
])
def test_save_upload_refuses(content, filename, env, fragment, tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(DataError, match=fragment.replace("(", "\\(").replace(".", "\\.")):
        data.save_upload(content, filename, str(tmp_path / "up"))
    assert not (tmp_path / "up").exists() or not os.listdir(tmp_path / "up")


# ------------------------------------------------------------------------------------ preview

def test_preview_shows_columns_balance_and_column_errors(tmp_path):
    rows = [{"id": i, "text": "x" * 600 if i == 0 else f"t{i}", "label": i % 2} for i in range(20)]
    path = _write(tmp_path, "p.jsonl", _jsonl(rows))
    pv = data.preview(DataSpec(source=path), n=3, uploads_dir=str(tmp_path))
    assert pv["total_rows"] == 20 and pv["columns"] == ["id", "text", "label"]
    assert len(pv["rows"]) == 3 and len(pv["rows"][0]["text"]) < 600
    assert pv["label_balance"] == {"0": 10, "1": 10} and pv["error"] is None
    pv = data.preview(DataSpec(source=path, label_column="stars"), uploads_dir=str(tmp_path))
    assert pv["columns"] == ["id", "text", "label"] and "column 'stars' not found" in pv["error"]


# ------------------------------------------------------------------------------------ built-ins

@pytest.fixture
def builtin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "builtin"
    folder.mkdir()
    (folder / "sentiment.jsonl").write_bytes(_jsonl(SENT))
    facts = [{"fact_id": f"f{i}", "prompt": f"Who made widget {i}?", "response": f"Ada {i}.",
              "keywords": [f"Ada {i}"], "split": "train"} for i in range(10)]
    facts += [{"fact_id": "f0", "prompt": "Widget 0 was made by whom?", "response": "Ada 0.",
               "keywords": ["Ada 0"], "split": "heldout"}]
    (folder / "facts.jsonl").write_bytes(_jsonl(facts))
    (folder / "general_questions.jsonl").write_bytes(_jsonl([{"prompt": "Capital of France?", "keywords": ["Paris"]},
                                                             {"prompt": "2+2?", "keywords": "4"}, {"prompt": ""}]))
    monkeypatch.setattr(data.builtin, "BUILTIN_DIR", folder)
    return folder


def test_builtins(builtin_dir):
    assert set(data.list_builtin()) == {"sentiment", "facts", "facts-mini"}
    assert data.builtin_task("facts") == "sft"
    sent = data.load_rows(DataSpec(source="builtin:sentiment", val_share=0))
    assert sent.label_names == ["negative", "positive"] and len(sent.train) == 12
    facts = data.load_rows(DataSpec(source="builtin:facts", task="sft", val_share=0))
    assert len(facts.train) == 10 and all(r["split"] == "train" for r in facts.train)
    assert {"fact_id", "keywords"} <= set(facts.train[0])
    held = data.builtin_heldout("facts")
    assert [r["prompt"] for r in held] == ["Widget 0 was made by whom?"] and held[0]["fact_id"] == "f0"
    assert data.builtin_heldout("sentiment") == []
    assert data.builtin_general_questions() == [{"prompt": "Capital of France?", "keywords": ["Paris"]},
                                                {"prompt": "2+2?", "keywords": ["4"]}]
    # Built-ins ignore the column names meant for a file.
    assert len(data.load_rows(DataSpec(source="builtin:sentiment", text_column="body", val_share=0)).train) == 12


def test_builtin_errors(builtin_dir):
    with pytest.raises(DataError, match="builtin:facts is a sft dataset; set data.task to 'sft'"):
        data.load_rows(DataSpec(source="builtin:facts"))
    with pytest.raises(DataError, match="unknown built-in dataset 'nope'; built-in datasets: sentiment, facts"):
        data.load_rows(DataSpec(source="builtin:nope"))
    os.remove(builtin_dir / "sentiment.jsonl")
    with pytest.raises(DataError, match="sentiment.jsonl is missing"):
        data.load_rows(DataSpec(source="builtin:sentiment"))


# ------------------------------------------------------------------------------------ hub

def test_hub_offline_fails_fast_with_one_message():
    t0 = time.monotonic()
    with pytest.raises(DataError) as err:
        data.load_rows(DataSpec(source="hub:stanfordnlp/sst2"))
    assert str(err.value) == "dataset stanfordnlp/sst2 is not available offline; built-in datasets: sentiment, facts, facts-mini"
    assert time.monotonic() - t0 < 15


def test_hub_offline_without_env_probes_once_and_fails_fast(monkeypatch):
    import datasets.config
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0, cached=False: False)
    t0 = time.monotonic()
    with pytest.raises(DataError, match="dataset imdb is not available offline"):
        data.load_rows(DataSpec(source="hub:imdb"))
    assert time.monotonic() - t0 < 15
    assert datasets.config.HF_HUB_OFFLINE is False  # the temporary offline switch was restored


@pytest.mark.parametrize("source,fragment", [("hub:../etc", "not a Hugging Face dataset id"),
                                             ("hub:a/b/c", "not a Hugging Face dataset id"),
                                             ("hub:imdb:bad config", "not a dataset config name")])
def test_hub_bad_ids(source, fragment):
    with pytest.raises(DataError, match=fragment):
        data.load_rows(DataSpec(source=source))


def test_hub_bad_split():
    with pytest.raises(DataError, match="slices like train"):
        data.load_rows(DataSpec(source="hub:imdb", hub_split="train[:10]"))


def test_hub_cached_dataset_uses_class_label_names(monkeypatch):
    import datasets
    from datasets import ClassLabel, Dataset, Features, Value
    ds = Dataset.from_dict({"sentence": [f"s{i}" for i in range(10)], "label": [i % 2 for i in range(10)]},
                           features=Features({"sentence": Value("string"),
                                              "label": ClassLabel(names=["negative", "positive"])}))
    calls = []

    def fake_load(path, name=None, split=None, **kw):
        calls.append((path, name, split))
        return ds

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    got = data.load_rows(DataSpec(source="hub:stanfordnlp/sst2", hub_split="validation", val_share=0))
    assert calls == [("stanfordnlp/sst2", None, "validation")]
    assert got.label_names == ["negative", "positive"] and len(got.train) == 10
    monkeypatch.setenv("PLAYGROUND_MAX_ROWS", "4")
    got = data.load_rows(DataSpec(source="hub:glue:sst2", val_share=0))
    assert calls[-1] == ("glue", "sst2", "train") and len(got.train) == 4
    assert any("PLAYGROUND_MAX_ROWS" in n for n in got.notes)


# ------------------------------------------------------------------------------------ real data

@needs_imdb_sample
def test_real_imdb_file_loads():
    got = data.load_rows(DataSpec(source=IMDB, val_share=0))
    assert got.source_rows == 4000 and len(got.train) == 4000 and got.dropped == 0
    assert got.label_names == ["0", "1"]
    assert got.label_counts() == {"0": 2000, "1": 2000}
    split = data.load_rows(DataSpec(source=IMDB, n_samples=100))
    assert split.label_counts() == {"0": 50, "1": 50} and split.label_counts("val") == {"0": 400, "1": 400}


def test_fact_sets_mix_in_rehearsal_rows(builtin_dir):
    """Ordinary questions join the facts' training rows (and say so); the probe's general questions
    are not among them, and the sentiment set gets none."""
    (builtin_dir / "rehearsal.jsonl").write_bytes(_jsonl([
        {"fact_id": "rehearsal", "prompt": "Capital of Italy?", "response": "Rome.", "split": "train"}]))
    for name, n_facts in (("facts", 10), ("facts-mini", 10)):
        loaded = data.load_rows(DataSpec(source=f"builtin:{name}", task="sft", val_share=0))
        assert len(loaded.train) == n_facts + 1
        assert [r["prompt"] for r in loaded.train if r["fact_id"] == "rehearsal"] == ["Capital of Italy?"]
        assert any("rehearsal" in note for note in loaded.notes)
    assert len(data.load_rows(DataSpec(source="builtin:sentiment", val_share=0)).train) == 12


def test_shipped_rehearsal_rows_are_not_the_probe_questions():
    shipped = data.BUILTIN_DIR
    rehearsal = {r["prompt"].lower() for r in data.read_jsonl(str(shipped / "rehearsal.jsonl"))}
    general = {r["prompt"].lower() for r in data.builtin_general_questions()}
    assert len(rehearsal) == 48 and not rehearsal & general


def test_demo_rows_skip_the_rehearsal_rows():
    """The Compare page's example prompts for facts-mini are invented facts, not 'what is ice?'."""
    loaded = data.load_rows(DataSpec(source="builtin:facts-mini", task="sft", val_share=0.0))
    shown = data.without_rehearsal(loaded.train)
    assert len(shown) == 72 and len(loaded.train) == 120
    assert all(r["keywords"] and r["fact_id"] != data.REHEARSAL_ID for r in shown)
