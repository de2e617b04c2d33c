"""Model configs (shipped keys or a config.json), their normalised dimensions and the head a task implies."""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from core.config import ConfigError
from core.safety import local_models_allowed


CONFIG_DIR = Path(__file__).resolve().parents[2] / "assets" / "model_configs"

INDEX_FILE = CONFIG_DIR / "index.json"

TASKS = ("classification", "sft")


# model_type -> family whose module layout we know.
# qwen2 is llama with biases on q, k and v; roberta is bert with its own MLM head names.
FAMILIES = {"llama": "llama", "mistral": "llama", "qwen2": "llama", "opt": "opt", "bert": "bert",
            "roberta": "bert", "distilbert": "distilbert"}


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


def as_config(cfg: dict[str, Any] | str) -> dict[str, Any]:
    if isinstance(cfg, (str, os.PathLike)):
        return load_config(cfg)
    if not isinstance(cfg, dict):
        raise ConfigError(f"expected a config dict, a model key or a config.json path, not {type(cfg).__name__}")
    return cfg


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


def int_field(cfg: dict[str, Any], key: str, default: int | None = None) -> int:
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
        hidden, heads = int_field(cfg, "hidden_size"), int_field(cfg, "num_attention_heads")
        kv_heads = int_field(cfg, "num_key_value_heads", heads)
        # head_dim may be set explicitly (and then need not divide hidden_size); else hidden / heads
        explicit = cfg.get("head_dim") is not None
        if not explicit and hidden % heads:
            raise ConfigError(f"hidden size {hidden} is not divisible by {heads} attention heads")
        head_dim = int_field(cfg, "head_dim") if explicit else hidden // heads
        out = Dims(fam, hidden, int_field(cfg, "intermediate_size"), int_field(cfg, "num_hidden_layers"), heads, kv_heads,
                    head_dim, int_field(cfg, "vocab_size"), int_field(cfg, "max_position_embeddings", 2048),
                    bool(cfg.get("tie_word_embeddings", False)), hidden, True,
                    _float(cfg, "attention_dropout"), 0.0)
    elif fam == "opt":
        hidden, heads = int_field(cfg, "hidden_size"), int_field(cfg, "num_attention_heads")
        out = Dims(fam, hidden, int_field(cfg, "ffn_dim"), int_field(cfg, "num_hidden_layers"), heads, heads,
                    hidden // heads, int_field(cfg, "vocab_size"), int_field(cfg, "max_position_embeddings"),
                    bool(cfg.get("tie_word_embeddings", True)), int_field(cfg, "word_embed_proj_dim", hidden), False,
                    _float(cfg, "attention_dropout"), _float(cfg, "dropout"))
    elif fam == "bert":
        hidden, heads = int_field(cfg, "hidden_size"), int_field(cfg, "num_attention_heads")
        out = Dims(fam, hidden, int_field(cfg, "intermediate_size"), int_field(cfg, "num_hidden_layers"), heads, heads,
                    hidden // heads, int_field(cfg, "vocab_size"), int_field(cfg, "max_position_embeddings"),
                    bool(cfg.get("tie_word_embeddings", True)), hidden, False,
                    _float(cfg, "attention_probs_dropout_prob"), _float(cfg, "hidden_dropout_prob"))
    else:  # distilbert
        hidden, heads = int_field(cfg, "dim"), int_field(cfg, "n_heads")
        out = Dims(fam, hidden, int_field(cfg, "hidden_dim"), int_field(cfg, "n_layers"), heads, heads,
                    hidden // heads, int_field(cfg, "vocab_size"), int_field(cfg, "max_position_embeddings"),
                    bool(cfg.get("tie_word_embeddings", True)), hidden, False,
                    _float(cfg, "attention_dropout"), _float(cfg, "dropout"))
    if out.hidden % out.heads and fam != "llama":
        raise ConfigError(f"hidden size {out.hidden} is not divisible by {out.heads} attention heads")
    if out.heads % out.kv_heads:
        raise ConfigError(f"{out.heads} attention heads cannot be shared by {out.kv_heads} key/value heads")
    return dataclasses.replace(out, model_type=str(cfg.get("model_type")))


def dims(cfg: dict[str, Any] | str) -> Dims:
    """Normalised dimensions of a config (or shipped key)."""
    return _dims(as_config(cfg))


def head_kind(cfg: dict[str, Any], task: str | None) -> str:
    """'lm', 'seq_cls' or 'base': the head the task (or else the config's architectures) implies.

    'seq_cls' is the classifier the engine builds (core.build), not transformers' *ForSequenceClassification:
    an encoder without its [CLS] pooler under our own head, a causal LM with transformers' `score`.
    """
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


def check_labels(num_labels: int) -> int:
    if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
        raise ConfigError(f"num_labels={num_labels!r} must be a whole number >= 1")
    return num_labels


def check_positive(name: str, value: int, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"{name}={value!r} must be a whole number >= {lo}")
    return value
