"""The models the playground knows: embedded ones, Hub suggestions, and what a name resolves to."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, TypeVar

from core.config import ConfigError


log = logging.getLogger("core.models")  # one logger name for the package, as before

Kind = Literal["encoder", "causal"]
Pooling = Literal["mean", "cls", "last"]
Head = Literal["base", "causal_lm", "seq_cls"]
Origin = Literal["embedded", "local", "hub"]
T = TypeVar("T")


class ModelNotAvailable(ConfigError):
    """The model's files cannot be had: not embedded, not on disk and the hub is out of reach."""


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


def offline_message(name: str) -> str:
    return f"model {name} is not available offline; embedded models: {', '.join(EMBEDDED)}"


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
class Location:
    name: str
    origin: Origin
    source: str
    entry: ModelEntry | None
