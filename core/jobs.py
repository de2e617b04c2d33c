"""Process-wide job manager: a FIFO queue and one worker thread that trains one run at a time.

Every browser session (and every reload, which is a new session) talks to the same manager, so a
running job is found again after a reload. The worker never dies with a job: whatever a run
raises is caught, turned into a plain-words message with a hint, and the next job starts.

Ownership: each session passes its owner id; stop/cancel/delete/download of someone else's run
raises PermissionDenied unless the caller is admin (env PLAYGROUND_ADMIN_TOKEN).
"""
from __future__ import annotations

import collections
import dataclasses
import gc
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
import traceback
import types
from typing import Any, Callable, Optional

from core import limits, runs
from core.config import ConfigError
from core.runs import NotFound  # noqa: F401 - re-exported so pages catch jobs.NotFound

log = logging.getLogger(__name__)

RunFn = Callable[[Any, str, Callable[[dict], None], threading.Event], Any]

DEFAULT_MAX_QUEUE = 10
# Used for queue estimates until a run has completed on this server.
DEFAULT_RUN_SECONDS = 120.0
# Finished jobs kept in memory (with all their events); older ones are read back from disk.
KEEP_FINISHED = 50
# The latest value of these keys, from any event, is the job's progress.
PROGRESS_KEYS = ("step", "max_steps", "epoch", "samples_per_second", "eta_s", "elapsed_s", "loss",
                 "eval_loss", "eval_accuracy", "learning_rate")

OOM_HINT = "lower batch size or max length, or use QLoRA"
NAN_HINT = "lower the learning rate"
# nice value of the training thread; PLAYGROUND_TRAIN_NICE overrides it (0: normal priority)
TRAINER_NICE = 10
# GOMP_SPINCOUNT for a process that trains beside its pages (pages.ui sets it before torch loads):
# when a page or the browser preempts one OpenMP worker, the other sleeps after 10,000 turns
# instead of libgomp's default ~300,000, which burn the core the page needs. No cost measured
# headless (BENCHMARKS.md, 2026-12-02).
OPENMP_SPINCOUNT = "10000"
GENERIC_HINT = "check the settings and try again; if it happens again, try a smaller model or fewer steps"


class QueueFull(ConfigError):
    """The queue holds PLAYGROUND_MAX_QUEUE runs already."""


class PermissionDenied(ConfigError):
    """The run belongs to another session and the caller is not admin."""


from core.errors import NonFiniteLoss  # noqa: E402  (raised by the trainer's callback)


# ----------------------------------------------------------------------------- pure helpers

def is_admin(token: Optional[str]) -> bool:
    expected = os.environ.get("PLAYGROUND_ADMIN_TOKEN") or ""
    if not expected or not isinstance(token, str) or not token:
        return False  # no token configured: nobody is admin
    return hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))


def max_queue() -> int:
    try:
        return max(0, int(os.environ.get("PLAYGROUND_MAX_QUEUE", DEFAULT_MAX_QUEUE)))
    except ValueError:
        return DEFAULT_MAX_QUEUE


def max_run_seconds() -> float:
    # A cooperative time limit so that one student's 100-epoch run cannot hold the box all day.
    try:
        return max(0.0, float(os.environ.get("PLAYGROUND_MAX_RUN_SECONDS", 0)))
    except ValueError:
        return 0.0


_NONFINITE = re.compile(r"\bnan\b|\binf\b|non-finite|not finite|infinite", re.IGNORECASE)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError, named so that torch is not imported here.
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text


def explain_failure(exc: BaseException) -> tuple[str, str]:
    """(message, hint) in plain words for a run that raised."""
    if isinstance(exc, ConfigError):
        return str(exc), ""
    if _is_oom(exc):
        return "out of memory: the model, batch and sequence length did not fit", OOM_HINT
    if isinstance(exc, NonFiniteLoss) or _NONFINITE.search(str(exc)):
        return "the loss became NaN or infinite (training diverged)", NAN_HINT
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return f"training failed: {type(exc).__name__}: {detail}".rstrip(": "), GENERIC_HINT


def free_memory() -> None:
    gc.collect()
    torch = sys.modules.get("torch")  # only if something already imported it: never load torch here
    if torch is None:
        return
    try:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # a broken CUDA driver must not take the worker down
        log.debug("cuda empty_cache failed", exc_info=True)


def _as_dict(result: Any) -> dict:
    if result is None:
        return {}
    if isinstance(result, dict):
        return result
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        return dataclasses.asdict(result)
    if hasattr(result, "to_dict"):
        return result.to_dict()
    return {"result": str(result)}


def _default_run_fn(cfg, run_dir, on_event, stop):
    from core.train import run  # lazy: importing torch/transformers costs seconds and memory

    def checked(event: dict) -> None:
        limits.check_event(event)  # raises into the trainer: the run fails, naming the step limit
        on_event(event)
    return run(cfg, run_dir, checked, stop, write_metrics=False)  # the manager writes metrics.jsonl


def _fold_progress(progress: dict, event: dict) -> None:
    for key in PROGRESS_KEYS:
        value = event.get(key)
        if value is not None:
            progress[key] = value
    if event.get("type") == "status" and event.get("message"):
        progress["status_message"] = event["message"]


# --------------------------------------------------------------------------------------- job

@dataclasses.dataclass
class Job:
    id: str
    dir: str
    owner_tag: str
    name: str
    cfg: Any
    state: str = "queued"
    created: float = dataclasses.field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    events: list = dataclasses.field(default_factory=list)
    progress: dict = dataclasses.field(default_factory=dict)
    stop: threading.Event = dataclasses.field(default_factory=threading.Event)
    stop_reason: str = ""
    message: str = ""
    hint: str = ""
    summary: dict = dataclasses.field(default_factory=dict)
    warning: str = ""
    resume_from: Optional[str] = None
    event_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def trainer_nice() -> int:
    fixed = os.environ.get("PLAYGROUND_TRAIN_NICE", "").strip()
    return min(int(fixed), 19) if fixed.isdigit() else TRAINER_NICE


def lower_own_priority() -> bool:
    """Lower the calling thread's priority to trainer_nice(); the OpenMP workers it starts inherit it.

    Training on every core while the web server's threads stay at nice 0: the kernel runs a page's
    script first and gives the trainer whatever is left, instead of a core kept idle for the pages
    (measured on 2 cores with the browser on them: 1.29x the one-core cap's samples/s, pages no
    slower; BENCHMARKS.md). Linux only: there a thread id names one thread to setpriority.
    """
    nice = trainer_nice()
    if nice <= 0 or not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, tid) >= nice:  # already as low (a niced server): keep it
            return False
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as e:  # e.g. a sandbox that forbids it: train at normal priority
        log.info("could not lower the trainer's priority: %s", e)
        return False
    return True


class JobManager:
    def __init__(self, run_fn: Optional[RunFn] = None):
        self._run_fn: RunFn = run_fn or _default_run_fn
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._active: Optional[str] = None
        self._finished_order: collections.deque[str] = collections.deque()
        self._durations: collections.deque[float] = collections.deque(maxlen=20)
        self._closing = False
        self._worker: Optional[threading.Thread] = None
        self._seed_durations()

    # -------------------------------------------------------------------------- submitting

    def submit(self, cfg: Any, owner: str, resume_from: Optional[str] = None, admin: bool = False) -> str:
        """Queue a run; returns its id. Raises QueueFull, or ConfigError for a bad resume_from."""
        if not isinstance(owner, str) or not owner:
            raise ConfigError("an owner id is needed to submit a run")
        limits.check_run(cfg)  # epochs, steps, max length, allowed models: before it takes a queue slot
        extra: dict[str, Any] = {}
        if resume_from:
            source = runs.get_run(resume_from)
            self._check_access(source.id, source.status, owner, admin, "resume from")
            if runs.latest_checkpoint(source.dir) is None:
                raise ConfigError(f"run {source.id} has no checkpoint to resume from")
            extra = {"resume_from": source.id}
        with self._lock:
            if self._closing:
                raise ConfigError("the server is shutting down; try again in a minute")
            limit = max_queue()
            if len(self._queue) >= limit:
                raise QueueFull(f"the training queue is full ({len(self._queue)} runs waiting, limit {limit}); "
                                "try again when a run has finished")
            # Created under the lock so that two sessions cannot both take the last queue slot.
            run_dir = runs.create_run(cfg, owner, process=runs.process_token(), **extra)
            run_id = os.path.basename(run_dir)
            status = runs.read_status(run_dir)
            job = Job(id=run_id, dir=run_dir, owner_tag=status.get("owner", ""), name=status.get("name", ""),
                      cfg=cfg, created=status.get("created", time.time()), resume_from=extra.get("resume_from"))
            self._jobs[run_id] = job
            self._queue.append(run_id)
            self._ensure_worker()
            self._wake.notify_all()
        return run_id

    def _ensure_worker(self) -> None:
        # Also revives the worker should it ever have died (it should not: it catches everything).
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._worker_loop, name="playground-trainer", daemon=True)
            self._worker.start()

    # ----------------------------------------------------------------------------- worker

    def _worker_loop(self) -> None:
        lower_own_priority()
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if self._closing:
                    return
                job = self._jobs[self._queue.popleft()]
                self._active = job.id
                job.state = "running"
                job.started = time.time()
            try:
                self._run_job(job)
            except BaseException:  # noqa: BLE001 - the worker outlives any job
                log.exception("job %s: unexpected error in the job manager", job.id)
                with self._lock:
                    if job.state == "running":
                        self._finish(job, "failed", "the job manager hit an internal error", GENERIC_HINT)
            finally:
                with self._lock:
                    if self._active == job.id:
                        self._active = None
                free_memory()

    def _run_job(self, job: Job) -> None:
        try:
            runs.write_status(job.dir, "running", started=job.started, process=runs.process_token(),
                              message="")
        except OSError as e:
            with self._lock:
                self._finish(job, "failed", f"could not write to the runs folder: {e}", "free some disk space")
            return
        timer = None
        limit = max_run_seconds()
        if limit:
            timer = threading.Timer(limit, self._time_out, args=(job, limit))
            timer.daemon = True
            timer.start()
        try:
            result = self._run_fn(job.cfg, job.dir, lambda event: self._on_event(job, event), job.stop)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a library must not kill the worker
            with self._lock:
                if job.stop.is_set():
                    # A trainer may raise on its way out after a stop; the user asked for it.
                    self._finish(job, "stopped", job.stop_reason or "stopped", "")
                else:
                    message, hint = explain_failure(exc)
                    log.warning("job %s failed: %s", job.id, "".join(
                        traceback.format_exception(type(exc), exc, exc.__traceback__)))
                    self._finish(job, "failed", message, hint)
            # The traceback's frames hold activations and gradients; drop them before gc.
            if exc.__traceback__ is not None:
                traceback.clear_frames(exc.__traceback__)
            del exc
            return
        finally:
            if timer is not None:
                timer.cancel()
        summary = _as_dict(result)
        if summary and not os.path.exists(os.path.join(job.dir, "summary.json")):
            try:
                runs.write_summary(job.dir, summary)  # the contract says run_fn writes it; be sure
            except OSError as e:
                log.warning("job %s: could not write summary.json: %s", job.id, e)
        with self._lock:
            job.summary = summary
            if job.stop.is_set():
                self._finish(job, "stopped", job.stop_reason or "stopped", "")
            else:
                self._finish(job, "completed", "", "")
                self._durations.append(job.finished - (job.started or job.finished))

    def _on_event(self, job: Job, event: Any) -> None:
        if not isinstance(event, dict):
            return
        # A plain-JSON copy: memory holds exactly what the disk line holds, and a trainer that
        # mutates its dict afterwards cannot rewrite history.
        clean = json.loads(runs.to_json(event))
        # The job's own lock orders disk and memory alike; the fsync happens outside the manager
        # lock so that 30 polling pages never wait on the disk.
        with job.event_lock:
            if job.state != "running":
                return  # a straggler after the job ended: neither list gets it
            try:
                runs.append_metric(job.dir, clean)
            except OSError as e:
                if not job.warning:
                    log.warning("job %s: metrics not saved: %s", job.id, e)
                job.warning = f"metrics could not be saved to disk: {e}"
            with self._lock:
                job.events.append(clean)
                _fold_progress(job.progress, clean)

    def _time_out(self, job: Job, limit: float) -> None:
        with self._lock:
            if job.state == "running" and not job.stop.is_set():
                job.stop_reason = f"stopped: reached the server's time limit of {limit:.0f} s"
                job.stop.set()

    def _finish(self, job: Job, state: str, message: str, hint: str) -> None:
        """Set a final state in memory and on disk. Caller holds the lock."""
        job.state = state  # from here on _on_event drops stragglers
        if self._active == job.id:
            self._active = None  # together with the state, so active() never shows a finished job
        job.finished = time.time()
        job.message = message
        job.hint = hint
        fields = dict(finished=job.finished, message=message, hint=hint)
        if job.started:
            fields["duration_s"] = round(job.finished - job.started, 3)
        try:
            runs.write_status(job.dir, state, **fields)
        except OSError as e:
            log.warning("job %s: could not write status %s: %s", job.id, state, e)
        self._finished_order.append(job.id)
        # Bound memory on a long-lived server; evicted jobs are read back from disk.
        while len(self._finished_order) > KEEP_FINISHED:
            self._jobs.pop(self._finished_order.popleft(), None)

    # -------------------------------------------------------------------------- controls

    def _owner_status(self, run_id: str) -> dict:
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None:
                return {"owner": job.owner_tag}
        return runs.get_run(run_id).status

    def _check_access(self, run_id: str, status: dict, requester: Optional[str], admin: bool, verb: str) -> None:
        if admin or runs.is_owner(status, requester):
            return
        raise PermissionDenied(f"you cannot {verb} run {run_id}: it belongs to another session "
                               "(only its owner or an admin can)")

    def can_access(self, run_id: str, requester: Optional[str], admin: bool = False) -> bool:
        try:
            status = self._owner_status(run_id)
        except ConfigError:
            return False
        return bool(admin) or runs.is_owner(status, requester)

    def cancel(self, job_id: str, requester: Optional[str], admin: bool = False) -> str:
        """Cancel a queued job (a running one is stopped instead). Returns the job's state."""
        self._check_access(job_id, self._owner_status(job_id), requester, admin, "cancel")
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return runs.get_run(job_id).state
            if job.state == "queued":
                self._queue.remove(job_id)
                self._finish(job, "cancelled", "cancelled before it started" + (" by an admin" if admin and
                             not runs.is_owner({"owner": job.owner_tag}, requester) else ""), "")
                return job.state
            if job.state == "running":
                return self._request_stop(job, requester, admin)
            return job.state

    def stop(self, job_id: str, requester: Optional[str], admin: bool = False) -> str:
        """Ask a running job to stop (it ends as `stopped`); a queued one is cancelled. Returns the state."""
        self._check_access(job_id, self._owner_status(job_id), requester, admin, "stop")
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return runs.get_run(job_id).state
            if job.state == "queued":
                return self.cancel(job_id, requester, admin)
            if job.state == "running":
                return self._request_stop(job, requester, admin)
            return job.state

    def _request_stop(self, job: Job, requester: Optional[str], admin: bool) -> str:
        if not job.stop.is_set():
            by_admin = admin and not runs.is_owner({"owner": job.owner_tag}, requester)
            job.stop_reason = "stopped by an admin" if by_admin else "stopped by its owner"
            job.stop.set()
        return job.state  # still "running" until the trainer returns

    def delete(self, run_id: str, requester: Optional[str], admin: bool = False) -> bool:
        """Delete a finished or queued run and its folder. A running one must be stopped first."""
        self._check_access(run_id, self._owner_status(run_id), requester, admin, "delete")
        with self._lock:
            job = self._jobs.get(run_id)
            if job is not None and job.state == "running":
                raise ConfigError(f"run {run_id} is training; stop it first, then delete it")
            if job is not None and job.state == "queued":
                self._queue.remove(run_id)
                job.state = "cancelled"
            self._jobs.pop(run_id, None)
            if run_id in self._finished_order:
                self._finished_order.remove(run_id)
        return runs.delete_run(run_id)  # outside the lock: removing big weights takes a while

    def weights_zip(self, run_id: str, requester: Optional[str], admin: bool = False) -> bytes:
        """The run's weights as zip bytes, for its owner or an admin."""
        self._check_access(run_id, self._owner_status(run_id), requester, admin, "download")
        return runs.zip_weights(runs.run_dir_for(run_id))

    # Every download of a run checks its owner here in core (the script and the merged model:
    # core.export.script_for / merged_zip_for): hiding a button on a page is not a permission.
    def config_yaml(self, run_id: str, requester: Optional[str], admin: bool = False) -> str:
        """The run's config as YAML (no server paths), for its owner or an admin."""
        self._check_access(run_id, self._owner_status(run_id), requester, admin, "download the config of")
        return runs.config_yaml(runs.run_dir_for(run_id))

    # ---------------------------------------------------------------------------- reading

    def _mean_duration(self) -> float:
        return sum(self._durations) / len(self._durations) if self._durations else DEFAULT_RUN_SECONDS

    def _seed_durations(self) -> None:
        try:
            infos = runs.list_runs()
        except OSError:
            return
        for info in reversed(infos[:200]):
            d = info.status.get("duration_s")
            if info.state == "completed" and isinstance(d, (int, float)) and d > 0:
                self._durations.append(float(d))

    def _active_remaining(self) -> float:
        job = self._jobs.get(self._active) if self._active else None
        if job is None:
            return 0.0
        eta = job.progress.get("eta_s")
        if isinstance(eta, (int, float)) and eta >= 0:
            return float(eta)
        return max(0.0, self._mean_duration() - (time.time() - (job.started or time.time())))

    def _job_snapshot(self, job: Job, since: int, with_events: bool) -> dict:
        position = est = None
        if job.state == "queued":
            position = self._queue.index(job.id) + 1
            est = self._active_remaining() + (position - 1) * self._mean_duration()
        elif job.state == "running":
            est = 0.0
        snap = _base_snapshot(job.id, job.name, job.state, job.events, job.progress, since, with_events)
        snap.update(position=position, queue_length=len(self._queue), est_start_s=est,
                    created=job.created, started=job.started, finished=job.finished,
                    error=job.message if job.state == "failed" else "", hint=job.hint, message=job.message,
                    summary=dict(job.summary) if job.summary else (runs.read_summary(job.dir)
                                                                   if job.finished else {}),
                    stopping=job.state == "running" and job.stop.is_set(), warning=job.warning,
                    resume_from=job.resume_from, resumable=False, in_memory=True)
        return snap

    def snapshot(self, job_id: str, since: int = 0, events: bool = True) -> dict:
        """Everything a page shows about a job. `since` returns only events[since:] (n_events is the total)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                return self._job_snapshot(job, since, events)
        info = runs.get_run(job_id)  # not in memory: a past run, or one from before a restart
        metrics = runs.read_metrics(info.dir)
        progress: dict = {}
        for event in metrics:
            _fold_progress(progress, event)
        s = info.status
        snap = _base_snapshot(info.id, info.name, info.state, metrics, progress, since, events)
        snap.update(position=None, queue_length=len(self._queue), est_start_s=None,
                    created=info.created, started=s.get("started"), finished=s.get("finished"),
                    error=s.get("message", "") if info.state == "failed" else "", hint=s.get("hint", ""),
                    message=s.get("message", ""), summary=info.summary, stopping=False, warning="",
                    resume_from=s.get("resume_from"), resumable=info.resumable, in_memory=False)
        return snap

    def active(self) -> Optional[dict]:
        """The running job's snapshot (without events), or None."""
        with self._lock:
            job = self._jobs.get(self._active) if self._active else None
            return self._job_snapshot(job, 0, False) if job else None

    def queue(self) -> list[dict]:
        """Snapshots (without events) of the waiting jobs, first to start first."""
        with self._lock:
            return [self._job_snapshot(self._jobs[j], 0, False) for j in self._queue]

    def mean_duration(self) -> float:
        with self._lock:
            return self._mean_duration()

    # --------------------------------------------------------------------------- shutdown

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop the running job, mark waiting ones interrupted, end the worker."""
        with self._lock:
            self._closing = True
            while self._queue:
                job = self._jobs[self._queue.popleft()]
                self._finish(job, "interrupted", "the server shut down before this run started", "submit it again")
            job = self._jobs.get(self._active) if self._active else None
            if job is not None:
                job.stop_reason = "stopped: the server shut down"
                job.stop.set()
            self._wake.notify_all()
            worker = self._worker
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)


def _base_snapshot(job_id: str, name: str, state: str, events: list, progress: dict, since: int,
                   with_events: bool) -> dict:
    since = max(0, int(since or 0))
    step, max_steps = progress.get("step"), progress.get("max_steps")
    fraction = None
    if isinstance(step, (int, float)) and isinstance(max_steps, (int, float)) and max_steps > 0:
        fraction = min(1.0, max(0.0, step / max_steps))
    if state == "completed":
        fraction = 1.0
    return dict(
        id=job_id, name=name or job_id, state=state,
        progress=dict(step=step, max_steps=max_steps, epoch=progress.get("epoch"), fraction=fraction),
        samples_per_second=progress.get("samples_per_second"), eta_s=progress.get("eta_s"),
        elapsed_s=progress.get("elapsed_s"),
        latest={k: progress[k] for k in ("loss", "eval_loss", "eval_accuracy", "learning_rate") if k in progress},
        status_message=progress.get("status_message", ""),
        events=[dict(e) for e in events[since:]] if with_events else [],
        n_events=len(events),
    )


# --------------------------------------------------------------------------- the singleton

# Kept outside this module's globals: if Streamlit re-imports core.jobs (a file changed), a second
# manager would start a second worker and mark the live run interrupted.
_REGISTRY_NAME = "_peft_playground_job_registry"
_registry = sys.modules.setdefault(_REGISTRY_NAME, types.ModuleType(_REGISTRY_NAME))
if not hasattr(_registry, "lock"):
    _registry.lock = threading.Lock()
    _registry.manager = None


def get_manager(run_fn: Optional[RunFn] = None) -> JobManager:
    """The process-wide manager; the first call recovers runs a previous process left behind.

    run_fn is used only when this call creates the manager (tests install a fake this way)."""
    with _registry.lock:
        if _registry.manager is None:
            try:
                recovered = runs.recover_on_startup()
                if recovered:
                    log.info("marked %d run(s) interrupted after a restart", len(recovered))
            except OSError as e:
                log.warning("could not recover runs: %s", e)
            _registry.manager = JobManager(run_fn)
        return _registry.manager


def reset_manager() -> None:
    """Shut the manager down and forget it (test isolation)."""
    with _registry.lock:
        manager, _registry.manager = _registry.manager, None
    if manager is not None:
        manager.shutdown()
