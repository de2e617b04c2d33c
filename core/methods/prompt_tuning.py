"""Prompt tuning (Lester et al. 2021): V trained virtual-token embeddings before the input."""
from dataclasses import dataclass

from peft import PromptTuningConfig, PromptTuningInit, get_peft_model

from core.schema import ConfigError, hp
from core.methods import Method, register
from core.methods._common import task_type


@dataclass
class PromptTuningParams:
    num_virtual_tokens: int = hp(20, lo=1, hi=200, help="V: how many virtual tokens are learned")
    init: str = hp("random", choices=("random", "text"), help="Start from random vectors or from a text's tokens")
    init_text: str = hp("Classify the sentiment of this review:", help="The text used when init is text")

    def check(self):
        if self.init == "text" and not self.init_text.strip():
            raise ConfigError("method.params.init_text is empty but init is text; give a short instruction")


def apply(model, params, ctx):
    kwargs = dict(task_type=task_type(ctx), num_virtual_tokens=params.num_virtual_tokens)
    if params.init == "text":
        kwargs.update(prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=params.init_text,
                      tokenizer_name_or_path=getattr(ctx.tokenizer, "name_or_path", None))
    cfg = PromptTuningConfig(**kwargs)
    if params.init == "text" and ctx.tokenizer is not None:
        cfg.tokenizer_kwargs = {}
    return get_peft_model(model, cfg)


METHOD = register(Method(
    name="prompt_tuning", label="Prompt tuning",
    summary="The model stays frozen; V learned 'virtual token' vectors are put before every input. "
            "Tiny, but needs more data than LoRA.",
    params_cls=PromptTuningParams, apply=apply))
