"""Default adapter targets by architecture: the ONE table the engine, the estimate and the pages read.

LoRA's "auto" targets are the attention query and value projections; the rows mirror peft's
TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING (a test keeps them equal), plus distilbert,
which peft leaves without an entry (it asks for explicit targets; q_lin/v_lin is the convention).
IA3's rows mirror peft's IA3 target and feed-forward mappings (peft's OPT entry really is q, k, fc2).
An architecture missing here falls back to peft's own table (looked up only when a run meets such a
model, so reading this table imports nothing).
"""
from __future__ import annotations

LORA_TARGETS: dict[str, list[str]] = {
    "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"], "qwen2": ["q_proj", "v_proj"],
    "opt": ["q_proj", "v_proj"], "bert": ["query", "value"], "roberta": ["query", "value"],
    "distilbert": ["q_lin", "v_lin"],
}
IA3_TARGETS: dict[str, list[str]] = {
    "llama": ["k_proj", "v_proj", "down_proj"], "mistral": ["k_proj", "v_proj", "down_proj"],
    "qwen2": ["k_proj", "v_proj", "down_proj"], "opt": ["q_proj", "k_proj", "fc2"],
    "bert": ["key", "value", "output.dense"], "roberta": ["key", "value", "output.dense"],
    "distilbert": ["k_lin", "v_lin", "lin2"],
}
IA3_FEEDFORWARD: dict[str, list[str]] = {
    "llama": ["down_proj"], "mistral": ["down_proj"], "qwen2": ["down_proj"], "opt": ["fc2"],
    "bert": ["output.dense"], "roberta": ["output.dense"], "distilbert": ["lin2"],
}


def _peft_lora_targets(model_type: str) -> list[str]:
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as mapping
    except ImportError:
        return []
    return list(mapping.get(model_type) or [])


def lora_targets(model_type: str, linear: list[str] | None = None) -> list[str]:
    """LoRA's "auto" targets for a model_type; with `linear` (the model's linear module names), only
    those it has, and when none fit, its first two (sorted) linears, so that "auto" always adapts something."""
    found = list(LORA_TARGETS.get(model_type) or _peft_lora_targets(model_type))
    if linear is None:
        return found
    present = [t for t in found if t in linear]
    return present or list(linear[:2])


def ia3_targets(model_type: str) -> list[str]:
    return list(IA3_TARGETS[model_type])


def ia3_feedforward(model_type: str) -> list[str]:
    return list(IA3_FEEDFORWARD[model_type])
