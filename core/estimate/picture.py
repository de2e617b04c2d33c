"""The LoRA picture for the Learn page: real shapes of W, A and B on one linear."""
from __future__ import annotations

from typing import Any

from core.config import ConfigError
from core.estimate.configs import as_config, check_positive, dims
from core.estimate.shapes import block_linears, matches


def lora_picture(cfg: dict[str, Any] | str, layer: int = 0, module: str = "q_proj", r: int = 8,
                 alpha: float = 16) -> dict[str, Any]:
    """Real shapes for W' = W + (alpha/r)·B·A on one linear: W is d×k, A is r×k, B is d×r."""
    cfg = as_config(cfg)
    d = dims(cfg)
    check_positive("r", r)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < d.layers:
        raise ConfigError(f"layer={layer!r} is out of range; this model has layers 0..{d.layers - 1}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"alpha={alpha!r} must be a number > 0")
    shapes = block_linears(cfg, d, layer)
    # The path inside the block names every linear uniquely, even bert's three "dense" layers.
    in_block = {s.path.split(f".{layer}.", 1)[1]: s for s in shapes}
    found = [in_block[module]] if module in in_block else [s for s in shapes if matches(s, module)]
    if len(found) != 1:
        names = [key if shape.name == "dense" else shape.name for key, shape in in_block.items()]
        why = "is ambiguous" if found else "is not a linear in this layer"
        raise ConfigError(f"module={module!r} {why}; choose one of {names}")
    shape = found[0]
    out_f, in_f = shape.out_features, shape.in_features
    params_w, params_ab = out_f * in_f, r * (in_f + out_f)
    return {
        "layer": layer, "module": module, "path": shape.path,
        "d": out_f, "k": in_f, "r": r, "alpha": alpha, "scale": alpha / r,
        "W": [out_f, in_f], "A": [r, in_f], "B": [out_f, r],
        "params_W": params_w, "params_AB": params_ab, "ratio": params_ab / params_w,
        "max_rank": min(out_f, in_f),
    }
