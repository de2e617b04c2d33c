"""Method names as the pages show them: the method registry's labels (core.methods), with the
Learn page's own wording where it says more."""
from __future__ import annotations

from core.methods import all_methods

# Learn's wording where the registry's label is shorter: the page explains each method to a newcomer.
LEARN_WORDING = {"linear_head": "Linear head only (frozen model)", "ia3": "IA³ (learned scaling vectors)"}


def calculator_methods() -> list[str]:
    """The calculator's methods, in the registry's order: every method that trains, each followed by
    the variants the estimate prices apart (LoRA's "dora"). Zero-shot trains nothing: no bar to draw."""
    names = []
    for name, method in all_methods().items():
        if method.trains:
            names += [name, *method.variants]
    return names


def learn_method_labels() -> dict[str, str]:
    """Method name -> label for the Learn page's calculator, in the calculator's order."""
    # The registry imports no peft or torch (tests/test_method_registry.py), so no warm-up wait here.
    labels = {}
    for name, method in all_methods().items():
        labels[name] = LEARN_WORDING.get(name) or method.label
        labels.update(method.variants)
    return {name: labels[name] for name in calculator_methods()}


def trains_instead(name: str) -> str:
    """What a method trains instead of LoRA's A and B (the registry's words), "" for LoRA itself,
    its variants (DoRA) and QLoRA: the Learn page's LoRA picture is theirs."""
    for method_name, method in all_methods().items():
        if name == method_name:
            return method.trains_instead
        if name in method.variants:
            return ""
    return "adds no A and B matrices."
