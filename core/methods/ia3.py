"""IA3 (Liu et al. 2022): learned vectors that rescale keys, values and feed-forward activations."""
from dataclasses import dataclass

from core.schema import hp
from core.methods import Method, register
from core.methods._common import peft_code, task_type


@dataclass
class IA3Params:
    targets: str = hp("auto", help="auto: peft's defaults for this architecture (keys, values, feed-forward)",
                      choices=("auto",), advanced=True)


def apply(model, params, ctx):
    from peft import IA3Config, get_peft_model
    cfg = IA3Config(task_type=task_type(ctx), modules_to_save=list(ctx.head_names) or None)
    return get_peft_model(model, cfg)


def export(params, ctx):
    return peft_code(f"IA3Config(task_type=TaskType.{ctx.task_type}, modules_to_save={ctx.head_names or None!r})")


METHOD = register(Method(
    name="ia3", label="IA3",
    summary="Three learned scaling vectors per block: the fewest trainable weights of all.",
    params_cls=IA3Params, apply=apply, export=export, mergeable=True,
    recommended_train={"train.learning_rate": 5e-3}, learning_rate_range=(1e-3, 2e-2),
    trains_instead="keeps W frozen and trains one scaling vector per adapted layer (no matrices)."))
