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


def export(params, ctx):
    return "for param in model.parameters():\n    param.requires_grad_(True)"


METHOD = register(Method(
    name="full", label="Full fine-tuning", lighter="LoRA or QLoRA (the base in 4 bits)",
    summary="Every weight trains: the most capable and the most memory-hungry (weights + gradients "
            "+ two AdamW states per weight).",
    params_cls=FullParams, apply=apply, saves_adapter=False, weights_format="full", export=export,
    # full fine-tuning at 5e-4 collapsed to 50 % (chance) on the sentiment reviews (issue 23)
    recommended_train={"train.learning_rate": 5e-5}, learning_rate_range=(1e-5, 1e-4),
    trains_instead="trains every weight of W itself: no A and B."))
