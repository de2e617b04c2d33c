"""No training: the base model as it is, the baseline every method must beat.

For a causal LM on classification the answer is read from the likelihood of each label word after
a prompt (see core.infer.label_word_scores); an untrained classifier head sits near chance.
"""
from dataclasses import dataclass

from core.methods import Method, register
from core.methods._common import freeze


@dataclass
class ZeroShotParams:
    pass


def apply(model, params, ctx):
    freeze(model)
    return model


METHOD = register(Method(
    name="zero_shot", label="Zero-shot (no training)",
    summary="The base model as is: the baseline every method must beat.",
    params_cls=ZeroShotParams, apply=apply, trains=False, saves_adapter=False))
