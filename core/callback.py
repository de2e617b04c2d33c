"""The training callback: Trainer logs become typed events (core.events), the stop flag becomes
control.should_training_stop, and a NaN loss ends the run."""
from __future__ import annotations

import math
import threading
import time
from typing import Callable

from core.errors import NonFiniteLoss
from core.events import AnatomyEvent, EvalEvent, EventFn, LogEvent, ProgressEvent, StepFields


def rss_mb() -> float:
    try:
        import psutil
        return psutil.Process().memory_info().rss / 2**20
    except Exception:  # psutil missing on an odd platform: report nothing rather than fail a run
        return float("nan")


def cuda_peak_mb() -> float | None:
    import torch
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return None


def reset_cuda_peak() -> None:
    """The app trains many runs in one process: each run reports its own CUDA peak."""
    import torch
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def make_callback(on_event: EventFn, stop: threading.Event, batch_rows: int, anatomy: Callable | None,
                  anatomy_every: int):
    from transformers import TrainerCallback

    class EventCallback(TrainerCallback):
        """Trainer logs -> events (plain dicts); the stop flag -> control.should_training_stop."""

        def __init__(self):
            self.t0 = None
            self.peak_rss = 0.0
            self.last_step_time = None

        def _base(self, state) -> StepFields:
            now = time.perf_counter()
            elapsed = now - (self.t0 or now)
            step, max_steps = state.global_step, state.max_steps or 0
            rate = step / elapsed if elapsed > 0 and step else 0.0
            eta = (max_steps - step) / rate if rate else None
            self.peak_rss = max(self.peak_rss, rss_mb())
            ev = StepFields(step=step, max_steps=max_steps, epoch=round(state.epoch or 0.0, 4),
                            elapsed_s=round(elapsed, 3), eta_s=None if eta is None else round(eta, 1),
                            samples_per_second=round(rate * batch_rows, 3), peak_rss_mb=round(self.peak_rss, 1))
            cuda = cuda_peak_mb()
            if cuda is not None:
                ev["peak_cuda_mb"] = round(cuda, 1)
            return ev

        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            on_event(ProgressEvent(type="progress", **self._base(state)))

        def on_step_end(self, args, state, control, **kw):
            if stop.is_set():
                control.should_training_stop = True
                control.should_evaluate = False
                control.should_save = False
            on_event(ProgressEvent(type="progress", **self._base(state)))
            if anatomy and anatomy_every and state.global_step % anatomy_every == 0:
                on_event(AnatomyEvent(type="anatomy", **self._base(state), layers=anatomy()))

        def on_substep_end(self, args, state, control, **kw):
            if stop.is_set():
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "loss" in logs:
                loss = float(logs["loss"])
                if not math.isfinite(loss):
                    raise NonFiniteLoss(f"the training loss became {loss} at step {state.global_step}")
                ev = LogEvent(type="log", **self._base(state), loss=loss)
                for key in ("learning_rate", "grad_norm"):
                    if key in logs:
                        ev[key] = float(logs[key])
                on_event(ev)

        def on_evaluate(self, args, state, control, metrics=None, **kw):
            metrics = metrics or {}
            ev = EvalEvent(type="eval", **self._base(state))
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
