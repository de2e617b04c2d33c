"""What a method needs to learn: the training settings to load when a user switches to it, and the
learning rates where it is known to learn.

Both belong to the method (Method.recommended_train, the rates the "Which method wins?" study
uses, and Method.learning_rate_range), not to a second table. No streamlit here.
"""
from __future__ import annotations

import copy

from core.config import ConfigError
from core.experiments import method_overrides, overridden_paths
from core.methods import get_method


def learning_rate_range(method: str) -> tuple[float, float] | None:
    """Learning rates the method learns at on this app's tasks (MiniLM on the sentiment reviews,
    SmolLM2 on the facts); outside them a short run is known to fail (Method.learning_rate_range)."""
    try:
        return get_method(method).learning_rate_range
    except ConfigError:
        return None

FIELD_LABELS = {"train.learning_rate": "learning rate", "train.epochs": "epochs"}


def _get(d: dict, path: str):
    node = d
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _set(d: dict, path: str, value) -> None:
    node = d
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def recommended(method: str, base: dict) -> dict[str, object]:
    """{config path: value} a run of `method` should start from.

    The method's own overrides; for a path another method overrides but this one does not, the
    base preset's value (LoRA has no overrides: it learns at the preset's own rate, which was tuned
    for it), so switching LoRA -> full -> LoRA comes back to where it started."""
    out = {}
    paths = overridden_paths()
    own = method_overrides(method)
    for path in sorted(paths):
        value = own[path] if path in own else _get(base, path)
        if value is not None:
            out[path] = value
    return out


def on_switch(new_method: str, draft: dict, base: dict) -> list[tuple[str, object, object]]:
    """Set draft's training settings to new_method's recommended ones, in place.

    Returns what changed as (path, old, new), for the page to say so."""
    changes = []
    for path, value in recommended(new_method, base).items():
        old = _get(draft, path)
        if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # epochs 5 -> 5.0: a float widget refuses an int
        if old != value:
            _set(draft, path, copy.deepcopy(value))
            changes.append((path, old, value))
    return changes


def describe(changes: list[tuple[str, object, object]]) -> str:
    """'learning rate 2e-03 -> 5e-05, epochs 1 -> 5' for a switch note."""
    def fmt(path, v):
        return f"{v:.0e}" if path.endswith("learning_rate") and isinstance(v, (int, float)) else str(v)
    return ", ".join(f"{FIELD_LABELS.get(p, p.split('.')[-1])} {fmt(p, a)} → {fmt(p, b)}" for p, a, b in changes)


def learning_rate_warning(method: str, learning_rate: float) -> str:
    """Plain words when the rate is outside the range where the method is known to learn; else ''."""
    bounds = learning_rate_range(method)
    if bounds is None or not isinstance(learning_rate, (int, float)):
        return ""
    lo, hi = bounds
    if lo <= learning_rate <= hi:
        return ""
    side = "too high" if learning_rate > hi else "too low"
    effect = ("the weights are pushed too far each step and accuracy can collapse to chance"
              if learning_rate > hi else "a short run barely moves away from where it started")
    return (f"A learning rate of {learning_rate:.0e} is probably {side} for this method: it is known to learn "
            f"between {lo:.0e} and {hi:.0e}; outside that, {effect}.")
