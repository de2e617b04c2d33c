"""The linear layers of a model, by config alone, and which of them an adapter's targets reach."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from core.config import ConfigError
from core.estimate.configs import Dims, as_config, check_positive, dims, family, head_kind
from core.methods.targets import lora_targets


@dataclass(frozen=True)
class LinearShape:
    """One nn.Linear: weight is (out_features d) x (in_features k), as torch stores it."""
    layer: int | None   # block index; None for linears outside the blocks (pooler, OPT projections, MLM transform)
    name: str           # module name as peft matches it: "q_proj", "query", "q_lin", "fc1", "dense"...
    in_features: int
    out_features: int
    has_bias: bool
    path: str = ""      # dotted path inside the base model, e.g. "layers.0.self_attn.q_proj"

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features

    @property
    def params(self) -> int:
        return self.weight_params + (self.out_features if self.has_bias else 0)


def block_linears(cfg: dict[str, Any], d: Dims, i: int) -> list[LinearShape]:
    """(name, sub-path, k, d, bias) of every linear in block i, in module order."""
    h, f = d.hidden, d.intermediate
    if d.family == "llama":
        attn_bias, mlp_bias = bool(cfg.get("attention_bias", False)), bool(cfg.get("mlp_bias", False))
        qkv_bias = attn_bias or d.model_type == "qwen2"  # Qwen2 always biases q, k, v (never o)
        rows = [("q_proj", "self_attn", h, d.q_width, qkv_bias), ("k_proj", "self_attn", h, d.kv_width, qkv_bias),
                ("v_proj", "self_attn", h, d.kv_width, qkv_bias), ("o_proj", "self_attn", d.q_width, h, attn_bias),
                ("gate_proj", "mlp", h, f, mlp_bias), ("up_proj", "mlp", h, f, mlp_bias),
                ("down_proj", "mlp", f, h, mlp_bias)]
        prefix = f"layers.{i}"
    elif d.family == "opt":
        bias = bool(cfg.get("enable_bias", True))
        rows = [("k_proj", "self_attn", h, h, bias), ("v_proj", "self_attn", h, h, bias),
                ("q_proj", "self_attn", h, h, bias), ("out_proj", "self_attn", h, h, bias),
                ("fc1", "", h, f, bias), ("fc2", "", f, h, bias)]
        prefix = f"decoder.layers.{i}"
    elif d.family == "bert":
        rows = [("query", "attention.self", h, h, True), ("key", "attention.self", h, h, True),
                ("value", "attention.self", h, h, True), ("dense", "attention.output", h, h, True),
                ("dense", "intermediate", h, f, True), ("dense", "output", f, h, True)]
        prefix = f"encoder.layer.{i}"
    else:
        rows = [("q_lin", "attention", h, h, True), ("k_lin", "attention", h, h, True),
                ("v_lin", "attention", h, h, True), ("out_lin", "attention", h, h, True),
                ("lin1", "ffn", h, f, True), ("lin2", "ffn", f, h, True)]
        prefix = f"transformer.layer.{i}"
    return [LinearShape(i, name, k, out, bias, ".".join(p for p in (prefix, sub, name) if p))
            for name, sub, k, out, bias in rows]


def extra_linears(d: Dims, head: str) -> list[LinearShape]:
    """Linears outside the blocks that peft's 'all-linear' would still adapt (never the output layer)."""
    h = d.hidden
    if d.family == "opt" and d.embed_dim != h:
        return [LinearShape(None, "project_out", h, d.embed_dim, False, "decoder.project_out"),
                LinearShape(None, "project_in", d.embed_dim, h, False, "decoder.project_in")]
    roberta = d.model_type == "roberta"
    # A classification run drops the [CLS] pooler (core.heads.drop_unused_pooler): only the bare
    # base model keeps it.
    if d.family == "bert" and head == "base":
        return [LinearShape(None, "dense", h, h, True, "pooler.dense")]
    if d.family == "bert" and head == "lm":
        return [LinearShape(None, "dense", h, h, True,
                            "lm_head.dense" if roberta else "cls.predictions.transform.dense")]
    if d.family == "distilbert" and head == "lm":
        return [LinearShape(None, "vocab_transform", h, h, True, "vocab_transform")]
    return []


def linear_layers(cfg: dict[str, Any] | str, task: str | None = None) -> list[LinearShape]:
    """Every nn.Linear of the model except the output layer (lm_head / score / our classifier), blocks first."""
    cfg = as_config(cfg)
    d = dims(cfg)
    shapes = [shape for i in range(d.layers) for shape in block_linears(cfg, d, i)]
    return shapes + extra_linears(d, head_kind(cfg, task))


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def default_targets(cfg: dict[str, Any] | str) -> list[str]:
    """LoRA's "auto" targets (the engine's too): the attention query and value projections."""
    cfg = as_config(cfg)
    family(cfg)  # an architecture the estimator does not know fails here, by name
    return lora_targets(cfg["model_type"])


def all_linear_targets(cfg: dict[str, Any] | str, task: str | None = None) -> list[str]:
    """Module names that together match every linear but the output layer (peft's 'all-linear')."""
    return _unique(shape.name for shape in linear_layers(cfg, task))


def matches(shape: LinearShape, target: str) -> bool:
    # peft's rule for a list of targets: the full module name equals the target or ends with ".target".
    return shape.path == target or shape.path.endswith("." + target)


def parse_targets(cfg: dict[str, Any], targets: str | Sequence[str] | None,
                  task: str | None = None) -> list[str]:
    """Normalise targets: None -> defaults, 'all-linear' -> every linear, 'a,b' or [a, b] -> checked list."""
    if targets is None:
        return default_targets(cfg)
    if isinstance(targets, str):
        if targets.strip().lower() == "all-linear":
            return all_linear_targets(cfg, task)
        targets = targets.split(",")
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
        raise ConfigError(f"targets={targets!r} must be module names such as 'q_proj,v_proj' or 'all-linear'")
    names = _unique(t.strip() for t in targets if t.strip())
    if not names:
        raise ConfigError("targets is empty; name at least one module, e.g. " + ",".join(default_targets(cfg)))
    shapes = linear_layers(cfg, task)
    for name in names:
        if not any(matches(shape, name) for shape in shapes):
            raise ConfigError(f"target {name!r} matches no linear layer of this {family(cfg)} model; "
                              f"available: {all_linear_targets(cfg, task)}")
    return names


def first_adapted_layer(cfg: dict[str, Any] | str, top_layers: int = 0) -> int:
    """The lowest block an adapter on the last `top_layers` blocks reaches (0: all blocks)."""
    layers = dims(as_config(cfg)).layers
    check_positive("top_layers", top_layers, lo=0)
    return layers - top_layers if 0 < top_layers < layers else 0


def targeted_layers(cfg: dict[str, Any] | str, targets: str | Sequence[str] | None = None,
                    task: str | None = None, top_layers: int = 0) -> list[LinearShape]:
    """The linear layers a LoRA-style adapter with these targets would wrap (peft's
    layers_to_transform: with top_layers, only those in the last top_layers blocks)."""
    cfg = as_config(cfg)
    names = parse_targets(cfg, targets, task)
    shapes = [s for s in linear_layers(cfg, task) if any(matches(s, n) for n in names)]
    first = first_adapted_layer(cfg, top_layers)
    if first:
        shapes = [s for s in shapes if s.layer is not None and s.layer >= first]
    return shapes
