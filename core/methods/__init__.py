"""Fine-tuning methods, registered by name.

A method is a small dataclass of its own hyperparameters (with the help and range metadata the UI
reads to build its controls) plus `apply(model, params, ctx) -> model`, and everything else that is
particular to it: how the estimate counts it, the code an exported script applies it with, the
format its weights are saved in, its anatomy hook, its label. Adding a method touches one file here
plus its test; the engine, the estimate, the export and the pages ask the method object.

Nothing here imports torch or peft: a method file imports them inside the functions that build
peft objects, so validating a config stays light.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from core.schema import ConfigError, params_schema, validate_fields
from core.methods._common import resolve_targets, task_type_name  # noqa: F401  (public through the package)


@dataclass
class MethodContext:
    """What a method needs to know about the model it adapts."""
    task: str                       # "classification" | "sft"
    kind: str                       # "encoder" | "causal"
    default_targets: list[str]      # LoRA's "auto": core.methods.targets.lora_targets of this architecture
    all_linear: list[str]           # every linear module name inside the transformer blocks
    head_names: list[str]           # the new classification head's module names (train them too)
    tokenizer: Any = None
    num_layers: int = 0             # transformer blocks in the base


@dataclass
class ExportContext:
    """What a method's export code needs to know of the run it reproduces."""
    task_type: str                  # peft TaskType member name: "CAUSAL_LM" | "SEQ_CLS"
    head_names: list[str]           # the new head's module names (modules_to_save)
    # () -> (target module names, layers_to_transform): from the run's saved adapter, else worked
    # out as the engine does; only methods with targets call it (it may build a meta model)
    adapted: Callable[[], tuple[Any, Any]] = lambda: (None, None)


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
    # estimate(params: dict) -> (the estimator's arithmetic name, its keyword arguments); None: (name, {})
    estimate: Callable[[dict], tuple[str, dict]] | None = None
    # For a method that trains some of the base's own weights: estimate_trainable(linear shapes) ->
    # how many of their parameters train (shapes have in_features, out_features, has_bias, name, path)
    estimate_trainable: Callable[[list], int] | None = None
    # export(params: dict, ExportContext) -> the body of the exported script's apply_method(model,
    # tokenizer) (torch, transformers and peft's config classes are imported there); None: not exportable
    export: Callable[[dict, ExportContext], str] | None = None
    # "peft" (an adapter folder), "full" (the whole model), "head" (the new head only) or "none";
    # None: "peft" when it trains and saves an adapter, else "none"
    weights_format: str | None = None
    # anatomy(model) -> per-layer numbers the Train page charts while it trains; None: no chart
    anatomy: Callable[[Any], Any] | None = None
    mergeable: bool = False         # peft can fold the adapter into W (merge_and_unload)
    # {config path: value}: training settings that make this method learn in a short run on this
    # app's tasks (its hyperparameters' defaults are tuned for the sliders, not for a race); loaded
    # when a user switches to it and in "Which method wins?"
    recommended_train: dict = field(default_factory=dict)
    # (low, high) learning rates where it is known to learn on this app's tasks; None: no warning
    learning_rate_range: tuple[float, float] | None = None
    # variant(params: dict) -> the name a chart shows for these params (LoRA with use_dora: "dora")
    variant: Callable[[dict], str] | None = None
    # {variant name: label} for variants the estimate counts apart (LoRA: "dora"), e.g. in the Learn
    # page's calculator
    variants: dict = field(default_factory=dict)
    # What it trains, said beside the Learn page's LoRA picture ("... W itself: no A and B.")
    trains_instead: str = ""
    # The advice when a run of it does not fit in memory: the lighter method to choose instead
    # ("QLoRA (the base in 4 bits)"); "": none lighter that does the same job
    lighter: str = ""

    @property
    def backprops_through_base(self) -> bool:
        """Gradients flow through the frozen base (so gradient checkpointing can save memory)."""
        return self.trains and not self.frozen_features

    def __post_init__(self):
        if self.weights_format is None:
            self.weights_format = "peft" if self.saves_adapter and self.trains else "none"

    def variant_name(self, params: dict | None) -> str:
        return self.variant(dict(params or {})) if self.variant else self.name

    def estimate_args(self, params: dict | None) -> tuple[str, dict]:
        """This method's params (a dict, as a RunConfig holds them) -> core.estimate's method name and kwargs."""
        return self.estimate(dict(params or {})) if self.estimate else (self.name, {})

    def export_code(self, params: dict, ctx: ExportContext) -> str:
        """Code that turns `model` into the model this method trains, for the exported script."""
        if not self.trains:
            raise ConfigError(f"a {self.name} run trains nothing, so there is no training script to export")
        if self.export is None:
            raise ConfigError(f"method {self.name} cannot be exported yet")
        return self.export(dict(params or {}), ctx)

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


def unregister(name: str) -> None:
    """Forget a method registered at run time (a test's toy method)."""
    _REGISTRY.pop(name, None)


def _load_all() -> None:
    if any(mod not in _REGISTRY for mod in _MODULES):
        for mod in _MODULES:
            importlib.import_module(f"core.methods.{mod}")


def get_method(name: str) -> Method:
    _load_all()
    if name not in _REGISTRY:
        raise ConfigError(f"method {name!r} is unknown; choose one of {list(_REGISTRY)}")
    return _REGISTRY[name]


def all_methods() -> dict[str, Method]:
    """The shipped methods in teaching order, then any registered at run time."""
    _load_all()
    shipped = {name: _REGISTRY[name] for name in _MODULES if name in _REGISTRY}
    return {**shipped, **{name: m for name, m in _REGISTRY.items() if name not in shipped}}
