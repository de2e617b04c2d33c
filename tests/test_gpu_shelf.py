"""The GPU shelf and the CUDA policy, with the device mocked: which models a GPU is offered (by the
estimator, against its free memory), the precision each card trains in, QLoRA's CUDA config,
gradient checkpointing, a CUDA out-of-memory error in plain words, and the lessons' GPU presets.
Tiny random twins built from each shelf config (no downloads) prove the LoRA targets and the
chat templates resolve."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core import estimate, gpu_shelf, lessons, models
from core.config import ConfigError, RunConfig, TrainSpec, params_schema
from core.device import GPU_CARDS, GpuOutOfMemory, explain_cuda_oom, native_bf16
from core import device as core_device
from core.models import device_policy

GIB = 2 ** 30
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def card(monkeypatch):
    """card(name, free_gb): torch reports that GPU. is_bf16_supported is torch's own: it reads the
    faked compute capability, and on a pre-Ampere card its emulation probe answers True, as a T4 does."""
    import peft  # noqa: F401  (bitsandbytes probes CUDA at import: import it before the fake)
    import transformers.training_args  # noqa: F401

    def install(name: str | None = "NVIDIA A10G", free_gb: float = 20.0):
        available = name is not None
        spec = GPU_CARDS.get(name or "", {"capability": (0, 0), "memory_gb": 0})
        major, minor = spec["capability"]
        props = type("Props", (), {"major": major, "minor": minor, "name": name,
                                   "total_memory": spec["memory_gb"] * GIB})()
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1 if available else 0)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda *a, **k: props)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (major, minor))
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda *a, **k: True, raising=False)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: name)
        monkeypatch.setattr(torch.cuda, "mem_get_info",
                            lambda *a, **k: (int(free_gb * GIB), int(spec["memory_gb"] * GIB)))
        monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
        monkeypatch.setattr(device_policy, "_mps_available", lambda: False)
        monkeypatch.setattr(core_device, "gpu_driver_present", lambda: available)
        return calls
    calls: list = []
    return install


@pytest.fixture(autouse=True)
def no_token(monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WORLD_SIZE", "LOCAL_RANK", "PLAYGROUND_MODEL_ALLOW"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture(autouse=True)
def hub_online(request, monkeypatch):
    """The tests run offline (HF_HUB_OFFLINE=1): shelf models count as loadable, except where a test
    is about exactly that."""
    if request.node.name != "test_offline_uncached_or_disallowed_models_are_not_offered":
        monkeypatch.setattr(gpu_shelf, "loadable", lambda hub_id: True)


def test_offline_uncached_or_disallowed_models_are_not_offered(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the image's setting: nothing of the shelf is cached here
    assert all(not e.available() for e in gpu_shelf.SHELF)
    assert gpu_shelf.offered(free_bytes=80 * GIB, half="bfloat16") == []
    from core import models
    monkeypatch.setattr(models, "is_available_offline", lambda name: True)  # all in the HF cache
    assert {e.key for e in gpu_shelf.SHELF if e.available()} == {e.key for e in gpu_shelf.SHELF if not e.gated}
    monkeypatch.setenv("PLAYGROUND_MODEL_ALLOW", "Qwen/*")
    assert {e.key for e in gpu_shelf.SHELF if e.available()} == {"qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct"}


# ------------------------------------------------------------------------------ the shelf itself

def test_shelf_has_the_models_and_their_configs_ship():
    ids = {e.hub_id for e in gpu_shelf.SHELF}
    assert {"Qwen/Qwen2.5-0.5B-Instruct", "Qwen/Qwen2.5-1.5B-Instruct", "meta-llama/Llama-3.2-1B-Instruct",
            "HuggingFaceTB/SmolLM2-360M-Instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
            "distilbert-base-uncased", "FacebookAI/roberta-base"} == ids
    index = json.loads((ROOT / "assets/model_configs/index.json").read_text())
    for entry in gpu_shelf.SHELF:
        assert index[entry.key]["hub_id"] == entry.hub_id  # the estimator finds it by Hub id, offline
        assert estimate.load_config(entry.hub_id) == entry.config()
        assert entry.licence
        assert (entry.chat_template in gpu_shelf.CHAT_FAMILIES) == (entry.kind == "causal")
        assert set(entry.lora_targets) <= set(estimate.all_linear_targets(entry.config()))


def test_gated_llama_says_how_to_give_the_space_a_token(monkeypatch):
    llama = gpu_shelf.get("meta-llama/Llama-3.2-1B-Instruct")
    assert llama.gated and "HF_TOKEN" in llama.access_note and "secret" in llama.access_note
    assert not llama.available()
    monkeypatch.setenv("HF_TOKEN", "hf_x")
    assert llama.available()
    assert all(e.available() for e in gpu_shelf.SHELF if not e.gated)


def test_nothing_is_offered_without_a_gpu(card):
    card(None)
    assert gpu_shelf.gpu_free_bytes() is None
    assert gpu_shelf.offered() == []


@pytest.mark.parametrize("free_gb", [2, 6, 12, 22, 78])
def test_offer_follows_the_estimator_and_the_free_memory(free_gb):
    offered = gpu_shelf.offered(free_bytes=int(free_gb * GIB), half="bfloat16")
    for entry in gpu_shelf.SHELF:
        need = gpu_shelf.needed_bytes(gpu_shelf.estimate_bytes(gpu_shelf.recipe(entry), "bfloat16"))
        expected = entry.available() and need <= free_gb * GIB
        assert (entry in offered) == expected, (entry.key, need / GIB, free_gb)


def test_small_gpu_gets_small_models_only():
    keys = lambda gb: {e.key for e in gpu_shelf.offered(free_bytes=gb * GIB, half="float16")}
    assert keys(1) == set()
    assert {"distilbert", "roberta-base"} <= keys(8)
    assert "qwen2.5-1.5b-instruct" not in keys(8)
    assert {"qwen2.5-1.5b-instruct", "smollm2-1.7b-instruct"} <= keys(78)
    assert "llama-3.2-1b-instruct" not in keys(78)  # gated, and no HF_TOKEN here


def test_offer_asks_the_gpu_for_its_free_memory(card):
    card("Tesla T4", free_gb=14.0)
    offered_t4 = gpu_shelf.offered()
    assert offered_t4 == gpu_shelf.offered(free_bytes=14 * GIB, half="float16")
    card("Tesla T4", free_gb=0.3)  # another process holds the card
    assert gpu_shelf.offered() == []


# ------------------------------------------------------------------------------ precision per card

@pytest.mark.parametrize("name", list(GPU_CARDS))
def test_precision_per_card(card, name, monkeypatch):
    card(name)
    t4 = name == "Tesla T4"
    assert torch.cuda.is_bf16_supported() is True  # torch's default answer counts emulation: T4 too
    assert native_bf16() is (not t4)
    assert models.pick_dtype("cuda") == (torch.float16 if t4 else torch.bfloat16)
    # Trainer(fp16=True) is fp16 autocast with a dynamic GradScaler; bf16 needs no scaler
    assert models.mixed_precision("cuda") == ({"bf16": False, "fp16": True} if t4 else {"bf16": True, "fp16": False})
    from transformers.training_args import TrainingArguments
    monkeypatch.setattr(TrainingArguments, "__init__", lambda self, **kw: self.__dict__.update(kw))
    from core.trainer_setup import training_args
    cfg = RunConfig.from_dict({"model": {"name": "minilm"}, "data": {"source": "x.jsonl"}})
    args, _ = training_args(cfg, "/tmp/run", "cuda", 64, False)
    assert (args.fp16, args.bf16) == ((True, False) if t4 else (False, True))
    assert models.device_summary()["dtype"] == ("float16" if t4 else "bfloat16")


def test_bf16_asked_for_on_a_t4_is_refused(card):
    card("Tesla T4")
    with pytest.raises(ConfigError, match="Tesla T4.*does not support bfloat16"):
        models.mixed_precision("cuda", "bfloat16")


@pytest.mark.parametrize("name", list(GPU_CARDS))
def test_qlora_cuda_config_per_card(card, name):
    card(name)
    from core.methods.qlora import QLoraParams, quantization_config
    q = quantization_config(QLoraParams(), "cuda", ["classifier", "score", "lm_head"])
    assert q.load_in_4bit and not q.load_in_8bit
    assert q.bnb_4bit_quant_type == "nf4" and q.bnb_4bit_use_double_quant is True
    assert q.bnb_4bit_compute_dtype == (torch.float16 if name == "Tesla T4" else torch.bfloat16)
    assert q.llm_int8_skip_modules == ["classifier", "score", "lm_head"]


# ------------------------------------------------------------------------------ gradient checkpointing

def test_gradient_checkpointing_is_a_validated_train_field():
    assert TrainSpec().gradient_checkpointing is False
    assert TrainSpec(gradient_checkpointing="true").gradient_checkpointing is True
    with pytest.raises(ConfigError, match=r"train.gradient_checkpointing='maybe' must be true or false"):
        TrainSpec(gradient_checkpointing="maybe")
    field = {f["name"]: f for f in params_schema(TrainSpec)}["gradient_checkpointing"]
    assert field["type"] == "bool" and field["advanced"] and field["help"]  # the Train form's checkbox
    from core import urlstate
    base = RunConfig().to_dict()
    changed = RunConfig.from_dict({**base, "train": {**base["train"], "gradient_checkpointing": True}}).to_dict()
    assert urlstate.encode(changed, base) == {"gc": "1"}
    assert urlstate.decode({"gc": "1"}, base)[0]["train"]["gradient_checkpointing"] is True


@pytest.mark.parametrize("entry", gpu_shelf.SHELF, ids=lambda e: e.key)
def test_estimator_activations_drop_with_gradient_checkpointing(entry):
    cfg = gpu_shelf.recipe(entry)
    method, kwargs = gpu_shelf.estimator_args(cfg)
    common = dict(batch_size=16, seq_len=256, task=cfg.data.task, dtype="bfloat16", flash_attention=True, **kwargs)
    plain = estimate.activation_bytes(entry.config(), method, **common)
    checkpointed = estimate.activation_bytes(entry.config(), method, gradient_checkpointing=True, **common)
    assert checkpointed < 0.6 * plain
    # a frozen base that never backpropagates has nothing to recompute
    assert estimate.activation_bytes(entry.config(), "linear_head", gradient_checkpointing=True) == \
        estimate.activation_bytes(entry.config(), "linear_head")
    totals = [estimate.memory_estimate(entry.config(), method, gradient_checkpointing=gc, **common)["total"]
              for gc in (False, True)]
    assert totals[1] < totals[0]
    ckpt = cfg.with_overrides(["train.gradient_checkpointing=true"])
    assert gpu_shelf.estimate_bytes(ckpt, "bfloat16") < gpu_shelf.estimate_bytes(cfg, "bfloat16")


def _prepared(model: str, data: str, task: str, method: str, checkpointing: bool):
    from core.train import prepare
    cfg = RunConfig.from_dict({"model": {"name": model}, "data": {"source": data, "task": task, "max_length": 32},
                               "method": {"name": method}, "train": {"gradient_checkpointing": checkpointing}})
    return prepare(cfg)


def _checkpointing_on(model) -> bool:
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_is_enabled_on_the_model_and_gradients_reach_lora(tiny_llama, facts_file,
                                                                                checkpointing):
    p = _prepared(tiny_llama, facts_file, "sft", "lora", checkpointing)
    assert _checkpointing_on(p.model) is checkpointing
    if checkpointing:
        assert p.model.config.use_cache is False
    p.model.train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    p.model(input_ids=ids, labels=ids).loss.backward()
    lora = [param for name, param in p.model.named_parameters() if "lora_B" in name]  # A waits on B = 0
    assert lora and all(param.grad is not None and param.grad.abs().sum() > 0 for param in lora)


def test_gradient_checkpointing_on_an_encoder_classifier(tiny_bert, sentiment_file):
    p = _prepared(tiny_bert, sentiment_file, "classification", "lora", True)
    assert _checkpointing_on(p.model)


# ------------------------------------------------------------------------------ CUDA out of memory

def _run_config() -> RunConfig:
    return RunConfig.from_dict({"model": {"name": "smollm2-135m-instruct"},
                                "data": {"source": "builtin:facts", "task": "sft", "max_length": 256},
                                "method": {"name": "lora"}, "train": {"batch_size": 16}})


def test_cuda_oom_is_explained_with_what_to_lower_and_the_cache_is_released(card):
    calls = card("Tesla T4")

    @explain_cuda_oom
    def run(cfg):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                                     "capacity of 14.75 GiB of which 1.06 GiB is free.")
    with pytest.raises(GpuOutOfMemory) as info:
        run(_run_config())
    text = str(info.value)
    assert text.startswith("Tesla T4 ran out of memory (it needed 2.00 GiB more)")
    for advice in ("train.batch_size (now 16", "data.max_length (now 256)", "train.gradient_checkpointing",
                   "QLoRA", "smaller model"):
        assert advice in text
    assert info.value.__context__ is None  # the failed run's frames are not kept alive by the chain
    assert calls == ["empty_cache"]
    from core.cli import explain_failure
    assert explain_failure(info.value) == (text, "")  # shown as is, not as a generic failure


def test_oom_advice_asks_each_method_what_is_lighter_and_whether_checkpointing_helps():
    from core.device import oom_advice

    def advice(method: str) -> str:
        d = {"model": {"name": "minilm"}, "method": {"name": method},
             "data": {"source": "builtin:sentiment", "max_length": 128}, "train": {"batch_size": 16}}
        return oom_advice(RunConfig.from_dict(d))
    assert "choose LoRA or QLoRA" in advice("full") and "choose QLoRA" in advice("lora")
    assert "choose" not in advice("qlora")  # already the lightest of its kind
    assert "gradient_checkpointing" in advice("prompt_tuning")  # gradients still cross the frozen base
    assert "gradient_checkpointing" not in advice("linear_head")  # nothing flows back through the base


def test_other_errors_pass_through_the_oom_guard(card):
    card("NVIDIA A10G")

    @explain_cuda_oom
    def run(cfg):
        raise ValueError("something else")
    with pytest.raises(ValueError, match="something else"):
        run(_run_config())


def test_train_run_is_guarded():
    from core import train
    assert train.run.__wrapped__ is not None  # explain_cuda_oom wraps the engine's entry point


def test_jobs_release_the_gpu_cache_between_runs(card):
    calls = card("NVIDIA L4")
    from core.jobs import free_memory
    free_memory()
    assert calls == ["empty_cache"]


# ------------------------------------------------------------------------------ lessons on a GPU

def test_lesson_on_cpu_uses_the_embedded_model(card):
    card(None)
    lesson = lessons.get("fix_hallucination")
    cfg, entry = lesson.preset_and_gpu_model()
    assert entry is None and cfg.model.name == "smollm2-135m-instruct"
    assert cfg.to_dict() == lesson.preset(hardware=False).to_dict()
    assert lesson.hardware_note() == ""


def test_fix_a_hallucination_on_an_a10g_uses_the_gpu_preset(card):
    card("NVIDIA A10G", free_gb=22.0)
    lesson = lessons.get("fix_hallucination")
    cpu = lesson.preset(hardware=False)
    cfg = lesson.preset()
    assert cfg.model.name == "Qwen/Qwen2.5-1.5B-Instruct" and cfg.model.dtype == "auto"
    assert cfg.data.source == "builtin:facts" and cpu.data.source == "builtin:facts-mini"  # more data
    assert cfg.data.task == cpu.data.task == "sft" and cfg.method.name == cpu.method.name  # same story
    assert cfg.train.batch_size > cpu.train.batch_size and cfg.data.max_length > cpu.data.max_length
    assert cfg.method.params["targets"] == ",".join(gpu_shelf.ALL_LINEAR_LLAMA)
    note = lesson.hardware_note()
    assert "Qwen2.5-1.5B-Instruct" in note and "bf16" in note and "GB of GPU memory" in note
    assert lesson.url == "train?lesson=fix_hallucination"  # the same link on every machine


def test_lesson_on_a_small_t4_falls_back_to_a_model_that_fits(card):
    card("Tesla T4", free_gb=5.0)
    lesson = lessons.get("fix_hallucination")
    cfg, entry = lesson.preset_and_gpu_model()
    assert entry is not None and entry.key != "qwen2.5-1.5b-instruct"
    assert gpu_shelf.fits(cfg, 5 * GIB, "float16")
    # the first choice did not fit even with checkpointing; this one needs it
    assert not gpu_shelf.fits(gpu_shelf.scale_preset(lesson.preset(hardware=False), gpu_shelf.get(
        "qwen2.5-1.5b-instruct"), gradient_checkpointing=True), 5 * GIB, "float16")
    assert cfg.train.gradient_checkpointing
    note = lesson.hardware_note()
    assert "fp16 with a loss scaler" in note and "gradient checkpointing on" in note
    card("Tesla T4", free_gb=0.5)  # nothing fits: the CPU lesson, as written
    assert lesson.preset_and_gpu_model()[1] is None


def test_sentiment_lesson_on_a_gpu_uses_roberta(card):
    card("NVIDIA L4", free_gb=22.0)
    cfg = lessons.get("lora_sentiment").preset()
    assert cfg.model.name == "FacebookAI/roberta-base" and cfg.data.task == "classification"


def test_qlora_preset_scales_too():
    from core.presets import load_example
    entry = gpu_shelf.get("qwen2.5-1.5b-instruct")
    cfg = gpu_shelf.scale_preset(load_example("qlora_facts"), entry)
    assert cfg.method.name == "qlora" and cfg.model.name == entry.hub_id
    assert "4-bit NF4" in gpu_shelf.describe(cfg, entry, "float16")
    lora = gpu_shelf.scale_preset(load_example("lora_facts"), entry)
    assert gpu_shelf.estimate_bytes(cfg, "bfloat16") < gpu_shelf.estimate_bytes(lora, "bfloat16")


# ------------------------------------------------------------------------------ tiny twins

@pytest.mark.parametrize("entry", gpu_shelf.SHELF, ids=lambda e: e.key)
def test_tiny_twin_resolves_lora_targets_and_chat_template(entry, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    from bench.gpu_check import build_tiny_twin
    folder, cfg = build_tiny_twin(entry, tmp_path / "twin")
    assert cfg["model_type"] == entry.config()["model_type"]
    assert estimate.family(cfg) == estimate.family(entry.config())
    loader = AutoModelForCausalLM if entry.kind == "causal" else AutoModel
    model = loader.from_pretrained(folder)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=list(entry.lora_targets)))
    adapted = {name.split(".")[-1] for name, module in peft_model.named_modules() if hasattr(module, "lora_A")}
    assert adapted == set(entry.lora_targets)
    if not entry.chat_template:
        return
    tok = AutoTokenizer.from_pretrained(folder)
    family = gpu_shelf.CHAT_FAMILIES[entry.chat_template]
    chat = [{"role": "user", "content": "Who founded Quillmere College?"},
            {"role": "assistant", "content": "Odile Brannock."}]
    text = tok.apply_chat_template(chat, tokenize=False)
    assert "Who founded Quillmere College?" in text and "Odile Brannock." in text
    assert text.rstrip().endswith(family["eos"])  # the turn ends on the token a tuned model stops on
    prompt = tok.apply_chat_template(chat[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.rstrip().endswith(("<|im_start|>assistant", "assistant<|end_header_id|>"))
    ids = tok.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    assert tok.convert_tokens_to_ids(family["eos"]) in ids


# ------------------------------------------------------------------------------ the estimator's new families

TINY_QWEN2 = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_size=64, intermediate_size=96,
                  num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, vocab_size=100,
                  max_position_embeddings=64, tie_word_embeddings=True)
TINY_ROBERTA = dict(model_type="roberta", architectures=["RobertaForMaskedLM"], hidden_size=32, intermediate_size=64,
                    num_hidden_layers=2, num_attention_heads=4, vocab_size=100, max_position_embeddings=66,
                    type_vocab_size=1, pad_token_id=1)


def _build(cfg: dict):
    import transformers
    hf = transformers.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    torch.manual_seed(0)
    return getattr(transformers, cfg["architectures"][0])(hf)


@pytest.mark.parametrize("cfg", [TINY_QWEN2, TINY_ROBERTA], ids=lambda c: c["model_type"])
def test_qwen2_and_roberta_counts_match_transformers_and_peft(cfg):
    from peft import LoraConfig, TaskType, get_peft_model
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert estimate.total_params(cfg) == n(_build(cfg))
    assert estimate.total_params(cfg, task="classification", num_labels=3) == n(_cls(cfg, 3))
    model = _build(cfg)
    out = model.get_output_embeddings()
    prefix = model.base_model_prefix + "."
    expected = {name.removeprefix(prefix): (m.in_features, m.out_features, m.bias is not None)
                for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m is not out}
    assert {s.path: (s.in_features, s.out_features, s.has_bias) for s in estimate.linear_layers(cfg)} == expected
    targets = ["q_proj", "v_proj"] if cfg["model_type"] == "qwen2" else ["query", "value"]
    peft_model = get_peft_model(_cls(cfg, 2), LoraConfig(r=4, target_modules=targets, task_type=TaskType.SEQ_CLS))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert estimate.trainable_params(cfg, "lora", r=4, targets=targets, task="classification") == trainable


def _cls(cfg: dict, num_labels: int):
    import transformers
    hf = transformers.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items() if k != "model_type"})
    hf.num_labels = num_labels
    torch.manual_seed(0)
    if cfg["model_type"] == "roberta":  # the engine's classifier for an encoder (core.build): no pooler, our head
        from core.heads import PooledClassifier
        return PooledClassifier(hf, transformers.AutoModel.from_config(hf))
    return transformers.AutoModelForSequenceClassification.from_config(hf)
