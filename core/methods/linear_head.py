"""Frozen base + a new classification head (the "linear" variant of the OPT-350m study).

The base never changes, so its pooled features are computed once and cached: every epoch then
costs only the head (see core.train for the cached path).
"""
from dataclasses import dataclass

from core.schema import ConfigError, hp
from core.methods import Method, register
from core.methods._common import freeze, unfreeze_named


@dataclass
class LinearHeadParams:
    head_hidden: int = hp(0, lo=0, hi=4096, step=50,
                          help="Hidden units in the head (0: one linear layer; the study used 1,000)")
    prefix: str = hp("", help="Optional few-shot text prepended to every input (the prompt-engineered variant)")
    cache_features: bool = hp(True, help="Compute the frozen base's features once and reuse them every epoch",
                              advanced=True)

    def check(self):
        if len(self.prefix) > 2000:
            raise ConfigError("method.params.prefix is longer than 2000 characters")


def apply(model, params, ctx):
    freeze(model)
    unfreeze_named(model, ctx.head_names)
    return model


def estimate(params):
    return "linear_head", {"head_hidden": int(params.get("head_hidden") or 0)}


def export(params, ctx):
    return (f"for param in model.parameters():\n    param.requires_grad_(False)\n"
            f"for module_name, module in model.named_modules():\n"
            f"    if module_name.split('.')[-1] in {ctx.head_names!r}:\n"
            f"        for param in module.parameters():\n            param.requires_grad_(True)")


METHOD = register(Method(
    name="linear_head", label="Frozen base + linear head",
    summary="The base is frozen; only a new head on top trains. Fastest to train and to run, "
            "but it cannot change what the base notices.",
    params_cls=LinearHeadParams, apply=apply, tasks=("classification",), saves_adapter=False,
    frozen_features=True, weights_format="head", estimate=estimate, export=export,
    recommended_train={"train.learning_rate": 1e-3, "train.epochs": 5}, learning_rate_range=(1e-4, 1e-2),
    trains_instead="keeps W frozen and trains only a new classification head on top."))
