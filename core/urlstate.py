"""A page's controls <-> a flat query string, so that a URL is a lesson (as in TensorFlow Playground).

    encode(cfg_dict, base) -> {"r": "4", "lr": "0.002", ...}     only what differs from base
    decode(params, base)   -> (cfg_dict, warnings)                 every value checked by RunConfig

Short keys keep a shared link readable. Decoding never raises: a value that does not parse, or
that RunConfig refuses, is dropped with a warning naming the key, and the base value stays. The
Learn page's calculator has its own small table (LEARN_FIELDS). No streamlit here.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from typing import Any, Iterable

from core.config import ConfigError, RunConfig
from core.errors import shorten
from core.methods import get_method

# (section, field) -> URL key. Method hyperparameters are under ("method", <param>).
KEYS: dict[tuple[str, str], str] = {
    ("model", "name"): "m", ("model", "device"): "dev", ("model", "dtype"): "dt",
    ("data", "source"): "ds", ("data", "task"): "task", ("data", "text_column"): "tc",
    ("data", "label_column"): "lc", ("data", "prompt_column"): "pc", ("data", "response_column"): "rc",
    ("data", "label_map"): "lmap", ("data", "n_samples"): "n", ("data", "val_share"): "vs",
    ("data", "eval_source"): "es", ("data", "max_length"): "len", ("data", "truncation"): "trunc",
    ("data", "hub_split"): "split",
    ("method", "name"): "meth",
    ("method", "r"): "r", ("method", "alpha"): "a", ("method", "dropout"): "do", ("method", "targets"): "tg",
    ("method", "top_layers"): "tl", ("method", "use_dora"): "dora", ("method", "use_rslora"): "rs",
    ("method", "double_quant"): "dq", ("method", "compute_dtype"): "cd",
    ("method", "num_virtual_tokens"): "vt", ("method", "init"): "init", ("method", "init_text"): "it",
    ("method", "prefix_projection"): "pp", ("method", "head_hidden"): "hh", ("method", "prefix"): "pfx",
    ("method", "cache_features"): "cf", ("method", "cache_frozen_prefix"): "cfp",
    ("train", "learning_rate"): "lr", ("train", "epochs"): "ep", ("train", "batch_size"): "bs",
    ("train", "grad_accum"): "ga", ("train", "max_steps"): "ms", ("train", "warmup_ratio"): "wu",
    ("train", "lr_scheduler"): "sch", ("train", "weight_decay"): "wd", ("train", "eval_steps"): "evs",
    ("train", "logging_steps"): "logs", ("train", "seed"): "seed", ("train", "eval_max_rows"): "emr",
    ("train", "anatomy_steps"): "anat", ("train", "save_steps"): "ss", ("train", "torch_threads"): "th",
    ("train", "gradient_checkpointing"): "gc",
    ("", "name"): "name", ("", "experiment"): "exp",
}
# Keys the pages use for themselves; never a config field.
LESSON_KEY = "lesson"
PAGE_KEYS = (LESSON_KEY,)
_METHOD_PREFIX = "p_"  # a method hyperparameter without a short key above (a method added later)
_ORDER = ("model", "data", "method", "train", "")  # data.task before method: a method checks its task

assert len(set(KEYS.values())) == len(KEYS), "URL keys must be unique"
assert not set(KEYS.values()) & set(PAGE_KEYS)


# ------------------------------------------------------------------------------------ values

def format_value(value: Any) -> str:
    """One value as URL text: repr for floats (shortest text that reads back to the same float)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def parse_value(text: str, like: Any) -> Any:
    """URL text -> a value of the same type as `like`; ValueError with a plain message if it is not."""
    text = str(text)
    if isinstance(like, bool):
        low = text.strip().lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError("is not 1 or 0")
    if isinstance(like, int):
        try:
            number = float(text)
        except ValueError:
            raise ValueError("is not a whole number") from None
        if not math.isfinite(number) or not number.is_integer():
            raise ValueError("is not a whole number")
        return int(number)
    if isinstance(like, float):
        try:
            number = float(text)
        except ValueError:
            raise ValueError("is not a number") from None
        if not math.isfinite(number):
            raise ValueError("is not a finite number")
        return number
    if isinstance(like, dict):
        try:
            value = json.loads(text)
        except ValueError:
            raise ValueError("is not a JSON mapping") from None
        if not isinstance(value, dict):
            raise ValueError("is not a JSON mapping")
        return value
    return text


def _method_key(param: str) -> str:
    return KEYS.get(("method", param), _METHOD_PREFIX + param)


def _method_defaults(name: str) -> dict:
    return dataclasses.asdict(get_method(name).make_params({}))


def _params_base(cfg: dict, base: dict) -> dict:
    """The hyperparameters a method starts from: the base's when it is the base's method."""
    name = cfg["method"]["name"]
    if name == base["method"]["name"]:
        return dict(base["method"].get("params") or {})
    try:
        return _method_defaults(name)
    except ConfigError:
        return {}


def _as_dict(cfg: RunConfig | dict) -> dict:
    return cfg.to_dict() if isinstance(cfg, RunConfig) else copy.deepcopy(cfg)


# ------------------------------------------------------------------------------------ encode

def encode(cfg: RunConfig | dict, base: RunConfig | dict) -> dict[str, str]:
    """The fields of cfg that differ from base, as {short key: text}. Works on unvalidated dicts."""
    cfg, base = _as_dict(cfg), _as_dict(base)
    out: dict[str, str] = {}
    for (section, name), key in KEYS.items():
        if section == "method":
            if name == "name" and cfg["method"]["name"] != base["method"]["name"]:
                out[key] = format_value(cfg["method"]["name"])
            continue
        value = cfg.get(name) if section == "" else (cfg.get(section) or {}).get(name)
        default = base.get(name) if section == "" else (base.get(section) or {}).get(name)
        if value is not None and value != default:
            out[key] = format_value(value)
    defaults = _params_base(cfg, base)
    for param, value in (cfg["method"].get("params") or {}).items():
        if param not in defaults or value != defaults[param]:
            out[_method_key(param)] = format_value(value)
    return out


# ------------------------------------------------------------------------------------ decode

def _first(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return str(value[-1]) if value else ""
    return str(value)


def _shown(value: str) -> str:
    # A 20 KB value in a link is echoed as its start and end, not in full
    return repr(value) if len(value) <= 80 else repr(shorten(value, 80))


def _try(cfg: dict) -> str:
    """'' if cfg is a valid RunConfig, else the reason."""
    try:
        RunConfig.from_dict(copy.deepcopy(cfg))
    except ConfigError as exc:
        return str(exc)
    except Exception as exc:  # a bug in a check must still not reach the page as a traceback
        return f"{type(exc).__name__}: {exc}"
    return ""


def decode(params: dict | Iterable, base: RunConfig | dict) -> tuple[dict, list[str]]:
    """(config dict, warnings) from query parameters laid over base.

    Every value is parsed to its field's type and the growing config re-validated: a key that
    fails is reported and dropped, so one bad value never costs the others. Unknown keys are
    ignored (Streamlit and other pages put their own parameters in the same URL).
    """
    base_d = _as_dict(base)
    params = {str(k): _first(v) for k, v in (params.items() if hasattr(params, "items") else params)}
    warnings: list[str] = []
    problem = _try(base_d)
    if problem:  # the base itself must be valid; fall back to a plain RunConfig
        warnings.append(f"the preset is not valid ({problem}); using the defaults")
        base_d = RunConfig().to_dict()
    cfg = copy.deepcopy(base_d)

    def apply(key: str, setter, text: str) -> None:
        trial = copy.deepcopy(cfg)
        try:
            setter(trial)
        except ValueError as exc:
            warnings.append(f"{key}={_shown(text)} in the link {shorten(exc, 200)}; kept the default")
            return
        reason = _try(trial)
        if reason:
            warnings.append(f"{key}={_shown(text)} in the link was not used: {shorten(reason, 200)}")
            return
        cfg.clear()
        cfg.update(trial)

    for section in _ORDER:
        for (sec, name), key in KEYS.items():
            if sec != section or key not in params or (sec == "method" and name != "name"):
                continue
            text = params[key]
            if section == "method":  # the method's name; its hyperparameters follow below
                def set_method(d, text=text):
                    if d["method"]["name"] != text:
                        d["method"] = {"name": text, "params": _params_base({"method": {"name": text}}, base_d)}
                apply(key, set_method, text)
                continue

            def set_field(d, section=section, name=name, text=text):
                node = d if section == "" else d[section]
                like = node.get(name)
                node[name] = parse_value(text, like if like is not None else "")
            apply(key, set_field, text)
        if section == "method":
            defaults = _params_base(cfg, base_d)
            for param, like in list(defaults.items()):
                key = _method_key(param)
                if key not in params:
                    continue
                text = params[key]

                def set_param(d, param=param, like=like, text=text):
                    d["method"]["params"][param] = parse_value(text, like)
                apply(key, set_param, text)
            used = {_method_key(p) for p in defaults}
            method_keys = {k for (sec, n), k in KEYS.items() if sec == "method" and n != "name"}
            for key in params:
                if (key in method_keys or key.startswith(_METHOD_PREFIX)) and key not in used:
                    warnings.append(f"{key}={_shown(params[key])} in the link does not apply to method "
                                    f"{cfg['method']['name']}; ignored")
    return RunConfig.from_dict(cfg).to_dict(), warnings


def query_dict(params: Any) -> dict[str, str]:
    """st.query_params (or any mapping) as a plain {key: last value} dict."""
    keys = list(params.keys()) if hasattr(params, "keys") else []
    out = {}
    for k in keys:
        try:
            values = params.get_all(k) if hasattr(params, "get_all") else params[k]
        except (KeyError, TypeError, AttributeError):  # a mapping whose get_all differs
            values = params[k]
        out[str(k)] = _first(values)
    return out


def lesson_of(params: dict) -> str:
    """The lesson key in the URL ('' when none): lesson=1 is lesson mode without a lesson."""
    value = str(params.get(LESSON_KEY, "") or "").strip()
    return "" if value in ("", "0", "1") else value


def lesson_mode(params: dict) -> bool:
    return str(params.get(LESSON_KEY, "") or "").strip() not in ("", "0")


# ------------------------------------------------------------------------------- Learn page

# Learn's calculator: URL key -> (session_state key, default, kind). kind: int, float, str, list.
LEARN_FIELDS: dict[str, tuple[str, Any, str]] = {
    "model": ("learn_model", "llama-2-7b", "str"),
    "method": ("learn_method", "lora", "str"),
    "r": ("learn_r", 8, "int"),
    "alpha": ("learn_alpha", 16, "int"),
    "layer": ("learn_layer", 0, "int"),
    "module": ("learn_module", "", "str"),
    "tm": ("learn_targets_mode", "default", "str"),
    "tg": ("learn_targets", [], "list"),
    "batch": ("learn_batch", 4, "int"),
    "seq": ("learn_seq", 512, "int"),
    "dtype": ("learn_dtype", "bfloat16", "str"),
    "vt": ("learn_vtokens", 20, "int"),
}
LEARN_RANGES = {"r": (1, 128), "alpha": (1, 256), "layer": (0, 10_000), "vt": (1, 100)}
LEARN_CHOICES = {"batch": (1, 2, 4, 8, 16, 32, 64, 128), "seq": (64, 128, 256, 512, 1024, 2048, 4096),
                 "dtype": ("bfloat16", "float32"), "tm": ("default", "all", "choose")}


def encode_learn(values: dict) -> dict[str, str]:
    """{URL key: text} for the calculator values (keyed by URL key) that differ from the defaults."""
    out = {}
    for key, (_, default, kind) in LEARN_FIELDS.items():
        if key not in values or values[key] is None or values[key] == default:
            continue
        value = values[key]
        out[key] = ",".join(map(str, value)) if kind == "list" else format_value(value)
    return out


def decode_learn(params: dict, choices: dict[str, Iterable] | None = None) -> tuple[dict, list[str]]:
    """{URL key: value} for the calculator keys present and valid, and warnings for the others.

    `choices` adds allowed values known only to the page (models, methods, modules, targets)."""
    allowed = {k: tuple(v) for k, v in LEARN_CHOICES.items()}
    allowed.update({k: tuple(v) for k, v in (choices or {}).items()})
    out, warnings = {}, []
    for key, (_, default, kind) in LEARN_FIELDS.items():
        if key not in params:
            continue
        text = _first(params[key])
        try:
            if kind == "list":
                value = [t.strip() for t in text.split(",") if t.strip()]
                bad = [t for t in value if key in allowed and t not in allowed[key]]
                if bad:
                    raise ValueError(f"names unknown module(s) {bad}")
            else:
                value = parse_value(text, default)
                if key in LEARN_RANGES:
                    lo, hi = LEARN_RANGES[key]
                    if not lo <= value <= hi:
                        raise ValueError(f"is outside {lo}..{hi}")
                if key in allowed and value not in allowed[key]:
                    raise ValueError(f"is not one of {list(allowed[key])[:12]}")
        except ValueError as exc:
            warnings.append(f"{key}={_shown(text)} in the link {shorten(exc, 200)}; kept the default")
            continue
        out[key] = value
    return out, warnings
