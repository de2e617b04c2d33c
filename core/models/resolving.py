"""Reading a model's config (cache first, the Hub only when core.hub allows) and what kind of model it is."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from core import hub
from core.config import ConfigError
from core.models.registry import (
    Kind, Location, ModelNotAvailable, offline_message, Pooling, ResolvedModel, SMOLLM2, T,
)
from core.models.locate import locate, smollm2_gguf
from core.models.gguf import cache_complete



def _hub_allowed() -> bool:
    return hub.allowed()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _first_sentence(error: BaseException) -> str:
    return _first_line(error).split(". ")[0].rstrip(".")


def _explain(loc: Location, what: str, error: BaseException) -> ConfigError:
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


def load_pretrained(loader: Callable[..., T], loc: Location, what: str, **kwargs: Any) -> T:
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
        raise ModelNotAvailable(offline_message(loc.name))
    try:
        return loader(loc.source, **kwargs)
    except (OSError, ValueError) as e:
        raise _explain(loc, what, e) from e


def is_available_offline(name: str) -> bool:
    """True when the model loads with no network: embedded, a local folder, or fully in the HF cache."""
    try:
        loc = locate(name)
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


def load_config(name: str) -> Any:
    """The transformers config (no weights are read)."""
    return load_config_at(locate(name))


def load_config_at(loc: Location) -> Any:
    from transformers import AutoConfig

    if loc.entry is not None and loc.entry.key == SMOLLM2:
        cache = Path(loc.source)
        if cache_complete(cache):
            return AutoConfig.from_pretrained(str(cache), trust_remote_code=False)
        # Before the cache exists the GGUF's metadata gives the same config, without dequantizing.
        folder, gguf = smollm2_gguf()
        config = AutoConfig.from_pretrained(str(folder), gguf_file=gguf, trust_remote_code=False)
        config.architectures = config.architectures or ["LlamaForCausalLM"]
        return config
    return load_pretrained(AutoConfig.from_pretrained, loc, "config")


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
    loc = locate(name)
    if loc.entry is not None:
        e = loc.entry
        return ResolvedModel(loc.name, loc.origin, loc.source, e.kind, e.pooling, e.model_type,
                             list(e.default_lora_targets), e)
    if loc.origin == "local":
        config = load_config_at(loc)
        reader = _folder_reader(Path(loc.source))
    else:
        from huggingface_hub import try_to_load_from_cache

        # A model found in the cache stays offline for the pooling hint too; one that is about
        # to be downloaded may fetch its modules.json as well.
        cached = isinstance(try_to_load_from_cache(loc.source, "config.json"), str)
        config = load_config_at(loc)  # raises ModelNotAvailable when neither cache nor hub has it
        reader = _hub_reader(loc.source, online=not cached and _hub_allowed())
    kind = kind_of(config)
    model_type = getattr(config, "model_type", "") or ""
    pooling: Pooling = _pooling_from_st_files(reader) or ("last" if kind == "causal" else "cls")
    return ResolvedModel(loc.name, loc.origin, loc.source, kind, pooling, model_type,
                         _lora_targets_for(model_type), None)
