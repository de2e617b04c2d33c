"""The GPU shelf: Hub models worth a GPU, offered only when one is present and the run fits it.

On a CPU the playground trains its two embedded toys (MiniLM, SmolLM2-135M). A T4 or an A10G
trains a 0.5-1.5B instruct model, or a RoBERTa classifier, in the time a CPU trains MiniLM: the
shelf lists those models with what a run on them needs (Hub id, licence, LoRA targets, chat
template family) and scales the lesson presets for them (more data, longer inputs, larger
batches). Their architecture configs ship in assets/model_configs/, so whether a run fits is
decided by core.estimate from the config alone, offline, against the free memory the GPU reports.

No weights are read here and torch is only imported to ask the GPU for its free memory.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core import estimate, settings
from core.config import RunConfig
from core.device import cuda_half_dtype, free_gpu_bytes
from core.methods import get_method

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "assets" / "chat_templates"

# A run fits when the estimate, grown by FIT_MARGIN for what the estimator leaves out (the CUDA
# caching allocator's fragmentation, 10-20 %; cuBLAS/attention workspaces), plus the CUDA context
# the process holds before any tensor (~0.3-0.6 GB with the kernels torch loads) stays below the
# free memory. Both are rules of thumb, not measurements: bench/gpu_check.py prints measured peaks.
FIT_MARGIN = 1.25
CUDA_CONTEXT_BYTES = 600 * 2**20

# Chat template families: the Jinja file, the special tokens it writes, and the end-of-turn token
# (the eos a tuned model must learn to stop on). The real tokenizers bring their own template;
# these render the same turn structure for the tiny test models built from the shelf configs.
CHAT_FAMILIES: dict[str, dict[str, Any]] = {
    "chatml": {"file": "chatml.jinja", "specials": ["<|im_start|>", "<|im_end|>"], "eos": "<|im_end|>"},
    "llama3": {"file": "llama3.jinja", "eos": "<|eot_id|>", "bos": "<|begin_of_text|>",
               "specials": ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]},
}

GATED_HELP = ("gated on the Hub: accept its licence on the model page while signed in, create a read token "
              "(huggingface.co/settings/tokens) and give it to the Space as a secret named HF_TOKEN "
              "(Space settings, Variables and secrets); the app then offers the model")

ATTENTION_QKVO = ("q_proj", "k_proj", "v_proj", "o_proj")
ALL_LINEAR_LLAMA = ATTENTION_QKVO + ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ShelfEntry:
    key: str                        # its config in assets/model_configs/index.json
    hub_id: str
    label: str
    kind: str                       # "causal" | "encoder"
    tasks: tuple[str, ...]
    licence: str
    lora_targets: tuple[str, ...]   # default LoRA targets of the GPU presets
    chat_template: str = ""         # a CHAT_FAMILIES key for chat models
    gated: bool = False
    learning_rate: float = 2e-4     # GPU preset: LoRA on a larger base wants a gentler rate than the toys
    batch_size: int = 16
    pooling: str = "cls"

    def config(self) -> dict:
        return estimate.load_config(self.key)

    @property
    def params_millions(self) -> float:
        return round(estimate.total_params(self.config()) / 1e6, 1)

    @property
    def access_note(self) -> str:
        return f"{self.label} is {GATED_HELP}" if self.gated else ""

    def available(self) -> bool:
        """Offered only if it can load: a gated model needs a token; every model must be allowed
        here (PLAYGROUND_MODEL_ALLOW) and be in the HF cache or the Hub reachable (the image sets
        HF_HUB_OFFLINE=1: a GPU Space sets it to 0, see the README)."""
        return (not self.gated or hf_token_present()) and loadable(self.hub_id)


SHELF: tuple[ShelfEntry, ...] = (
    ShelfEntry("qwen2.5-0.5b-instruct", "Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct (GPU, 494M)",
               "causal", ("classification", "sft"), "apache-2.0", ALL_LINEAR_LLAMA, "chatml",
               learning_rate=3e-4, batch_size=16, pooling="last"),
    ShelfEntry("qwen2.5-1.5b-instruct", "Qwen/Qwen2.5-1.5B-Instruct", "Qwen2.5-1.5B-Instruct (GPU, 1.5B)",
               "causal", ("classification", "sft"), "apache-2.0", ALL_LINEAR_LLAMA, "chatml",
               learning_rate=2e-4, batch_size=16, pooling="last"),
    ShelfEntry("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct",
               "Llama-3.2-1B-Instruct (GPU, 1.2B, gated)", "causal", ("classification", "sft"),
               "llama3.2 community licence (gated: accept it on the Hub)", ALL_LINEAR_LLAMA, "llama3",
               gated=True, learning_rate=2e-4, batch_size=16, pooling="last"),
    ShelfEntry("smollm2-360m-instruct", "HuggingFaceTB/SmolLM2-360M-Instruct",
               "SmolLM2-360M-Instruct (GPU, 362M)", "causal", ("classification", "sft"), "apache-2.0",
               ALL_LINEAR_LLAMA, "chatml", learning_rate=5e-4, batch_size=16, pooling="last"),
    ShelfEntry("smollm2-1.7b-instruct", "HuggingFaceTB/SmolLM2-1.7B-Instruct",
               "SmolLM2-1.7B-Instruct (GPU, 1.7B)", "causal", ("classification", "sft"), "apache-2.0",
               ALL_LINEAR_LLAMA, "chatml", learning_rate=2e-4, batch_size=8, pooling="last"),
    ShelfEntry("distilbert", "distilbert-base-uncased", "DistilBERT base (GPU, 67M)", "encoder",
               ("classification",), "apache-2.0", ("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
               learning_rate=5e-4, batch_size=32),
    ShelfEntry("roberta-base", "FacebookAI/roberta-base", "RoBERTa base (GPU, 125M)", "encoder",
               ("classification",), "mit", ("query", "key", "value", "dense"),
               learning_rate=5e-4, batch_size=32),
)

# Which shelf models each train lesson tries on a GPU, best demo first; the first that fits wins.
LESSON_CHOICES: dict[str, tuple[str, ...]] = {
    "fix_hallucination": ("qwen2.5-1.5b-instruct", "llama-3.2-1b-instruct", "smollm2-1.7b-instruct",
                          "qwen2.5-0.5b-instruct", "smollm2-360m-instruct"),
    "lora_sentiment": ("roberta-base", "distilbert"),
}

# How a CPU preset grows on a GPU, by task: longer inputs, more epochs, the full data set.
GPU_DATA = {"builtin:facts-mini": "builtin:facts"}   # the CPU lesson's subset -> the whole set
# Question/answer pairs are short (the CPU lesson cuts at 96 tokens); reviews conclude at the end.
GPU_MAX_LENGTH = {"sft": 128, "classification": 256}
GPU_MIN_EPOCHS = 3


def hf_token_present() -> bool:
    return settings.hf_token_set()


def loadable(hub_id: str) -> bool:
    """core.limits' check, as a yes or no: allowed on this server, and cached or the Hub online."""
    from core.config import ConfigError
    from core.limits import check_model_allowed
    try:
        check_model_allowed(hub_id)
    except ConfigError:
        return False
    return True


def get(name: str) -> ShelfEntry | None:
    """The entry of a shelf key or Hub id, else None."""
    for entry in SHELF:
        if name in (entry.key, entry.hub_id):
            return entry
    return None


def chat_template(family: str) -> str:
    return (TEMPLATES_DIR / CHAT_FAMILIES[family]["file"]).read_text(encoding="utf-8")


# ------------------------------------------------------------------------------ presets

def scale_preset(cpu: RunConfig, entry: ShelfEntry, gradient_checkpointing: bool = False) -> RunConfig:
    """A CPU preset (a lesson's example) grown for a shelf model on a GPU: same story, same method.

    The weights' dtype stays "auto": the engine picks bf16 on Ampere and newer, fp16 with a loss
    scaler on a T4 (core.device.native_bf16); QLoRA's 4-bit kernels are bitsandbytes' CUDA ones.
    """
    d = copy.deepcopy(cpu.to_dict())
    d["model"] = {"name": entry.hub_id, "device": "auto", "dtype": "auto"}
    task = d["data"]["task"]
    d["data"]["source"] = GPU_DATA.get(d["data"]["source"], d["data"]["source"])
    d["data"]["max_length"] = max(int(d["data"]["max_length"]), GPU_MAX_LENGTH[task])
    d["train"].update(batch_size=entry.batch_size, learning_rate=entry.learning_rate,
                      epochs=max(float(d["train"]["epochs"]), GPU_MIN_EPOCHS), torch_threads=0,
                      gradient_checkpointing=gradient_checkpointing or d["train"].get("gradient_checkpointing", False))
    params = d["method"].get("params") or {}
    if "targets" in params and params["targets"] not in ("auto",):
        params["targets"] = ",".join(entry.lora_targets)
    if "top_layers" in params:
        params["top_layers"] = 0  # the CPU recipe's speed trick; a GPU adapts every block
    name = d.get("name") or "Lesson"
    d["name"] = f"{name} (GPU: {entry.label.split(' (')[0]})"
    return RunConfig.from_dict(d)


def recipe(entry: ShelfEntry) -> RunConfig:
    """The entry's own default run (LoRA, the task it is for), used to decide whether it is offered."""
    task = "sft" if "sft" in entry.tasks else "classification"
    source = "builtin:facts" if task == "sft" else "builtin:sentiment"
    base = RunConfig.from_dict({"model": {"name": "minilm" if task == "classification" else "smollm2-135m-instruct"},
                                "data": {"source": source, "task": task, "max_length": 128},
                                "method": {"name": "lora", "params": {"r": 16, "alpha": 32,
                                                                      "targets": "all-linear"}},
                                "train": {"epochs": 3, "batch_size": 8}, "name": entry.label})
    return scale_preset(base, entry)


# ------------------------------------------------------------------------------ fitting

def estimator_args(cfg: RunConfig) -> tuple[str, dict]:
    """A RunConfig's method as core.estimate names it, with the keyword arguments it reads."""
    return get_method(cfg.method.name).estimate_args(cfg.method.params)


def estimate_bytes(cfg: RunConfig, half: str | None = None, model_cfg: dict | None = None) -> int:
    """Training memory of a run on a shelf model on a GPU, by core.estimate (16-bit weights, SDPA).
    model_cfg: the architecture to estimate instead of the shelf entry's (a tiny twin's)."""
    entry = get(cfg.model.name)
    if entry is None and model_cfg is None:
        raise ValueError(f"{cfg.model.name} is not on the GPU shelf")
    method, kwargs = estimator_args(cfg)
    dtype = cfg.model.dtype if cfg.model.dtype != "auto" else (half or cuda_half_dtype())
    mem = estimate.memory_estimate(model_cfg or entry.config(), method, batch_size=cfg.train.batch_size,
                                   seq_len=cfg.data.max_length, task=cfg.data.task, dtype=dtype, device="cuda",
                                   flash_attention=True, gradient_checkpointing=cfg.train.gradient_checkpointing,
                                   **kwargs)
    return mem["total"]


def needed_bytes(estimated: int) -> int:
    return int(estimated * FIT_MARGIN) + CUDA_CONTEXT_BYTES


def fits(cfg: RunConfig, free_bytes: int, half: str | None = None) -> bool:
    return needed_bytes(estimate_bytes(cfg, half)) <= free_bytes


def gpu_free_bytes() -> int | None:
    """Free GPU memory as the app sees it, or None on a machine without a GPU."""
    return free_gpu_bytes()


def offered(free_bytes: int | None = None, half: str | None = None) -> list[ShelfEntry]:
    """Shelf models whose default run fits the GPU's free memory; [] without a GPU.

    free_bytes and half (the card's 16-bit dtype) default to what the GPU reports; tests pass them.
    Gated models need HF_TOKEN (see GATED_HELP).
    """
    if free_bytes is None:
        free_bytes = gpu_free_bytes()
    if not free_bytes:
        return []
    return [e for e in SHELF if e.available() and fits(recipe(e), free_bytes, half)]


def lesson_choice(lesson_key: str, cpu: RunConfig, free_bytes: int | None = None,
                  half: str | None = None) -> tuple[RunConfig, ShelfEntry | None]:
    """(preset, shelf entry) for a lesson on this hardware: the first of the lesson's shelf models
    whose scaled preset fits the GPU, with gradient checkpointing if only that makes it fit (a
    better model a third slower is the better demo), else the CPU preset and None (no GPU,
    nothing fits, or a lesson without a GPU version)."""
    choices = LESSON_CHOICES.get(lesson_key, ())
    if not choices:
        return cpu, None
    if free_bytes is None:
        free_bytes = gpu_free_bytes()
    if not free_bytes:
        return cpu, None
    for key in choices:
        entry = get(key)
        if entry is None or not entry.available():
            continue
        for checkpointing in (False, True):
            scaled = scale_preset(cpu, entry, checkpointing)
            if fits(scaled, free_bytes, half):
                return scaled, entry
    return cpu, None


def describe(cfg: RunConfig, entry: ShelfEntry | None, half: str | None = None) -> str:
    """One sentence for the lesson box: which model this hardware gets and why."""
    if entry is None:
        return ""
    half = half or cuda_half_dtype()
    precision = "bf16" if half == "bfloat16" else "fp16 with a loss scaler"
    if get_method(cfg.method.name).quantized_base:
        precision = f"a 4-bit NF4 base (bitsandbytes CUDA kernels), {precision} compute"
    need = needed_bytes(estimate_bytes(cfg, half)) / 2**30
    return (f"This machine has a GPU, so the lesson uses {entry.label.split(' (')[0]} ({entry.hub_id}, "
            f"licence {entry.licence}) instead of the embedded CPU model: {cfg.method.name} in {precision}, "
            f"batch {cfg.train.batch_size}, inputs up to {cfg.data.max_length} tokens, "
            + ("gradient checkpointing on (so that it fits), " if cfg.train.gradient_checkpointing else "")
            + f"data "
            f"{cfg.data.source.removeprefix('builtin:')}; the estimator puts it at about {need:.1f} GB of GPU memory.")
