"""One fine-tuning run, start to finish, on transformers.Trainer: the orchestrator.

    run(cfg, run_dir, on_event, stop) -> summary dict

Reads top to bottom: validate -> load data -> build model (core.build) -> apply method -> tokenise ->
train (core.loop, with core.callback turning Trainer logs into typed events, core.events) -> final
evaluation -> save (core.save) -> summary.
CLI: python -m core.train --config examples/lora_sentiment.yaml [--set train.epochs=2]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time

from core import data, distributed, models, runs, settings, workers
from core.build import Prepared, build_model, check_method_on_model, count_params, enable_gradient_checkpointing, \
    method_context
from core.callback import cuda_peak_mb, reset_cuda_peak
from core.cli import cli_guard
from core.config import ConfigError, RunConfig, load_config
from core.device import explain_cuda_oom
from core.events import EVAL, LOG, PHASE, EndEvent, Event, EventFn, PhaseEvent, StartEvent
from core.save import save_weights
from core.trainer_setup import precision_label, quiet_library_logs, run_mixed_precision


# ----------------------------------------------------------------------------------------------
# Before training: the data, the adapted model, the tokenised rows
# ----------------------------------------------------------------------------------------------
def default_threads() -> int:
    """All cores, in the app too: there the trainer runs at a lower priority (core.jobs) instead of
    leaving a core idle, so pages are still served first."""
    cores = max(1, (os.cpu_count() or 1) // distributed.local_world_size())  # torchrun: the processes share the cores
    fixed = settings.raw("PLAYGROUND_TRAIN_THREADS", "").strip()
    if fixed.isdigit() and int(fixed) > 0:  # a host that wants a core kept free, or fewer threads
        return min(int(fixed), cores)
    return cores


def prepare(cfg: RunConfig, events: EventFn = lambda e: None) -> Prepared:
    import torch

    from core.methods import get_method
    method = get_method(cfg.method.name)
    device = models.pick_device(cfg.model.device)
    if method.quantized_base:
        from core.methods.qlora import bitsandbytes_available
        if not bitsandbytes_available():
            raise ConfigError("method qlora needs the bitsandbytes package, which is not installed; "
                              "pip install bitsandbytes, or choose lora")
    check_method_on_model(cfg)  # e.g. LoRA targets the model lacks: fails here, before data and weights
    events(PhaseEvent(type="phase", phase="loading data"))
    loaded = data.load_rows(cfg.data, seed=cfg.train.seed)
    events(PhaseEvent(type="phase", phase="loading model"))
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


def autocast_context(device: str, dtype: str = "auto"):
    """The Trainer's autocast, for forward passes outside it (fp32 heads on a half-precision base)."""
    import contextlib

    import torch
    precision = models.mixed_precision(device, dtype) if str(device).startswith("cuda") else {}
    if precision.get("bf16"):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision.get("fp16"):
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------
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


@contextlib.contextmanager
def _recorded_status(run_dir: str):
    """status.json of a run trained outside the job manager, as the manager keeps its own runs':
    running while it trains, then the state the body leaves in the yielded dict, or failed naming
    the error. Left queued, the Runs page listed such a run as waiting for good."""
    started = time.time()
    runs.write_status(run_dir, "running", started=started, process=runs.process_token(), message="")
    outcome = {"state": "completed"}
    try:
        yield outcome
    except BaseException as exc:
        finished = time.time()
        runs.write_status(run_dir, "failed", message=str(exc) or type(exc).__name__, finished=finished,
                          duration_s=round(finished - started, 3))
        raise
    finished = time.time()
    runs.write_status(run_dir, outcome["state"], finished=finished, duration_s=round(finished - started, 3))


@explain_cuda_oom  # a CUDA OOM leaves as GpuOutOfMemory naming what to lower
def run(cfg: RunConfig, run_dir: str | None = None, on_event: EventFn | None = None,
        stop: threading.Event | None = None, resume_from: str | None = None, write_metrics: bool = True,
        record_status: bool | None = None) -> dict:
    """Train, evaluate and save one run into run_dir; returns the summary (also in summary.json).

    record_status (by default as write_metrics) keeps the run's status.json: the job manager and
    Ray, which write metrics.jsonl themselves, record the state themselves too."""
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
    recording = main_process and (write_metrics if record_status is None else record_status)
    with _recorded_status(run_dir) if recording else contextlib.nullcontext({}) as outcome:
        summary = _train(cfg, run_dir, main_process, on_event, stop, resume_from, write_metrics)
        outcome["state"] = summary["state"]
    return summary


@explain_cuda_oom  # inside the status record too: a failed run's status names what to lower
def _train(cfg: RunConfig, run_dir: str, main_process: bool, on_event: EventFn | None, stop: threading.Event,
           resume_from: str | None, write_metrics: bool) -> dict:
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
    reset_cuda_peak()
    quiet_library_logs()
    t_start = time.perf_counter()
    p = prepare(cfg, emit)
    emit(PhaseEvent(type="phase", phase="tokenising"))
    train_set = tokenize_rows(p, p.train_rows)
    val_set = tokenize_rows(p, p.val_rows)
    if not train_set and get_method_trains(cfg):
        raise ConfigError("no training rows are left after tokenisation; raise data.max_length")
    precision = precision_label(cfg, p.device)
    emit(StartEvent(type="start", trainable=p.trainable, total=p.total, device=p.device,
                    n_train=len(train_set), n_val=len(val_set), threads=threads, notes=p.notes,
                    precision=precision))

    from core.loop import fit  # torch and transformers load here, not when a page imports this module
    resume_from = resume_from or runs.resume_checkpoint(run_dir)
    result = fit(p, train_set, val_set, run_dir, emit, stop, resume_from)
    train_time = result.train_time_s

    emit(PhaseEvent(type="phase", phase="saving"))
    save_weights(p, run_dir)
    from core.scoring import measure_latency
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
        "samples_per_second": result.samples_per_second,
        "steps": result.steps, "peak_rss_mb": result.peak_rss_mb,
        "peak_cuda_mb": cuda_peak_mb(), "latency_ms_per_sample": latency, "machine_load": load,
        "final": result.final, "initial": result.initial,
    }
    if main_process:
        runs.atomic_write_json(os.path.join(run_dir, "summary.json"), summary)
    emit(EndEvent(type="end", state=summary["state"], final=summary["final"]))
    return summary


def get_method_trains(cfg: RunConfig) -> bool:
    from core.methods import get_method
    return get_method(cfg.method.name).trains


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
    return cli_guard(lambda: _main(args))


def _main(args) -> int:
    cfg = load_config(args.config)
    sets = list(args.set)
    if args.max_steps is not None:
        sets.append(f"train.max_steps={args.max_steps}")
    if sets:
        cfg = cfg.with_overrides(sets)
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
        if ev["type"] == LOG:
            print(f"step {ev['step']}/{ev['max_steps']}  loss {ev['loss']:.4f}  "
                  f"{ev['samples_per_second']:.1f} samples/s", file=sys.stderr)
        elif ev["type"] == EVAL:
            shown = {k: round(v, 4) for k, v in ev.items() if k.startswith("eval_")}
            print(f"step {ev['step']}  {shown}", file=sys.stderr)
        elif ev["type"] == PHASE:
            print(f"... {ev['phase']}", file=sys.stderr)

    summary = run(cfg, run_dir, show)  # which records the run's status (running, then its end)
    if main_process:
        print(json.dumps({"run_dir": run_dir, "state": summary["state"], "final": summary["final"],
                          "train_time_s": summary["train_time_s"]}))
    distributed.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
