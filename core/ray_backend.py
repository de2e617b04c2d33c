"""Runs as Ray tasks on a cluster (PLAYGROUND_RAY_ADDRESS=auto or ray://host:10001).

The job manager keeps its queue, owners and run store; only the run function changes: instead of
training in a thread here, it sends the run to the cluster as one Ray task that asks for the CPUs,
GPU and memory the run needs, and relays the task's events into the manager's on_event, so
metrics.jsonl, status.json and the live pages work exactly as with the local manager.

Why a channel actor: a task cannot call back into this process. The task pushes its events, in
small batches every FLUSH_S, to one actor kept on this (the app's) node, and gets back whether a
stop was asked; the app drains the actor while it waits. So Stop reaches a remote run within a
second and is checked per step by the trainer as usual, and the events a run sent before its
node died are already here: the run ends `interrupted` with the metrics it had.

Ray is optional (requirements-ray.txt): nothing here imports it until an address is set.
The cluster needs the project at the same path on every node and the runs folder on a shared
filesystem (the task writes config.json, checkpoints, weights and summary.json itself).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any, Callable, Optional

from core import estimate, limits, settings, train
from core.config import ConfigError, RunConfig
from core.errors import RunInterrupted
from core.events import Event, EventFn, StatusEvent

log = logging.getLogger(__name__)

ADDRESS_ENV = "PLAYGROUND_RAY_ADDRESS"
CPUS_ENV = "PLAYGROUND_RAY_CPUS_PER_RUN"
CONNECT_TIMEOUT_S = 15.0  # the first page view waits for this once, when a cluster does not answer
FLUSH_S = 0.5  # how often a task sends its events (and hears of a stop)
POLL_S = 0.5  # how often the app drains them
CHANNEL_PATIENCE_S = 60.0  # how long the channel may be briefly unavailable before a run is given up
# Env vars a task needs to behave as a run here would (offline Hub, caches, limits, runs folder).
_FORWARDED_PREFIXES = ("PLAYGROUND_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")
_NOT_FORWARDED = ("PLAYGROUND_ADMIN_TOKEN", ADDRESS_ENV)
_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the sidebar says about the backend: set once, by run_fn_from_env().
_status: dict[str, str] = {"address": "", "error": "", "cluster": ""}


def address() -> str:
    return settings.raw(ADDRESS_ENV, "").strip()


def status() -> dict[str, str]:
    """{'address', 'error', 'cluster'}: error set when the cluster was asked for and not reached."""
    return dict(_status)


def cpus_per_run() -> int:
    raw = settings.raw(CPUS_ENV, "").strip()
    return max(1, int(raw)) if raw.isdigit() else 1


def worker_env() -> dict[str, str]:
    env = {k: v for k, v in settings.environ().items()
           if k.startswith(_FORWARDED_PREFIXES) and k not in _NOT_FORWARDED}
    # The task imports core.* by reference: the project must be importable on every node.
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_PROJECT_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    return env


# ------------------------------------------------------------------------------ connecting

def connect(addr: str, timeout: float | None = None) -> str:
    """ray.init to the cluster at addr; returns a one-line description. Raises ConfigError in words."""
    timeout = CONNECT_TIMEOUT_S if timeout is None else timeout
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"{ADDRESS_ENV} is set but Ray is not installed here ({e}); "
                          "install it with: pip install -r requirements-ray.txt -c constraints.txt") from None
    if ray.is_initialized():
        return describe_cluster()
    outcome: dict[str, Any] = {}

    def init() -> None:
        try:
            ray.init(address=addr, ignore_reinit_error=True, log_to_driver=False,
                     logging_level=logging.WARNING, runtime_env={"env_vars": worker_env()})
        except BaseException as exc:  # noqa: BLE001 - reported in words below
            outcome["error"] = exc
    # ray.init can wait minutes for an address that never answers: the app must start anyway.
    thread = threading.Thread(target=init, name="playground-ray-connect", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise ConfigError(f"the Ray cluster at {addr!r} did not answer within {timeout:.0f} s")
    if "error" in outcome:
        exc = outcome["error"]
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"could not connect to the Ray cluster at {addr!r}: {detail}")
    return describe_cluster()


def describe_cluster() -> str:
    import ray
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0))
    return (f"{len(nodes)} node{'s' if len(nodes) != 1 else ''}, {int(total.get('CPU', 0))} CPUs"
            + (f", {gpus} GPUs" if gpus else ""))


def run_fn_from_env() -> Optional[Callable]:
    """The Ray run function when PLAYGROUND_RAY_ADDRESS is set and reachable, else None (local manager).

    An unreachable cluster is not fatal: the reason is kept in status() for the sidebar."""
    addr = address()
    _status.update(address=addr, error="", cluster="")
    if not addr:
        return None
    try:
        _status["cluster"] = connect(addr)
    except ConfigError as e:
        _status["error"] = str(e)
        log.warning("%s; training runs on this machine instead", e)
        return None
    log.info("training on the Ray cluster at %s (%s)", addr, _status["cluster"])
    return run_on_ray


# ---------------------------------------------------------------------------- resources

def resources_for(cfg: Any) -> dict[str, Any]:
    """num_cpus, num_gpus and memory (bytes) for one run, from its config and the estimator."""
    import ray
    device = getattr(cfg.model, "device", "auto")
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    num_gpus = 1 if device == "cuda" or (device == "auto" and has_gpus) else 0
    threads = int(getattr(cfg.train, "torch_threads", 0) or 0)
    options: dict[str, Any] = {"num_cpus": threads or cpus_per_run(), "num_gpus": num_gpus}
    memory = estimated_memory_bytes(cfg, gpu=bool(num_gpus))
    if memory:
        options["memory"] = memory
    check_fits(options, [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")])
    return options


def check_fits(options: dict, nodes: list[dict]) -> None:
    """Refuse a run no node could ever take (Ray would keep it pending for ever), naming what is short."""
    wanted = {"CPU": options.get("num_cpus", 0), "GPU": options.get("num_gpus", 0), "memory": options.get("memory", 0)}
    if any(all(node.get(k, 0) >= v for k, v in wanted.items()) for node in nodes):
        return
    largest = {k: max((node.get(k, 0) for node in nodes), default=0) for k in wanted}
    short = [k for k, v in wanted.items() if v > largest[k]]

    def shown(k: str, v: float) -> str:
        return f"{v / 2**30:.1f} GB memory" if k == "memory" else f"{v:g} {k}"
    if short:
        need = (", ".join(shown(k, wanted[k]) for k in short) + "; the largest node has "
                + ", ".join(shown(k, largest[k]) for k in short))
    else:
        need = ", ".join(shown(k, v) for k, v in wanted.items() if v) + " on one node, and no node has all of it"
    raise ConfigError("no node of the Ray cluster can take this run: it needs " + need
                      + " (use a smaller model, batch or max length, or add a bigger node)")


def estimated_memory_bytes(cfg: Any, gpu: bool) -> int:
    """Host memory a run needs: the estimate on a CPU (plus the process itself); 0 when unknown."""
    try:
        report = estimate.report(estimate.load_config(cfg.model.name), cfg.method.name,
                                 batch_size=cfg.train.batch_size, seq_len=cfg.data.max_length,
                                 task=cfg.data.task, device="cuda" if gpu else "cpu")
    except Exception as e:  # an architecture the estimator does not know: ask for no memory
        log.info("no memory estimate for %s: %s", getattr(cfg.model, "name", "?"), e)
        return 0
    floor = estimate.CPU_PROCESS_FLOOR_MB * 2**20
    return int(floor + (0 if gpu else report["memory"]["total"]))


# ------------------------------------------------------------------------ the remote side

def _channel_class():
    import ray

    @ray.remote(num_cpus=0)
    class RunChannel:
        """Events from running tasks to the app, stop requests from the app to the tasks."""

        def __init__(self) -> None:
            self.events: dict[str, list] = {}
            self.stops: set[str] = set()

        def push(self, run_id: str, batch: list) -> bool:
            self.events.setdefault(run_id, []).extend(batch)
            return run_id in self.stops

        def drain(self, run_id: str) -> list:
            return self.events.pop(run_id, [])

        def request_stop(self, run_id: str) -> None:
            self.stops.add(run_id)

        def forget(self, run_id: str) -> None:
            self.events.pop(run_id, None)
            self.stops.discard(run_id)

    return RunChannel


def train_task(cfg_dict: dict, run_dir: str, run_id: str, channel: Any, threads: int) -> dict:
    """Runs on a cluster node: train.run with events batched to the channel and its stop flag."""
    import ray
    # Ray gives the task `threads` CPUs; torch would otherwise take every core of the node.
    os.environ["PLAYGROUND_TRAIN_THREADS"] = str(threads)
    stop = threading.Event()
    buffer: list = []
    lock = threading.Lock()
    done = threading.Event()

    def flush() -> None:
        with lock:
            batch, buffer[:] = list(buffer), []
        try:
            stopped = ray.get(channel.push.remote(run_id, batch), timeout=30)
        except Exception:
            with lock:
                buffer[:0] = batch  # not lost: sent with the next batch
            raise
        if stopped:
            stop.set()

    def flusher() -> None:
        while not done.wait(FLUSH_S):
            try:
                flush()
            except Exception:  # the app's channel is gone: go on; the final flush reports it
                log.warning("run %s: could not send events", run_id, exc_info=True)

    def on_event(event: Event) -> None:
        limits.check_event(event)  # the server's step limit, as in the local manager
        with lock:
            buffer.append(event)

    node = ray.get_runtime_context().get_node_id()
    buffer.append({"time": round(time.time(), 3), **StatusEvent(
        type="status", ray_node=node, message=f"training on Ray node {ray.util.get_node_ip_address()} ({node[:8]})")})
    thread = threading.Thread(target=flusher, name="playground-ray-events", daemon=True)
    thread.start()
    try:
        result = train.run(RunConfig.from_dict(cfg_dict), run_dir, on_event, stop, write_metrics=False)
    finally:
        done.set()
        thread.join()
        try:
            flush()
        except Exception:  # the channel is gone: the app reports the run as interrupted
            log.warning("run %s: could not send the last events", run_id, exc_info=True)
    return result if isinstance(result, dict) else {}


# --------------------------------------------------------------------------- the app side

_channel_lock = threading.Lock()
_channel_handle: list = []
_task_fn: list = []


def _channel():
    import ray
    with _channel_lock:
        if _channel_handle:
            return _channel_handle[0]
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        here = ray.get_runtime_context().get_node_id()
        # On the app's own node: events a run sent survive the death of the node that ran it.
        handle = _channel_class().options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=here, soft=False),
            max_concurrency=1).remote()
        _channel_handle.append(handle)
        return handle


def _forget_channel(handle: Any) -> None:
    with _channel_lock:
        if _channel_handle and _channel_handle[0] is handle:
            _channel_handle.clear()


def _remote_task():
    import ray
    with _channel_lock:
        if not _task_fn:
            _task_fn.append(ray.remote(train_task))
        return _task_fn[0]


def _describe(options: dict) -> str:
    parts = [f"{options['num_cpus']} CPU"]
    if options.get("num_gpus"):
        parts.append(f"{options['num_gpus']} GPU")
    if options.get("memory"):
        parts.append(f"{options['memory'] / 2**30:.1f} GB")
    return ", ".join(parts)


def run_on_ray(cfg: Any, run_dir: str, on_event: EventFn, stop: threading.Event) -> dict:
    """The JobManager's run function: one Ray task per run, events relayed live, stop passed on."""
    import ray
    from ray import exceptions as rex
    run_id = os.path.basename(run_dir)
    channel = _channel()
    options = resources_for(cfg)
    ref = _remote_task().options(max_retries=0, retry_exceptions=False, name=f"playground-run-{run_id}",
                                 **options).remote(cfg.to_dict(), run_dir, run_id, channel, options["num_cpus"])
    on_event(StatusEvent(type="status", message=f"sent to the Ray cluster ({_describe(options)}); "
                                                "waiting for a node with room"))
    stop_sent = started = False
    unreachable_since: float | None = None
    try:
        while True:
            done, _ = ray.wait([ref], timeout=POLL_S)
            try:
                events = ray.get(channel.drain.remote(run_id), timeout=30)
                unreachable_since = None
            except (rex.RayActorError, rex.GetTimeoutError) as e:
                # "Unavailable" is Ray's word for a busy or briefly unreachable actor (a loaded
                # head, a node being declared dead): wait a while before giving the run up.
                transient = isinstance(e, (getattr(rex, "ActorUnavailableError", ()), rex.GetTimeoutError))
                unreachable_since = unreachable_since or time.monotonic()
                if transient and time.monotonic() - unreachable_since < CHANNEL_PATIENCE_S:
                    log.info("run %s: event channel unavailable (%s), retrying", run_id, type(e).__name__)
                    continue
                _forget_channel(channel)
                ray.cancel(ref, force=True)
                raise RunInterrupted(f"the app lost its link to the Ray run ({type(e).__name__}); "
                                     "the metrics it sent so far are kept") from None
            for event in events:
                started = True
                on_event(event)
            if stop.is_set() and not stop_sent:
                stop_sent = True
                if started:
                    channel.request_stop.remote(run_id)  # the trainer checks it at its next step
                else:
                    ray.cancel(ref)  # still waiting for a node: nothing to save
            if done:
                break
        return ray.get(ref)
    except rex.TaskCancelledError:
        if stop.is_set():
            return {}
        raise RunInterrupted("the Ray task was cancelled before it finished") from None
    except rex.RayTaskError as e:
        # The run itself raised on its node (bad data, out of memory, a limit): the same words as a
        # local failure. Only this run fails; the cluster and the queue go on.
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException):
            raise cause from None
        raise RuntimeError(str(e).strip().splitlines()[-1][:300]) from None
    except rex.RayError as e:
        # The worker process or its whole node died (killed, out of memory, machine gone).
        kind = type(e).__name__
        detail = {"NodeDiedError": "its cluster node went away",
                  "WorkerCrashedError": "the worker process running it died (its node may have gone away)",
                  "OutOfMemoryError": "the node ran out of memory and Ray killed it"}.get(kind, kind)
        raise RunInterrupted(f"interrupted on the Ray cluster: {detail}; the metrics it sent so far are kept") from None
    finally:
        try:
            channel.forget.remote(run_id)
        except Exception:  # the channel may be gone with its node
            log.debug("channel forget failed", exc_info=True)


def wait_for_nodes(n: int, timeout: float = 60.0) -> int:
    """Block until the connected cluster has n live nodes (tests, benchmarks); returns the count."""
    import ray
    deadline = time.time() + timeout
    alive = 0
    while time.time() < deadline:
        alive = sum(1 for node in ray.nodes() if node.get("Alive"))
        if alive >= n:
            break
        time.sleep(0.5)
    return alive
