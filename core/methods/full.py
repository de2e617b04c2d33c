"""Full fine-tuning ("trad" in the OPT-350m study): every weight trains."""
from dataclasses import dataclass

from core.methods import Method, register


@dataclass
class FullParams:
    pass


def apply(model, params, ctx):
    for p in model.parameters():
        p.requires_grad_(True)
    return model


METHOD = register(Method(
    name="full", label="Full fine-tuning",
    summary="Every weight trains: the most capable and the most memory-hungry (weights + gradients "
            "+ two AdamW states per weight).",
    params_cls=FullParams, apply=apply, saves_adapter=False))
