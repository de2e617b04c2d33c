"""Prefix tuning (Li & Liang 2021): learned key/value prefixes at every attention layer."""
from dataclasses import dataclass

from core.schema import hp
from core.methods import Method, register
from core.methods._common import peft_code, task_type


@dataclass
class PrefixTuningParams:
    num_virtual_tokens: int = hp(20, lo=1, hi=200, help="Length of the learned prefix at each layer")
    prefix_projection: bool = hp(False, help="Reparametrise the prefix through an MLP (more stable, more "
                                             "parameters while training)", advanced=True)


def apply(model, params, ctx):
    from peft import PrefixTuningConfig, get_peft_model
    cfg = PrefixTuningConfig(task_type=task_type(ctx), num_virtual_tokens=params.num_virtual_tokens,
                             prefix_projection=params.prefix_projection)
    return get_peft_model(model, cfg)


def estimate(params):
    return "prefix_tuning", {"num_virtual_tokens": int(params.get("num_virtual_tokens") or 20)}


def export(params, ctx):
    return peft_code(f"PrefixTuningConfig(task_type=TaskType.{ctx.task_type}, "
                     f"num_virtual_tokens={params['num_virtual_tokens']!r}, "
                     f"prefix_projection={params['prefix_projection']!r})")


METHOD = register(Method(
    name="prefix_tuning", label="Prefix tuning",
    summary="Learned key/value vectors prepended inside every attention layer; the weights stay frozen.",
    params_cls=PrefixTuningParams, apply=apply, estimate=estimate, export=export,
    learning_rate_range=(1e-3, 1e-1),
    trains_instead="keeps W frozen and trains key/value vectors put before every layer's attention."))
