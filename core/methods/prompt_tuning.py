"""Prompt tuning (Lester et al. 2021): V trained virtual-token embeddings before the input."""
from dataclasses import dataclass

from core.schema import ConfigError, hp
from core.methods import Method, register
from core.methods._common import peft_code, task_type


@dataclass
class PromptTuningParams:
    num_virtual_tokens: int = hp(20, lo=1, hi=200, help="V: how many virtual tokens are learned")
    init: str = hp("random", choices=("random", "text"), help="Start from random vectors or from a text's tokens")
    init_text: str = hp("Classify the sentiment of this review:", help="The text used when init is text")

    def check(self):
        if self.init == "text" and not self.init_text.strip():
            raise ConfigError("method.params.init_text is empty but init is text; give a short instruction")


def apply(model, params, ctx):
    from peft import PromptTuningConfig, PromptTuningInit, get_peft_model
    kwargs = dict(task_type=task_type(ctx), num_virtual_tokens=params.num_virtual_tokens)
    if params.init == "text":
        kwargs.update(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=params.init_text,
                      tokenizer_name_or_path=getattr(ctx.tokenizer, "name_or_path", None))
    cfg = PromptTuningConfig(**kwargs)
    if params.init == "text" and ctx.tokenizer is not None:
        cfg.tokenizer_kwargs = {}
    return get_peft_model(model, cfg)


def estimate(params):
    return "prompt_tuning", {"num_virtual_tokens": int(params.get("num_virtual_tokens") or 20)}


def export(params, ctx):
    if params["init"] == "text":
        return (f"peft_config = PromptTuningConfig(task_type=TaskType.{ctx.task_type}, "
                f"num_virtual_tokens={params['num_virtual_tokens']!r},\n"
                f"    prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text={params['init_text']!r},\n"
                "    tokenizer_name_or_path=getattr(tokenizer, 'name_or_path', None))\n"
                "peft_config.tokenizer_kwargs = {}\n"
                "model = get_peft_model(model, peft_config)")
    return peft_code(f"PromptTuningConfig(task_type=TaskType.{ctx.task_type}, "
                     f"num_virtual_tokens={params['num_virtual_tokens']!r})")


METHOD = register(Method(
    name="prompt_tuning", label="Prompt tuning",
    summary="The model stays frozen; V learned 'virtual token' vectors are put before every input. "
            "Tiny, but needs more data than LoRA.",
    params_cls=PromptTuningParams, apply=apply, estimate=estimate, export=export,
    # at 5e-4 it stayed at 50 % (chance) on the sentiment reviews (issue 23)
    recommended_train={"train.learning_rate": 1e-2}, learning_rate_range=(1e-3, 1e-1),
    trains_instead="keeps W frozen and trains a few virtual token embeddings put before the input."))
