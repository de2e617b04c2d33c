"""Run configuration: RunConfig = ModelSpec + DataSpec + MethodSpec + TrainSpec.

Every spec validates itself at construction so that a bad value is reported, naming the field,
the value and what is allowed, before any model is loaded. `to_dict`/`from_dict` round-trip
through JSON and YAML: a run's config.json alone reproduces it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
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


TASKS = ("classification", "sft")


@dataclass
class ModelSpec:
    # Registry key (e.g. "minilm"), a Hugging Face Hub id, or a local folder.
    name: str = hp("minilm", help="Embedded model key, Hugging Face Hub id or local folder")
    device: str = hp("auto", help="Where to train", choices=("auto", "cpu", "cuda", "mps"), advanced=True)
    dtype: str = hp("auto", help="Weights dtype (auto: bf16/fp16 on CUDA, fp32 on CPU)",
                    choices=("auto", "float32", "bfloat16", "float16"), advanced=True)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError("model.name is empty; give an embedded model key, a hub id or a local folder")
        from core.safety import check_model_id
        check_model_id(self.name)
        validate_fields(self, "model")


@dataclass
class DataSpec:
    # "builtin:sentiment", "builtin:facts", a file path (csv/tsv/json/jsonl/parquet), or "hub:<dataset id>".
    source: str = hp("builtin:sentiment", help="Dataset: builtin:<name>, a file path, or hub:<dataset id>")
    task: str = hp("classification", help="What the model learns", choices=TASKS)
    text_column: str = "text"
    label_column: str = "label"
    prompt_column: str = "prompt"
    response_column: str = "response"
    # Optional mapping from raw label values (as strings) to class names, e.g. {"0": "negative"}.
    label_map: dict = field(default_factory=dict)
    n_samples: int = hp(0, lo=0, hi=1_000_000, help="Use at most this many training rows (0 = all)")
    val_share: float = hp(0.2, lo=0.0, hi=0.9, help="Share of rows held out for validation")
    # Optional separate evaluation file; when set, val_share is not used.
    eval_source: str = ""
    max_length: int = hp(128, lo=8, hi=8192, help="Truncate inputs to this many tokens")
    truncation: str = hp("head", choices=("head", "head_tail"), advanced=True,
                         help="Keep the start of long texts, or their start and end (reviews conclude at the end)")
    hub_split: str = "train"

    def __post_init__(self):
        coerce_fields(self)
        validate_fields(self, "data")
        if not isinstance(self.source, str) or not self.source.strip():
            raise ConfigError("data.source is empty; choose a built-in dataset, a file or a hub dataset id")
        if not isinstance(self.label_map, dict):
            raise ConfigError(f"data.label_map={self.label_map!r} must be a mapping of raw label to name")
        self.label_map = {str(k): str(v) for k, v in self.label_map.items()}


@dataclass
class MethodSpec:
    name: str = "lora"
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        from core.methods import get_method
        method = get_method(self.name)  # raises ConfigError naming the known methods
        if not isinstance(self.params, dict):
            raise ConfigError(f"method.params={self.params!r} must be a mapping")
        # Build (and so validate) the typed hyperparameters now; keep the dict complete.
        self.params = dataclasses.asdict(method.make_params(self.params))

    @property
    def typed(self):
        from core.methods import get_method
        return get_method(self.name).make_params(self.params)


@dataclass
class TrainSpec:
    learning_rate: float = hp(5e-4, lo=0.0, hi=1.0, lo_open=True, log=True, help="Peak learning rate")
    epochs: float = hp(1.0, lo=0.0, hi=100.0, lo_open=True, help="Passes over the training rows")
    batch_size: int = hp(16, lo=1, hi=1024, help="Rows per step (per device)")
    grad_accum: int = hp(1, lo=1, hi=256, help="Steps whose gradients add up before one update", advanced=True)
    max_steps: int = hp(-1, lo=-1, hi=10_000_000, help="Stop after this many updates (-1: run all epochs)",
                        advanced=True)
    warmup_ratio: float = hp(0.06, lo=0.0, hi=0.5, help="Share of steps spent warming the LR up", advanced=True)
    lr_scheduler: str = hp("linear", help="Learning-rate schedule",
                           choices=("linear", "cosine", "constant", "constant_with_warmup"), advanced=True)
    weight_decay: float = hp(0.0, lo=0.0, hi=1.0, help="AdamW weight decay", advanced=True)
    eval_steps: int = hp(0, lo=0, hi=1_000_000,
                         help="Evaluate every K steps (0: about 4 times per epoch); always at epoch end",
                         advanced=True)
    logging_steps: int = hp(5, lo=1, hi=10_000, help="Log the training loss every K steps", advanced=True)
    seed: int = hp(42, lo=0, hi=2**31 - 1, help="Random seed (same seed, same run)")
    # Mid-run evaluations only draw the chart; on every row they cost more than the training
    # itself on small runs (5 evaluations x 1,000 rows vs 1,000 training rows). The final one uses all.
    eval_max_rows: int = hp(200, lo=0, hi=1_000_000,
                            help="Evaluate mid-run on at most this many validation rows (0: all); "
                                 "the final evaluation always uses every row",
                            advanced=True)
    anatomy_steps: int = hp(0, lo=0, hi=1_000_000,
                            help="Sample the LoRA anatomy every K steps (0: at each evaluation)",
                            advanced=True)
    save_steps: int = hp(0, lo=0, hi=1_000_000, advanced=True,
                         help="Save a resumable checkpoint every K steps (0: none)")
    torch_threads: int = hp(0, lo=0, hi=512,
                            help="CPU threads for training (0: all cores, less one when cores are few)",
                            advanced=True)
    # Activations grow with batch x length x layers; recomputing them block by block in the backward
    # pass keeps one block's worth instead (core.estimate.activation_bytes), for ~30% more time.
    gradient_checkpointing: bool = hp(False, advanced=True,
                                      help="Recompute each block's activations in the backward pass instead "
                                           "of keeping them: far less memory, about a third slower")

    def __post_init__(self):
        coerce_fields(self)
        validate_fields(self, "train")
        if not isinstance(self.gradient_checkpointing, bool):
            raise ConfigError(f"train.gradient_checkpointing={self.gradient_checkpointing!r} must be true or false")


@dataclass
class RunConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    name: str = ""
    # Runs queued together as one experiment (a grid) share this id; empty for a single run.
    experiment: str = ""

    def __post_init__(self):
        for attr, cls in (("model", ModelSpec), ("data", DataSpec), ("method", MethodSpec), ("train", TrainSpec)):
            value = getattr(self, attr)
            if isinstance(value, dict):
                setattr(self, attr, _build(cls, value, attr))
            elif not isinstance(value, cls):  # a list or a string would only fail later, inside a run
                raise ConfigError(f"{attr} must be a mapping of its fields, got {type(value).__name__}")
        if not isinstance(self.name, str) or len(self.name) > 200:
            raise ConfigError("name must be text of at most 200 characters")
        from core.safety import check_display_text
        check_display_text(self.name, "name")
        if not isinstance(self.experiment, str) or len(self.experiment) > 200:
            raise ConfigError("experiment must be text of at most 200 characters")
        check_display_text(self.experiment, "experiment")
        from core.methods import get_method
        get_method(self.method.name).check_task(self.data.task)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a run config must be a mapping, got {type(d).__name__}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown config section(s) {sorted(unknown)}; allowed: model, data, method, train, name, experiment")
        return cls(**{k: v for k, v in d.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_yaml(self) -> str:
        import yaml
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "RunConfig":
        import yaml
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"config is not valid YAML: {str(e).splitlines()[0]}") from None
        return cls.from_dict(d or {})

    def with_overrides(self, assignments: list[str]) -> "RunConfig":
        """Apply `section.key=value` strings (CLI --set), values parsed as YAML scalars."""
        import yaml
        d = self.to_dict()
        for item in assignments:
            if "=" not in item:
                raise ConfigError(f"--set {item!r} must look like section.key=value")
            key, raw = item.split("=", 1)
            parts = key.strip().split(".")
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            node = d
            for p in parts[:-1]:
                if not isinstance(node, dict) or p not in node:
                    raise ConfigError(f"--set {key}: unknown section {p!r}")
                node = node[p]
            if parts[0] != "method" and (not isinstance(node, dict) or parts[-1] not in node):
                raise ConfigError(f"--set {key}: unknown field {parts[-1]!r}")
            node[parts[-1]] = value
        return RunConfig.from_dict(d)


def _build(cls, d: dict, section: str):
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - allowed
    if unknown:
        raise ConfigError(f"{section}: unknown field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ConfigError(f"{section}: {e}") from None


def load_config(path: str) -> RunConfig:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text") from None
    if path.endswith(".json"):
        try:
            return RunConfig.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    return RunConfig.from_yaml(text)


def params_schema(params_cls) -> list[dict[str, Any]]:
    """The hyperparameters of a dataclass as plain dicts (name, type, default, range, help)."""
    out = []
    for f in dataclasses.fields(params_cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        out.append(dict(name=f.name, type=type(default).__name__, default=default, **f.metadata))
    return out
