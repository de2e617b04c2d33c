#!/usr/bin/env python
# >>> docstring
"""Template of the standalone training script core.export writes for a run.

It is real Python, linted and compiled by the tests, but never run as it is: core.export replaces
each block between `# >>> name` and `# <<< name` with the run's own code (its settings, its model,
its rows, the method's apply code, and the app's own helpers copied by their source; see
core.export.ENGINE_CODE). The stubs inside the blocks only keep this file valid.
"""
# <<< docstring
from __future__ import annotations

import base64
import contextlib
import json
import math
import os
import random
import tempfile
import zlib
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorForSeq2Seq, DataCollatorWithPadding, PreTrainedModel, Trainer,
                          TrainingArguments, default_data_collator)
from transformers.modeling_outputs import SequenceClassifierOutput
from peft import (IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType,
                  get_peft_model, prepare_model_for_kbit_training)

# >>> settings
SEED = 0
TASK = "classification"
KIND = "encoder"            # encoder: mean-pooled classifier below; causal: transformers' own heads
POOLING = "mean"
MAX_LENGTH = 256
TRUNCATION = "head"
PREFIX = ""
HEAD_HIDDEN = 0
DTYPE = "auto"
DEVICE_PREF = "auto"
QUANTIZED = None
CACHE_FEATURES = False
THREADS = 0                 # the run's thread count: float sums depend on it
TRAIN: dict[str, Any] = {}
OUTPUT_DIR = os.path.join(os.getcwd(), "export")
# <<< settings
# What the app's copied helpers read of a run (they take the app's config and prepared-run objects).
CFG = SimpleNamespace(data=SimpleNamespace(task=TASK), train=SimpleNamespace(**TRAIN))

# ------------------------------------------------------------------------------ the model
# >>> model
MODEL_SOURCE = ""
GGUF_FILE = None
# <<< model


# ------------------------------------------------------------------------------ the data
# >>> data
ROWS: dict[str, Any] = {"train": [], "val": [], "label_names": []}
# <<< data


# ------------------------------------------------------------------------------ the app's own helpers, copied
# >>> engine
mean_pool = make_head = PooledClassifier = HeadOnFeatures = RowsDataset = encode_classification = encode_sft = None
accuracy = argmax_logits = drop_quantizer_markers = cpu_has_native_bf16 = by_length = eval_subset = None
extract_features = batch_collator = None
# the imports above that only the code export puts in these blocks uses (rows, method, helpers):
_USED_BY_FILLED_BLOCKS = (base64, zlib, json, contextlib, nn, Dataset, PreTrainedModel, SequenceClassifierOutput, DataCollatorForSeq2Seq,
                  DataCollatorWithPadding, IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig,
                  PromptTuningInit, TaskType, get_peft_model, prepare_model_for_kbit_training, random)
# <<< engine


# ------------------------------------------------------------------------------ the method
# >>> method
def apply_method(model, tokenizer):
    return model
# <<< method


# ------------------------------------------------------------------------------ device and dtype
def pick_device():
    if DEVICE_PREF != "auto":
        return DEVICE_PREF
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device):
    if DTYPE != "auto":
        return getattr(torch, DTYPE)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.float32


def mixed_precision(device):
    if not device.startswith("cuda"):
        # As in the app: bf16 autocast on a CPU that multiplies bf16 in hardware (~1.3x faster)
        cpu_bf16 = device == "cpu" and DTYPE == "auto" and not QUANTIZED and cpu_has_native_bf16()
        return {"bf16": cpu_bf16, "fp16": False}
    weights = pick_dtype(device)
    if weights == torch.float32 and DTYPE != "auto":
        return {"bf16": False, "fp16": False}
    return {"bf16": weights == torch.bfloat16, "fp16": weights != torch.bfloat16}


# ------------------------------------------------------------------------------ tokenizer and model
def load_tokenizer():
    kwargs = {"gguf_file": GGUF_FILE} if GGUF_FILE else {}
    tokenizer = AutoTokenizer.from_pretrained(MODEL_SOURCE, **kwargs)
    if tokenizer.pad_token is None:  # reuse an existing token: no new embedding rows
        order = ("eos_token", "unk_token", "bos_token") if KIND == "causal" else (
            "sep_token", "eos_token", "cls_token", "unk_token")
        tokenizer.pad_token = next(str(getattr(tokenizer, a)) for a in order if getattr(tokenizer, a, None))
    tokenizer.padding_side = "right"
    return tokenizer


def from_pretrained(auto, **kwargs):
    """Load with a fixed RNG inside (a new head starts the same every time), the caller's RNG untouched."""
    if GGUF_FILE:
        kwargs["gguf_file"] = GGUF_FILE
        try:
            from transformers import GgufConfig
            kwargs["quantization_config"] = GgufConfig(dequantize=True)  # plain dense weights
        except ImportError:
            pass
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(SEED)
        return auto.from_pretrained(MODEL_SOURCE, **kwargs)


def build_model(label_names, device):
    kwargs = {"dtype": pick_dtype(device)}
    if QUANTIZED:
        from transformers import BitsAndBytesConfig
        compute = QUANTIZED["compute_dtype"]
        if compute == "auto":
            compute = ("bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16") if device.startswith("cuda") \
                else "float32"
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=QUANTIZED["double_quant"],
            bnb_4bit_compute_dtype=getattr(torch, compute), llm_int8_skip_modules=["classifier", "score", "lm_head"])
        kwargs["device_map"] = {"": device if device != "cuda" else 0}
    if TASK == "sft":
        model = from_pretrained(AutoModelForCausalLM, **kwargs)
        if GGUF_FILE:
            drop_quantizer_markers(model)
    elif KIND == "causal":
        id2label = dict(enumerate(label_names))
        config = from_pretrained_config()
        pad = getattr(config, "pad_token_id", None)
        pad = pad if pad is not None else getattr(config, "eos_token_id", None)
        pad = pad[0] if isinstance(pad, (list, tuple)) else pad
        model = from_pretrained(AutoModelForSequenceClassification, num_labels=len(label_names), id2label=id2label,
                                label2id={v: k for k, v in id2label.items()}, pad_token_id=pad, **kwargs)
        if HEAD_HIDDEN:
            # as wide as transformers' `score`: what the model outputs (OPT: word_embed_proj_dim)
            model.score = make_head(model.score.in_features, len(label_names), HEAD_HIDDEN).to(
                device=model.score.weight.device, dtype=model.score.weight.dtype)
    else:
        encoder = from_pretrained(AutoModel, **kwargs)
        config = encoder.config
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {v: k for k, v in config.id2label.items()}
        model = PooledClassifier(config, encoder, pooling=POOLING, head_hidden=HEAD_HIDDEN)
    if QUANTIZED:
        for module in model.modules():  # bitsandbytes' CPU packing would stop gradients (see the app)
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if "device_map" not in kwargs and device != "cpu":
        model = model.to(device)
    return model


def from_pretrained_config():
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(MODEL_SOURCE, **({"gguf_file": GGUF_FILE} if GGUF_FILE else {}))


# ------------------------------------------------------------------------------ training
def training_args(device, n_train, has_eval):
    t = TRAIN
    steps_per_epoch = max(1, math.ceil(n_train / (t["batch_size"] * t["grad_accum"])))
    total_steps = t["max_steps"] if t["max_steps"] > 0 else math.ceil(steps_per_epoch * t["epochs"])
    eval_steps = t["eval_steps"] or max(1, total_steps // 4)
    precision = mixed_precision(device)
    return TrainingArguments(
        output_dir=os.path.join(tempfile.mkdtemp(), "checkpoints"),
        learning_rate=t["learning_rate"], num_train_epochs=t["epochs"], max_steps=t["max_steps"],
        per_device_train_batch_size=t["batch_size"], per_device_eval_batch_size=max(t["batch_size"], 32),
        gradient_accumulation_steps=t["grad_accum"], warmup_steps=int(t["warmup_ratio"] * total_steps),
        lr_scheduler_type=t["lr_scheduler"], weight_decay=t["weight_decay"], seed=SEED, data_seed=SEED,
        eval_strategy="steps" if has_eval else "no", eval_steps=eval_steps, eval_on_start=has_eval,
        logging_strategy="steps", logging_steps=t["logging_steps"], logging_first_step=True,
        logging_nan_inf_filter=False, save_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=not device.startswith("cuda") and device != "mps",
        bf16=precision["bf16"], fp16=precision["fp16"], dataloader_num_workers=0,
        remove_unused_columns=False, label_names=["labels"],
        # Batches of similar length (less padding), in the same order as the app's run.
        train_sampling_strategy="group_by_length",
        prediction_loss_only=TASK == "sft", average_tokens_across_devices=TASK == "sft",
        include_num_input_tokens_seen=False)


def main():
    torch.set_num_threads(THREADS or os.cpu_count() or 1)
    device = pick_device()
    label_names = ROWS["label_names"]
    torch.manual_seed(SEED)
    model = build_model(label_names, device)
    tokenizer = load_tokenizer()
    if GGUF_FILE:
        tokenizer.model_max_length = int(model.config.max_position_embeddings)
    if KIND == "causal" and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(SEED)  # adapters initialise the same way whatever loaded before
    model = apply_method(model, tokenizer)
    if mixed_precision(device)["fp16"]:  # fp32 master weights for the fp16 loss scaler
        for param in model.parameters():
            if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
                param.data = param.data.float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"trainable parameters: {trainable:,} of {total:,}")

    if TASK == "sft":
        train_set = encode_sft(ROWS["train"], tokenizer, MAX_LENGTH)
        val_set = encode_sft(ROWS["val"], tokenizer, MAX_LENGTH)
    else:
        train_set = encode_classification(ROWS["train"], tokenizer, MAX_LENGTH, TRUNCATION, PREFIX)
        val_set = encode_classification(ROWS["val"], tokenizer, MAX_LENGTH, TRUNCATION, PREFIX)
    run = SimpleNamespace(cfg=CFG, model=model, tokenizer=tokenizer)  # what the app's helpers read
    collate = batch_collator(run)
    train_model = model
    sampling = None
    if CACHE_FEATURES:
        head = model.classifier if hasattr(model, "classifier") else model.score
        train_f = extract_features(run, train_set)
        val_f = extract_features(run, val_set) if val_set else None
        head.float()
        train_model = HeadOnFeatures(head)
        to_rows = lambda f, s: [{"features": f[i], "labels": s[i]["labels"]} for i in range(len(s))]  # noqa: E731
        train_set = to_rows(train_f, train_set)
        val_set = to_rows(val_f, val_set) if val_set else []
        collate, sampling = default_data_collator, "random"

    classification = TASK == "classification"
    has_eval = bool(val_set)
    args = training_args(device, len(train_set), has_eval)
    if sampling:
        args.train_sampling_strategy = sampling
    trainer = Trainer(model=train_model, args=args, train_dataset=RowsDataset(train_set),
                      eval_dataset=RowsDataset(eval_subset(CFG, val_set)) if has_eval else None,
                      data_collator=collate,
                      compute_metrics=accuracy if classification else None,
                      preprocess_logits_for_metrics=argmax_logits if classification else None)
    trainer.train()
    if has_eval:
        final = trainer.evaluate(eval_dataset=RowsDataset(by_length(val_set)), metric_key_prefix="final")
        print("final evaluation:", {k: round(v, 4) for k, v in final.items() if k in ("final_loss", "final_accuracy")})
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if hasattr(model, "peft_config"):
        model.save_pretrained(OUTPUT_DIR)
        print(f"adapter saved to {OUTPUT_DIR}")
    print(f"final training loss: {losses[-1]!r}" if losses else "final training loss: none logged")


if __name__ == "__main__":
    main()
