"""Parameter and memory arithmetic from a model config alone: no weights, no torch.

Everything here is derived from a Hugging Face `config.json` (shipped ones live in
assets/model_configs/), so the Learn and Estimate pages can talk about a 70B model on a laptop.
Counts are exact for the supported families (llama/mistral, opt, bert, distilbert): the tests
check them against transformers models built on the meta device and against peft's own counts.
Memory figures are estimates; each part documents what it assumes.

CLI:  python -m core.estimate --model llama-2-7b --method lora --r 8 --targets q_proj,v_proj
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, NoReturn, Sequence

from core.config import ConfigError
from core.methods import get_method
from core.methods.targets import ia3_feedforward, ia3_targets, lora_targets
from core.safety import local_models_allowed

CONFIG_DIR = Path(__file__).resolve().parent.parent / "assets" / "model_configs"
INDEX_FILE = CONFIG_DIR / "index.json"

# The estimator's arithmetic, one per kind of method ("dora" is LoRA with use_dora: its own count).
# A method maps its params onto one of these (Method.estimate_args); a registered method that trains
# some of the base's own weights instead gives Method.estimate_trainable and is counted by name.
METHODS = ("full", "linear_head", "lora", "dora", "qlora", "prompt_tuning", "prefix_tuning", "ia3", "zero_shot")
ADAPTER_METHODS = ("lora", "dora", "qlora", "ia3", "prompt_tuning", "prefix_tuning")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
OPTIMIZER_STATE_BYTES = {"adamw": 8, "adamw_8bit": 2, "sgd": 0}  # per trainable param
TASKS = ("classification", "sft")

# model_type -> family whose module layout we know.
# qwen2 is llama with biases on q, k and v; roberta is bert whose classifier replaces the pooler.
FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "opt": "opt", "bert": "bert",
            "roberta": "bert", "distilbert": "distilbert"}

# Default LoRA / IA3 targets: core.methods.targets, the table the engine reads too.

NF4_BLOCK = 64          # bitsandbytes 4-bit block size: one absmax constant per 64 weights
NF4_NESTED_BLOCK = 256  # double quantisation: the absmax constants are themselves 8-bit, blocks of 256


# --------------------------------------------------------------------------------------------
# Model configs
# --------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _index() -> dict[str, dict[str, str]]:
    with open(INDEX_FILE, encoding="utf-8") as f:
        return json.load(f)


def list_models() -> dict[str, str]:
    """Shipped config keys -> human label, in display order."""
    return {key: entry["label"] for key, entry in _index().items()}


def model_info(key: str) -> dict[str, str]:
    """The index entry (file, label, hub_id) of a shipped config key."""
    if key not in _index():
        raise ConfigError(f"unknown model key {key!r}; choose one of {sorted(_index())}")
    return dict(_index()[key])


def _read_json_object(path: Path) -> dict[str, Any]:
    # A config.json is a few KB; refusing big files keeps a stray path from eating memory.
    if path.stat().st_size > 1_000_000:
        raise ConfigError(f"{path.name} is larger than 1 MB; that is not a model config.json")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path.name} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path.name} does not hold a JSON object; a config.json maps field names to values")
    return data


def _resolve_path(value: str) -> Path | None:
    # Only an existing *.json file or a folder holding config.json counts as a path.
    path = Path(os.path.expanduser(value))
    if path.is_dir() and (path / "config.json").is_file():
        return path / "config.json"
    if path.suffix == ".json" and path.is_file():
        return path
    return None


def load_config(key_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """A config dict from a shipped key (or its hub id), or from a path to a config.json / its folder.

    Raises ConfigError (a ValueError) naming the allowed keys for anything else, and for configs
    whose architecture family is not supported here.
    """
    index = _index()
    value = os.fspath(key_or_path) if isinstance(key_or_path, os.PathLike) else key_or_path
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"model={key_or_path!r} is empty; choose one of {list(index)} or a config.json path")
    value = value.strip()
    by_hub_id = {entry["hub_id"]: key for key, entry in index.items()}
    key = value if value in index else by_hub_id.get(value)
    if key is not None:
        cfg = _read_json_object(CONFIG_DIR / index[key]["file"])
    else:
        path = _resolve_path(value) if "\x00" not in value else None
        if path is None:
            raise ConfigError(f"unknown model {value!r}; choose one of {list(index)} or give a path to a config.json")
        if not local_models_allowed():
            raise ConfigError(f"model={value!r}: reading local config files is disabled on this server; "
                              f"choose one of {list(index)}")
        cfg = _read_json_object(path)
    _dims(cfg)  # fail now, with a clear message, rather than deep inside an estimate
    return cfg


def _as_config(cfg: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(cfg, (str, os.PathLike)):
        return load_config(cfg)
    if not isinstance(cfg, dict):
        raise ConfigError(f"expected a config dict, a model key or a config.json path, not {type(cfg).__name__}")
    return cfg


# --------------------------------------------------------------------------------------------
# Normalised dimensions
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Dims:
    """The few numbers every count needs, under one naming whatever the family calls them."""
    family: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    max_positions: int
    tied: bool
    embed_dim: int     # width of the token embeddings (OPT-350m: 512, projected in to 1024)
    gated_mlp: bool    # SwiGLU (gate, up, down) rather than two linears
    attn_dropout: float
    hidden_dropout: float
    model_type: str = ""  # where a family member differs in layout (qwen2's q/k/v biases, roberta's head)

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim


def _int(cfg: dict[str, Any], key: str, default: int | None = None) -> int:
    value = cfg.get(key, default)
    if value is None:
        raise ConfigError(f"config field {key!r} is missing; it is needed to count parameters")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"config field {key}={value!r} must be a whole number >= 1")
    return value


def _float(cfg: dict[str, Any], key: str, default: float = 0.0) -> float:
    value = cfg.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"config field {key}={value!r} must be a probability in [0, 1)")
    return float(value)


def family(cfg: dict[str, Any]) -> str:
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(f"model_type={model_type!r} is not supported by the estimator; "
                          f"supported: {sorted(FAMILIES)}")
    return FAMILIES[model_type]


def _dims(cfg: dict[str, Any]) -> Dims:
    fam = family(cfg)
    if fam == "llama":
        hidden, heads = _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads")
        kv_heads = _int(cfg, "num_key_value_heads", heads)
        # head_dim may be set explicitly (and then need not divide hidden_size); else hidden / heads
        explicit = cfg.get("head_dim") is not None
        if not explicit and hidden % heads:
            raise ConfigError(f"hidden size {hidden} is not divisible by {heads} attention heads")
        head_dim = _int(cfg, "head_dim") if explicit else hidden // heads
        out = Dims(fam, hidden, _int(cfg, "intermediate_size"), _int(cfg, "num_hidden_layers"), heads, kv_heads,
                    head_dim, _int(cfg, "vocab_size"), _int(cfg, "max_position_embeddings", 2048),
                    bool(cfg.get("tie_word_embeddings", False)), hidden, True,
                    _float(cfg, "attention_dropout"), 0.0)
    elif fam == "opt":
        hidden, heads = _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads")
        out = Dims(fam, hidden, _int(cfg, "ffn_dim"), _int(cfg, "num_hidden_layers"), heads, heads,
                    hidden // heads, _int(cfg, "vocab_size"), _int(cfg, "max_position_embeddings"),
                    bool(cfg.get("tie_word_embeddings", True)), _int(cfg, "word_embed_proj_dim", hidden), False,
                    _float(cfg, "attention_dropout"), _float(cfg, "dropout"))
    elif fam == "bert":
        hidden, heads = _int(cfg, "hidden_size"), _int(cfg, "num_attention_heads")
        out = Dims(fam, hidden, _int(cfg, "intermediate_size"), _int(cfg, "num_hidden_layers"), heads, heads,
                    hidden // heads, _int(cfg, "vocab_size"), _int(cfg, "max_position_embeddings"),
                    bool(cfg.get("tie_word_embeddings", True)), hidden, False,
                    _float(cfg, "attention_probs_dropout_prob"), _float(cfg, "hidden_dropout_prob"))
    else:  # distilbert
        hidden, heads = _int(cfg, "dim"), _int(cfg, "n_heads")
        out = Dims(fam, hidden, _int(cfg, "hidden_dim"), _int(cfg, "n_layers"), heads, heads,
                    hidden // heads, _int(cfg, "vocab_size"), _int(cfg, "max_position_embeddings"),
                    bool(cfg.get("tie_word_embeddings", True)), hidden, False,
                    _float(cfg, "attention_dropout"), _float(cfg, "dropout"))
    if out.hidden % out.heads and fam != "llama":
        raise ConfigError(f"hidden size {out.hidden} is not divisible by {out.heads} attention heads")
    if out.heads % out.kv_heads:
        raise ConfigError(f"{out.heads} attention heads cannot be shared by {out.kv_heads} key/value heads")
    return dataclasses.replace(out, model_type=str(cfg.get("model_type")))


def dims(cfg: dict[str, Any] | str) -> Dims:
    """Normalised dimensions of a config (or shipped key)."""
    return _dims(_as_config(cfg))


# --------------------------------------------------------------------------------------------
# Heads: which top-level model we are counting
# --------------------------------------------------------------------------------------------

def _head_kind(cfg: dict[str, Any], task: str | None) -> str:
    """'lm', 'seq_cls' or 'base': the head the task (or else the config's architectures) implies."""
    if task is not None and task not in TASKS:
        raise ConfigError(f"task={task!r} is not allowed; choose one of {list(TASKS)} or leave it unset")
    if task == "classification":
        return "seq_cls"
    if task == "sft":
        return "lm"
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""
    if arch.endswith("ForSequenceClassification"):
        return "seq_cls"
    if arch.endswith(("ForCausalLM", "ForMaskedLM", "LMHeadModel")):
        return "lm"
    if arch:
        return "base"  # e.g. "BertModel": the sentence-embedding models ship without a head
    return "lm" if family(cfg) in ("llama", "opt") else "base"


def _check_labels(num_labels: int) -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ConfigError(f"num_labels={num_labels!r} must be a whole number >= 1")
    return num_labels


# --------------------------------------------------------------------------------------------
# Linear layers
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearShape:
    """One nn.Linear: weight is (out_features d) x (in_features k), as torch stores it."""
    layer: int | None   # block index; None for linears outside the blocks (pooler, OPT projections)
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


def _block_linears(cfg: dict[str, Any], d: Dims, i: int) -> list[LinearShape]:
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


def _extra_linears(d: Dims, head: str) -> list[LinearShape]:
    """Linears outside the blocks that peft's 'all-linear' would still adapt (never the output layer)."""
    h = d.hidden
    if d.family == "opt" and d.embed_dim != h:
        return [LinearShape(None, "project_out", h, d.embed_dim, False, "decoder.project_out"),
                LinearShape(None, "project_in", d.embed_dim, h, False, "decoder.project_in")]
    roberta = d.model_type == "roberta"
    if d.family == "bert" and (head == "base" or (head == "seq_cls" and not roberta)):
        return [LinearShape(None, "dense", h, h, True, "pooler.dense")]
    if d.family == "bert" and head == "lm":
        return [LinearShape(None, "dense", h, h, True,
                            "lm_head.dense" if roberta else "cls.predictions.transform.dense")]
    if d.family == "distilbert" and head == "lm":
        return [LinearShape(None, "vocab_transform", h, h, True, "vocab_transform")]
    # distilbert's pre_classifier is left out: peft trains it whole as part of the head (below).
    return []


def linear_layers(cfg: dict[str, Any] | str, task: str | None = None) -> list[LinearShape]:
    """Every nn.Linear of the model except the output layer (lm_head / classifier), blocks first."""
    cfg = _as_config(cfg)
    d = _dims(cfg)
    shapes = [shape for i in range(d.layers) for shape in _block_linears(cfg, d, i)]
    return shapes + _extra_linears(d, _head_kind(cfg, task))


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


def default_targets(cfg: dict[str, Any] | str) -> list[str]:
    """LoRA's "auto" targets (the engine's too): the attention query and value projections."""
    cfg = _as_config(cfg)
    family(cfg)  # an architecture the estimator does not know fails here, by name
    return lora_targets(cfg["model_type"])


def all_linear_targets(cfg: dict[str, Any] | str, task: str | None = None) -> list[str]:
    """Module names that together match every linear but the output layer (peft's 'all-linear')."""
    return _unique(shape.name for shape in linear_layers(cfg, task))


def _matches(shape: LinearShape, target: str) -> bool:
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
        if not any(_matches(shape, name) for shape in shapes):
            raise ConfigError(f"target {name!r} matches no linear layer of this {family(cfg)} model; "
                              f"available: {all_linear_targets(cfg, task)}")
    return names


def first_adapted_layer(cfg: dict[str, Any] | str, top_layers: int = 0) -> int:
    """The lowest block an adapter on the last `top_layers` blocks reaches (0: all blocks)."""
    layers = _dims(_as_config(cfg)).layers
    _check_positive("top_layers", top_layers, lo=0)
    return layers - top_layers if 0 < top_layers < layers else 0


def targeted_layers(cfg: dict[str, Any] | str, targets: str | Sequence[str] | None = None,
                    task: str | None = None, top_layers: int = 0) -> list[LinearShape]:
    """The linear layers a LoRA-style adapter with these targets would wrap (peft's
    layers_to_transform: with top_layers, only those in the last top_layers blocks)."""
    cfg = _as_config(cfg)
    names = parse_targets(cfg, targets, task)
    shapes = [s for s in linear_layers(cfg, task) if any(_matches(s, n) for n in names)]
    first = first_adapted_layer(cfg, top_layers)
    if first:
        shapes = [s for s in shapes if s.layer is not None and s.layer >= first]
    return shapes


# --------------------------------------------------------------------------------------------
# Parameter counts
# --------------------------------------------------------------------------------------------

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
        return tokens + d.max_positions * d.hidden + _int(cfg, "type_vocab_size", 2) * d.hidden + 2 * d.hidden
    return tokens + d.max_positions * d.hidden + 2 * d.hidden  # distilbert: positions + LayerNorm


def _final_norm_params(cfg: dict[str, Any], d: Dims) -> int:
    if d.family == "llama":
        return d.hidden
    if d.family == "opt":
        has_final = cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False)
        return _norm_params(cfg, d) if has_final else 0
    return 0  # post-norm encoders normalise inside each block


def _head_params(d: Dims, head: str, num_labels: int) -> int:
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
    if d.family in ("llama", "opt"):
        return d.embed_dim * num_labels  # `score`, no bias
    if d.family == "bert" and d.model_type == "roberta":
        return (h * h + h) + h * num_labels + num_labels  # `classifier`: dense + out_proj, no pooler
    if d.family == "bert":
        return h * num_labels + num_labels  # `classifier` (pooler is counted with the base)
    return (h * h + h) + h * num_labels + num_labels  # distilbert: pre_classifier + classifier


def _breakdown(cfg: dict[str, Any], head: str, num_labels: int) -> dict[str, int]:
    d = _dims(cfg)
    block = sum(s.params for s in _block_linears(cfg, d, 0)) + 2 * _norm_params(cfg, d)
    # The MLM transform and distilbert's pre_classifier belong to the head count instead.
    in_base = [s for s in _extra_linears(d, head) if s.path.startswith(("pooler", "decoder.project"))]
    return {
        "embeddings": _embedding_params(cfg, d),
        "blocks": block * d.layers,
        "final_norm": _final_norm_params(cfg, d),
        "extra_linears": sum(s.params for s in in_base),
        "head": _head_params(d, head, num_labels),
    }


def param_breakdown(cfg: dict[str, Any] | str, task: str | None = None, num_labels: int = 2) -> dict[str, int]:
    """Parameter counts by part: embeddings, blocks, final norm, extra linears (pooler, OPT projections), head."""
    cfg = _as_config(cfg)
    return _breakdown(cfg, _head_kind(cfg, task), _check_labels(num_labels))


def total_params(cfg: dict[str, Any] | str, task: str | None = None, num_labels: int = 2) -> int:
    """All parameters of the model the config (or task) names; tied embeddings counted once."""
    return sum(param_breakdown(cfg, task, num_labels).values())


def _peft_head_trainable(d: Dims, head: str, num_labels: int) -> int:
    # For sequence classification peft trains every module whose name *ends with* "classifier"
    # or "score" (modules_to_save): that includes distilbert's pre_classifier; bert's pooler stays frozen.
    if head != "seq_cls":
        return 0
    return _head_params(d, head, num_labels)


def _check_positive(name: str, value: int, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name}={value!r} must be a whole number >= {lo}")
    return value


def _trains_own_weights(method: str):
    """The estimate_trainable hook of a registered method the estimator has no arithmetic of, else None."""
    if method in METHODS:
        return None
    try:
        return get_method(method).estimate_trainable
    except ConfigError:
        return None


def _check_method(method: str) -> str:
    if method not in METHODS and _trains_own_weights(method) is None:
        raise ConfigError(f"method={method!r} is not known; choose one of {list(METHODS)}")
    return method


def _lora_params(shapes: list[LinearShape], r: int, dora: bool) -> int:
    # A is r x k, B is d x r; DoRA adds a magnitude vector of length d per adapted layer.
    return sum(r * (s.in_features + s.out_features) + (s.out_features if dora else 0) for s in shapes)


def _ia3_params(cfg: dict[str, Any], shapes: list[LinearShape]) -> int:
    # One scaling vector per adapted layer: on the output (length d), or for feed-forward layers
    # on the input (length k), as peft's IA3 does.
    feedforward = ia3_feedforward(cfg["model_type"])
    return sum(s.in_features if any(_matches(s, f) for f in feedforward) else s.out_features for s in shapes)


def linear_head_params(d: Dims, num_labels: int = 2, head_hidden: int = 0) -> int:
    """A probe on the frozen model's pooled features: one linear, or two with a hidden layer."""
    width = d.embed_dim  # what the base model outputs (OPT projects back out to the embedding width)
    if head_hidden:
        return width * head_hidden + head_hidden + head_hidden * num_labels + num_labels
    return width * num_labels + num_labels


def adapter_params(cfg: dict[str, Any] | str, method: str, r: int = 8, targets: str | Sequence[str] | None = None,
                   num_virtual_tokens: int = 20, task: str | None = None, top_layers: int = 0) -> int:
    """Parameters a PEFT method adds to the model (0 for full, zero_shot and linear_head)."""
    cfg = _as_config(cfg)
    d = _dims(cfg)
    _check_method(method)
    if method in ("lora", "dora", "qlora"):
        _check_positive("r", r)
        return _lora_params(targeted_layers(cfg, targets, task, top_layers), r, dora=method == "dora")
    if method == "ia3":
        chosen = ia3_targets(d.model_type) if targets is None else targets
        return _ia3_params(cfg, targeted_layers(cfg, chosen, task))
    if method == "prompt_tuning":
        return _check_positive("num_virtual_tokens", num_virtual_tokens) * d.hidden
    if method == "prefix_tuning":
        # A key and a value prefix per layer, as wide as k_proj/v_proj (peft sizes them to the
        # key/value heads, so GQA models get narrower prefixes); the reparametrisation MLP is not counted.
        return _check_positive("num_virtual_tokens", num_virtual_tokens) * d.layers * 2 * d.kv_width
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
    cfg = _as_config(cfg)
    d = _dims(cfg)
    _check_method(method)
    _check_labels(num_labels)
    _check_positive("head_hidden", head_hidden, lo=0)
    if method == "linear_head":
        head = linear_head_params(d, num_labels, head_hidden)
        # The probe replaces any head: the frozen part is the headless base model.
        return MethodCounts(sum(_breakdown(cfg, "base", num_labels).values()), head, head)
    base = total_params(cfg, task, num_labels)
    if method == "full":
        return MethodCounts(base, 0, base)
    if method == "zero_shot":
        return MethodCounts(base, 0, 0)
    own = _trains_own_weights(method)
    if own is not None:  # some of the base's own weights train (e.g. biases), plus a new head
        head_trainable = _peft_head_trainable(d, _head_kind(cfg, task), num_labels)
        return MethodCounts(base, 0, own(linear_layers(cfg, task)) + head_trainable)
    added = adapter_params(cfg, method, r, targets, num_virtual_tokens, task, top_layers)
    head_trainable = _peft_head_trainable(d, _head_kind(cfg, task), num_labels)
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


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------

def parse_dtype(dtype: str) -> str:
    name = DTYPE_ALIASES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if name not in DTYPE_BYTES:
        raise ConfigError(f"dtype={dtype!r} is not allowed; choose one of {list(DTYPE_BYTES)}")
    return name


def _check_optimizer(optimizer: str) -> str:
    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ConfigError(f"optimizer={optimizer!r} is not allowed; choose one of {list(OPTIMIZER_STATE_BYTES)}")
    return optimizer


def nf4_bytes(n: int, double_quant: bool = True) -> int:
    """Bytes of one n-element weight tensor stored as bitsandbytes NF4.

    Two 4-bit codes per byte, plus one absmax per 64-weight block. With double quantisation
    (the QLoRA default) the absmax values are 8-bit, with an fp32 scale per 256 blocks and one
    fp32 offset: ~0.127 extra bits per weight instead of 0.5 (Dettmers et al. 2023, sec. 3).
    The 256-entry code tables are shared-size constants and left out.
    """
    blocks = math.ceil(n / NF4_BLOCK)
    if double_quant:
        constants = blocks + 4 * math.ceil(blocks / NF4_NESTED_BLOCK) + 4
    else:
        constants = 4 * blocks
    return math.ceil(n / 2) + constants


def _weights_bytes(cfg: dict[str, Any], method: str, counts: MethodCounts, e: int, task: str | None,
                   double_quant: bool) -> int:
    # Adapters, prompts and new heads are kept in fp32 (peft's autocast_adapter_dtype upcasts
    # them even on a half-precision base), so they cost 4 bytes whatever `dtype` is.
    added = 4 * counts.added
    if method != "qlora":
        return e * counts.base + added
    # QLoRA: every linear but the output layer is NF4; embeddings, norms, biases and the head
    # stay in the compute dtype (transformers keeps lm_head/score unquantised).
    quantised = [s.weight_params for s in linear_layers(cfg, task)]
    return sum(nf4_bytes(n, double_quant) for n in quantised) + e * (counts.base - sum(quantised)) + added


@dataclass(frozen=True)
class Compute:
    """How a training step stores what it keeps for backward.

    e:        bytes of a weight and of the residual stream (the weights' dtype)
    act:      bytes of a matmul output: 2 under autocast (16-bit matmuls over fp32 weights), else e
    autocast: every linear casts its input and its weight to 16 bits and keeps those copies
    cpu:      dropout masks are tensors of the input's dtype (ATen's _dropout_impl multiplies by
              one; CUDA's native_dropout keeps a bool), and SDPA has no fused kernel with dropout:
              it falls back to its math path, in fp32
    """
    e: int
    act: int
    autocast: bool
    cpu: bool

    def mask(self, tensor_bytes: int) -> int:
        """Bytes per element of a dropout mask on a tensor of tensor_bytes per element."""
        return tensor_bytes if self.cpu else 1


def compute_mode(dtype: str = "float32", autocast: bool = False, device: str = "cuda") -> Compute:
    """The Compute of a run: weights in `dtype`, optionally 16-bit autocast, on "cuda" or "cpu"."""
    e = DTYPE_BYTES[parse_dtype(dtype)]
    if device not in DEVICES:
        raise ConfigError(f"device={device!r} is not allowed; choose one of {list(DEVICES)}")
    if not isinstance(autocast, bool):
        raise ConfigError(f"autocast={autocast!r} must be true or false")
    half = autocast and e == 4  # autocast over half-precision weights changes nothing
    return Compute(e=e, act=2 if half else e, autocast=half, cpu=device == "cpu")


# Which linears of a block read the same tensor, and whether that tensor comes from the residual
# stream (a norm's output, in the weights' dtype: autocast casts it once per linear) or from a
# matmul (already in the compute dtype: the cast is a no-op and the tensor is shared).
# (group, source, how many linears read it); llama's gate and up both read the norm's output.
_PLAIN_INPUT_GROUPS = [("qkv", "residual", 3), ("out", "attention", 1), ("up", "residual", 1), ("down", "mlp", 1)]
_INPUT_GROUPS = {"llama": [("qkv", "residual", 3), ("out", "attention", 1), ("up", "residual", 2),
                           ("down", "mlp", 1)]}


def _attention_kernel(d: Dims, c: Compute, flash: bool) -> str:
    """'fused' (SDPA's flash kernels), 'math' (SDPA's fp32 fallback) or 'eager' (transformers' own)."""
    if not flash:
        return "eager"
    return "math" if c.cpu and d.attn_dropout > 0 else "fused"


def _layer_activation_bytes(d: Dims, b: int, s_q: int, s_k: int, c: Compute, flash: bool,
                            trains: bool = True) -> int:
    """Bytes one transformer block keeps for backward (no recomputation).

    Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
    (arXiv:2205.05198, sec. 4.1) count s*b*h*(34 + 5*a*s/h) per layer for full fine-tuning with
    16-bit activations, 1-byte dropout masks, eager attention and a 4h MLP; this reduces to that.
    Written out term by term because adapter methods differ (the block is frozen: `trains`
    False), and PyTorch keeps only what a gradient it must compute needs:
      - a linear keeps its input only when its weight trains; a frozen one keeps nothing (fp32)
        or its 16-bit weight copy (autocast, counted in _autocast_weight_bytes);
      - under autocast each linear keeps its own 16-bit cast of a residual-stream input (q, k and
        v: three copies);
      - RMSNorm upcasts to fp32 and keeps that (4h), plus the normalised copy when its weight
        trains; LayerNorm keeps its input;
      - attention: SDPA's fused kernels keep q, k, v, the output and an fp32 log-sum-exp per row;
        the eager path and SDPA's math fallback keep the (dropped-out) probabilities too;
      - the MLP keeps the activation's input (SwiGLU: also up and act(gate) for their product).
    Measured against the tensors autograd saves (tests/test_estimate_saved.py).
    """
    tok, h, f, a = b * s_q, d.hidden, d.intermediate, d.heads
    qw, kvw, e, act = d.q_width, d.kv_width, c.e, c.act
    kernel = _attention_kernel(d, c, flash)
    widths = {"qkv": h, "out": qw, "up": h, "down": f}
    inputs = 0
    if trains:
        for group, source, readers in _INPUT_GROUPS.get(d.family, _PLAIN_INPUT_GROUPS):
            if source == "residual":
                inputs += (2 * readers if c.autocast else e) * widths[group]
            elif not (group == "out" and kernel == "fused"):  # the fused kernel kept its output already
                inputs += act * widths[group]
    if kernel == "fused":
        attn = act * (2 * qw + 2 * kvw) + 4 * a
    else:
        width = 4 if kernel == "math" else act  # the math fallback computes in fp32
        probs = a * s_k  # per query token: one row of probabilities per head
        attn = width * 3 * qw + width * probs
        if d.attn_dropout > 0:
            attn += c.mask(width) * probs + width * probs
    if d.family == "llama":
        norms = 2 * (4 * h + (e * h if trains else 0))
    else:
        norms = 2 * e * h
    mlp = (3 if d.gated_mlp else 1) * act * f
    drop = 2 * c.mask(act) * h if d.hidden_dropout > 0 else 0
    return tok * (inputs + attn + norms + mlp + drop)


def _autocast_weight_bytes(shapes: Iterable[LinearShape]) -> int:
    # Under autocast a linear on the gradient's path keeps the 16-bit copy of its weight that it
    # multiplied by: backward needs it for the input's gradient, frozen or not.
    return sum(2 * s.weight_params for s in shapes)


def _outside_activation_bytes(d: Dims, head: str, b: int, s_q: int, c: Compute, trains: bool,
                              embeddings: bool = True) -> int:
    """The embeddings (when the gradient reaches them), the final norm and the head."""
    tok, h, e = b * s_q, d.hidden, c.e
    embed = 0
    if embeddings and d.family in ("bert", "distilbert"):
        embed += e * tok * h  # the embeddings' LayerNorm input
    if embeddings and d.hidden_dropout > 0:
        embed += c.mask(e) * tok * h
    final = 0
    if d.family == "llama":
        final = tok * (4 * h + (e * h if trains else 0))
    elif d.family == "opt":
        final = e * tok * h
    if head == "lm":
        # the output layer's input (when it trains) and the fp32 logits the loss keeps
        kept_input = (2 if c.autocast else e) * tok * h if trains else 0
        return embed + final + kept_input + 4 * tok * d.vocab
    if head == "seq_cls":
        # decoders score every token and pick the last (transformers' *ForSequenceClassification);
        # encoders pool first. The new head always trains, so its input is kept.
        scored = tok if d.family in ("llama", "opt") else b
        return embed + final + (2 if c.autocast else e) * scored * h
    return embed + final


# What a CPU training process holds besides the tensors counted here: Python, torch, transformers,
# peft, the Trainer, the code pages the kernels touch, the tokenizer and the data. bench/memory_by_method.py
# measures it as the same job run on a 16-wide, one-layer twin of the model: 594-626 MB for MiniLM
# and SmolLM2 with the pinned versions (BENCHMARKS.md, 2026-12-02 evening).
CPU_PROCESS_FLOOR_MB = 600
# On a CPU, glibc keeps much of what a step frees (the forward's temporaries, interleaved with the
# tensors kept for backward) instead of returning it: peak RSS above weights, optimizer states and
# saved tensors was 0.19-0.39 of the saved tensors (MiniLM and SmolLM2, six methods, bf16 autocast;
# BENCHMARKS.md, 2026-12-02 stop 12). Zero with glibc told to return freed blocks at once.
CPU_WORKSPACE_SHARE = 1 / 3

LORA_DEFAULT_DROPOUT = 0.05  # core.methods.lora's default (a test keeps the two equal; this module stays light)
DEVICES = ("cuda", "cpu")
_ATTENTION_INPUTS = {"q_proj", "k_proj", "v_proj", "query", "key", "value", "q_lin", "k_lin", "v_lin"}


def _adapter_activation_bytes(cfg: dict[str, Any], method: str, shapes: list[LinearShape], b: int, s: int,
                              c: Compute, r: int, lora_dropout: float = 0.0, first: int = 0) -> int:
    tok = b * s
    if method in ("lora", "qlora", "dora"):
        per = []
        for sh in shapes:
            k = sh.in_features
            # peft casts the input to the fp32 adapter dtype; lora_A keeps what it multiplied:
            # its own 16-bit cast under autocast, else the fp32 (dropped-out) input
            kept = 2 * k if c.autocast else 4 * k
            # the dropout mask is kept only to pass the gradient on to the input: the lowest adapted
            # block's q, k and v read a frozen input, which needs none
            if lora_dropout > 0 and not (sh.layer == first and sh.name in _ATTENTION_INPUTS):
                kept += c.mask(4) * k
            kept += (2 if c.autocast else 4) * r  # lora_B's input
            if method == "dora":
                kept += c.e * sh.out_features  # base output, rescaled
            per.append(tok * kept)
        return sum(per)
    if method == "ia3":
        feedforward = ia3_feedforward(cfg["model_type"])
        # an input scaling keeps the fp32 input it scaled; an output scaling, the linear's output
        return sum(tok * (4 * sh.in_features if any(_matches(sh, f) for f in feedforward)
                          else c.act * sh.out_features) for sh in shapes)
    return 0


def _linear_head_bytes(d: Dims, b: int, head_hidden: int) -> int:
    return 4 * b * d.embed_dim + (8 * b * head_hidden if head_hidden else 0)


def activation_bytes(cfg: dict[str, Any] | str, method: str, batch_size: int = 8, seq_len: int = 256,
                     r: int = 8, targets: str | Sequence[str] | None = None, dtype: str = "float32",
                     num_virtual_tokens: int = 20, head_hidden: int = 0, task: str | None = None,
                     flash_attention: bool = False, lora_dropout: float = 0.0, autocast: bool = False,
                     device: str = "cuda", top_layers: int = 0, gradient_checkpointing: bool = False) -> int:
    """Activation bytes kept for the backward pass of one training step.

    Methods with adapters or prompts inside the model (lora, dora, qlora, ia3, prompt/prefix
    tuning) must backpropagate through the frozen base to reach them: they keep what the frozen
    blocks need to pass the gradient on (not the inputs of frozen linears), plus what the adapters
    store. linear_head runs the frozen base without gradients: only the pooled features are kept.
    zero_shot does not train: 0. flash_attention: SDPA (transformers' default) rather than eager.
    top_layers (LoRA): adapters on the last blocks only; backpropagation stops at the lowest.
    gradient_checkpointing: each block on the gradient's path keeps only its input (the residual
    stream) and recomputes the rest in the backward pass, one block at a time: the block terms,
    the adapters' and the autocast weight copies then count for a single block (Korthikanti et al.
    sec. 4.2, full recomputation).
    """
    cfg = _as_config(cfg)
    d = _dims(cfg)
    _check_method(method)
    b, s = _check_positive("batch_size", batch_size), _check_positive("seq_len", seq_len)
    c = compute_mode(dtype, autocast if method != "qlora" else False, device)
    if method == "zero_shot":
        return 0
    if method == "linear_head":
        return _linear_head_bytes(d, b, head_hidden)
    virtual = _check_positive("num_virtual_tokens", num_virtual_tokens) if method in (
        "prompt_tuning", "prefix_tuning") else 0
    s_q = s + virtual if method == "prompt_tuning" else s  # virtual tokens join the sequence
    s_k = s + virtual if method in ("prompt_tuning", "prefix_tuning") else s  # prefixes only lengthen keys
    trains = method == "full"
    head = _head_kind(cfg, task)
    first = first_adapted_layer(cfg, top_layers) if method in ("lora", "qlora", "dora") else 0
    if not isinstance(gradient_checkpointing, bool):
        raise ConfigError(f"gradient_checkpointing={gradient_checkpointing!r} must be true or false")
    blocks = d.layers - first
    one_block = _layer_activation_bytes(d, b, s_q, s_k, c, flash_attention, trains)
    # share: how much of what the blocks keep is alive at the peak (all of it, or one block's)
    share = 1.0 / blocks if gradient_checkpointing else 1.0
    if gradient_checkpointing:
        total = blocks * c.e * b * s_q * d.hidden + one_block
    else:
        total = blocks * one_block
    total += _outside_activation_bytes(d, head, b, s_q, c, trains, embeddings=first == 0)
    shapes: list[LinearShape] = []
    if method in ("lora", "qlora", "dora", "ia3"):
        _check_positive("r", r)
        chosen = ia3_targets(d.model_type) if method == "ia3" and targets is None else targets
        shapes = targeted_layers(cfg, chosen, task, top_layers if first else 0)
        total += int(share * _adapter_activation_bytes(cfg, method, shapes, b, s_q, c, r, lora_dropout, first))
    if c.autocast:
        in_blocks = [sh for sh in linear_layers(cfg, task) if sh.layer is not None and sh.layer >= first]
        total += int(share * _autocast_weight_bytes(in_blocks))
        if head == "lm":
            total += 2 * d.vocab * d.embed_dim
        if method in ("lora", "dora"):
            total += 2 * _lora_params(shapes, r, False)
    return total


def workspace_bytes(cfg: dict[str, Any] | str, method: str, activations: int, batch_size: int = 8,
                    seq_len: int = 256, dtype: str = "float32", autocast: bool = False, device: str = "cuda",
                    flash_attention: bool = False) -> int:
    """Memory a CPU process holds beyond the tensors: what glibc keeps of a step's freed temporaries.

    Backpropagating methods: CPU_WORKSPACE_SHARE of the activations (not qlora: see below).
    linear_head: its frozen forward holds one block's intermediates at a time. 0 on CUDA (its caching allocator's
    fragmentation, 10-20 %, is left to the caller, as the Learn page says).
    """
    cfg = _as_config(cfg)
    c = compute_mode(dtype, autocast, device)
    # qlora: the engine has glibc return freed memory at once under a 4-bit base
    # (core.methods.qlora.return_freed_memory_promptly), so nothing is hoarded
    if not c.cpu or method in ("zero_shot", "qlora"):
        return 0
    if method == "linear_head":
        d = _dims(cfg)
        return _layer_activation_bytes(d, batch_size, seq_len, seq_len, c, flash_attention, True)
    return int(CPU_WORKSPACE_SHARE * activations)


def memory_estimate(cfg: dict[str, Any] | str, method: str, batch_size: int = 8, seq_len: int = 256, r: int = 8,
                    targets: str | Sequence[str] | None = None, dtype: str = "float32", num_labels: int = 2,
                    num_virtual_tokens: int = 20, head_hidden: int = 0, task: str | None = None,
                    optimizer: str = "adamw", double_quant: bool = True,
                    flash_attention: bool = False, lora_dropout: float = 0.0, autocast: bool = False,
                    device: str = "cuda", top_layers: int = 0, gradient_checkpointing: bool = False
                    ) -> dict[str, int]:
    """Training memory in bytes: {weights, gradients, optimizer, activations, workspace, total}.

    weights:     base model in `dtype` (qlora: NF4 linears + constants, the rest in `dtype`
                 as the compute dtype); adapters, prompts and new heads in fp32.
    gradients:   trainable parameters only (full: in `dtype`; added parameters: fp32).
    optimizer:   AdamW keeps two fp32 states (m, v) per trainable parameter: 8 bytes
                 ('adamw_8bit': 2, 'sgd' without momentum: 0). Mixed-precision master copies of
                 the weights are not counted.
    activations: see activation_bytes. autocast: 16-bit matmuls over fp32 weights (the engine's
                 bf16 mixed precision; never under QLoRA's 4-bit base, as in the engine).
    workspace:   see workspace_bytes (device="cpu" only).
    Not counted: CUDA context, the CUDA allocator's fragmentation, the CPU process itself
    (CPU_PROCESS_FLOOR_MB).
    """
    cfg = _as_config(cfg)
    e = DTYPE_BYTES[parse_dtype(dtype)]
    state_bytes = OPTIMIZER_STATE_BYTES[_check_optimizer(optimizer)]
    counts = method_counts(cfg, method, r, targets, num_labels, num_virtual_tokens, head_hidden, task,
                           top_layers if method in ("lora", "qlora", "dora") else 0)
    weights = _weights_bytes(cfg, method, counts, e, task, double_quant)
    gradients = counts.trainable * (e if method == "full" else 4)
    optimizer_bytes = counts.trainable * state_bytes
    activations = activation_bytes(cfg, method, batch_size, seq_len, r, targets, dtype, num_virtual_tokens,
                                   head_hidden, task, flash_attention, lora_dropout, autocast, device, top_layers,
                                   gradient_checkpointing)
    workspace = workspace_bytes(cfg, method, activations, batch_size, seq_len, dtype,
                                autocast if method != "qlora" else False, device, flash_attention)
    parts = {"weights": weights, "gradients": gradients, "optimizer": optimizer_bytes, "activations": activations,
             "workspace": workspace}
    return {**parts, "total": sum(parts.values())}


def compare_methods(cfg: dict[str, Any] | str, methods: Sequence[str] = ("full", "lora", "qlora"),
                    **kwargs: Any) -> dict[str, dict[str, int]]:
    """memory_estimate for each method with the same settings, e.g. full vs lora vs qlora."""
    cfg = _as_config(cfg)
    return {method: memory_estimate(cfg, method, **kwargs) for method in methods}


def report(cfg: dict[str, Any] | str, method: str, r: int = 8, targets: str | Sequence[str] | None = None,
           batch_size: int = 8, seq_len: int = 256, dtype: str = "float32", num_labels: int = 2,
           num_virtual_tokens: int = 20, head_hidden: int = 0, task: str | None = None,
           optimizer: str = "adamw", lora_dropout: float = 0.0, autocast: bool = False, device: str = "cuda",
           flash_attention: bool = False, top_layers: int = 0, gradient_checkpointing: bool = False
           ) -> dict[str, Any]:
    """Trainable/total parameters (peft's convention: total includes the added ones) and memory."""
    cfg = _as_config(cfg)
    top = top_layers if method in ("lora", "dora", "qlora") else 0
    counts = method_counts(cfg, method, r, targets, num_labels, num_virtual_tokens, head_hidden, task, top)
    uses_targets = method in ("lora", "dora", "qlora", "ia3")
    chosen = ia3_targets(cfg["model_type"]) if method == "ia3" and targets is None else targets
    return {
        "model_type": cfg.get("model_type"),
        "method": method,
        "r": r if method in ("lora", "dora", "qlora") else None,
        "targets": parse_targets(cfg, chosen, task) if uses_targets else None,
        "trainable": counts.trainable,
        "total": counts.total,
        "percent": round(100.0 * counts.trainable / counts.total, 6) if counts.total else 0.0,
        "memory": memory_estimate(cfg, method, batch_size, seq_len, r, targets, dtype, num_labels,
                                  num_virtual_tokens, head_hidden, task, optimizer,
                                  flash_attention=flash_attention, lora_dropout=lora_dropout,
                                  autocast=autocast, device=device, top_layers=top,
                                  gradient_checkpointing=gradient_checkpointing),
    }


# --------------------------------------------------------------------------------------------
# The LoRA picture for the Learn page
# --------------------------------------------------------------------------------------------

def lora_picture(cfg: dict[str, Any] | str, layer: int = 0, module: str = "q_proj", r: int = 8,
                 alpha: float = 16) -> dict[str, Any]:
    """Real shapes for W' = W + (alpha/r)·B·A on one linear: W is d×k, A is r×k, B is d×r."""
    cfg = _as_config(cfg)
    d = _dims(cfg)
    _check_positive("r", r)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < d.layers:
        raise ConfigError(f"layer={layer!r} is out of range; this model has layers 0..{d.layers - 1}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"alpha={alpha!r} must be a number > 0")
    shapes = _block_linears(cfg, d, layer)
    # The path inside the block names every linear uniquely, even bert's three "dense" layers.
    in_block = {s.path.split(f".{layer}.", 1)[1]: s for s in shapes}
    found = [in_block[module]] if module in in_block else [s for s in shapes if _matches(s, module)]
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


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: scripts and the UI show it as is.
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> _Parser:
    p = _Parser(prog="python -m core.estimate",
                description="Parameter and memory estimate for a PEFT method, from a model config alone.")
    p.add_argument("--model", required=True, help=f"one of {list(list_models())} or a path to a config.json")
    p.add_argument("--method", default="lora", help=f"one of {list(METHODS)}")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--targets", default=None, help="comma-separated module names, or all-linear")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per example")
    p.add_argument("--dtype", default="float32", help=f"one of {list(DTYPE_BYTES)}")
    p.add_argument("--task", default=None, help=f"one of {list(TASKS)} (default: from the config)")
    p.add_argument("--num-labels", type=int, default=2)
    p.add_argument("--num-virtual-tokens", type=int, default=20)
    p.add_argument("--head-hidden", type=int, default=0)
    p.add_argument("--optimizer", default="adamw", help=f"one of {list(OPTIMIZER_STATE_BYTES)}")
    p.add_argument("--device", default="cuda", help=f"one of {list(DEVICES)} (cpu adds the allocator's workspace)")
    p.add_argument("--autocast", action="store_true", help="16-bit matmuls over float32 weights (mixed precision)")
    p.add_argument("--sdpa", action="store_true", help="attention through SDPA's kernels rather than eager")
    p.add_argument("--top-layers", type=int, default=0, help="LoRA on the last N blocks only (0: all)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each block in the backward pass instead of keeping its activations")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = report(args.model, args.method, r=args.r, targets=args.targets, batch_size=args.batch,
                        seq_len=args.seq_len, dtype=args.dtype, num_labels=args.num_labels,
                        num_virtual_tokens=args.num_virtual_tokens, head_hidden=args.head_hidden,
                        task=args.task, optimizer=args.optimizer, autocast=args.autocast, device=args.device,
                        flash_attention=args.sdpa, top_layers=args.top_layers,
                        gradient_checkpointing=args.gradient_checkpointing)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model": args.model, **result}, indent=2))
    return 0


def method_args(method: dict) -> tuple[str, dict]:
    """Our method spec (as a dict) -> core.estimate's method name and keyword arguments (the method says)."""
    return get_method(method.get("name", "lora")).estimate_args(method.get("params"))


if __name__ == "__main__":
    sys.exit(main())
