"""Method names as the pages show them: the method registry's labels (core.methods), with the
Learn page's own wording where it says more."""
from __future__ import annotations

from pages.shared.session import wait_for_warm_up

# The calculator's methods, as core.estimate prices them (zero_shot trains nothing: no bar to draw).
CALCULATOR_METHODS = ("full", "linear_head", "lora", "dora", "qlora", "prompt_tuning", "prefix_tuning", "ia3")
# Learn's wording where the registry's label is shorter: the page explains each method to a newcomer.
# dora is not a registered method (it is LoRA with use_dora), but the estimate prices it apart.
LEARN_WORDING = {"linear_head": "Linear head only (frozen model)", "dora": "DoRA (LoRA + magnitude)",
                 "ia3": "IA³ (learned scaling vectors)"}


def learn_method_labels() -> dict[str, str]:
    """Method name -> label for the Learn page's calculator, in the calculator's order."""
    # Loading the registry imports peft: never beside the warm-up thread importing it too.
    wait_for_warm_up()
    from core.methods import all_methods
    registry = {name: method.label for name, method in all_methods().items()}
    return {name: LEARN_WORDING.get(name) or registry[name] for name in CALCULATOR_METHODS}
