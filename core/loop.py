"""The training step itself: Trainer for every method, a cached-feature path for frozen bases,
and evaluation only for zero-shot."""
from __future__ import annotations

import math
import os
import random
import threading
import time
from dataclasses import dataclass, field

import torch

from core import distributed, prefix_cache, workers
from core.build import Prepared
from core.callback import make_callback
from core.config import ConfigError
from core.decoder_prefix import find_decoder_prefix
from core.events import AnatomyEvent, EventFn, FinalEvent, Metrics, PhaseEvent
from core.scoring import evaluate_rows
from core.tokenize import RowsDataset
from core.trainer_setup import (AnswerLogitsOnly, accuracy, argmax_logits, batch_collator, keeps_answer_logits,
                                run_mixed_precision, training_args)


@dataclass
class FitResult:
    """What fit() hands back to the orchestrator, which writes it into summary.json."""
    train_time_s: float  # includes feature_time_s on the cached-feature path
    steps: int  # optimizer steps taken (0: nothing trained)
    final: Metrics = field(default_factory=dict)  # the evaluation on every validation row
    initial: Metrics = field(default_factory=dict)  # the base's own scores, where they were measured
    samples_per_second: float | None = None
    peak_rss_mb: float | None = None
    feature_time_s: float | None = None  # frozen base: computing the cached features
    eval_time_s: float | None = None  # zero-shot: the one evaluation


def eval_subset(cfg, val_set: list) -> list:
    """Mid-run evaluations on a fixed sample keep the chart live; the final one uses every row."""
    limit = cfg.train.eval_max_rows
    if not limit or len(val_set) <= limit:
        return by_length(val_set)
    return by_length(random.Random(cfg.train.seed).sample(val_set, limit))


def by_length(rows: list) -> list:
    """Evaluation order does not change a score; batching similar lengths cuts the padding
    (IMDb at max length 256, eval batch 32: ~1.2x fewer tokens)."""
    if rows and "input_ids" in rows[0]:
        return sorted(rows, key=lambda r: len(r["input_ids"]))
    return rows


def fit(p: Prepared, train_set: list, val_set: list, run_dir: str, emit: EventFn, stop: threading.Event,
        resume_from: str | None = None) -> FitResult:
    from core.methods import get_method
    method = get_method(p.cfg.method.name)
    if not method.trains:
        return _evaluate_only(p, val_set, emit)
    if distributed.shards_parameters() and not method.saves_adapter:
        raise ConfigError(f"method {method.name} cannot be saved from sharded weights (FSDP / ZeRO-3); use an "
                          "adapter method such as lora, or examples/accelerate/ddp.yaml or deepspeed_zero2.yaml")
    if method.frozen_features and getattr(p.cfg.method.typed, "cache_features", False):
        return _fit_cached_head(p, train_set, val_set, run_dir, emit, stop)
    prefix = prefix_cache.find_frozen_prefix(p.model) or (
        find_decoder_prefix(p.model) if p.cfg.data.task == "sft" else None)
    if prefix is not None:
        prefix.keep_in_eval()  # on both paths: see FrozenPrefix.keep_in_eval
        if _caches_prefix(p, resume_from):
            result = _fit_cached_prefix(p, prefix, train_set, val_set, run_dir, emit, stop)
            if result is not None:
                return result
    return _fit_trainer(p, p.model, train_set, val_set, run_dir, emit, stop, resume_from)


def _caches_prefix(p: Prepared, resume_from) -> bool:
    """Checkpoints (save_steps, resuming) hold the whole model's Trainer state, and under DDP each
    rank sees other rows: those runs take the normal path."""
    return (bool(getattr(p.cfg.method.typed, "cache_frozen_prefix", False))
            and not resume_from and not p.cfg.train.save_steps and distributed.world_size() == 1)


def _anatomy_fn(p: Prepared):
    from core.methods import get_method
    anatomy = get_method(p.cfg.method.name).anatomy
    if anatomy is None or distributed.shards_parameters():
        return None  # under FSDP/ZeRO-3 a rank holds only shards of the adapters
    return lambda: anatomy(p.model)


def _training_collator(p: Prepared, collate=None):
    """`collate` (the token collator by default), giving only the answer tokens' logits where it can."""
    collate = collate or batch_collator(p)
    return AnswerLogitsOnly(collate) if keeps_answer_logits(p) else collate


def _fit_trainer(p: Prepared, model, train_set, val_set, run_dir, emit, stop, resume_from=None,
                 collator=None, sampling=None) -> FitResult:
    from transformers import Trainer
    cfg = p.cfg
    classification = cfg.data.task == "classification"
    workers.separate_accelerate_state()  # before TrainingArguments clears it for every run
    args, total_steps = training_args(cfg, run_dir, p.device, len(train_set), not classification)
    if sampling:
        args.train_sampling_strategy = sampling
    has_eval = bool(val_set)
    if not has_eval:
        args.eval_strategy = "no"
        args.eval_on_start = False
    anatomy = _anatomy_fn(p)
    every = cfg.train.anatomy_steps or args.eval_steps
    rows_per_step = cfg.train.batch_size * cfg.train.grad_accum * distributed.world_size()  # batch_size is per process
    callback = make_callback(emit, stop, rows_per_step, anatomy, every)
    trainer = Trainer(
        model=model, args=args, train_dataset=RowsDataset(train_set),
        eval_dataset=RowsDataset(eval_subset(cfg, val_set)) if has_eval else None,
        data_collator=collator or _training_collator(p),
        compute_metrics=accuracy if classification else None,
        preprocess_logits_for_metrics=argmax_logits if classification else None,
        callbacks=[callback])
    from transformers.trainer_callback import PrinterCallback
    trainer.remove_callback(PrinterCallback)  # our callback reports; the printer would duplicate it
    t0 = time.perf_counter()
    out = trainer.train(resume_from_checkpoint=resume_from)
    train_time = time.perf_counter() - t0
    final = {}
    if has_eval:  # also after a stop: the class wants to see where the run got to
        metrics = trainer.evaluate(eval_dataset=RowsDataset(by_length(val_set)), metric_key_prefix="final")
        final = {k.replace("final_", "eval_"): float(v) for k, v in metrics.items()
                 if k in ("final_loss", "final_accuracy")}
        if "eval_loss" in final and not classification:
            final["eval_perplexity"] = float(math.exp(min(final["eval_loss"], 50)))
        emit(FinalEvent(type="final", step=out.global_step, **final))
    if anatomy:
        emit(AnatomyEvent(type="anatomy", step=out.global_step, layers=anatomy()))
    if distributed.shards_parameters():  # every rank takes part in gathering the adapter; rank 0 writes it
        trainer.save_model(os.path.join(run_dir, "adapter"))
    # Under mixed precision the Trainer left its autocast wrapped around forward: take it off, so
    # the model handed back computes as it was built, like the copy reloaded from disk.
    trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    return FitResult(train_time_s=train_time, steps=out.global_step, final=final, initial={},
                     samples_per_second=round(out.global_step * rows_per_step / max(train_time, 1e-9), 3),
                     peak_rss_mb=round(callback.peak_rss, 1))


# ----------------------------------------------------------------------------------------------
# Frozen bottom blocks: compute their hidden states once, then every epoch trains only the top.
# ----------------------------------------------------------------------------------------------
def _autocast(p: Prepared):
    """The Trainer's own autocast, so the cached states are what the normal path computes."""
    import contextlib
    flags = run_mixed_precision(p.cfg, p.device)
    if not (flags["bf16"] or flags["fp16"]):
        return contextlib.nullcontext
    dtype = torch.bfloat16 if flags["bf16"] else torch.float16
    return lambda: torch.autocast(str(p.device).split(":")[0], dtype=dtype)


def _cache_key(p: Prepared, kind: str, depth: int, train_set, val_set) -> tuple:
    from core.methods import get_method
    flags = run_mixed_precision(p.cfg, p.device)
    # a 4-bit base computes other states, which depend on its quantization settings
    quantized = repr(p.cfg.method.typed) if get_method(p.cfg.method.name).quantized_base else ""
    return (kind, p.cfg.model.name, p.cfg.model.dtype, str(p.device), flags["bf16"], flags["fp16"], quantized, depth,
            prefix_cache.fingerprint(train_set), prefix_cache.fingerprint(val_set))


def _fit_cached_prefix(p: Prepared, prefix, train_set, val_set, run_dir, emit, stop) -> FitResult | None:
    """None: the states would not fit the cache's budget (the caller takes the normal path)."""
    collate, autocast = batch_collator(p), _autocast(p)
    t0 = time.perf_counter()
    emit(PhaseEvent(type="phase", phase=f"computing the {prefix.first} frozen blocks (once per dataset)"))
    states = prefix_cache.remembered(
        _cache_key(p, "hidden", prefix.first, train_set, val_set),
        lambda: (prefix.bottom_states(train_set, collate, autocast), prefix.bottom_states(val_set, collate, autocast)),
        prefix.state_bytes(train_set, val_set))
    if states is None:
        return None
    feature_time = time.perf_counter() - t0
    emit(PhaseEvent(type="phase", phase="training the top blocks on the cached states",
                    feature_time_s=round(feature_time, 2)))
    # input_ids stay in the rows only for the Trainer's length-grouped sampler: the same batches as
    # on the normal path
    to_rows = lambda h, s: [{"hidden_states": h[i], "input_ids": s[i]["input_ids"], "labels": s[i]["labels"]}
                            for i in range(len(s))]
    result = _fit_trainer(p, prefix.top(), to_rows(states[0], train_set), to_rows(states[1], val_set), run_dir, emit,
                          stop, collator=_training_collator(p, prefix.collate))
    result.feature_time_s = round(feature_time, 2)
    result.train_time_s += feature_time
    return result


# ----------------------------------------------------------------------------------------------
# Frozen base: compute the pooled features once, then every epoch trains only the head.
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(p: Prepared, rows: list[dict], batch_size: int = 32) -> torch.Tensor:
    from core.heads import PooledClassifier
    model = p.model
    model.eval()
    collate = batch_collator(p)
    feats = []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # less padding
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([{k: v for k, v in rows[i].items() if k != "labels"} for i in idx])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        if isinstance(model, PooledClassifier):
            f = model.pooled(**batch)
        else:  # a causal LM's sequence head reads the last real token
            hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            last = batch["attention_mask"].sum(1) - 1
            f = hidden[torch.arange(hidden.shape[0]), last]
        feats.append((idx, f.float().cpu()))
    out = torch.empty(len(rows), feats[0][1].shape[1]) if feats else torch.empty(0, 1)
    for idx, f in feats:
        out[idx] = f
    return out


def _fit_cached_head(p: Prepared, train_set, val_set, run_dir, emit, stop) -> FitResult:
    from transformers import default_data_collator

    from core.heads import HeadOnFeatures
    head = p.model.classifier if hasattr(p.model, "classifier") else p.model.score
    emit(PhaseEvent(type="phase", phase="computing features of the frozen base (once)"))
    t0 = time.perf_counter()
    compute = lambda: (extract_features(p, train_set), extract_features(p, val_set) if val_set else None)
    # the pooled features are tiny (a vector a row): always within the budget
    train_f, val_f = prefix_cache.remembered(_cache_key(p, "pooled", -1, train_set, val_set), compute, 0)
    feature_time = time.perf_counter() - t0
    emit(PhaseEvent(type="phase", phase="training the head on cached features", feature_time_s=round(feature_time, 2)))
    head.float()
    head_model = HeadOnFeatures(head)
    to_rows = lambda f, s: [{"features": f[i], "labels": s[i]["labels"]} for i in range(len(s))]
    inner = Prepared(**{**p.__dict__, "model": head_model})
    result = _fit_trainer(inner, head_model, to_rows(train_f, train_set),
                          to_rows(val_f, val_set) if val_set else [], run_dir, emit, stop,
                          collator=default_data_collator, sampling="random")
    result.feature_time_s = round(feature_time, 2)
    result.train_time_s += feature_time
    return result


# ----------------------------------------------------------------------------------------------
# No training: evaluate the base as is.
# ----------------------------------------------------------------------------------------------
def _evaluate_only(p: Prepared, val_set, emit) -> FitResult:
    t0 = time.perf_counter()
    rows = val_set
    final = evaluate_rows(p, rows)
    emit(FinalEvent(type="final", step=0, **final))
    return FitResult(train_time_s=0.0, steps=0, final=final, initial=final,
                     eval_time_s=round(time.perf_counter() - t0, 2))
