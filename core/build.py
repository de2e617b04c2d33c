"""The model a run trains: the base with the right head for its task (maybe 4-bit), what a method
needs to know about it (MethodContext), and `Prepared`, everything a run holds before training.
Shared by the orchestrator (core.train), inference (core.infer) and the export."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core import models
from core.config import ConfigError, RunConfig


@dataclass
class Prepared:
    """Everything a run needs before the Trainer starts."""
    cfg: RunConfig
    model: Any
    tokenizer: Any
    train_rows: list
    val_rows: list
    label_names: list | None
    device: str
    kind: str
    trainable: int
    total: int
    notes: list = field(default_factory=list)


def count_params(model) -> tuple[int, int]:
    """(trainable, total), counting 4-bit packed weights by their real element count."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if p.__class__.__name__ == "Params4bit":
            n = int(getattr(p, "quant_state", None).shape.numel()) if getattr(p, "quant_state", None) else n * 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def method_context(model, kind: str, task: str, tokenizer, model_name: str):
    from torch import nn

    from core.methods import MethodContext
    head_names = [] if task == "sft" else (["classifier"] if kind == "encoder" else ["score"])
    skip = set(head_names) | {"lm_head"}
    linear = sorted({name.split(".")[-1] for name, m in model.named_modules()
                     if isinstance(m, nn.Linear) and name.split(".")[-1] not in skip
                     and not any(part in skip for part in name.split("."))})
    defaults = _default_targets(model, model_name, linear)
    config = getattr(model, "config", None)
    num_layers = int(getattr(config, "num_hidden_layers", 0) or getattr(config, "n_layers", 0) or 0)
    return MethodContext(task=task, kind=kind, default_targets=defaults, all_linear=linear,
                         head_names=head_names, tokenizer=tokenizer, num_layers=num_layers)


def _default_targets(model, model_name: str, linear: list[str]) -> list[str]:
    from core.methods.targets import lora_targets  # the one table (the estimate reads it too)
    return lora_targets(getattr(getattr(model, "config", None), "model_type", ""), linear)


def build_model(cfg: RunConfig, label_names: list | None, device: str):
    """The base model with the right head for the task, possibly 4-bit, not yet adapted."""
    from core.methods import get_method
    model, kind = _build_model(cfg, label_names, device)
    if get_method(cfg.method.name).quantized_base:
        from core.methods.qlora import keep_weights_unpacked, own_unquantized_weights, return_freed_memory_promptly
        keep_weights_unpacked(model)  # before anything runs it: see keep_weights_unpacked
        own_unquantized_weights(model)  # release the mmapped fp32 checkpoint (RSS)
        return_freed_memory_promptly()  # QLoRA is chosen for memory: keep the heap from hoarding it
    return model, kind


def _build_model(cfg: RunConfig, label_names: list | None, device: str):
    from core.heads import PooledClassifier
    from core.methods import get_method
    method = get_method(cfg.method.name)
    resolved = models.resolve(cfg.model.name)
    kind, pooling = resolved.kind, resolved.pooling
    task = cfg.data.task
    if task == "sft" and kind != "causal":
        raise ConfigError(f"model {cfg.model.name} is an encoder; instruction tuning (sft) needs a causal LM "
                          "such as smollm2-135m-instruct")
    qconfig = None
    if method.quantized_base:
        from core.methods.qlora import quantization_config
        qconfig = quantization_config(cfg.method.typed, device, ["classifier", "score", "lm_head"])
    load = dict(device=cfg.model.device, dtype=cfg.model.dtype, quantization_config=qconfig, seed=cfg.train.seed)
    if task == "sft":
        return models.load_model(cfg.model.name, head="causal_lm", **load), kind
    num_labels = len(label_names)
    id2label = {i: name for i, name in enumerate(label_names)}
    if kind == "causal" and not method.trains:
        # zero-shot reads the label words' likelihood, which needs the LM head, not a new one
        return models.load_model(cfg.model.name, head="causal_lm", **load), kind
    head_hidden = getattr(cfg.method.typed, "head_hidden", 0)
    if kind == "causal":
        model = models.load_model(cfg.model.name, head="seq_cls", num_labels=num_labels, id2label=id2label,
                                  **load)
        if head_hidden:  # the hidden-layer head asked for, in place of transformers' single linear `score`
            from core.heads import make_head
            # As wide as `score`, which transformers built on what the model outputs: not always
            # hidden_size (OPT projects out to word_embed_proj_dim, 512 for opt-350m's 1024).
            model.score = make_head(model.score.in_features, num_labels, head_hidden).to(
                device=model.score.weight.device, dtype=model.score.weight.dtype)
        return model, kind
    encoder = models.load_model(cfg.model.name, head="base", **load)
    config = encoder.config
    config.num_labels = num_labels
    config.id2label = id2label
    config.label2id = {v: k for k, v in id2label.items()}
    return PooledClassifier(config, encoder, pooling=pooling, head_hidden=head_hidden), kind


def enable_gradient_checkpointing(model) -> Any:
    """Turn on activation recomputation in the transformers model (PooledClassifier is one too).

    Non-reentrant checkpointing: the reentrant kind passes no gradient through a block whose
    inputs do not require one, i.e. to adapters behind a frozen embedding layer. The KV cache is
    switched off: transformers refuses it under checkpointing, and training never uses it.
    """
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigError(f"train.gradient_checkpointing: this model ({type(model).__name__}) does not support "
                          "it; turn it off")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x renamed it
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    return model


def meta_method_context(cfg: RunConfig):
    """The MethodContext of cfg's model built on the meta device (module names, no weights read).

    None when transformers cannot build the architecture from its config alone; the method then
    meets the real model at apply time. An unknown or unavailable model raises ConfigError.
    """
    import torch
    from transformers import AutoModel

    resolved = models.resolve(cfg.model.name)
    config = models.load_config(cfg.model.name)
    try:
        with torch.device("meta"):
            model = AutoModel.from_config(config, trust_remote_code=False)
    # An architecture transformers cannot build from its config (ValueError), one whose code needs a
    # missing package (ImportError), or one that cannot live on the meta device: not an error here,
    # the method meets the real model when it is applied, and any real problem is reported there.
    except (ValueError, KeyError, TypeError, AttributeError, NotImplementedError, RuntimeError, ImportError):
        return None
    # The blocks' module names do not depend on the head: a base model names them all.
    return method_context(model, resolved.kind, cfg.data.task, None, cfg.model.name)


def check_method_on_model(cfg: RunConfig) -> None:
    """Run the method's check_model hook against the model's names, before anything is loaded."""
    from core.methods import get_method
    method = get_method(cfg.method.name)
    if method.check_model is None:
        return
    ctx = meta_method_context(cfg)
    if ctx is not None:
        method.check_model(cfg.method.typed, ctx)
