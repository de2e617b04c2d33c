"""What a run reports while it works: one typed dict per kind of event.

Events are TypedDicts, i.e. plain dicts at run time: metrics.jsonl holds one JSON object per line,
the job manager keeps them in memory, Ray sends them between nodes and the pages read them, none of
which may depend on the engine's classes (a page reads events without importing torch). The types
name every key a producer writes, so a reader knows what it may find. Every event may carry "time"
(seconds since the epoch), which `core.train.run` puts first when it records the event.
"""
from __future__ import annotations

from typing import Callable, Literal, NotRequired, TypedDict, Union

PHASE = "phase"        # what the run is doing now, in words ("loading data", "saving", ...)
START = "start"        # data and model are ready: sizes, device, threads
PROGRESS = "progress"  # after every optimizer step
LOG = "log"            # the Trainer logged a training loss
EVAL = "eval"          # a mid-run evaluation on the validation sample
FINAL = "final"        # the evaluation on every validation row, after training
ANATOMY = "anatomy"    # per-layer adapter statistics (LoRA)
END = "end"            # the run is over: its state and final metrics
STATUS = "status"      # a message from the serving side (e.g. the Ray node the run went to)

Metrics = dict[str, float]  # eval_loss / eval_accuracy / eval_perplexity


class PhaseEvent(TypedDict):
    type: Literal["phase"]
    phase: str
    feature_time_s: NotRequired[float]
    time: NotRequired[float]


class StartEvent(TypedDict):
    type: Literal["start"]
    trainable: int
    total: int
    device: str
    n_train: int
    n_val: int
    threads: int
    notes: list
    precision: str
    time: NotRequired[float]


class StepFields(TypedDict):
    """Where training is, written by the training callback into each of its events."""
    step: int
    max_steps: int
    epoch: float
    elapsed_s: float
    eta_s: float | None
    samples_per_second: float
    peak_rss_mb: float
    peak_cuda_mb: NotRequired[float]  # only where CUDA is
    time: NotRequired[float]


class ProgressEvent(StepFields):
    type: Literal["progress"]


class LogEvent(StepFields):
    type: Literal["log"]
    loss: float
    learning_rate: NotRequired[float]
    grad_norm: NotRequired[float]


class EvalEvent(StepFields):
    """Also any other eval_* number the Trainer reported."""
    type: Literal["eval"]
    eval_loss: NotRequired[float]
    eval_accuracy: NotRequired[float]
    eval_perplexity: NotRequired[float]  # sft: exp(eval_loss)


class FinalEvent(TypedDict):
    type: Literal["final"]
    step: int
    eval_loss: NotRequired[float]
    eval_accuracy: NotRequired[float]
    eval_perplexity: NotRequired[float]
    time: NotRequired[float]


class AnatomyEvent(TypedDict):
    """During training it carries every StepFields key; the one after training only the step."""
    type: Literal["anatomy"]
    step: int
    layers: list
    max_steps: NotRequired[int]
    epoch: NotRequired[float]
    elapsed_s: NotRequired[float]
    eta_s: NotRequired[float | None]
    samples_per_second: NotRequired[float]
    peak_rss_mb: NotRequired[float]
    peak_cuda_mb: NotRequired[float]
    time: NotRequired[float]


class EndEvent(TypedDict):
    type: Literal["end"]
    state: str  # completed / stopped
    final: Metrics
    time: NotRequired[float]


class StatusEvent(TypedDict):
    type: Literal["status"]
    message: str
    ray_node: NotRequired[str]
    time: NotRequired[float]


Event = Union[PhaseEvent, StartEvent, ProgressEvent, LogEvent, EvalEvent, FinalEvent, AnatomyEvent, EndEvent,
              StatusEvent]
EventFn = Callable[[Event], None]


# Each event type's declared keys, by its "type" value: what a reader may find in it.
BY_TYPE: dict[str, type] = {PHASE: PhaseEvent, START: StartEvent, PROGRESS: ProgressEvent, LOG: LogEvent,
                            EVAL: EvalEvent, FINAL: FinalEvent, ANATOMY: AnatomyEvent, END: EndEvent,
                            STATUS: StatusEvent}
