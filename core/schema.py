"""Hyperparameter fields and their checks: the base that methods and config both build on.

Kept apart from core.config so that core.safety and core.methods can raise ConfigError and declare
fields without importing the config (which imports them).
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A user-caused configuration problem; its message is safe to show as is."""


def hp(default, *, help: str, lo=None, hi=None, lo_open=False, hi_open=False, step=None,
       choices=None, log=False, advanced=False):
    """A hyperparameter field whose metadata the UI reads to build its control."""
    meta = dict(help=help, lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, step=step,
                choices=choices, log=log, advanced=advanced)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def _range_text(meta) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    left = "(" if meta.get("lo_open") else "["
    right = ")" if meta.get("hi_open") else "]"
    if lo is not None and hi is not None:
        return f"in {left}{lo}, {hi}{right}"
    if lo is not None:
        return f"{'>' if meta.get('lo_open') else '>='} {lo}"
    if hi is not None:
        return f"{'<' if meta.get('hi_open') else '<='} {hi}"
    return ""


def validate_fields(obj, prefix: str) -> None:
    """Check every field of a dataclass against the range/choices in its metadata."""
    for f in dataclasses.fields(obj):
        meta = f.metadata
        if not meta:
            continue
        value = getattr(obj, f.name)
        name = f"{prefix}.{f.name}"
        choices = meta.get("choices")
        if choices is not None and not isinstance(value, list):
            if value not in choices:
                raise ConfigError(f"{name}={value!r} is not allowed; choose one of {list(choices)}")
            continue
        lo, hi = meta.get("lo"), meta.get("hi")
        if lo is None and hi is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}={value!r} must be a number {_range_text(meta)}")
        if value != value:  # NaN
            raise ConfigError(f"{name}=nan must be a number {_range_text(meta)}")
        bad_lo = lo is not None and (value <= lo if meta.get("lo_open") else value < lo)
        bad_hi = hi is not None and (value >= hi if meta.get("hi_open") else value > hi)
        if bad_lo or bad_hi:
            raise ConfigError(f"{name}={value!r} is out of range; allowed: {_range_text(meta)}")
        if isinstance(f.default, int) and not isinstance(f.default, bool) and not float(value).is_integer():
            raise ConfigError(f"{name}={value!r} must be a whole number {_range_text(meta)}")


def coerce_fields(obj) -> None:
    """YAML/CLI give '1e-3' or 3.0 where an int or float is meant: coerce gently, before checking."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        try:
            if isinstance(default, bool):
                if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                    setattr(obj, f.name, value.lower() in ("true", "1", "yes"))
            elif isinstance(default, int) and isinstance(value, (str, float)) and not isinstance(value, bool):
                as_float = float(value)
                if as_float.is_integer():
                    setattr(obj, f.name, int(as_float))
            elif isinstance(default, float) and isinstance(value, (str, int)) and not isinstance(value, bool):
                setattr(obj, f.name, float(value))
        except (TypeError, ValueError):
            section = _SECTIONS.get(type(obj).__name__, "method.params")
            allowed = _range_text(f.metadata) if f.metadata else ""
            raise ConfigError(f"{section}.{f.name}={value!r} is not a number"
                              + (f"; allowed: {allowed}" if allowed else "")) from None


# How coerce_fields names a spec's fields in its messages, the way validate_fields does.
_SECTIONS = {"ModelSpec": "model", "DataSpec": "data", "TrainSpec": "train"}


def params_schema(params_cls) -> list[dict[str, Any]]:
    """The hyperparameters of a dataclass as plain dicts (name, type, default, range, help)."""
    out = []
    for f in dataclasses.fields(params_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(dict(name=f.name, type=type(default).__name__, default=default, **f.metadata))
    return out
