"""Pieces several methods share: freezing, peft task types, target resolution."""
from __future__ import annotations

from core.schema import ConfigError


def freeze(model) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def unfreeze_named(model, names: list[str]) -> None:
    for name, module in model.named_modules():
        if name.split(".")[-1] in names:
            for p in module.parameters():
                p.requires_grad_(True)


def task_type_name(task: str) -> str:
    """The peft TaskType member a task trains with (the exported script names it too)."""
    return "CAUSAL_LM" if task == "sft" else "SEQ_CLS"


def task_type(ctx):
    from peft import TaskType
    return getattr(TaskType, task_type_name(ctx.task))


def peft_code(config_call: str) -> str:
    """Export code that builds a peft config and wraps the model with it."""
    return f"peft_config = {config_call}\nmodel = get_peft_model(model, peft_config)"


def resolve_targets(targets: str, ctx) -> list[str] | str:
    """'auto' -> the architecture's query/value projections; 'all-linear' -> every block linear."""
    text = (targets or "auto").strip()
    if text == "auto":
        return list(ctx.default_targets)
    if text == "all-linear":
        return list(ctx.all_linear)
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise ConfigError("method.params.targets is empty; use auto, all-linear or module names like q_proj,v_proj")
    unknown = [n for n in names if n not in ctx.all_linear]
    if unknown:
        raise ConfigError(f"method.params.targets: module(s) {unknown} are not in this model; "
                          f"its linear modules are {sorted(ctx.all_linear)} (or use auto / all-linear)")
    return names


TARGETS_HELP = ("Which linear layers get adapters: auto (attention query and value), all-linear, "
                "or a comma list of module names")
