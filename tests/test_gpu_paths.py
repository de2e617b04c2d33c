"""The GPU path with the device mocked: device and dtype choice, what reaches TrainingArguments and
BitsAndBytesConfig, device_map="auto" for models larger than the GPU, CUDA peak memory in events
and in the sidebar data, and the error for device cuda without a GPU.

torch.cuda.* is replaced by fakes (is_available, is_bf16_supported, get_device_name,
mem_get_info, max_memory_allocated, ...), so these run on any CPU machine. Tests marked `gpu`
run the same paths for real and are skipped where torch sees no CUDA device.
"""
from __future__ import annotations

import contextlib
import json
import threading
from types import SimpleNamespace

import pytest
import torch

from core import models
from core import device as core_device
from core.models import device_policy, loading
from core.config import ConfigError, RunConfig

GIB = 1024 ** 3


@pytest.fixture
def fake_cuda(monkeypatch):
    """install(...) makes torch report a CUDA GPU with the given properties (or none)."""
    import peft  # noqa: F401  (imports bitsandbytes, whose CUDA backend would probe the fake GPU)
    import transformers.training_args  # noqa: F401

    def install(available: bool = True, bf16: bool = True, name: str = "NVIDIA A10G", free_gb: float = 20.0,
                total_gb: float = 24.0, peak_mb: float = 0.0, count: int = 1):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: available)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: available and bf16)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count if available else 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: name)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a, **k: (int(free_gb * GIB), int(total_gb * GIB)))
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a, **k: int(peak_mb * 2 ** 20))
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda *a, **k: None)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(device_policy, "_mps_available", lambda: False)
        monkeypatch.setattr(core_device, "gpu_driver_present", lambda: available)
    return install


@pytest.fixture(autouse=True)
def single_process(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


def _record_kwargs(self, **kwargs):
    """Replaces TrainingArguments.__init__: records what the engine passes, checks nothing."""
    self.__dict__.update(kwargs, kwargs=kwargs)


@pytest.fixture
def recorded_args(monkeypatch):
    # The real class keeps its identity (transformers' lazy module re-imports); only __init__ records.
    from transformers.training_args import TrainingArguments
    monkeypatch.setattr(TrainingArguments, "__init__", _record_kwargs)

    def build(device: str, dtype: str = "auto", task: str = "classification", n_train: int = 64):
        from core.trainer_setup import training_args
        data = {"source": "x.jsonl", "task": task}
        model = {"name": "minilm", "dtype": dtype} if task == "classification" else \
            {"name": "smollm2-135m-instruct", "dtype": dtype}
        cfg = RunConfig.from_dict({"model": model, "data": data, "method": {"name": "lora"},
                                   "train": {"batch_size": 8}})
        args, total_steps = training_args(cfg, "/tmp/run", device, n_train, prediction_loss_only=task == "sft")
        return args.kwargs, total_steps
    return build


# ------------------------------------------------------------------------ device and dtype

def test_auto_device_is_cuda_when_there_is_a_gpu(fake_cuda):
    fake_cuda(available=True)
    assert models.pick_device("auto") == "cuda"
    fake_cuda(available=False)
    assert models.pick_device("auto") == "cpu"


@pytest.mark.parametrize("available, bf16, expected", [
    (True, True, torch.bfloat16),    # Ampere and newer
    (True, False, torch.float16),    # T4, V100: no bf16
    (False, False, torch.float32),   # CPU
])
def test_auto_dtype(fake_cuda, available, bf16, expected):
    fake_cuda(available=available, bf16=bf16)
    assert models.pick_dtype(models.pick_device("auto")) == expected


@pytest.mark.parametrize("bf16, dtype, expected", [
    (True, "auto", {"bf16": True, "fp16": False}),
    (False, "auto", {"bf16": False, "fp16": True}),      # fp16 autocast + loss scaler
    (True, "float16", {"bf16": False, "fp16": True}),
    (True, "bfloat16", {"bf16": True, "fp16": False}),
    (True, "float32", {"bf16": False, "fp16": False}),    # asked for full precision: no autocast
    (False, "float32", {"bf16": False, "fp16": False}),
])
def test_mixed_precision_on_cuda(fake_cuda, bf16, dtype, expected):
    fake_cuda(available=True, bf16=bf16)
    assert models.mixed_precision("cuda", dtype) == expected
    assert models.mixed_precision("cuda:0", dtype) == expected


def test_mixed_precision_off_cuda(fake_cuda, monkeypatch):
    fake_cuda(available=False)
    monkeypatch.setattr(device_policy, "cpu_has_native_bf16", lambda: False)
    for device in ("cpu", "mps"):
        assert models.mixed_precision(device, "auto") == {"bf16": False, "fp16": False}


def test_cpu_with_native_bf16_autocasts_unless_told_otherwise(fake_cuda, monkeypatch):
    """AVX512-BF16/AMX: bf16 autocast over fp32 weights; float32, a 4-bit base and MPS stay fp32."""
    fake_cuda(available=False)
    monkeypatch.setattr(device_policy, "cpu_has_native_bf16", lambda: True)
    assert models.mixed_precision("cpu", "auto") == {"bf16": True, "fp16": False}
    assert models.pick_dtype("cpu", "auto") == torch.float32  # the weights stay fp32
    for dtype, quantized, device in (("float32", False, "cpu"), (torch.float32, False, "cpu"),
                                     ("bfloat16", False, "cpu"), ("auto", True, "cpu"), ("auto", False, "mps")):
        assert models.mixed_precision(device, dtype, quantized_base=quantized) == {"bf16": False, "fp16": False}


def _cpuinfo_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            line = next((ln for ln in fh if ln.startswith("flags")), None)
    except OSError:
        return None
    return set(line.split(":", 1)[1].split()) if line else None


def test_cpu_bf16_probe_agrees_with_the_cpu_flags():
    """The probe must say what the kernel says the CPU can do (AVX512-BF16 or AMX-BF16)."""
    flags = _cpuinfo_flags()
    if flags is None:
        pytest.skip("no /proc/cpuinfo flags on this machine")
    assert models.cpu_has_native_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_cpu_bf16_probe_says_no_when_torch_lacks_it(monkeypatch):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    assert models.cpu_has_native_bf16() is False


def test_bf16_on_a_gpu_without_it_is_a_clear_error(fake_cuda):
    fake_cuda(available=True, bf16=False, name="Tesla T4")
    with pytest.raises(ConfigError, match=r"Tesla T4\) does not support bfloat16; choose dtype auto or float16"):
        models.mixed_precision("cuda", "bfloat16")


# ------------------------------------------------------------------- TrainingArguments

def test_training_args_cuda_bf16(fake_cuda, recorded_args):
    fake_cuda(available=True, bf16=True)
    kw, _ = recorded_args("cuda")
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (True, False, False)


def test_training_args_cuda_without_bf16_uses_fp16_with_a_scaler(fake_cuda, recorded_args):
    fake_cuda(available=True, bf16=False, name="Tesla T4")
    kw, _ = recorded_args("cuda")
    # Trainer(fp16=True) is autocast to fp16 plus a dynamic GradScaler
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (False, True, False)


def test_training_args_cuda_index_is_still_cuda(fake_cuda, recorded_args):
    fake_cuda(available=True, bf16=True, count=2)
    kw, _ = recorded_args("cuda:1")
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (True, False, False)


def test_training_args_cuda_float32_is_full_precision(fake_cuda, recorded_args):
    fake_cuda(available=True, bf16=True)
    kw, _ = recorded_args("cuda", dtype="float32")
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (False, False, False)


def test_training_args_cpu(fake_cuda, recorded_args, monkeypatch):
    fake_cuda(available=False)
    monkeypatch.setattr(device_policy, "cpu_has_native_bf16", lambda: False)
    kw, _ = recorded_args("cpu")
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (False, False, True)
    assert kw["train_sampling_strategy"] == "group_by_length"


def test_training_args_cpu_with_native_bf16(fake_cuda, recorded_args, monkeypatch):
    fake_cuda(available=False)
    monkeypatch.setattr(device_policy, "cpu_has_native_bf16", lambda: True)
    kw, _ = recorded_args("cpu")
    assert (kw["bf16"], kw["fp16"], kw["use_cpu"]) == (True, False, True)
    assert recorded_args("cpu", dtype="float32")[0]["bf16"] is False


def test_precision_label(fake_cuda, monkeypatch):
    from core.trainer_setup import precision_label
    fake_cuda(available=False)
    cfg = RunConfig.from_dict({"model": {"name": "minilm"}, "data": {"source": "x.jsonl"}, "method": {"name": "lora"}})
    monkeypatch.setattr(device_policy, "cpu_has_native_bf16", lambda: True)
    assert precision_label(cfg, "cpu") == "bf16 mixed"
    monkeypatch.setattr(device_policy, "cpu_has_native_bf16", lambda: False)
    assert precision_label(cfg, "cpu") == "float32"


def test_training_args_classification_losses_are_not_rescaled_by_world_size(fake_cuda, recorded_args):
    """Per-row mean losses ignore num_items_in_batch: the Trainer must not multiply them by world_size."""
    fake_cuda(available=False)
    assert recorded_args("cpu", task="classification")[0]["average_tokens_across_devices"] is False
    assert recorded_args("cpu", task="sft")[0]["average_tokens_across_devices"] is True


def test_training_args_under_ddp(fake_cuda, recorded_args, monkeypatch):
    fake_cuda(available=False)
    _, single_steps = recorded_args("cpu", n_train=64)
    monkeypatch.setenv("WORLD_SIZE", "2")
    kw, ddp_steps = recorded_args("cpu", n_train=64)
    assert kw["train_sampling_strategy"] == "random"  # the same seeded order on every rank
    assert kw["per_device_train_batch_size"] == 8
    assert single_steps == 8 and ddp_steps == 4        # batch_size is per process


def test_device_cuda_without_a_gpu_is_a_config_error(fake_cuda, tmp_path):
    fake_cuda(available=False)
    from core.train import prepare
    cfg = RunConfig.from_dict({"model": {"name": "minilm", "device": "cuda"},
                               "data": {"source": str(tmp_path / "never-read.jsonl")}})
    with pytest.raises(ConfigError, match="device cuda requested but no GPU is available.*choose device auto or cpu"):
        prepare(cfg)


# ------------------------------------------------------------------- BitsAndBytesConfig

def _qlora_params(**kw):
    from core.methods.qlora import QLoraParams
    return QLoraParams(**kw)


@pytest.mark.parametrize("available, bf16, device, compute", [
    (True, True, "cuda", torch.bfloat16),
    (True, True, "cuda:0", torch.bfloat16),
    (True, False, "cuda", torch.float16),
    (False, False, "cpu", torch.float32),
])
def test_quantization_config(fake_cuda, available, bf16, device, compute):
    fake_cuda(available=available, bf16=bf16)
    from core.methods.qlora import quantization_config
    q = quantization_config(_qlora_params(), device, ["classifier", "score", "lm_head"])
    assert q.load_in_4bit and not q.load_in_8bit
    assert q.bnb_4bit_quant_type == "nf4"
    assert q.bnb_4bit_use_double_quant is True
    assert q.bnb_4bit_compute_dtype == compute
    assert q.llm_int8_skip_modules == ["classifier", "score", "lm_head"]


def test_quantization_config_explicit_choices(fake_cuda):
    fake_cuda(available=True, bf16=True)
    from core.methods.qlora import quantization_config
    q = quantization_config(_qlora_params(double_quant=False, compute_dtype="float16"), "cuda", [])
    assert q.bnb_4bit_use_double_quant is False and q.bnb_4bit_compute_dtype == torch.float16


# ------------------------------------------------------------------- device_map="auto"

@pytest.mark.parametrize("size_gb, free_gb, device, expected", [
    (30.0, 20.0, "cuda", True),     # larger than the GPU
    (17.0, 20.0, "cuda", True),     # fits, but leaves no room to train (headroom 0.8)
    (2.0, 20.0, "cuda", False),
    (30.0, 20.0, "cpu", False),     # only a GPU question
    (None, 20.0, "cuda", False),    # size unknown: load as usual
])
def test_needs_device_map(size_gb, free_gb, device, expected):
    size = None if size_gb is None else int(size_gb * GIB)
    assert models.needs_device_map(size, device, free_bytes=int(free_gb * GIB)) is expected


def test_needs_device_map_asks_the_gpu(fake_cuda):
    fake_cuda(available=True, free_gb=4.0)
    assert models.needs_device_map(8 * GIB, "cuda") is True
    fake_cuda(available=True, free_gb=40.0)
    assert models.needs_device_map(8 * GIB, "cuda") is False


def test_needs_device_map_never_under_ddp(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # DDP keeps one whole copy per GPU
    assert models.needs_device_map(30 * GIB, "cuda", free_bytes=20 * GIB) is False


def test_estimate_weights_bytes():
    minilm = models.estimate_weights_bytes("minilm", torch.float32)
    assert minilm == pytest.approx(22.7e6 * 4, rel=0.01)
    assert models.estimate_weights_bytes("minilm", "bfloat16") == minilm // 2
    assert models.estimate_weights_bytes("minilm", torch.float32, quantized=True) < minilm * 0.6


class FakeModel:
    def __init__(self):
        self.moved_to = None

    def to(self, device):
        self.moved_to = device
        return self


@pytest.fixture
def captured_load(monkeypatch):
    calls = []

    def fake_from_pretrained(loader, loc, what, **kwargs):
        calls.append(kwargs)
        return FakeModel()
    monkeypatch.setattr(loading, "load_pretrained", fake_from_pretrained)
    monkeypatch.setattr(loading, "_seeded", lambda seed: contextlib.nullcontext())  # no CUDA RNG to fork
    return calls


def test_load_model_uses_device_map_auto_when_the_model_does_not_fit(fake_cuda, captured_load, tiny_bert):
    fake_cuda(available=True, bf16=True, free_gb=0.001)  # ~1 MB free: any model is "too large"
    model = models.load_model(tiny_bert, head="base")
    assert captured_load[-1]["device_map"] == "auto"
    assert captured_load[-1]["dtype"] == torch.bfloat16
    assert model.moved_to is None  # accelerate placed it; no .to() afterwards


def test_load_model_moves_to_the_gpu_when_it_fits(fake_cuda, captured_load, tiny_bert):
    fake_cuda(available=True, bf16=False, free_gb=20.0)
    model = models.load_model(tiny_bert, head="base")
    assert "device_map" not in captured_load[-1]
    assert captured_load[-1]["dtype"] == torch.float16
    assert model.moved_to == "cuda"


def test_load_model_on_cpu_has_no_device_map(fake_cuda, captured_load, tiny_bert):
    fake_cuda(available=False)
    model = models.load_model(tiny_bert, head="base")
    assert "device_map" not in captured_load[-1] and model.moved_to is None
    assert captured_load[-1]["dtype"] == torch.float32


def test_quantized_load_goes_to_this_process_gpu(fake_cuda, captured_load, tiny_bert, monkeypatch):
    fake_cuda(available=True, bf16=True, free_gb=20.0, count=2)
    models.load_model(tiny_bert, head="base", quantization_config=object())
    assert captured_load[-1]["device_map"] == {"": "cuda"}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    models.load_model(tiny_bert, head="base", quantization_config=object())
    assert captured_load[-1]["device_map"] == {"": 1}  # under torchrun: this rank's own GPU


# ------------------------------------------------------------------- fp16 master weights

def test_upcast_trainable_params_keeps_frozen_weights_half():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).half()
    model[0].requires_grad_(False)
    assert models.upcast_trainable_params(model) == 2
    assert model[0].weight.dtype == torch.float16
    assert model[1].weight.dtype == model[1].bias.dtype == torch.float32


def test_autocast_context_off_cuda_is_a_no_op(fake_cuda):
    fake_cuda(available=False)
    from core.train import autocast_context
    assert isinstance(autocast_context("cpu"), contextlib.nullcontext)


# ------------------------------------------------------------------- peak memory

def test_cuda_peak_mb(fake_cuda):
    from core.callback import cuda_peak_mb
    fake_cuda(available=True, peak_mb=1536.0)
    assert cuda_peak_mb() == pytest.approx(1536.0)
    fake_cuda(available=False)
    assert cuda_peak_mb() is None


def test_peak_cuda_memory_reaches_the_events(fake_cuda):
    from core.callback import make_callback
    fake_cuda(available=True, peak_mb=777.0)
    events = []
    callback = make_callback(events.append, threading.Event(), batch_rows=16, anatomy=None, anatomy_every=0)
    state = SimpleNamespace(global_step=0, max_steps=10, epoch=0.0)
    callback.on_train_begin(None, state, SimpleNamespace())
    state.global_step = 3
    callback.on_log(None, state, SimpleNamespace(), logs={"loss": 0.5})
    assert [e["type"] for e in events] == ["progress", "log"]
    assert all(e["peak_cuda_mb"] == pytest.approx(777.0) for e in events)
    fake_cuda(available=False)
    callback.on_log(None, state, SimpleNamespace(), logs={"loss": 0.4})
    assert "peak_cuda_mb" not in events[-1]


def test_device_summary_on_a_gpu(fake_cuda):
    fake_cuda(available=True, bf16=False, name="Tesla T4", free_gb=14.5, total_gb=15.0, peak_mb=2048.0)
    info = models.device_summary()
    assert info["device"] == "cuda" and info["name"] == "Tesla T4"
    assert (info["total_memory_gb"], info["free_memory_gb"]) == (15.0, 14.5)
    assert info["bf16"] is False and info["dtype"] == "float16"
    assert info["peak_cuda_memory_gb"] == 2.0
    assert info["gpu_count"] == 1
    json.dumps(info)


def test_device_summary_on_cpu_has_no_cuda_peak(fake_cuda):
    fake_cuda(available=False)
    info = models.device_summary()
    assert info["device"] == "cpu" and info["peak_cuda_memory_gb"] is None and info["gpu_count"] == 0


# ------------------------------------------------------------------- real GPU (skipped here)

requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _tiny_run(tiny_model: str, data: str, runs_dir: str, method: str = "lora", task: str = "classification",
              dtype: str = "auto") -> tuple[dict, list]:
    from core import runs
    from core.train import run
    cfg = RunConfig.from_dict({"model": {"name": tiny_model, "device": "cuda", "dtype": dtype},
                               "data": {"source": data, "task": task, "max_length": 32},
                               "method": {"name": method},
                               "train": {"epochs": 1, "batch_size": 8, "logging_steps": 1}})
    events: list = []
    run_dir = runs.create_run(cfg, owner="")
    summary = run(cfg, run_dir, events.append)
    return summary, events


@pytest.mark.gpu
@requires_gpu
@pytest.mark.parametrize("dtype", ["auto", "float16", "float32"])
def test_real_gpu_lora_run(tiny_bert, sentiment_file, runs_dir, dtype):
    if dtype == "auto" and not torch.cuda.is_bf16_supported():
        dtype = "float16"
    summary, events = _tiny_run(tiny_bert, sentiment_file, runs_dir, dtype=dtype)
    assert summary["state"] == "completed" and summary["device"] == "cuda"
    assert summary["peak_cuda_mb"] and summary["peak_cuda_mb"] > 0
    assert any("peak_cuda_mb" in e for e in events if e["type"] == "log")


@pytest.mark.gpu
@requires_gpu
def test_real_gpu_full_fine_tuning_in_fp16(tiny_bert, sentiment_file, runs_dir):
    """fp16 weights, fp16 autocast and the loss scaler: trainable weights must be fp32 masters."""
    summary, _ = _tiny_run(tiny_bert, sentiment_file, runs_dir, method="full", dtype="float16")
    assert summary["state"] == "completed"


@pytest.mark.gpu
@requires_gpu
def test_real_gpu_qlora_sft(tiny_llama, facts_file, runs_dir):
    summary, _ = _tiny_run(tiny_llama, facts_file, runs_dir, method="qlora", task="sft")
    assert summary["state"] == "completed" and summary["peak_cuda_mb"] > 0


@pytest.mark.gpu
@requires_gpu
def test_real_device_summary_on_gpu():
    info = models.device_summary()
    assert info["device"] == "cuda" and info["total_memory_gb"] > 0 and info["gpu_count"] >= 1
