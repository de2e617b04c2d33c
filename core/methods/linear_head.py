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


METHOD = register(Method(
    name="linear_head", label="Frozen base + linear head",
    summary="The base is frozen; only a new head on top trains. Fastest to train and to run, "
            "but it cannot change what the base notices.",
    params_cls=LinearHeadParams, apply=apply, tasks=("classification",), saves_adapter=False,
    frozen_features=True))
