"""Bad input is refused before anything trains, with a message naming the field and what is allowed."""
from __future__ import annotations

import copy
import json

import pytest

import core.build
import core.loop
import core.train as train_mod
from core.config import ConfigError, RunConfig, load_config

# Every Trainer run ends in accelerate's gc.collect(), which with torch/transformers/peft imported
# walks ~500k long-lived library objects (~0.4 s CPU a run, dozens of runs here). Freezing what is
# loaded now keeps the suite fast; objects the tests make later are collected as usual.
import gc  # noqa: E402

from transformers import Trainer  # noqa: E402,F401  (loaded before the freeze)

gc.freeze()


def base_dict(model: str = "minilm", source: str = "builtin:sentiment") -> dict:
    return {"model": {"name": model}, "data": {"source": source, "task": "classification", "max_length": 32},
            "method": {"name": "lora", "params": {}}, "train": {"max_steps": 2, "batch_size": 4}}


def merged(overrides: dict) -> dict:
    d = base_dict()
    for section, value in overrides.items():
        if isinstance(value, dict) and isinstance(d.get(section), dict):
            d[section] = {**d[section], **copy.deepcopy(value)}
        else:
            d[section] = value
    return d


# ------------------------------------------------------------------------------------------------
# Fields: (overrides, fragments the message must contain)
# ------------------------------------------------------------------------------------------------
FIELD_CASES = {
    "r-zero": ({"method": {"params": {"r": 0}}}, ["method.params.r=0", "[1, 256]"]),
    "r-negative": ({"method": {"params": {"r": -4}}}, ["method.params.r=-4", "[1, 256]"]),
    "r-fraction": ({"method": {"params": {"r": 2.5}}}, ["method.params.r=2.5", "whole number"]),
    "r-text": ({"method": {"params": {"r": "eight"}}}, ["method.params.r='eight'", "not a number", "[1, 256]"]),
    "qlora-r-zero": ({"method": {"name": "qlora", "params": {"r": 0}}}, ["method.params.r=0", "[1, 256]"]),
    "alpha-zero": ({"method": {"params": {"alpha": 0}}}, ["method.params.alpha=0", "(0.0, 1024.0]"]),
    "alpha-negative": ({"method": {"params": {"alpha": -1}}}, ["method.params.alpha=-1", "(0.0, 1024.0]"]),
    "dropout-one": ({"method": {"params": {"dropout": 1.0}}}, ["method.params.dropout=1.0", "[0.0, 1.0)"]),
    "dropout-negative": ({"method": {"params": {"dropout": -0.1}}}, ["method.params.dropout=-0.1", "[0.0, 1.0)"]),
    "lr-zero": ({"train": {"learning_rate": 0}}, ["train.learning_rate=0", "(0.0, 1.0]"]),
    "lr-negative": ({"train": {"learning_rate": -1e-4}}, ["train.learning_rate=-0.0001", "(0.0, 1.0]"]),
    "lr-nan": ({"train": {"learning_rate": float("nan")}}, ["train.learning_rate=nan", "(0.0, 1.0]"]),
    "lr-text": ({"train": {"learning_rate": "fast"}}, ["train.learning_rate='fast'", "not a number", "(0.0, 1.0]"]),
    "epochs-zero": ({"train": {"epochs": 0}}, ["train.epochs=0", "(0.0, 100.0]"]),
    "epochs-negative": ({"train": {"epochs": -2}}, ["train.epochs=-2", "(0.0, 100.0]"]),
    "batch-zero": ({"train": {"batch_size": 0}}, ["train.batch_size=0", "[1, 1024]"]),
    "batch-negative": ({"train": {"batch_size": -8}}, ["train.batch_size=-8", "[1, 1024]"]),
    "batch-bool": ({"train": {"batch_size": True}}, ["train.batch_size=True", "[1, 1024]"]),
    "max-length": ({"data": {"max_length": 4}}, ["data.max_length=4", "[8, 8192]"]),
    "val-share": ({"data": {"val_share": 0.95}}, ["data.val_share=0.95", "[0.0, 0.9]"]),
    "task": ({"data": {"task": "translation"}}, ["data.task='translation'", "classification", "sft"]),
    "scheduler": ({"train": {"lr_scheduler": "wild"}}, ["train.lr_scheduler='wild'", "cosine"]),
    "device": ({"model": {"name": "minilm", "device": "tpu"}}, ["model.device='tpu'", "cuda"]),
    "unknown-method": ({"method": {"name": "lorax"}}, ["method 'lorax' is unknown", "lora", "qlora", "ia3"]),
    "unknown-hyperparameter": ({"method": {"params": {"rank": 4}}}, ["method lora", "'rank'", "'r'"]),
    "params-not-mapping": ({"method": {"params": [1, 2]}}, ["method.params", "mapping"]),
    "unknown-section": ({"modle": {"name": "minilm"}}, ["unknown config section", "'modle'", "model, data"]),
    "unknown-train-field": ({"train": {"lr": 0.1}}, ["train: unknown field", "'lr'", "'learning_rate'"]),
    "unknown-data-field": ({"data": {"column": "x"}}, ["data: unknown field", "'column'", "'text_column'"]),
    "unknown-model-field": ({"model": {"name": "minilm", "dev": 1}}, ["model: unknown field", "'dev'", "'device'"]),
    "section-not-mapping": ({"train": 5}, ["train"]),
    "empty-model": ({"model": {"name": " "}}, ["model.name is empty"]),
    "task-unsupported": ({"method": {"name": "linear_head"}, "data": {"task": "sft"}},
                         ["linear_head", "'sft'", "classification"]),
    "targets-not-text": ({"method": {"params": {"targets": ["q_proj"]}}}, ["method.params.targets", "auto"]),
}


@pytest.mark.parametrize("overrides,fragments", list(FIELD_CASES.values()), ids=list(FIELD_CASES))
def test_bad_field_is_refused_naming_field_and_range(overrides, fragments):
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict(merged(overrides))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message  # one line: the CLI prints it after "error:"


def test_good_config_round_trips_through_json_and_yaml():
    cfg = RunConfig.from_dict(merged({"method": {"name": "qlora", "params": {"r": "16", "alpha": 32}},
                                      "train": {"learning_rate": "1e-3", "epochs": 2}}))
    assert cfg.method.params["r"] == 16 and cfg.train.learning_rate == 1e-3  # gentle coercion
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
    assert RunConfig.from_yaml(cfg.to_yaml()) == cfg


# ------------------------------------------------------------------------------------------------
# YAML / config files
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text,fragment", [
    ("- model\n- data\n", "must be a mapping, got list"),
    ("just some words\n", "must be a mapping, got str"),
    ("42\n", "must be a mapping, got int"),
    ("model: [minilm\n", "not valid YAML"),
], ids=["list", "text", "number", "broken"])
def test_yaml_that_is_not_a_mapping(text, fragment, tmp_path):
    with pytest.raises(ConfigError, match=fragment):
        RunConfig.from_yaml(text)
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=fragment):
        load_config(str(path))


def test_config_file_problems(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "missing.yaml"))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(latin))
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(broken))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_config(str(empty)) == RunConfig()  # an empty file is the defaults


# ------------------------------------------------------------------------------------------------
# Data files: refused by prepare, before any model loads or anything trains
# ------------------------------------------------------------------------------------------------
def _rows(*rows) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


DATA_CASES = {
    "empty": ("empty.jsonl", b"", "classification", ["empty.jsonl", "no rows"]),
    "blank-lines": ("blank.jsonl", b"\n\n\n", "classification", ["blank.jsonl"]),
    "missing-text-column": ("cols.jsonl", _rows({"words": "hi", "label": "a"}, {"words": "yo", "label": "b"}),
                            "classification", ["'text' not found", "words", "data.text_column"]),
    "missing-label-column": ("cols.jsonl", _rows({"text": "hi", "y": "a"}, {"text": "yo", "y": "b"}),
                             "classification", ["'label' not found", "data.label_column"]),
    "missing-prompt-column": ("sft.jsonl", _rows({"question": "q", "answer": "a"}), "sft",
                              ["'prompt' not found", "data.prompt_column"]),
    "single-label": ("one.jsonl", _rows(*({"text": f"t{i}", "label": "pos"} for i in range(10))),
                     "classification", ["only one label", "at least two"]),
    "not-utf8": ("latin.csv", "text,label\ncaf\xe9,pos\nna\xefve,neg\n".encode("latin-1"), "classification",
                 ["latin.csv", "not UTF-8"]),
    "csv-called-jsonl": ("table.jsonl", b"text,label\nhello,pos\nbye,neg\n", "classification",
                         ["not JSON Lines", "CSV"]),
    "csv-called-parquet": ("table.parquet", b"text,label\nhello,pos\n", "classification", ["not a Parquet file"]),
    "binary-called-csv": ("image.csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "classification",
                          ["image.csv", "binary"]),
    "broken-json": ("rows.json", b'[{"text": "a", "label": ', "classification", ["rows.json"]),
}


@pytest.mark.parametrize("name,content,task,fragments", list(DATA_CASES.values()), ids=list(DATA_CASES))
def test_bad_data_is_refused_before_training(name, content, task, fragments, tmp_path, tiny_bert, tiny_llama,
                                             runs_dir, monkeypatch):
    path = tmp_path / name
    path.write_bytes(content)
    model = tiny_llama if task == "sft" else tiny_bert
    cfg = RunConfig.from_dict({**base_dict(model, str(path)), "data": {"source": str(path), "task": task}})

    def no_training(*a, **k):
        raise AssertionError("training started on bad data")

    monkeypatch.setattr(core.loop, "fit", no_training)
    with pytest.raises(ConfigError) as info:
        train_mod.run(cfg, str(tmp_path / "run"))
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


# ------------------------------------------------------------------------------------------------
# Models and methods that cannot work here
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["lora", "full"])
@pytest.mark.parametrize("name", ["some-org/nonexistent-model", "bert-base-uncased"])
def test_model_not_available_offline(name, method, monkeypatch, sentiment_file):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = RunConfig.from_dict({**base_dict(name, sentiment_file), "method": {"name": method}})
    with pytest.raises(ConfigError, match=f"model {name} is not available offline"):
        train_mod.prepare(cfg)


def test_missing_model_folder(sentiment_file, tmp_path):
    cfg = RunConfig.from_dict(base_dict(str(tmp_path / "nowhere"), sentiment_file))
    with pytest.raises(ConfigError, match="does not exist"):
        train_mod.prepare(cfg)


def test_sft_on_an_encoder_is_refused(tiny_bert, facts_file):
    cfg = RunConfig.from_dict({**base_dict(tiny_bert, facts_file), "data": {"source": facts_file, "task": "sft"}})
    with pytest.raises(ConfigError, match="encoder"):
        train_mod.prepare(cfg)


def _forbid_loading(monkeypatch):
    """Make reading the data or any weights fail the test: the check must come before both."""
    from core import data, models

    def boom(*a, **k):
        raise AssertionError("data or weights were loaded before the check")

    monkeypatch.setattr(data, "load_rows", boom)
    monkeypatch.setattr(models, "load_model", boom)


@pytest.mark.parametrize("method", ["lora", "qlora"])
@pytest.mark.parametrize("fixture,targets,missing,offered", [
    ("tiny_bert", "q_proj,v_proj", "'q_proj', 'v_proj'", "'query'"),
    ("tiny_llama", "query", "'query'", "'q_proj'"),
    ("tiny_llama", "q_proj,lm_head", "'lm_head'", "'down_proj'"),
], ids=["bert", "llama", "llama-head"])
def test_missing_target_modules_are_refused_before_loading(fixture, targets, missing, offered, method,
                                                           request, sentiment_file, monkeypatch):
    """Checked on the model built on the meta device: no data and no weights are read first."""
    cfg = RunConfig.from_dict({**base_dict(request.getfixturevalue(fixture), sentiment_file),
                               "method": {"name": method, "params": {"targets": targets}}})
    _forbid_loading(monkeypatch)
    with pytest.raises(ConfigError) as info:
        train_mod.prepare(cfg)
    message = str(info.value)
    assert "method.params.targets" in message and missing in message and offered in message


def test_present_target_modules_pass_the_early_check(tiny_llama, sentiment_file):
    cfg = RunConfig.from_dict({**base_dict(tiny_llama, sentiment_file),
                               "method": {"name": "lora", "params": {"targets": "q_proj, down_proj"}}})
    core.build.check_method_on_model(cfg)  # no error
    ctx = core.build.meta_method_context(cfg)
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"} == set(ctx.all_linear)


def test_qlora_without_bitsandbytes(tiny_llama, sentiment_file, monkeypatch):
    import core.methods.qlora as qlora
    monkeypatch.setattr(qlora, "bitsandbytes_available", lambda: False)
    cfg = RunConfig.from_dict({**base_dict(tiny_llama, sentiment_file), "method": {"name": "qlora"}})
    _forbid_loading(monkeypatch)
    with pytest.raises(ConfigError, match="qlora needs the bitsandbytes package.*choose lora"):
        train_mod.prepare(cfg)
    with pytest.raises(ConfigError, match="bitsandbytes"):
        qlora.quantization_config(cfg.method.typed, "cpu", [])
