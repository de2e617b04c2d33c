"""Run configuration: RunConfig = ModelSpec + DataSpec + MethodSpec + TrainSpec.

Every spec validates itself at construction so that a bad value is reported, naming the field,
the value and what is allowed, before any model is loaded. `to_dict`/`from_dict` round-trip
through JSON and YAML: a run's config.json alone reproduces it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

# The field machinery lives in core.schema (below methods and safety); re-exported for callers above.
from core.schema import ConfigError, coerce_fields, hp, params_schema, validate_fields  # noqa: F401
from core.methods import get_method
from core.safety import check_display_text, check_model_id


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
        method = get_method(self.name)  # raises ConfigError naming the known methods
        if not isinstance(self.params, dict):
            raise ConfigError(f"method.params={self.params!r} must be a mapping")
        # Build (and so validate) the typed hyperparameters now; keep the dict complete.
        self.params = dataclasses.asdict(method.make_params(self.params))

    @property
    def typed(self):
        return get_method(self.name).make_params(self.params)

    @property
    def method(self):
        """The registered method this spec names: what it trains, what is lighter (core.methods)."""
        return get_method(self.name)


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
        check_display_text(self.name, "name")
        if not isinstance(self.experiment, str) or len(self.experiment) > 200:
            raise ConfigError("experiment must be text of at most 200 characters")
        check_display_text(self.experiment, "experiment")
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
