"""Fine-tuning methods, registered by name.

A method is a small dataclass of its own hyperparameters (with the help and range metadata the UI
reads to build its controls) plus `apply(model, params, ctx) -> model`. Adding a method touches one
file here plus its test.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from core.schema import ConfigError, params_schema, validate_fields


@dataclass
class MethodContext:
    """What a method needs to know about the model it adapts."""
    task: str                       # "classification" | "sft"
    kind: str                       # "encoder" | "causal"
    default_targets: list[str]      # attention query/value projections of this architecture
    all_linear: list[str]           # every linear module name inside the transformer blocks
    head_names: list[str]           # the new classification head's module names (train them too)
    tokenizer: Any = None
    num_layers: int = 0             # transformer blocks in the base


@dataclass
class Method:
    name: str
    label: str
    summary: str
    params_cls: type
    apply: Callable[[Any, Any, MethodContext], Any]
    tasks: tuple = ("classification", "sft")
    trains: bool = True
    saves_adapter: bool = True      # weights saved in peft's format (loadable with PeftModel)
    quantized_base: bool = False    # the base is loaded in 4-bit
    frozen_features: bool = False   # base output does not change during training (cacheable)
    extra: dict = field(default_factory=dict)
    # check_model(params, ctx): raise ConfigError when these params cannot work on this model (e.g.
    # target modules it does not have). Called with the model built on the meta device, so before
    # any data or weights load; ctx.tokenizer is None there.
    check_model: Callable[[Any, MethodContext], None] | None = None

    def make_params(self, values: dict | None):
        values = dict(values or {})
        allowed = {f.name for f in dataclasses.fields(self.params_cls)}
        unknown = set(values) - allowed
        if unknown:
            raise ConfigError(f"method {self.name}: unknown hyperparameter(s) {sorted(unknown)}; "
                              f"allowed: {sorted(allowed) or 'none'}")
        try:
            params = self.params_cls(**values)
        except TypeError as e:
            raise ConfigError(f"method {self.name}: {e}") from None
        from core.schema import coerce_fields
        coerce_fields(params)
        validate_fields(params, f"method.params")
        check = getattr(params, "check", None)
        if check:
            check()
        return params

    def check_task(self, task: str) -> None:
        if task not in self.tasks:
            raise ConfigError(f"method {self.name} does not support task {task!r}; it supports {list(self.tasks)}")

    def schema(self) -> list[dict]:
        return params_schema(self.params_cls)


_REGISTRY: dict[str, Method] = {}
_MODULES = ("zero_shot", "full", "linear_head", "lora", "qlora", "prompt_tuning", "prefix_tuning", "ia3")


def register(method: Method) -> Method:
    _REGISTRY[method.name] = method
    return method


def _load_all() -> None:
    if len(_REGISTRY) < len(_MODULES):
        for mod in _MODULES:
            importlib.import_module(f"core.methods.{mod}")


def get_method(name: str) -> Method:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"method {name!r} is unknown; choose one of {list(_REGISTRY)}")
    return _REGISTRY[name]


def all_methods() -> dict[str, Method]:
    _load_all()
    return {name: _REGISTRY[name] for name in _MODULES if name in _REGISTRY}
