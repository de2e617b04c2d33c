"""Parameter counts: the base by part, what each method adds and trains."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from core.estimate.configs import Dims, as_config, check_labels, check_positive, dims, head_kind, int_field
from core.estimate.method_kinds import check_method, trains_own_weights
from core.estimate.shapes import LinearShape, block_linears, extra_linears, linear_layers, matches, targeted_layers
from core.methods.targets import ia3_feedforward, ia3_targets


def _norm_params(cfg: dict[str, Any], d: Dims) -> int:
    """Parameters of one normalisation layer (RMSNorm: weight; LayerNorm: weight and bias)."""
    if d.family == "llama":
        return d.hidden
    if d.family == "opt":
        return 2 * d.hidden if cfg.get("layer_norm_elementwise_affine", True) else 0
    return 2 * d.hidden


def _embedding_params(cfg: dict[str, Any], d: Dims) -> int:
    tokens = d.vocab * d.embed_dim
    if d.family == "llama":
        return tokens
    if d.family == "opt":
        return tokens + (d.max_positions + 2) * d.hidden  # OPT offsets learned positions by 2
    if d.family == "bert":
        return tokens + d.max_positions * d.hidden + int_field(cfg, "type_vocab_size", 2) * d.hidden + 2 * d.hidden
    return tokens + d.max_positions * d.hidden + 2 * d.hidden  # distilbert: positions + LayerNorm


def _final_norm_params(cfg: dict[str, Any], d: Dims) -> int:
    if d.family == "llama":
        return d.hidden
    if d.family == "opt":
        has_final = cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False)
        return _norm_params(cfg, d) if has_final else 0
    return 0  # post-norm encoders normalise inside each block


def _head_params(d: Dims, head: str, num_labels: int, head_hidden: int = 0) -> int:
    """Parameters the task head adds on top of the base model (tied output weights counted once)."""
    h, v = d.hidden, d.vocab
    untied_out = 0 if d.tied else v * d.embed_dim
    if head == "base":
        return 0
    if head == "lm":
        if d.family in ("llama", "opt"):
            return untied_out
        # MLM head: transform dense + LayerNorm + output bias (+ decoder weight if untied; bert's
        # decoder then also keeps its own bias next to the head's)
        own_bias = v if d.family == "bert" and not d.tied else 0
        return (h * h + h) + 2 * h + v + untied_out + own_bias
    return linear_head_params(d, num_labels, head_hidden)


def _breakdown(cfg: dict[str, Any], head: str, num_labels: int, head_hidden: int = 0) -> dict[str, int]:
    d = dims(cfg)
    block = sum(s.params for s in block_linears(cfg, d, 0)) + 2 * _norm_params(cfg, d)
    # The MLM transform belongs to the head count instead.
    in_base = [s for s in extra_linears(d, head) if s.path.startswith(("pooler", "decoder.project"))]
    return {
        "embeddings": _embedding_params(cfg, d),
        "blocks": block * d.layers,
        "final_norm": _final_norm_params(cfg, d),
        "extra_linears": sum(s.params for s in in_base),
        "head": _head_params(d, head, num_labels, head_hidden),
    }


def param_breakdown(cfg: dict[str, Any] | str, task: str | None = None, num_labels: int = 2,
                    head_hidden: int = 0) -> dict[str, int]:
    """Parameter counts by part: embeddings, blocks, final norm, extra linears (a bare BERT's pooler,
    OPT's projections), head. Classification counts the engine's model (core.build): see linear_head_params."""
    cfg = as_config(cfg)
    head_hidden = check_positive("head_hidden", head_hidden, lo=0)
    return _breakdown(cfg, head_kind(cfg, task), check_labels(num_labels), head_hidden)


def total_params(cfg: dict[str, Any] | str, task: str | None = None, num_labels: int = 2,
                 head_hidden: int = 0) -> int:
    """All parameters of the model the config (or task) names; tied embeddings counted once."""
    return sum(param_breakdown(cfg, task, num_labels, head_hidden).values())


def _peft_head_trainable(d: Dims, head: str, num_labels: int, head_hidden: int) -> int:
    # For classification the engine names the head as peft's modules_to_save (`classifier`, `score`):
    # it trains whole.
    if head != "seq_cls":
        return 0
    return _head_params(d, head, num_labels, head_hidden)


def lora_params(shapes: list[LinearShape], r: int, dora: bool) -> int:
    # A is r x k, B is d x r; DoRA adds a magnitude vector of length d per adapted layer.
    return sum(r * (s.in_features + s.out_features) + (s.out_features if dora else 0) for s in shapes)


def _ia3_params(cfg: dict[str, Any], shapes: list[LinearShape]) -> int:
    # One scaling vector per adapted layer: on the output (length d), or for feed-forward layers
    # on the input (length k), as peft's IA3 does.
    feedforward = ia3_feedforward(cfg["model_type"])
    return sum(s.in_features if any(matches(s, f) for f in feedforward) else s.out_features for s in shapes)


def linear_head_params(d: Dims, num_labels: int = 2, head_hidden: int = 0) -> int:
    """The classification head the engine puts on the pooled features (core.build), which the
    linear_head method trains alone and the others train whole next to their adapters.

    Encoders: our own head (core.heads.make_head: one linear with a bias, or two with a hidden
    layer) over the bare encoder, whose [CLS] pooler is dropped. Causal LMs: transformers' `score`
    (one linear, no bias), which a hidden-layer head replaces.
    """
    width = d.embed_dim  # what the base model outputs (OPT projects back out to the embedding width)
    if head_hidden:
        return width * head_hidden + head_hidden + head_hidden * num_labels + num_labels
    if d.family in ("llama", "opt"):
        return width * num_labels
    return width * num_labels + num_labels


def adapter_params(cfg: dict[str, Any] | str, method: str, r: int = 8, targets: str | Sequence[str] | None = None,
                   num_virtual_tokens: int = 20, task: str | None = None, top_layers: int = 0) -> int:
    """Parameters a PEFT method adds to the model (0 for full, zero_shot and linear_head)."""
    cfg = as_config(cfg)
    d = dims(cfg)
    check_method(method)
    if method in ("lora", "dora", "qlora"):
        check_positive("r", r)
        return lora_params(targeted_layers(cfg, targets, task, top_layers), r, dora=method == "dora")
    if method == "ia3":
        chosen = ia3_targets(d.model_type) if targets is None else targets
        return _ia3_params(cfg, targeted_layers(cfg, chosen, task))
    if method == "prompt_tuning":
        return check_positive("num_virtual_tokens", num_virtual_tokens) * d.hidden
    if method == "prefix_tuning":
        # A key and a value prefix per layer, as wide as k_proj/v_proj (peft sizes them to the
        # key/value heads, so GQA models get narrower prefixes); the reparametrisation MLP is not counted.
        return check_positive("num_virtual_tokens", num_virtual_tokens) * d.layers * 2 * d.kv_width
    return 0


@dataclass(frozen=True)
class MethodCounts:
    base: int        # parameters of the underlying model (frozen or not)
    added: int       # parameters the method adds (adapters, prompts, a new head)
    trainable: int

    @property
    def total(self) -> int:
        return self.base + self.added


def method_counts(cfg: dict[str, Any] | str, method: str, r: int = 8, targets: str | Sequence[str] | None = None,
                  num_labels: int = 2, num_virtual_tokens: int = 20, head_hidden: int = 0,
                  task: str | None = None, top_layers: int = 0) -> MethodCounts:
    """Base, added and trainable parameter counts of a method on a model."""
    cfg = as_config(cfg)
    d = dims(cfg)
    check_method(method)
    check_labels(num_labels)
    check_positive("head_hidden", head_hidden, lo=0)
    if method == "linear_head":
        # linear_head only classifies: the engine's classifier, whose head is the new part that trains
        parts = _breakdown(cfg, "seq_cls", num_labels, head_hidden)
        return MethodCounts(sum(parts.values()) - parts["head"], parts["head"], parts["head"])
    if method == "zero_shot":
        # a causal LM classifies zero-shot by its LM head's label-word likelihoods (core.build), not a new head
        causal_cls = d.family in ("llama", "opt") and head_kind(cfg, task) == "seq_cls"
        return MethodCounts(total_params(cfg, "sft" if causal_cls else task, num_labels, head_hidden), 0, 0)
    base = total_params(cfg, task, num_labels, head_hidden)
    if method == "full":
        return MethodCounts(base, 0, base)
    own = trains_own_weights(method)
    if own is not None:  # some of the base's own weights train (e.g. biases), plus a new head
        head_trainable = _peft_head_trainable(d, head_kind(cfg, task), num_labels, head_hidden)
        return MethodCounts(base, 0, own(linear_layers(cfg, task)) + head_trainable)
    added = adapter_params(cfg, method, r, targets, num_virtual_tokens, task, top_layers)
    head_trainable = _peft_head_trainable(d, head_kind(cfg, task), num_labels, head_hidden)
    return MethodCounts(base, added, added + head_trainable)


def trainable_params(cfg: dict[str, Any] | str, method: str, r: int = 8,
                     targets: str | Sequence[str] | None = None, num_labels: int = 2,
                     num_virtual_tokens: int = 20, head_hidden: int = 0, task: str | None = None) -> int:
    """Trainable parameters of `method` on the model.

    full: everything. linear_head: a new head on the frozen model's pooled output (head_hidden > 0
    adds a hidden layer). lora/qlora: r*(k+d) per targeted linear. dora: lora + d per layer.
    ia3: one vector per targeted layer (peft's default targets). prompt_tuning: V*hidden.
    prefix_tuning: V*layers*2*kv_width (no reparametrisation MLP). zero_shot: 0.
    With task="classification", peft also trains the classifier head, so it is included.
    """
    return method_counts(cfg, method, r, targets, num_labels, num_virtual_tokens, head_hidden, task).trainable
