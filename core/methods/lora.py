"""LoRA (Hu et al. 2021): W' = W + (alpha/r)·B·A with W frozen and only A (r×k), B (d×r) trained.

DoRA (Liu et al. 2024) adds a trained magnitude per output; rsLoRA (Kalajdzievski 2023) scales by
alpha/sqrt(r) so that higher ranks keep learning.
"""
from dataclasses import dataclass

from core.schema import ConfigError, hp
from core.methods import Method, register
from core.methods._common import TARGETS_HELP, resolve_targets, task_type


@dataclass
class LoraParams:
    r: int = hp(8, lo=1, hi=256, help="Rank of the update B·A: how many directions each layer may change in")
    alpha: float = hp(16.0, lo=0.0, hi=1024.0, lo_open=True, help="Scale of the update: ΔW = (alpha/r)·B·A")
    dropout: float = hp(0.05, lo=0.0, hi=1.0, hi_open=True, help="Dropout on the adapter's input")
    targets: str = hp("all-linear", help=TARGETS_HELP)
    top_layers: int = hp(0, lo=0, hi=200, help="Adapt only the last N blocks (0: all). Backpropagation then "
                         "stops at the lowest adapted block, so training gets faster")
    use_dora: bool = hp(False, help="DoRA: also learn a magnitude per output unit", advanced=True)
    use_rslora: bool = hp(False, help="rsLoRA: scale by alpha/sqrt(r) instead of alpha/r", advanced=True)
    cache_frozen_prefix: bool = hp(True, help="With top_layers: compute the frozen blocks below once per dataset "
                                   "and train on their cached output (same result, each epoch much faster)",
                                   advanced=True)

    def check(self):
        if not isinstance(self.targets, str):
            raise ConfigError(f"method.params.targets={self.targets!r} must be text: auto, all-linear or names")


def adapted_layers(params, ctx) -> list[int] | None:
    if not params.top_layers or not ctx.num_layers or params.top_layers >= ctx.num_layers:
        return None
    return list(range(ctx.num_layers - params.top_layers, ctx.num_layers))


def lora_config(params, ctx):
    """Our params -> peft.LoraConfig."""
    from peft import LoraConfig
    return LoraConfig(
        layers_to_transform=adapted_layers(params, ctx),
        task_type=task_type(ctx), r=params.r, lora_alpha=params.alpha, lora_dropout=params.dropout,
        target_modules=resolve_targets(params.targets, ctx), use_dora=params.use_dora,
        use_rslora=params.use_rslora, modules_to_save=list(ctx.head_names) or None)


def check_model(params, ctx):
    """Before any weights load: the target modules must exist in this model."""
    resolve_targets(params.targets, ctx)


def apply(model, params, ctx):
    from peft import get_peft_model
    return get_peft_model(model, lora_config(params, ctx))


def anatomy(model):
    from core.anatomy import lora_anatomy
    return lora_anatomy(model)


def variant(params):
    return "dora" if params.get("use_dora") else "lora"


def estimate(params):
    """The estimator's arguments; DoRA has arithmetic of its own there."""
    targets = params.get("targets", "auto")
    kwargs = {"r": int(params.get("r") or 8), "targets": None if targets in ("auto", None) else targets,
              "lora_dropout": float(params.get("dropout") or 0.0), "top_layers": int(params.get("top_layers") or 0)}
    return variant(params), kwargs


def export(params, ctx, prepare: str = ""):
    targets, layers = ctx.adapted()
    kwargs = dict(layers_to_transform=layers, r=params["r"], lora_alpha=params["alpha"],
                  lora_dropout=params["dropout"], target_modules=targets, use_dora=params["use_dora"],
                  use_rslora=params["use_rslora"], modules_to_save=ctx.head_names or None)
    args = ",\n    ".join(f"{k}={v!r}" for k, v in kwargs.items())
    return (f"{prepare}peft_config = LoraConfig(\n    task_type=TaskType.{ctx.task_type},\n    {args})\n"
            "model = get_peft_model(model, peft_config)")


METHOD = register(Method(
    name="lora", label="LoRA", lighter="QLoRA (the base in 4 bits)",
    summary="Freeze W, learn a low-rank update B·A beside chosen layers: a fraction of a percent of "
            "the weights, close to full fine-tuning in accuracy.",
    params_cls=LoraParams, apply=apply, check_model=check_model, estimate=estimate, export=export,
    anatomy=anatomy, mergeable=True, variant=variant, variants={"dora": "DoRA (LoRA + magnitude)"},
    # learns from 2e-4 (bench/imdb_defaults.py) to 2e-3 (the app's default, which it keeps: no overrides)
    learning_rate_range=(1e-4, 5e-3)))
