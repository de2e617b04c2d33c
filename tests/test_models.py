"""Tests for core.models: registry, resolution, offline behaviour, device/dtype, loading.

Fast tests use tiny random models saved to temporary folders; tests marked `slow` load the real
embedded models (MiniLM, SmolLM2 through its GGUF -> safetensors cache).
"""
from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch

from core import hub
from core import models as m
from core.models import cli, device_policy, gguf, resolving
from core.config import ConfigError

OFFLINE_MSG = "model {} is not available offline; embedded models: minilm, smollm2-135m-instruct"

WORDS = ["the", "a", "good", "bad", "movie", "film", "great", "awful", "is", "was", "very", "not",
         "hello", "world", "paris", "france"]


# ---------------------------------------------------------------- tiny models on disk

def _save_tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=64).save_pretrained(folder)
    return folder


def _save_tiny_llama(folder: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = ["<unk>", "<s>", "</s>"] + WORDS
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>",
                                        eos_token="</s>")  # deliberately no pad token
    tokenizer.chat_template = "{% for msg in messages %}{{ msg['content'] }} {% endfor %}"
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         bos_token_id=1, eos_token_id=2, pad_token_id=None)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return _save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="module")
def nopad_llama_dir(tmp_path_factory) -> Path:
    return _save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def st_bert_dir(tmp_path_factory) -> Path:
    """A sentence-transformers style folder: the tiny BERT plus a mean Pooling module."""
    folder = _save_tiny_bert(tmp_path_factory.mktemp("tiny-st"))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(
        {"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True}))
    return folder


@pytest.fixture
def offline_env(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture
def no_network(monkeypatch):
    """HF_HUB_OFFLINE unset, and every connection attempt fails as on a machine without network."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)


# ---------------------------------------------------------------- registry

def test_list_models_embedded_first():
    entries = m.list_models()
    keys = [e.key for e in entries]
    assert keys[:2] == ["minilm", "smollm2-135m-instruct"]
    assert all(e.embedded for e in entries[:2]) and not any(e.embedded for e in entries[2:])
    assert [e.key for e in m.list_models(include_hub=False)] == list(m.EMBEDDED)


def test_embedded_entries():
    minilm, smol = m.EMBEDDED["minilm"], m.EMBEDDED["smollm2-135m-instruct"]
    assert (minilm.kind, minilm.pooling) == ("encoder", "mean")
    assert (smol.kind, smol.pooling) == ("causal", "last")
    assert minilm.default_lora_targets and smol.default_lora_targets
    assert "sft" in smol.tasks and "sft" not in minilm.tasks
    assert minilm.params_millions > 0 and smol.params_millions > 0


def test_embedded_files_are_installed():
    assert (m.minilm_dir() / "model.safetensors").is_file()
    folder, name = m.smollm2_gguf()
    assert (folder / name).is_file()


def test_resolve_embedded_is_cheap_and_copies_targets(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_CACHE_DIR", str(tmp_path))
    r = m.resolve("MiniLM")
    assert (r.name, r.origin, r.kind, r.pooling) == ("minilm", "embedded", "encoder", "mean")
    assert Path(r.source) == m.minilm_dir()
    r.default_lora_targets.append("oops")  # must not leak into the registry
    assert "oops" not in m.EMBEDDED["minilm"].default_lora_targets
    s = m.resolve("smollm2-135m-instruct")
    assert (s.kind, s.pooling, s.model_type) == ("causal", "last", "llama")
    assert Path(s.source).parent == tmp_path and not Path(s.source).exists()  # resolving builds nothing


# ---------------------------------------------------------------- names that are refused

@pytest.mark.parametrize("bad", ["../x", "models/../../etc", "http://example.com/model",
                                 "https://huggingface.co/gpt2", "", "  ", "bad name!", "a\x00b"])
def test_bad_names_rejected(bad):
    with pytest.raises(ConfigError):
        m.resolve(bad)


def test_missing_local_folder(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        m.resolve(str(tmp_path / "nope"))


def test_local_folder_without_config(tmp_path):
    with pytest.raises(ConfigError, match="has no config.json"):
        m.load_model(str(tmp_path))


def test_local_file_is_not_a_folder(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        m.resolve(str(f))


def test_unknown_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch", "architectures": ["X"]}))
    with pytest.raises(ConfigError, match="does not know its architecture"):
        m.load_model(str(tmp_path))


def test_remote_code_is_never_run(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "custom-x", "auto_map": {"AutoConfig": "configuration_x.XConfig"}}))
    (tmp_path / "configuration_x.py").write_text("raise SystemExit('remote code ran')\n")
    with pytest.raises(ConfigError, match="trust_remote_code"):
        m.resolve(str(tmp_path))


def test_missing_weights(bert_dir, tmp_path):
    shutil.copy(bert_dir / "config.json", tmp_path / "config.json")
    with pytest.raises(ConfigError, match="has no weights"):
        m.load_model(str(tmp_path))
    with pytest.raises(ConfigError, match="has no tokenizer files"):
        m.load_tokenizer(str(tmp_path))


def test_local_folders_disabled(monkeypatch, bert_dir):
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_MODELS", "0")
    with pytest.raises(ConfigError, match="disabled"):
        m.resolve(str(bert_dir))
    assert m.resolve("minilm").origin == "embedded"  # embedded models still work


# ---------------------------------------------------------------- offline hub ids

def _assert_offline_fast(name: str, started: float, error: pytest.ExceptionInfo) -> None:
    assert str(error.value) == OFFLINE_MSG.format(name)
    assert isinstance(error.value, ConfigError)
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("fn", [m.resolve, m.load_config, m.load_tokenizer, m.load_model])
def test_hub_id_offline_env(offline_env, monkeypatch, fn):
    def must_not_probe(*a, **k):
        raise AssertionError("HF_HUB_OFFLINE is set: no network probe expected")

    monkeypatch.setattr(hub, "reachable", must_not_probe)
    started = time.monotonic()
    with pytest.raises(m.ModelNotAvailable) as error:
        fn("facebook/opt-350m")
    _assert_offline_fast("facebook/opt-350m", started, error)


@pytest.mark.parametrize("fn", [m.resolve, m.load_tokenizer, m.load_model])
def test_hub_id_without_network(no_network, fn):
    started = time.monotonic()
    with pytest.raises(m.ModelNotAvailable) as error:
        fn("distilbert-base-uncased")
    _assert_offline_fast("distilbert-base-uncased", started, error)


def test_hub_id_on_this_machine_fails_fast(monkeypatch):
    """The real probe, no mocks: on a machine without hub access the answer comes in seconds."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    if hub.reachable():
        pytest.skip("the Hugging Face Hub is reachable from here")
    started = time.monotonic()
    with pytest.raises(m.ModelNotAvailable) as error:
        m.load_model("facebook/opt-350m")
    assert str(error.value) == OFFLINE_MSG.format("facebook/opt-350m")
    assert time.monotonic() - started < 5.0


def test_probe_is_bounded_when_dns_hangs(monkeypatch):
    def hang(*a, **k):
        time.sleep(5)
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", hang)
    started = time.monotonic()
    assert hub.reachable(timeout=0.3) is False
    assert time.monotonic() - started < 1.5


def test_probe_goes_to_proxy(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert hub.endpoint() == ("proxy.internal", 3128)
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example:8443")
    assert hub.endpoint() == ("hf-mirror.example", 8443)


def test_hub_id_found_in_local_cache(offline_env, monkeypatch, tmp_path, st_bert_dir):
    """A hub id whose files are in the local HF cache loads with no network at all."""
    import huggingface_hub.constants as hf_constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--tiny-org--tiny-bert"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(st_bert_dir, repo / "snapshots" / commit)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))

    r = m.resolve("tiny-org/tiny-bert")
    # The pooling hint comes from the cached modules.json of this sentence-transformers repo.
    assert (r.origin, r.kind, r.pooling, r.model_type) == ("hub", "encoder", "mean", "bert")
    assert m.is_available_offline("tiny-org/tiny-bert")
    assert not m.is_available_offline("tiny-org/not-cached")
    model = m.load_model("tiny-org/tiny-bert")
    assert type(model).__name__ == "BertModel"


def _fake_loader(calls: list, online_result):
    def loader(source, **kwargs):
        calls.append(dict(kwargs))
        if kwargs.get("local_files_only"):
            raise OSError("not in the local cache")
        if isinstance(online_result, BaseException):
            raise online_result
        return online_result
    return loader


def test_hub_goes_online_once_cache_misses(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=3.0, cached=False: True)
    loc = m.locate("some-org/some-model")
    calls: list = []
    assert resolving.load_pretrained(_fake_loader(calls, "loaded"), loc, "model") == "loaded"
    assert [c.get("local_files_only") for c in calls] == [True, None]  # cache first, then the hub
    assert all(c["trust_remote_code"] is False for c in calls)
    missing = OSError("some-org/some-model is not a local folder and is not a valid model identifier")
    with pytest.raises(m.ModelNotAvailable, match="was not found on the Hugging Face Hub"):
        resolving.load_pretrained(_fake_loader([], missing), loc, "model")


# ---------------------------------------------------------------- local folders: kind, pooling, heads

def test_resolve_local_kinds(bert_dir, nopad_llama_dir, st_bert_dir):
    bert, llama, st = m.resolve(str(bert_dir)), m.resolve(str(nopad_llama_dir)), m.resolve(str(st_bert_dir))
    assert (bert.origin, bert.kind, bert.pooling) == ("local", "encoder", "cls")
    assert bert.default_lora_targets == ["query", "value"]
    assert (llama.kind, llama.pooling, llama.model_type) == ("causal", "last", "llama")
    assert llama.default_lora_targets == ["q_proj", "v_proj"]
    assert (st.kind, st.pooling) == ("encoder", "mean")
    assert bert.entry is None and bert.label == str(bert_dir)


def test_load_config_is_cheap(nopad_llama_dir):
    config = m.load_config(str(nopad_llama_dir))
    assert config.model_type == "llama" and config.architectures == ["LlamaForCausalLM"]


def test_kind_of_configs():
    from transformers import AutoConfig

    assert m.kind_of(AutoConfig.for_model("gpt2")) == "causal"
    assert m.kind_of(AutoConfig.for_model("bert")) == "encoder"
    assert m.kind_of(AutoConfig.for_model("distilbert")) == "encoder"
    assert m.kind_of(AutoConfig.for_model("t5")) == "encoder"
    llama = AutoConfig.for_model("llama")
    llama.architectures = None  # as a GGUF config has it: model_type alone decides
    assert m.kind_of(llama) == "causal"


def test_tokenizer_pad_and_template(nopad_llama_dir, bert_dir):
    tok = m.load_tokenizer(str(nopad_llama_dir))
    assert tok.pad_token == tok.eos_token == "</s>"
    assert tok.padding_side == "right"
    assert tok.chat_template and "messages" in tok.chat_template
    assert tok.model_max_length == 64  # capped from the config, not the 1e30 sentinel
    batch = tok(["good movie", "a very very bad film"], padding=True)
    assert batch["input_ids"][0][-1] == tok.pad_token_id
    bert_tok = m.load_tokenizer(str(bert_dir))
    assert bert_tok.pad_token == "[PAD]" and bert_tok.padding_side == "right"


def test_load_model_heads(bert_dir, nopad_llama_dir):
    assert type(m.load_model(str(bert_dir), head="base")).__name__ == "BertModel"
    assert type(m.load_model(str(nopad_llama_dir), head="causal_lm")).__name__ == "LlamaForCausalLM"
    cls = m.load_model(str(bert_dir), head="seq_cls", id2label={0: "neg", 1: "pos", 2: "neutral"})
    assert type(cls).__name__ == "BertForSequenceClassification"
    assert cls.config.num_labels == 3 and cls.config.label2id == {"neg": 0, "pos": 1, "neutral": 2}
    assert next(cls.parameters()).device.type == "cpu" and next(cls.parameters()).dtype == torch.float32


def test_seq_cls_on_causal_sets_pad_token(nopad_llama_dir):
    model = m.load_model(str(nopad_llama_dir), head="seq_cls", num_labels=4)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.pad_token_id == 2 and model.config.num_labels == 4
    ids = torch.tensor([[3, 4, 5, 2, 2]])
    assert model(input_ids=ids).logits.shape == (1, 4)  # needs pad_token_id with batch > 0


def test_causal_head_on_encoder_refused(bert_dir):
    with pytest.raises(ConfigError, match="encoder"):
        m.load_model(str(bert_dir), head="causal_lm")
    with pytest.raises(ConfigError, match="head="):
        m.load_model(str(bert_dir), head="masked")
    with pytest.raises(ConfigError, match="num_labels"):
        m.load_model(str(bert_dir), head="seq_cls", num_labels=0)


def test_load_model_deterministic_and_side_effect_free(nopad_llama_dir):
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    a = m.load_model(str(nopad_llama_dir), head="seq_cls")
    b = m.load_model(str(nopad_llama_dir), head="seq_cls")
    assert torch.equal(torch.get_rng_state(), before)  # the caller's RNG is untouched
    assert torch.equal(a.score.weight, b.score.weight)  # the new head starts the same every time
    c = m.load_model(str(nopad_llama_dir), head="seq_cls", seed=7)
    assert not torch.equal(a.score.weight, c.score.weight)
    assert torch.get_default_dtype() == torch.float32


def test_load_model_explicit_dtype(bert_dir):
    model = m.load_model(str(bert_dir), dtype="bfloat16")
    assert next(model.parameters()).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="float16 is not supported on CPU"):
        m.load_model(str(bert_dir), dtype="float16")


# ---------------------------------------------------------------- device and dtype choice

@pytest.fixture
def fake_gpu(monkeypatch):
    def install(cuda: bool, bf16: bool = True, mps: bool = False):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if cuda else 0)
        monkeypatch.setattr(device_policy, "_mps_available", lambda: mps)
    return install


def test_pick_device(fake_gpu):
    fake_gpu(cuda=False)
    assert m.pick_device() == "cpu" and m.pick_device("cpu") == "cpu"
    with pytest.raises(ConfigError) as error:
        m.pick_device("cuda")
    assert str(error.value).startswith("device cuda requested but no GPU is available")
    with pytest.raises(ConfigError, match="mps"):
        m.pick_device("mps")
    with pytest.raises(ConfigError, match="not known"):
        m.pick_device("tpu")
    fake_gpu(cuda=False, mps=True)
    assert m.pick_device("auto") == "mps"
    fake_gpu(cuda=True, mps=True)
    assert m.pick_device("auto") == "cuda" and m.pick_device("cuda") == "cuda"
    assert m.pick_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="1 GPU"):
        m.pick_device("cuda:3")


def test_pick_dtype(fake_gpu):
    fake_gpu(cuda=True, bf16=True)
    assert m.pick_dtype("cuda") == torch.bfloat16
    fake_gpu(cuda=True, bf16=False)
    assert m.pick_dtype("cuda") == torch.float16
    assert m.pick_dtype("cuda", "float32") == torch.float32
    assert m.pick_dtype("cpu") == torch.float32
    assert m.pick_dtype("mps") == torch.float32
    assert m.pick_dtype("cpu", "bfloat16") == torch.bfloat16
    assert m.pick_dtype("cpu", torch.float32) == torch.float32
    assert m.pick_dtype("mps", "fp16") == torch.float16
    with pytest.raises(ConfigError, match="float16 is not supported on CPU"):
        m.pick_dtype("cpu", "float16")
    with pytest.raises(ConfigError, match="not known"):
        m.pick_dtype("cpu", "int8")


def test_device_summary(fake_gpu):
    fake_gpu(cuda=False)
    info = m.device_summary()
    assert info["device"] == "cpu" and info["name"]
    assert info["cores"] >= 1
    assert info["total_memory_gb"] is None or info["total_memory_gb"] > 0
    json.dumps(info)  # plain values only: the sidebar may serialise it


# ---------------------------------------------------------------- the SmolLM2 cache, without the GGUF

def _fake_convert(calls: list):
    def convert(out: Path) -> None:
        calls.append(out)
        for name in gguf._CACHE_FILES:
            (out / name).write_text("{}")
    return convert


def test_cache_build_is_atomic(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_CACHE_DIR", str(tmp_path))

    def crash(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(gguf, "_convert_smollm2", crash)
    with pytest.raises(RuntimeError, match="mid-write"):
        m.ensure_smollm2_cache()
    target = m.smollm2_cache_dir()
    assert not target.exists()
    assert not list(tmp_path.glob(".*.tmp-*"))  # no half cache, no leftovers

    calls: list = []
    monkeypatch.setattr(gguf, "_convert_smollm2", _fake_convert(calls))
    assert m.ensure_smollm2_cache() == target
    assert m.ensure_smollm2_cache() == target
    assert len(calls) == 1  # converted once
    assert oct(target.stat().st_mode & 0o777) == oct(0o755)  # readable by the app's user


def test_cache_cleans_stale_temp_folders(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_CACHE_DIR", str(tmp_path))
    stale = tmp_path / f".{m.smollm2_cache_dir().name}.tmp-crashed"
    stale.mkdir()
    (stale / "model.safetensors").write_text("half")
    monkeypatch.setattr(gguf, "_convert_smollm2", _fake_convert([]))
    m.ensure_smollm2_cache()
    assert not stale.exists()


def test_cache_root_not_writable(monkeypatch, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("PLAYGROUND_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(ConfigError, match="PLAYGROUND_CACHE_DIR"):
        m.ensure_smollm2_cache()


def test_drop_quantizer_markers():
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(vocab_size=16, hidden_size=8, intermediate_size=16,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1))
    model.hf_quantizer = object()
    model.quantization_method = "gguf"
    model.config.quantization_config = {"quant_method": "gguf"}
    gguf.drop_quantizer_markers(model)
    assert model.hf_quantizer is None and not model.is_quantized
    assert not hasattr(model.config, "quantization_config")
    assert not hasattr(model, "quantization_method")


def test_cli_list(capsys):
    assert cli.main(["--list"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("minilm")


# ---------------------------------------------------------------- the real embedded models

@pytest.mark.slow
def test_minilm_encodes_with_mean_pooling():
    started = time.monotonic()
    model = m.load_model("minilm")
    tok = m.load_tokenizer("minilm")
    assert time.monotonic() - started < 30
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The stock market fell today."]
    batch = tok(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb.shape == (3, 384)
    sim = emb @ emb.T
    assert sim[0, 1] > 0.5 > sim[0, 2]
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(m.minilm_dir()), device="cpu").encode(sentences, convert_to_tensor=True)
    assert torch.allclose(emb, reference.cpu(), atol=1e-4)  # same as the model's own pipeline


@pytest.mark.slow
def test_minilm_seq_cls():
    model = m.load_model("minilm", head="seq_cls", num_labels=2)
    assert type(model).__name__ == "BertForSequenceClassification"


@pytest.mark.slow
def test_smollm2_config_before_cache_exists(monkeypatch, tmp_path):
    monkeypatch.setenv("PLAYGROUND_CACHE_DIR", str(tmp_path))
    config = m.load_config("smollm2-135m-instruct")  # read from the GGUF header, nothing dequantized
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert m.kind_of(config) == "causal"
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def smollm2_cache():
    """The cache where the app keeps it (PLAYGROUND_CACHE_DIR): built here on a fresh machine,
    reused when another test or `python -m core.models --prepare` built it already."""
    started = time.monotonic()
    path = m.ensure_smollm2_cache()
    return path, time.monotonic() - started


@pytest.mark.slow
def test_smollm2_cache_builds_once_then_loads_fast(smollm2_cache):
    path, cold = smollm2_cache
    assert gguf.cache_complete(path) and (path / "chat_template.jinja").is_file()
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]
    mtime = (path / "model.safetensors").stat().st_mtime
    started = time.monotonic()
    assert m.ensure_smollm2_cache() == path
    model = m.load_model("smollm2-135m-instruct", head="causal_lm")
    warm = time.monotonic() - started
    assert (path / "model.safetensors").stat().st_mtime == mtime  # not rebuilt
    assert warm < 10, f"warm load took {warm:.1f} s (cold build took {cold:.1f} s)"
    assert getattr(model, "hf_quantizer", None) is None
    assert next(model.parameters()).dtype == torch.float32
    print(f"\nsmollm2: cold build {cold:.1f} s, warm load {warm:.2f} s")


@pytest.mark.slow
def test_smollm2_generates_with_chat_template(smollm2_cache):
    model = m.load_model("smollm2-135m-instruct", head="causal_lm")
    tok = m.load_tokenizer("smollm2-135m-instruct")
    assert tok.pad_token is not None and tok.padding_side == "right" and tok.chat_template
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    assert "<|im_start|>assistant" in tok.decode(inputs["input_ids"][0])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.slow
def test_smollm2_cache_loads_with_plain_from_pretrained(smollm2_cache):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, _ = smollm2_cache
    model = AutoModelForCausalLM.from_pretrained(str(path))
    tok = AutoTokenizer.from_pretrained(str(path))
    assert type(model).__name__ == "LlamaForCausalLM" and model.config.num_hidden_layers == 30
    assert tok.chat_template and tok.eos_token == "<|im_end|>"


@pytest.mark.slow
def test_smollm2_seq_cls_has_pad_token(smollm2_cache):
    model = m.load_model("smollm2-135m-instruct", head="seq_cls", num_labels=2)
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert model.config.pad_token_id is not None
