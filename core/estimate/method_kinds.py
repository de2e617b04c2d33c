"""Which arithmetic counts a method: the estimator's method names and a registered method's own hook."""
from __future__ import annotations

from core.config import ConfigError
from core.methods import get_method


# The estimator's arithmetic, one per kind of method ("dora" is LoRA with use_dora: its own count).
# A method maps its params onto one of these (Method.estimate_args); a registered method that trains
# some of the base's own weights instead gives Method.estimate_trainable and is counted by name.
METHODS = ("full", "linear_head", "lora", "dora", "qlora", "prompt_tuning", "prefix_tuning", "ia3", "zero_shot")

ADAPTER_METHODS = ("lora", "dora", "qlora", "ia3", "prompt_tuning", "prefix_tuning")


def trains_own_weights(method: str):
    """The estimate_trainable hook of a registered method the estimator has no arithmetic of, else None."""
    if method in METHODS:
        return None
    try:
        return get_method(method).estimate_trainable
    except ConfigError:
        return None


def check_method(method: str) -> str:
    if method not in METHODS and trains_own_weights(method) is None:
        raise ConfigError(f"method={method!r} is not known; choose one of {list(METHODS)}")
    return method


def method_args(method: dict) -> tuple[str, dict]:
    """Our method spec (as a dict) -> core.estimate's method name and keyword arguments (the method says)."""
    return get_method(method.get("name", "lora")).estimate_args(method.get("params"))
