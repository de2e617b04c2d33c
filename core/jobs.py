"""Process-wide job manager: a queue served fairly across owners, and a pool of worker threads.

Fair share: the next run to start belongs to the waiting owner who was served least recently (an
owner never served comes first, ties by who queued first), so a 12-run experiment grid is one
owner's runs interleaved with everyone else's, not a wall in front of them. An admin can bump a run
to the front, pause and resume the queue, and cancel any run. Per-owner limits (runs waiting, runs
per hour) keep one person from flooding the queue. Queued runs whose owner has had no page open for
PLAYGROUND_OWNER_TIMEOUT_S are dropped from the queue (their folders stay, marked cancelled).

PLAYGROUND_WORKERS worker threads (core.workers) each train one run at a time. Every browser session (and every reload, which is a new session) talks to the same manager, so a
running job is found again after a reload. The worker never dies with a job: whatever a run
raises is caught, turned into a plain-words message with a hint, and the next job starts.

Ownership: each session passes its owner id; stop/cancel/delete/download of someone else's run
raises PermissionDenied unless the caller is admin (env PLAYGROUND_ADMIN_TOKEN).

The rules themselves (limits, the fair order, who is admin) are pure functions in core.queue_rules.
"""
from __future__ import annotations

import collections
import dataclasses
import gc
import json
import logging
import os
import sys
import threading
import time
import traceback
import types
from typing import Any, Callable, Optional

from core import limits, memory, ray_backend, runs, settings, train, uploads, workers
from core.cli import DISK_FULL_HINT, GENERIC_HINT, OOM_HINT, explain_failure, os_cause
from core.config import ConfigError
from core.errors import RunInterrupted
from core.events import STATUS, Event, EventFn
from core.queue_rules import (clean_nickname, fair_order, max_queue, max_queued_per_owner, max_run_seconds,
                              max_runs_per_hour, owner_timeout_s)
from core.runs import NotFound  # noqa: F401 - re-exported so pages catch jobs.NotFound

log = logging.getLogger(__name__)

RunFn = Callable[[Any, str, EventFn, threading.Event], Any]

# mean_duration() before any run has finished here; never used for a waiting person's ETA.
DEFAULT_RUN_SECONDS = 120.0
# Finished jobs kept in memory (with all their events); older ones are read back from disk.
KEEP_FINISHED = 50
# The latest value of these keys, from any event, is the job's progress.
PROGRESS_KEYS = ("step", "max_steps", "epoch", "samples_per_second", "eta_s", "elapsed_s", "loss",
                 "eval_loss", "eval_accuracy", "learning_rate")

# nice value of the training thread; PLAYGROUND_TRAIN_NICE overrides it (0: normal priority)
TRAINER_NICE = 10
# GOMP_SPINCOUNT for a process that trains beside its pages (pages.ui sets it before torch loads):
# when a page or the browser preempts one OpenMP worker, the other sleeps after 10,000 turns
# instead of libgomp's default ~300,000, which burn the core the page needs. No cost measured
# headless (BENCHMARKS.md, 2026-12-02).
OPENMP_SPINCOUNT = "10000"


class QueueFull(ConfigError):
    """The queue holds PLAYGROUND_MAX_QUEUE runs already."""


class OwnerLimit(QueueFull):
    """This owner reached a per-person limit (runs waiting, or runs per hour); others are unaffected."""


class PermissionDenied(ConfigError):
    """The run belongs to another session and the caller is not admin."""


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
    limits.check_fits_now(cfg)  # the previous run has freed its memory: is there enough now?

    def checked(event: Event) -> None:
        limits.check_event(event)  # raises into the trainer: the run fails, naming the step limit
        on_event(event)
    return train.run(cfg, run_dir, checked, stop, write_metrics=False)  # the manager writes metrics.jsonl


def _memory_guard(job: "Job"):
    """A MemoryWatchdog around one run (PLAYGROUND_MEMORY_GUARD_*): an OOM in one run must not
    let the kernel kill the server with every visitor's session."""
    import contextlib
    limit = limits.memory_guard_bytes()
    if not limit:
        return contextlib.nullcontext()

    def trip(used: int) -> None:
        job.oom_message = (f"ran out of memory: the server's memory reached {memory.gb(used)}, above its guard of "
                           f"{memory.gb(limit)} (PLAYGROUND_MEMORY_GUARD_PERCENT / _MB), so this run was stopped")
        job.stop_reason = job.oom_message
        job.stop.set()
    return memory.MemoryWatchdog(limit, trip, weight=_estimated_peak(job))


def _estimated_peak(job: "Job") -> int:
    """The run's estimated peak bytes: which of several runs a memory trip stops (0: unknown)."""
    try:
        cfg = runs.cfg_dict(job.cfg)
        model_cfg = memory.model_config(str((cfg.get("model") or {}).get("name", "")))
        return memory.estimate_peak(cfg, model_cfg)["peak"] if model_cfg else 0
    except Exception:  # an estimate is a preference only: a run it cannot price weighs nothing
        log.debug("no peak estimate for %s", job.id, exc_info=True)
        return 0


def _fold_progress(progress: dict, event: Event) -> None:
    for key in PROGRESS_KEYS:
        value = event.get(key)
        if value is not None:
            progress[key] = value
    if event.get("type") == STATUS and event.get("message"):
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
    nickname: str = ""
    experiment: str = ""
    duration_key: tuple = ()
    oom_message: str = ""  # set by the memory guard: the run failed, it was not stopped by a person


def trainer_nice() -> int:
    fixed = settings.raw("PLAYGROUND_TRAIN_NICE", "").strip()
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
    def __init__(self, run_fn: Optional[RunFn] = None, n_workers: Optional[int] = None):
        self._run_fn: RunFn = run_fn or _default_run_fn
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()  # in the order queued; fair_order picks
        self._front: list[str] = []  # bumped by an admin, in the order they start
        self._running: list[str] = []  # oldest start first
        self._served: dict[str, int] = {}  # owner tag -> tick of its latest start
        self._tick = 0
        self._paused = False
        self._seen: dict[str, float] = {}  # owner tag -> last heartbeat (a page of theirs was open)
        self._nicknames: dict[str, str] = {}  # owner tag -> nickname
        self._submitted: dict[str, collections.deque] = {}  # owner tag -> submit times (last hour)
        self._finished_order: collections.deque[str] = collections.deque()
        # (model, method) -> measured seconds of completed runs; the ETA uses the run's own kind first
        self._durations: collections.deque[tuple] = collections.deque(maxlen=50)
        self._closing = False
        self._n_workers = max(1, int(n_workers)) if n_workers else workers.worker_count()
        workers.set_pool_size(self._n_workers)
        self._workers: list[threading.Thread] = []
        self._seed_durations()

    @property
    def _worker(self) -> Optional[threading.Thread]:
        return self._workers[0] if self._workers else None

    @property
    def n_workers(self) -> int:
        return self._n_workers

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
            tag = runs.owner_tag(owner)
            now = time.time()
            self._seen[tag] = now
            if not admin:
                self._check_owner_limits(tag, now)
            limit = max_queue()
            if len(self._queue) >= limit:
                raise QueueFull(f"the training queue is full ({len(self._queue)} runs waiting, limit {limit}); "
                                "try again when a run has finished")
            nickname = self._nicknames.get(tag, "")
            if nickname:
                extra["nickname"] = nickname
            # Created under the lock so that two sessions cannot both take the last queue slot.
            run_dir = runs.create_run(cfg, owner, process=runs.process_token(), **extra)
            run_id = os.path.basename(run_dir)
            status = runs.read_status(run_dir)
            job = Job(id=run_id, dir=run_dir, owner_tag=status.get("owner", ""), name=status.get("name", ""),
                      cfg=cfg, created=status.get("created", time.time()), resume_from=extra.get("resume_from"),
                      nickname=nickname, experiment=str(getattr(cfg, "experiment", "") or ""),
                      duration_key=(status.get("model", ""), status.get("method", "")))
            self._jobs[run_id] = job
            self._queue.append(run_id)
            self._submitted.setdefault(tag, collections.deque()).append(now)
            self._ensure_worker()
            self._wake.notify_all()
        return run_id

    def _check_owner_limits(self, tag: str, now: float) -> None:
        waiting = sum(1 for j in self._queue if self._jobs[j].owner_tag == tag)
        limit = max_queued_per_owner()
        if waiting >= limit:
            raise OwnerLimit(f"you have {waiting} runs waiting, the most one person may queue "
                             f"(PLAYGROUND_MAX_QUEUED_PER_OWNER={limit}); wait until one starts, or cancel one")
        times = self._submitted.setdefault(tag, collections.deque())
        while times and times[0] < now - 3600:
            times.popleft()
        per_hour = max_runs_per_hour()
        if len(times) >= per_hour:
            wait = times[0] + 3600 - now
            raise OwnerLimit(f"you queued {len(times)} runs in the last hour, the most one person may "
                             f"(PLAYGROUND_MAX_RUNS_PER_HOUR={per_hour}); the next one can be queued in "
                             f"{max(1, round(wait / 60))} min")

    def _ensure_worker(self) -> None:
        # Also revives a worker should one ever have died (it should not: it catches everything).
        self._workers = [w for w in self._workers if w.is_alive()]
        while len(self._workers) < self._n_workers:
            worker = threading.Thread(target=self._worker_loop, daemon=True,
                                      name=f"playground-trainer-{len(self._workers) + 1}")
            self._workers.append(worker)
            worker.start()

    # ---------------------------------------------------------------------- fair share

    def _fair_order(self) -> list[str]:
        owner_of = {j: self._jobs[j].owner_tag for j in self._queue}
        return fair_order(list(self._queue), owner_of, self._served, self._front)

    def _take_next(self) -> Optional[Job]:
        """The next job to start, marked running, or None. Caller holds the lock."""
        if self._paused or not self._queue:
            return None
        job = self._jobs[self._fair_order()[0]]
        self._queue.remove(job.id)
        if job.id in self._front:
            self._front.remove(job.id)
        self._tick += 1
        self._served[job.owner_tag] = self._tick
        self._running.append(job.id)
        job.state = "running"
        job.started = time.time()
        return job

    def _unqueue(self, job_id: str) -> None:
        self._queue.remove(job_id)
        if job_id in self._front:
            self._front.remove(job_id)

    def heartbeat(self, owner: str, nickname: Optional[str] = None) -> None:
        """A page of this owner is open (pages call it on every render and poll); optionally their nickname."""
        if not isinstance(owner, str) or not owner:
            return
        tag = runs.owner_tag(owner)
        with self._lock:
            self._seen[tag] = time.time()
            if nickname is not None:
                self._nicknames[tag] = clean_nickname(nickname)

    def _drop_gone_owners(self) -> None:
        """Cancel queued runs whose owner has had no page open for owner_timeout_s(). Caller holds the lock."""
        timeout = owner_timeout_s()
        if not timeout or not self._queue:
            return
        now = time.time()
        for job_id in list(self._queue):
            job = self._jobs[job_id]
            seen = self._seen.get(job.owner_tag, job.created)
            if job_id not in self._front and now - seen > timeout:
                self._unqueue(job_id)
                self._finish(job, "cancelled", f"dropped from the queue: its owner had no page of the app open for "
                                               f"{timeout / 60:.0f} min (PLAYGROUND_OWNER_TIMEOUT_S)",
                             "queue it again")

    # ----------------------------------------------------------------------- admin

    def _need_admin(self, admin: bool, verb: str) -> None:
        if not admin:
            raise PermissionDenied(f"only an admin can {verb} (enter the admin token in the sidebar)")

    def pause(self, admin: bool) -> None:
        """Start no new run until resume(); running runs go on."""
        self._need_admin(admin, "pause the queue")
        with self._lock:
            self._paused = True

    def resume(self, admin: bool) -> None:
        self._need_admin(admin, "resume the queue")
        with self._lock:
            self._paused = False
            self._wake.notify_all()

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def bump(self, job_id: str, admin: bool) -> None:
        """Move a queued run to the front: it starts next (before runs bumped earlier)."""
        self._need_admin(admin, "move a run to the front of the queue")
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.state != "queued":
                raise ConfigError(f"run {job_id} is not waiting in the queue")
            if job_id in self._front:
                self._front.remove(job_id)
            self._front.insert(0, job_id)
            self._wake.notify_all()

    def cancel_experiment(self, experiment: str, requester: Optional[str], admin: bool = False) -> int:
        """Cancel the queued runs and stop the running ones of an experiment; returns how many.
        Only the requester's own runs unless admin."""
        if not experiment:
            return 0
        with self._lock:
            ids = [j.id for j in self._jobs.values() if j.experiment == experiment
                   and j.state in ("queued", "running") and not j.stop.is_set()
                   and (admin or runs.is_owner({"owner": j.owner_tag}, requester))]
        for job_id in reversed(ids):  # the last queued first: the earlier ones must not start meanwhile
            self.cancel(job_id, requester, admin)
        return len(ids)

    def latest_for(self, owner: Optional[str]) -> Optional[str]:
        """The owner's run to show after a reload: a running or queued one, else the newest finished (in memory)."""
        if not owner:
            return None
        tag = runs.owner_tag(owner)
        with self._lock:
            mine = sorted((j for j in self._jobs.values() if j.owner_tag == tag), key=lambda j: j.created)
            live = [j for j in mine if j.state in ("running", "queued")]
            pick = (live or mine or [None])[0 if live else -1]
            return pick.id if pick else None

    # ----------------------------------------------------------------------------- worker

    def _worker_loop(self) -> None:
        lower_own_priority()
        while True:
            with self._wake:
                while True:
                    if self._closing:
                        return
                    self._drop_gone_owners()
                    job = self._take_next()
                    if job is not None:
                        break
                    # With runs waiting (paused), look again now and then: their owners may leave.
                    self._wake.wait(timeout=30.0 if self._queue else None)
            try:
                self._run_job(job)
            except BaseException:  # noqa: BLE001 - the worker outlives any job
                log.exception("job %s: unexpected error in the job manager", job.id)
                with self._lock:
                    if job.state == "running":
                        self._finish(job, "failed", "the job manager hit an internal error", GENERIC_HINT)
            finally:
                with self._lock:
                    if job.id in self._running:
                        self._running.remove(job.id)
                free_memory()

    def _run_job(self, job: Job) -> None:
        try:
            runs.write_status(job.dir, "running", started=job.started, process=runs.process_token(),
                              message="")
        except OSError as e:
            with self._lock:
                message, hint = os_cause(e) or (f"could not write to the runs folder: {e.strerror or e}",
                                                 DISK_FULL_HINT)
                self._finish(job, "failed", message, hint)
            return
        timer = None
        limit = max_run_seconds()
        if limit:
            timer = threading.Timer(limit, self._time_out, args=(job, limit))
            timer.daemon = True
            timer.start()
        try:
            with _memory_guard(job):
                result = self._run_fn(job.cfg, job.dir, lambda event: self._on_event(job, event), job.stop)
        except BaseException as exc:  # noqa: BLE001 - SystemExit from a library must not kill the worker
            with self._lock:
                if job.oom_message:
                    self._finish(job, "failed", job.oom_message, OOM_HINT)
                elif job.stop.is_set():
                    # A trainer may raise on its way out after a stop; the user asked for it.
                    self._finish(job, "stopped", job.stop_reason or "stopped", "")
                else:
                    message, hint = explain_failure(exc)
                    log.warning("job %s failed: %s", job.id, "".join(
                        traceback.format_exception(type(exc), exc, exc.__traceback__)))
                    # A Ray node that died is not the run's fault: interrupted, metrics kept.
                    self._finish(job, "interrupted" if isinstance(exc, RunInterrupted) else "failed", message, hint)
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
            if job.oom_message:  # the trainer stopped at the flag before the exception reached it
                self._finish(job, "failed", job.oom_message, OOM_HINT)
            elif job.stop.is_set():
                self._finish(job, "stopped", job.stop_reason or "stopped", "")
            else:
                self._finish(job, "completed", "", "")
                self._durations.append((job.duration_key, job.finished - (job.started or job.finished)))

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
        if job.id in self._running:
            self._running.remove(job.id)  # together with the state, so active() never shows a finished job
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
                self._unqueue(job_id)
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
                self._unqueue(run_id)
                job.state = "cancelled"
            self._jobs.pop(run_id, None)
            if run_id in self._finished_order:
                self._finished_order.remove(run_id)
        try:
            config = runs.get_run(run_id).config
        except (ConfigError, OSError):
            config = {}
        deleted = runs.delete_run(run_id)  # outside the lock: removing big weights takes a while
        if deleted:
            try:
                uploads.release(config)  # its uploaded data goes with it, unless another run uses it
            except OSError as e:
                log.warning("run %s: could not delete its uploads: %s", run_id, e)
        return deleted

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
        if not self._durations:
            return DEFAULT_RUN_SECONDS
        return sum(d for _, d in self._durations) / len(self._durations)

    def _measured_duration(self, job: Job) -> Optional[float]:
        """Mean measured time of completed runs of the same model and method here, else of all; None if none."""
        same = [d for key, d in self._durations if key == job.duration_key]
        pool = same or [d for _, d in self._durations]
        return sum(pool) / len(pool) if pool else None

    def _seed_durations(self) -> None:
        try:
            infos = runs.list_runs()
        except OSError:
            return
        for info in reversed(infos[:200]):
            d = info.status.get("duration_s")
            if info.state == "completed" and isinstance(d, (int, float)) and d > 0:
                key = (info.status.get("model", ""), info.status.get("method", ""))
                self._durations.append((key, float(d)))

    def _remaining(self, job: Job) -> Optional[float]:
        """Measured time left of a running job: the trainer's ETA, else from its progress; None if unknown."""
        eta = job.progress.get("eta_s")
        if isinstance(eta, (int, float)) and eta == eta and eta >= 0:
            return float(eta)  # 0 at the last step: only the final evaluation and saving are left
        step, max_steps = job.progress.get("step"), job.progress.get("max_steps")
        elapsed = time.time() - (job.started or time.time())
        if isinstance(step, (int, float)) and isinstance(max_steps, (int, float)) and 0 < step < max_steps:
            return elapsed * (max_steps - step) / step
        typical = self._measured_duration(job)  # still loading: the time runs like it took, less what passed
        if typical is not None and typical > elapsed:
            return typical - elapsed
        return None

    def _plan(self) -> dict[str, tuple[int, Optional[float]]]:
        """id -> (place in the queue, estimated seconds until it starts or None). Caller holds the lock.

        Simulates the pool: each worker is free when its run's measured remaining time has passed,
        and each waiting run, in fair order, takes the first free worker for the measured time of
        runs like it. Unknown times stay unknown instead of turning into a made-up number."""
        inf = float("inf")
        free = [inf if r is None else r for r in (self._remaining(self._jobs[j]) for j in self._running)]
        free += [0.0] * max(0, self._n_workers - len(free))
        plan: dict[str, tuple[int, Optional[float]]] = {}
        for place, job_id in enumerate(self._fair_order(), start=1):
            slot = min(range(len(free)), key=free.__getitem__)
            start = free[slot]
            plan[job_id] = (place, None if self._paused or start == inf else start)
            duration = self._measured_duration(self._jobs[job_id])
            free[slot] = inf if duration is None else start + duration
        return plan

    def _job_snapshot(self, job: Job, since: int, with_events: bool, plan: Optional[dict] = None) -> dict:
        position = est = None
        if job.state == "queued":
            plan = self._plan() if plan is None else plan
            position, est = plan.get(job.id, (None, None))
        elif job.state == "running":
            est = 0.0
        snap = _base_snapshot(job.id, job.name, job.state, job.events, job.progress, since, with_events)
        snap.update(position=position, queue_length=len(self._queue), est_start_s=est,
                    created=job.created, started=job.started, finished=job.finished,
                    error=job.message if job.state == "failed" else "", hint=job.hint, message=job.message,
                    summary=dict(job.summary) if job.summary else (runs.read_summary(job.dir)
                                                                   if job.finished else {}),
                    stopping=job.state == "running" and job.stop.is_set(), warning=job.warning,
                    resume_from=job.resume_from, resumable=False, in_memory=True,
                    nickname=job.nickname, owner=job.owner_tag, experiment=job.experiment,
                    bumped=job.id in self._front, paused=self._paused)
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
                    resume_from=s.get("resume_from"), resumable=info.resumable, in_memory=False,
                    nickname=clean_nickname(s.get("nickname")), owner=s.get("owner", ""),
                    experiment=str((info.config or {}).get("experiment") or ""), bumped=False, paused=False)
        return snap

    def active(self) -> Optional[dict]:
        """The snapshot (without events) of the running job that started first, or None."""
        with self._lock:
            job = self._jobs.get(self._running[0]) if self._running else None
            return self._job_snapshot(job, 0, False) if job else None

    def running(self) -> list[dict]:
        """Snapshots (without events) of every running job, oldest start first."""
        with self._lock:
            return [self._job_snapshot(self._jobs[j], 0, False) for j in self._running]

    def queue(self) -> list[dict]:
        """Snapshots (without events) of the waiting jobs, first to start first (fair order)."""
        with self._lock:
            self._drop_gone_owners()
            plan = self._plan()
            return [self._job_snapshot(self._jobs[j], 0, False, plan) for j in self._fair_order()]

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
            self._front.clear()
            for job_id in self._running:
                job = self._jobs[job_id]
                job.stop_reason = "stopped: the server shut down"
                job.stop.set()
            self._wake.notify_all()
            pool = list(self._workers)
        deadline = time.time() + timeout
        for worker in pool:
            if worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.time()))


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
            if run_fn is None:  # PLAYGROUND_RAY_ADDRESS: runs become Ray tasks; None if unset or unreachable
                run_fn = ray_backend.run_fn_from_env()
            _registry.manager = JobManager(run_fn)
        return _registry.manager


def reset_manager() -> None:
    """Shut the manager down and forget it (test isolation)."""
    with _registry.lock:
        manager, _registry.manager = _registry.manager, None
    if manager is not None:
        manager.shutdown()
