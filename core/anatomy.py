"""What LoRA learned, layer by layer: ‖ΔW‖/‖W‖ and the singular values of ΔW = (alpha/r)·B·A.

ΔW is d×k but has rank ≤ r, so its spectrum comes from an r×r matrix: with B = Q_B·R_B and
Aᵀ = Q_A·R_A (thin QR), B·A = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, and Q_B, Q_A have orthonormal columns, so
the singular values of ΔW are those of s·R_B·R_Aᵀ. ‖ΔW‖_F is the root of their squares' sum.
Cost: O((d+k)·r²) instead of O(d·k·min(d,k)) for an SVD of the explicit product.
"""
from __future__ import annotations

import re
import weakref

import torch

# Frozen weights never change: their norm is computed once per layer. Keyed by the layer itself,
# weakly: an id() key outlives its layer, and a later model's layer that reuses the id would be
# served the old model's norm.
_W_NORMS: "weakref.WeakKeyDictionary[torch.nn.Module, float]" = weakref.WeakKeyDictionary()


def update_spectrum(A: torch.Tensor, B: torch.Tensor, scale: float) -> torch.Tensor:
    """Singular values (descending) of scale·B·A for A (r×k), B (d×r)."""
    A, B = A.detach().float(), B.detach().float()
    _, r_b = torch.linalg.qr(B)          # B = Q_B R_B, R_B is r×r
    _, r_a = torch.linalg.qr(A.T)        # Aᵀ = Q_A R_A
    return torch.linalg.svdvals(scale * (r_b @ r_a.T))


def _base_weight(layer) -> torch.Tensor:
    w = layer.base_layer.weight
    if w.__class__.__name__ == "Params4bit":  # QLoRA: measure against the dequantised base
        import bitsandbytes.functional as bnbf
        return bnbf.dequantize_4bit(w.data, w.quant_state).float()
    return w.detach().float()


def _weight_norm(layer) -> float:
    key = layer.base_layer
    if key not in _W_NORMS:
        _W_NORMS[key] = float(torch.linalg.norm(_base_weight(layer)))
    return _W_NORMS[key]


_LAYER_NO = re.compile(r"\.(?:layers?|h|blocks)\.(\d+)\.")


def lora_anatomy(model, adapter: str = "default", top: int = 8) -> list[dict]:
    """One dict per adapted module: layer, module, rel_norm, delta_norm, singular values, energy."""
    out = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is None or adapter not in lora_a or not hasattr(module, "base_layer"):
            continue
        A = lora_a[adapter].weight
        B = module.lora_B[adapter].weight
        scale = float(module.scaling[adapter])
        with torch.no_grad():
            if bool(torch.isfinite(A).all()) and bool(torch.isfinite(B).all()):
                s = update_spectrum(A, B, scale)
            else:  # a diverged run: report NaN (the loss check ends it) instead of failing in the SVD
                s = torch.full((min(A.shape[0], B.shape[1]),), float("nan"))
        delta = float(torch.sqrt((s ** 2).sum()))
        energy = torch.cumsum(s ** 2, 0) / max(float((s ** 2).sum()), 1e-30)
        match = _LAYER_NO.search(f".{name}.")
        out.append({
            "name": name, "layer": int(match.group(1)) if match else -1, "module": name.split(".")[-1],
            "delta_norm": delta, "weight_norm": _weight_norm(module),
            "rel_norm": delta / max(_weight_norm(module), 1e-30),
            "singular_values": [float(x) for x in s[:top]],
            "energy": [float(x) for x in energy[:top]],
        })
    return out


def heatmap(layers: list[dict]) -> tuple[list[int], list[str], list[list[float]]]:
    """(layer numbers, module names, rel_norm[layer][module]) for a layers × modules picture."""
    rows = sorted({e["layer"] for e in layers})
    cols = sorted({e["module"] for e in layers})
    grid = [[0.0] * len(cols) for _ in rows]
    for e in layers:
        grid[rows.index(e["layer"])][cols.index(e["module"])] = e["rel_norm"]
    return rows, cols, grid
