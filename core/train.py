"""One fine-tuning run, start to finish, on transformers.Trainer.

    run(cfg, run_dir, on_event, stop) -> summary dict

Reads top to bottom: validate -> load data -> build model -> apply method -> tokenise -> train with
a callback that turns Trainer logs into plain event dicts -> final evaluation -> save -> summary.
CLI: python -m core.train --config examples/lora_sentiment.yaml [--set train.epochs=2]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from core import workers
from core.config import ConfigError, RunConfig, load_config
from core.device import explain_cuda_oom

Event = dict
EventFn = Callable[[Event], None]


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------
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


def default_threads() -> int:
    """All cores, in the app too: there the trainer runs at a lower priority (core.jobs) instead of
    leaving a core idle, so pages are still served first."""
    from core.distributed import local_world_size
    cores = max(1, (os.cpu_count() or 1) // local_world_size())  # torchrun: the processes share the cores
    fixed = os.environ.get("PLAYGROUND_TRAIN_THREADS", "").strip()
    if fixed.isdigit() and int(fixed) > 0:  # a host that wants a core kept free, or fewer threads
        return min(int(fixed), cores)
    return cores


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
    from core import models
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
            model.score = make_head(model.config.hidden_size, num_labels, head_hidden).to(
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

    from core import models
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


def prepare(cfg: RunConfig, events: EventFn = lambda e: None) -> Prepared:
    import torch

    from core import data, models
    from core.methods import get_method
    method = get_method(cfg.method.name)
    device = models.pick_device(cfg.model.device)
    if method.quantized_base:
        from core.methods.qlora import bitsandbytes_available
        if not bitsandbytes_available():
            raise ConfigError("method qlora needs the bitsandbytes package, which is not installed; "
                              "pip install bitsandbytes, or choose lora")
    check_method_on_model(cfg)  # e.g. LoRA targets the model lacks: fails here, before data and weights
    events({"type": "phase", "phase": "loading data"})
    loaded = data.load_rows(cfg.data, seed=cfg.train.seed)
    events({"type": "phase", "phase": "loading model"})
    with workers.seeded_build:  # the RNG is process-wide: a parallel run must not draw between seed and init
        torch.manual_seed(cfg.train.seed)
        model, kind = build_model(cfg, loaded.label_names, device)
        tokenizer = models.load_tokenizer(cfg.model.name)
        if kind == "causal" and getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id
        ctx = method_context(model, kind, cfg.data.task, tokenizer, cfg.model.name)
        torch.manual_seed(cfg.train.seed)  # adapters initialise the same way whatever loaded before
        if cfg.train.gradient_checkpointing and method.trains and not method.frozen_features:
            enable_gradient_checkpointing(model)
        model = method.apply(model, cfg.method.typed, ctx)
    if run_mixed_precision(cfg, device)["fp16"]:
        models.upcast_trainable_params(model)  # fp32 master weights: the fp16 loss scaler needs them
    trainable, total = count_params(model)
    return Prepared(cfg=cfg, model=model, tokenizer=tokenizer, train_rows=loaded.train, val_rows=loaded.val,
                    label_names=loaded.label_names, device=device, kind=kind, trainable=trainable, total=total,
                    notes=list(getattr(loaded, "notes", [])))


def tokenize_rows(p: Prepared, rows: list[dict]) -> list[dict]:
    from core.tokenize import encode_classification, encode_sft
    cfg = p.cfg
    if cfg.data.task == "sft":
        return encode_sft(rows, p.tokenizer, cfg.data.max_length)
    prefix = getattr(cfg.method.typed, "prefix", "") or ""
    return encode_classification(rows, p.tokenizer, cfg.data.max_length, cfg.data.truncation, prefix)


# ----------------------------------------------------------------------------------------------
# Progress events
# ----------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # psutil missing on an odd platform: report nothing rather than fail a run
        return float("nan")


def _cuda_peak_mb() -> float | None:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def _reset_cuda_peak() -> None:
    """The app trains many runs in one process: each run reports its own CUDA peak."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def autocast_context(device: str, dtype: str = "auto"):
    """The Trainer's autocast, for forward passes outside it (fp32 heads on a half-precision base)."""
    import contextlib

    import torch

    from core.models import mixed_precision
    precision = mixed_precision(device, dtype) if str(device).startswith("cuda") else {}
    if precision.get("bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision.get("fp16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def make_callback(on_event: EventFn, stop: threading.Event, batch_rows: int, anatomy: Callable | None,
                  anatomy_every: int):
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Trainer logs -> plain dicts; the stop flag -> control.should_training_stop."""

        def __init__(self):
            self.t0 = None
            self.peak_rss = 0.0
            self.last_step_time = None

        def _base(self, state) -> dict:
            now = time.perf_counter()
            elapsed = now - (self.t0 or now)
            step, max_steps = state.global_step, state.max_steps or 0
            rate = step / elapsed if elapsed > 0 and step else 0.0
            eta = (max_steps - step) / rate if rate else None
            self.peak_rss = max(self.peak_rss, _rss_mb())
            ev = {"step": step, "max_steps": max_steps, "epoch": round(state.epoch or 0.0, 4),
                  "elapsed_s": round(elapsed, 3), "eta_s": None if eta is None else round(eta, 1),
                  "samples_per_second": round(rate * batch_rows, 3), "peak_rss_mb": round(self.peak_rss, 1)}
            cuda = _cuda_peak_mb()
            if cuda is not None:
                ev["peak_cuda_mb"] = round(cuda, 1)
            return ev

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            on_event({"type": "progress", **self._base(state)})

        def on_step_end(self, args, state, control, **kw):
            if stop.is_set():
                control.should_training_stop = True
                control.should_evaluate = False
                control.should_save = False
            on_event({"type": "progress", **self._base(state)})
            if anatomy and anatomy_every and state.global_step % anatomy_every == 0:
                on_event({"type": "anatomy", **self._base(state), "layers": anatomy()})

        def on_substep_end(self, args, state, control, **kw):
            if stop.is_set():
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "loss" in logs:
                loss = float(logs["loss"])
                if not math.isfinite(loss):
                    from core.errors import NonFiniteLoss
                    raise NonFiniteLoss(f"the training loss became {loss} at step {state.global_step}")
                ev = {"type": "log", **self._base(state), "loss": loss}
                for key in ("learning_rate", "grad_norm"):
                    if key in logs:
                        ev[key] = float(logs[key])
                on_event(ev)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            metrics = metrics or {}
            ev = {"type": "eval", **self._base(state)}
            for key, value in metrics.items():
                if key.startswith("eval_") and isinstance(value, (int, float)) and not key.endswith(
                        ("_runtime", "_samples_per_second", "_steps_per_second")):
                    ev[key] = float(value)
            if len(ev) == len(self._base(state)) + 1:
                return  # the final evaluation is reported by the loop as a "final" event
            if "eval_loss" in ev and "eval_accuracy" not in ev:
                ev["eval_perplexity"] = float(math.exp(min(ev["eval_loss"], 50)))
            on_event(ev)

    return EventCallback()


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
def _accuracy(eval_pred) -> dict:
    import numpy as np
    preds, labels = eval_pred
    preds = np.asarray(preds).reshape(-1)
    return {"accuracy": float((preds == np.asarray(labels).reshape(-1)).mean())}


def _argmax_logits(logits, labels):
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


def run_mixed_precision(cfg: RunConfig, device: str) -> dict[str, bool]:
    """The Trainer's autocast flags for this run: bf16 where supported (a GPU, or a CPU with native
    bf16, not under a 4-bit base), else fp16 + loss scaler on a GPU."""
    from core.methods import get_method
    from core.models import mixed_precision
    return mixed_precision(device, cfg.model.dtype, get_method(cfg.method.name).quantized_base)


def precision_label(cfg: RunConfig, device: str) -> str:
    """What the run computes in, for the summary: "float32", "bf16 mixed", ..."""
    from core.models import pick_dtype
    flags = run_mixed_precision(cfg, device)
    if flags["bf16"] or flags["fp16"]:
        return "bf16 mixed" if flags["bf16"] else "fp16 mixed"
    return str(pick_dtype(device, cfg.model.dtype)).removeprefix("torch.")


def training_args(cfg: RunConfig, run_dir: str, device: str, n_train: int, prediction_loss_only: bool):
    from transformers import TrainingArguments

    from core.distributed import world_size
    t = cfg.train
    # batch_size is per process: under torchrun/accelerate each step takes world_size batches
    steps_per_epoch = max(1, math.ceil(n_train / (t.batch_size * t.grad_accum * world_size())))
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    eval_steps = t.eval_steps or max(1, total_steps // 4)
    cuda = device.startswith("cuda")
    precision = run_mixed_precision(cfg, device)
    return TrainingArguments(
        output_dir=os.path.join(run_dir, "checkpoints"),
        learning_rate=t.learning_rate, num_train_epochs=t.epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=max(t.batch_size, 32),
        gradient_accumulation_steps=t.grad_accum, warmup_steps=int(t.warmup_ratio * total_steps),
        lr_scheduler_type=t.lr_scheduler, weight_decay=t.weight_decay, seed=t.seed, data_seed=t.seed,
        eval_strategy="steps", eval_steps=eval_steps, eval_on_start=True,
        logging_strategy="steps", logging_steps=t.logging_steps, logging_first_step=True,
        # The default filter logs a NaN/inf step loss as the mean of the earlier ones (0.0 at step
        # 1): the run would go on "completed" with NaN weights. Log it as it is: on_log stops the run.
        logging_nan_inf_filter=False,
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps or 500, save_total_limit=1,
        report_to=[], disable_tqdm=True, use_cpu=not cuda and device != "mps",
        bf16=precision["bf16"], fp16=precision["fp16"],
        dataloader_num_workers=0, remove_unused_columns=False, label_names=["labels"],
        # Under DDP every rank must draw the same order: accelerate seeds a plain random sampler by
        # epoch; the length-grouped one draws from each rank's own RNG, which dropout moves apart.
        train_sampling_strategy="group_by_length" if world_size() == 1 else "random",
        prediction_loss_only=prediction_loss_only,
        # Classification losses are per-row means that ignore num_items_in_batch; with the default
        # the Trainer would still multiply them by world_size under DDP (2x loss, 2x the step).
        # Token-level SFT losses do use it: there the global token average is the right one.
        average_tokens_across_devices=cfg.data.task == "sft",
        include_num_input_tokens_seen=False,
    ), total_steps


def _collator(p: Prepared):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding
    if p.cfg.data.task == "sft":
        return DataCollatorForSeq2Seq(p.tokenizer, label_pad_token_id=-100, padding=True, pad_to_multiple_of=8)
    return DataCollatorWithPadding(p.tokenizer, pad_to_multiple_of=8)


def machine_load(own_threads: int) -> dict | None:
    """The machine's 1-minute load average when the run's timings were taken, and whether other
    work was using at least half of its cores beside this run's own threads (the same MiniLM LoRA
    measured 16.5 ms per example alone and 183.8 ms under load: a chart must say which is which)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):  # Windows has no load average
        return None
    cores = os.cpu_count() or 1
    return {"loadavg_1m": round(load, 2), "cores": cores, "busy": load - own_threads > 0.5 * cores}


@explain_cuda_oom  # a CUDA OOM leaves as GpuOutOfMemory naming what to lower
def run(cfg: RunConfig, run_dir: str | None = None, on_event: EventFn | None = None,
        stop: threading.Event | None = None, resume_from: str | None = None, write_metrics: bool = True) -> dict:
    """Train, evaluate and save one run into run_dir; returns the summary (also in summary.json)."""
    from core import distributed, runs
    stop = stop or threading.Event()
    # torchrun/accelerate launch: every rank trains, only rank 0 writes the run folder
    distributed.init_process_group(cfg.model.device)
    main_process = distributed.is_main_process()
    if run_dir is None:
        run_dir = distributed.broadcast_object(
            runs.create_run(cfg, owner="", process=runs.process_token()) if main_process else None)
    if main_process:
        os.makedirs(run_dir, exist_ok=True)
        runs.atomic_write_json(os.path.join(run_dir, "config.json"), cfg.to_dict())

    def emit(ev: Event) -> None:
        if not main_process:
            return
        ev = {"time": round(time.time(), 3), **ev}
        if write_metrics:
            runs.append_metric(run_dir, ev)
        if on_event:
            on_event(ev)

    import torch
    # Process-wide: runs side by side each take their share, so they set the same number, not each other's.
    threads = workers.run_threads(cfg.train.torch_threads or default_threads())
    torch.set_num_threads(threads)
    _reset_cuda_peak()
    _quiet_libraries()
    t_start = time.perf_counter()
    p = prepare(cfg, emit)
    emit({"type": "phase", "phase": "tokenising"})
    train_set = tokenize_rows(p, p.train_rows)
    val_set = tokenize_rows(p, p.val_rows)
    if not train_set and get_method_trains(cfg):
        raise ConfigError("no training rows are left after tokenisation; raise data.max_length")
    precision = precision_label(cfg, p.device)
    emit({"type": "start", "trainable": p.trainable, "total": p.total, "device": p.device,
          "n_train": len(train_set), "n_val": len(val_set), "threads": threads, "notes": p.notes,
          "precision": precision})

    from core.loop import fit
    resume_from = resume_from or runs.resume_checkpoint(run_dir)
    result = fit(p, train_set, val_set, run_dir, emit, stop, resume_from)
    train_time = result["train_time_s"]

    emit({"type": "phase", "phase": "saving"})
    from core.save import save_weights
    save_weights(p, run_dir, result.get("trained_model", p.model))
    from core.infer import measure_latency
    load = machine_load(threads)  # before the latency: the timings below are read against it
    with autocast_context(p.device, cfg.model.dtype):  # a half-precision base with fp32 heads
        # rank 0 alone; not on sharded weights, whose forward needs every rank (FSDP/ZeRO-3)
        latency = measure_latency(p, val_set or train_set) \
            if main_process and not distributed.shards_parameters() else None
    summary = {
        "state": "stopped" if stop.is_set() else "completed",
        "model": cfg.model.name, "method": cfg.method.name, "task": cfg.data.task,
        "label_names": p.label_names, "trainable_params": p.trainable, "total_params": p.total,
        "trainable_percent": round(100.0 * p.trainable / max(p.total, 1), 4),
        "n_train": len(train_set), "n_val": len(val_set), "device": p.device, "threads": threads,
        "precision": precision,
        "train_time_s": round(train_time, 2), "wall_time_s": round(time.perf_counter() - t_start, 2),
        "samples_per_second": result.get("samples_per_second"),
        "steps": result.get("steps"), "peak_rss_mb": result.get("peak_rss_mb"),
        "peak_cuda_mb": _cuda_peak_mb(), "latency_ms_per_sample": latency, "machine_load": load,
        "final": result.get("final", {}), "initial": result.get("initial", {}),
    }
    if main_process:
        runs.atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    emit({"type": "end", "state": summary["state"], "final": summary["final"]})
    return summary


def get_method_trains(cfg: RunConfig) -> bool:
    from core.methods import get_method
    return get_method(cfg.method.name).trains


def _quiet_libraries() -> None:
    import logging

    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for name in ("bitsandbytes", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.train", description="Run one fine-tuning run headless.")
    ap.add_argument("--config", required=True, help="a run config (YAML or JSON), e.g. examples/lora_sentiment.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a field, e.g. --set train.epochs=2 (repeatable)")
    ap.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    ap.add_argument("--output-dir", default=None, help="write the run here instead of a new folder under runs/")
    ap.add_argument("--quiet", action="store_true", help="print only where the run went")
    args = ap.parse_args(argv)
    from core.cli import cli_guard
    return cli_guard(lambda: _main(args))


def _main(args) -> int:
    from core import runs
    cfg = load_config(args.config)
    sets = list(args.set)
    if args.max_steps is not None:
        sets.append(f"train.max_steps={args.max_steps}")
    if sets:
        cfg = cfg.with_overrides(sets)
    from core import distributed
    main_process = distributed.is_main_process()
    if args.output_dir:
        run_dir = args.output_dir
        if main_process:
            os.makedirs(run_dir, exist_ok=True)
    else:  # under torchrun: rank 0 makes the folder, the others learn its name
        distributed.init_process_group(cfg.model.device)
        run_dir = distributed.broadcast_object(
            runs.create_run(cfg, owner="", process=runs.process_token()) if main_process else None)

    def show(ev: Event) -> None:
        if args.quiet or not main_process:
            return
        if ev["type"] == "log":
            print(f"step {ev['step']}/{ev['max_steps']}  loss {ev['loss']:.4f}  "
                  f"{ev['samples_per_second']:.1f} samples/s", file=sys.stderr)
        elif ev["type"] == "eval":
            shown = {k: round(v, 4) for k, v in ev.items() if k.startswith("eval_")}
            print(f"step {ev['step']}  {shown}", file=sys.stderr)
        elif ev["type"] == "phase":
            print(f"... {ev['phase']}", file=sys.stderr)

    write_status = distributed.main_only(runs.write_status)
    write_status(run_dir, "running")
    try:
        summary = run(cfg, run_dir, show)
    except BaseException as exc:
        write_status(run_dir, "failed", error=str(exc))
        raise
    write_status(run_dir, summary["state"])
    if main_process:
        print(json.dumps({"run_dir": run_dir, "state": summary["state"], "final": summary["final"],
                          "train_time_s": summary["train_time_s"]}))
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
