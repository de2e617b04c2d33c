"""No training: the base model as it is, the baseline every method must beat.

For a causal LM on classification the answer is read from the likelihood of each label word after
a prompt (`label_prompt` below, scored by core.infer.label_word_probs); an untrained classifier
head sits near chance.
"""
from dataclasses import dataclass

from core.methods import Method, register
from core.methods._common import freeze

# The lessons' classification data is sentiment (IMDb-style reviews), so the question asks for it;
# the label words themselves come from the data.
LABEL_PROMPT = "Review: {text}\nIs the sentiment of this review {choices}?\nAnswer:"


@dataclass
class ZeroShotParams:
    pass


def apply(model, params, ctx):
    freeze(model)
    return model


def label_prompt(text: str, label_names: list[str]) -> str:
    """The prompt after which a causal LM's next-word likelihoods of the label names are compared."""
    return LABEL_PROMPT.format(text=text, choices=" or ".join(label_names))


METHOD = register(Method(
    name="zero_shot", label="Zero-shot (no training)",
    summary="The base model as is: the baseline every method must beat.",
    params_cls=ZeroShotParams, apply=apply, trains=False, saves_adapter=False,
    trains_instead="trains nothing: the model answers as it is."))
