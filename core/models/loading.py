"""Loading tokenizers and models (with their heads), and sizing them for a device."""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from core.config import ConfigError
from core.models.registry import Head, Location, ResolvedModel, SMOLLM2
from core.models.locate import locate
from core.models.device_policy import DTYPE_NAMES, pick_device, pick_dtype
from core.models.resolving import load_pretrained, load_config_at, resolve
from core.models.gguf import ensure_smollm2_cache

if TYPE_CHECKING:
    import torch

log = logging.getLogger("core.models")


def _loading_location(name: str) -> tuple[Location, ResolvedModel]:
    resolved = resolve(name)
    loc = Location(resolved.name, resolved.origin, resolved.source, resolved.entry)
    if resolved.entry is not None and resolved.entry.key == SMOLLM2:
        loc = dataclasses.replace(loc, source=str(ensure_smollm2_cache()))
    return loc, resolved


# Tokenizers without a known length report this huge sentinel.
_NO_LIMIT = 10 ** 12


def load_tokenizer(name: str) -> Any:
    """The tokenizer, with a pad token (eos for causal LMs) and right padding; chat template kept."""
    from transformers import AutoTokenizer

    loc, resolved = _loading_location(name)
    tokenizer = load_pretrained(AutoTokenizer.from_pretrained, loc, "tokenizer")
    # transformers 5 builds a BERT-like tokenizer even with no vocabulary file: only its specials.
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):
        where = f"folder {loc.source}" if loc.origin != "hub" else f"hub repo {loc.name}"
        raise ConfigError(f"model {resolved.name} has no tokenizer files (tokenizer.json, vocab.txt, ...) "
                          f"in its {where}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = _pad_fallback(tokenizer, resolved)
    # Training pads on the right; generation callers switch to left themselves.
    tokenizer.padding_side = "right"
    if (tokenizer.model_max_length or 0) >= _NO_LIMIT:
        limit = _context_length(loc)
        if limit:
            tokenizer.model_max_length = limit
    return tokenizer


def _pad_fallback(tokenizer: Any, resolved: ResolvedModel) -> str:
    # Reusing an existing token avoids resizing the embeddings; the attention mask hides pads anyway.
    order = ("eos_token", "unk_token", "bos_token") if resolved.kind == "causal" \
        else ("sep_token", "eos_token", "cls_token", "unk_token")
    for attr in order:
        token = getattr(tokenizer, attr, None)
        if token:
            return str(token)
    raise ConfigError(f"model {resolved.name}: its tokenizer has no pad, eos or unk token to pad with")


def _context_length(loc: Location) -> int | None:
    try:
        config = load_config_at(loc)
    except ConfigError:
        return None
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and 0 < value < _NO_LIMIT:
            return value
    return None


def _auto_class(head: str) -> Any:
    import transformers

    classes = {"base": "AutoModel", "causal_lm": "AutoModelForCausalLM",
               "seq_cls": "AutoModelForSequenceClassification"}
    if head not in classes:
        raise ConfigError(f"head={head!r} is not known; choose one of {list(classes)}")
    return getattr(transformers, classes[head])


def _label_kwargs(num_labels: int, id2label: dict | None) -> dict[str, Any]:
    if id2label:
        labels = {int(k): str(v) for k, v in id2label.items()}
        if sorted(labels) != list(range(len(labels))):
            raise ConfigError(f"id2label keys must be 0..{len(labels) - 1}, got {sorted(labels)}")
        num_labels = len(labels)
    else:
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ConfigError(f"num_labels={num_labels!r} must be a whole number >= 1")
        labels = {i: f"LABEL_{i}" for i in range(num_labels)}
    return {"num_labels": num_labels, "id2label": labels, "label2id": {v: k for k, v in labels.items()}}


def _pad_token_id(loc: Location, resolved: ResolvedModel) -> int | None:
    config = load_config_at(loc)
    for attr in ("pad_token_id", "eos_token_id"):
        value = getattr(config, attr, None)
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        if isinstance(value, int):
            return value
    return load_tokenizer(resolved.name).pad_token_id


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Fixed RNG inside, the caller's RNG untouched outside: new heads start the same every time."""
    import torch

    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def load_model(name: str, head: Head = "base", num_labels: int = 2, id2label: dict | None = None,
               device: str = "auto", dtype: "str | torch.dtype" = "auto",
               quantization_config: Any = None, seed: int = 0) -> Any:
    """Load the model with the given head on the chosen device.

    head: "base" (AutoModel), "causal_lm" (AutoModelForCausalLM) or "seq_cls"
    (AutoModelForSequenceClassification; causal models get `pad_token_id` in their config so that
    the last real token is found). A new head is initialised from `seed`, without changing the
    caller's RNG state. `quantization_config` (e.g. bitsandbytes) is passed to transformers.
    """
    auto = _auto_class(head)
    chosen_device = pick_device(device)
    chosen_dtype = pick_dtype(chosen_device, dtype)
    loc, resolved = _loading_location(name)
    if head == "causal_lm" and resolved.kind != "causal":
        raise ConfigError(f"model {resolved.name} is an encoder: it cannot generate text (task sft needs a "
                          "causal model such as smollm2-135m-instruct)")
    kwargs: dict[str, Any] = {"dtype": chosen_dtype}
    if head == "seq_cls":
        kwargs.update(_label_kwargs(num_labels, id2label))
        if resolved.kind == "causal":
            kwargs["pad_token_id"] = _pad_token_id(loc, resolved)
    if quantization_config is not None:
        # Quantized weights are placed while loading; they cannot be moved with .to() afterwards.
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": _this_process_device(chosen_device)}
    if chosen_device.startswith("cuda") and needs_device_map(
            estimate_weights_bytes(loc, chosen_dtype, quantized=quantization_config is not None), chosen_device):
        # Larger than the GPU's free memory: accelerate spreads the layers over the GPUs (then CPU).
        kwargs["device_map"] = "auto"
        log.info("model %s does not fit in free GPU memory: loading with device_map='auto'", resolved.name)
    with _seeded(seed):
        model = load_pretrained(auto.from_pretrained, loc, head if head != "base" else "model", **kwargs)
    if "device_map" not in kwargs and chosen_device != "cpu":
        model = model.to(chosen_device)
    return model


def _this_process_device(device: str) -> Any:
    """Under torchrun each process has its own GPU (LOCAL_RANK): "cuda" means that one."""
    from core.distributed import is_distributed, local_rank

    if device == "cuda" and is_distributed():
        return local_rank()
    return device


def estimate_weights_bytes(loc_or_name: "Location | str", dtype: "torch.dtype | str" = "auto",
                           quantized: bool = False) -> int | None:
    """Bytes the weights take once loaded, from the config alone (core.estimate); None if unknown.

    quantized: linears in 4-bit NF4 (QLoRA), the rest in `dtype`. Families the estimator does not
    know fall back to the size of the weight files of a local folder.
    """
    import torch

    from core import estimate

    loc = locate(loc_or_name) if isinstance(loc_or_name, str) else loc_or_name
    if isinstance(dtype, str):  # "auto" on a GPU is 16-bit
        name = dtype.strip().lower().removeprefix("torch.")
        dtype = torch.float16 if name == "auto" else getattr(torch, DTYPE_NAMES.get(name, "float32"))
    per_param = torch.finfo(dtype).bits // 8
    try:
        config = load_config_at(loc).to_dict()
        total = estimate.total_params(config)
        if not quantized:
            return total * per_param
        linear = [shape.weight_params for shape in estimate.linear_layers(config)]
        return sum(estimate.nf4_bytes(n) for n in linear) + per_param * (total - sum(linear))
    except Exception as e:  # noqa: BLE001 - an unknown family, odd config fields: estimate from files
        log.debug("no parameter estimate for %s: %s", loc.name, e)
    folder = Path(loc.source)
    if loc.origin == "hub" or not folder.is_dir():
        return None
    files = [f for f in folder.iterdir() if f.suffix in (".safetensors", ".bin") and f.is_file()]
    return sum(f.stat().st_size for f in files) or None


def needs_device_map(estimated_bytes: int | None, device: str = "cuda", free_bytes: int | None = None,
                     headroom: float = 0.8) -> bool:
    """True when a model of `estimated_bytes` should load with device_map="auto".

    Only on CUDA, only in a single process (DDP keeps a whole copy per GPU), and only when the
    weights take more than `headroom` of the GPU's free memory (the rest is left for
    activations, gradients and optimizer states). An unknown size never triggers it.
    """
    if not estimated_bytes or not str(device).startswith("cuda"):
        return False
    from core.distributed import is_distributed

    if is_distributed():
        return False
    if free_bytes is None:
        import torch

        free_bytes, _total = torch.cuda.mem_get_info()
    return estimated_bytes > headroom * free_bytes
