"""Run store on disk: runs/<id>/{config.json, status.json, metrics.jsonl, summary.json, adapter/}.

The store must survive what a classroom server lives through: 30 sessions reading while one job
writes, a process killed mid-write, a restart while runs are queued. Hence:
- every JSON file is replaced atomically (temp file in the same folder, fsync, os.replace), so a
  reader sees the old file or the new one, never half of one;
- metrics.jsonl is append-only, one fsync'd line per event; a torn last line is skipped on read;
- a run folder is built under a hidden temp name and renamed into place, so list_runs never sees
  a folder without its status;
- run ids are made by the server; run_dir_for() accepts nothing else, so no user string becomes a
  path.
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import math
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any

from core import settings
from core.config import ConfigError

log = logging.getLogger(__name__)

STATES = ("queued", "running", "completed", "failed", "stopped", "interrupted", "cancelled")
ACTIVE_STATES = ("queued", "running")
FINAL_STATES = ("completed", "failed", "stopped", "interrupted", "cancelled")

# Where a trainer may leave the weights a user downloads; the first that exists is zipped.
WEIGHTS_DIRS = ("adapter", "model", "weights")
CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_MARKER = "trainer_state.json"  # written last by Trainer._save_checkpoint

# 20261122-031501-lora-minilm-3f9a: UTC time first so ids sort by age; lower-case slugs only.
_RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}(?:-[a-z0-9]+){1,8}")
_MAX_ID_LEN = 96
_CHECKPOINT = re.compile(r"checkpoint-([0-9]+)")
# Leftovers of a crash (temp run folders, half-deleted runs, temp JSON files) older than this are swept.
_STALE_S = 600.0

# One lock for read-modify-write of status.json: the worker and the UI threads both write it.
_status_lock = threading.Lock()
_metrics_lock = threading.Lock()


class NotFound(ConfigError):
    """The run does not exist (never made, or deleted)."""


# ---------------------------------------------------------------------------------------- paths

def runs_root() -> str:
    # Read at call time so tests and deployments can point it elsewhere without re-importing.
    return settings.runs_dir()


def is_valid_run_id(run_id: object) -> bool:
    return (isinstance(run_id, str) and len(run_id) <= _MAX_ID_LEN
            and _RUN_ID.fullmatch(run_id) is not None)  # fullmatch: '$' would let a trailing '\n' in


def run_dir_for(run_id: str) -> str:
    """The folder of a run id made by new_run_id; anything else (.., /, NUL, names) is refused."""
    if not is_valid_run_id(run_id):
        raise ConfigError(f"{str(run_id)[:120]!r} is not a run id")
    root = runs_root()
    path = os.path.join(root, run_id)
    # The regex already forbids separators; this is a second lock on the same door.
    if os.path.dirname(os.path.abspath(path)) != root:
        raise ConfigError(f"{run_id!r} is not a run id")
    return path


def _slug(text: str, max_len: int) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return s[:max_len].strip("-")


def cfg_dict(cfg: Any) -> dict:
    if isinstance(cfg, dict):
        return cfg
    if hasattr(cfg, "to_dict"):
        return cfg.to_dict()
    raise ConfigError(f"expected a RunConfig, got {type(cfg).__name__}")


def new_run_id(cfg: Any) -> str:
    d = cfg_dict(cfg)
    method = _slug((d.get("method") or {}).get("name", ""), 16) or "run"
    # Only the last part of a hub id or folder: the id is shown to everyone, a server path is not.
    model_name = re.split(r"[\\/]", str((d.get("model") or {}).get("name", "")).rstrip("/\\"))[-1]
    model = _slug(model_name, 24) or "model"
    run_id = f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{method}-{model}-{secrets.token_hex(2)}"
    assert is_valid_run_id(run_id), run_id
    return run_id


# ---------------------------------------------------------------------------- atomic file I/O

def _fsync_dir(folder: str) -> None:
    # Makes the rename itself durable; not possible on every OS, and then not needed there.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _json_default(obj: Any) -> Any:
    # Events carry numpy scalars, tensors or paths; store their plain value, never fail on them.
    for attr in ("item", "tolist"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            try:
                return fn()
            except (RuntimeError, ValueError, TypeError):  # .item() of a tensor with many values
                pass
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def to_json(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, indent=indent, default=_json_default, ensure_ascii=False)


def atomic_write_text(path: str, text: str) -> None:
    folder = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def atomic_write_json(path: str, obj: Any) -> None:
    atomic_write_text(path, to_json(obj, indent=2) + "\n")


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        # Atomic writes make this rare (a disk error, a hand edit); a listing must not crash on it.
        log.warning("unreadable %s: %s", path, e)
        return {}
    return data if isinstance(data, dict) else {}


# ------------------------------------------------------------------------------------ owners

def owner_tag(owner: str) -> str:
    """What status.json stores for an owner: a digest, so listing runs never reveals a session id."""
    if not isinstance(owner, str) or not owner:
        return ""
    return "o-" + hashlib.sha256(owner.encode("utf-8")).hexdigest()[:32]


def is_owner(status: dict, requester: str | None) -> bool:
    tag = (status or {}).get("owner") or ""
    if not isinstance(tag, str):  # a malformed status.json: nobody's (compare_digest would raise)
        return False
    mine = owner_tag(requester or "")
    # An empty owner (a CLI run) belongs to nobody, so an empty requester never matches it.
    return bool(tag) and bool(mine) and hmac.compare_digest(tag, mine)


class NotOwner(ConfigError):
    """The run belongs to another session and the caller is not admin."""


def require_owner(run_id: str, requester: str | None, admin: bool, verb: str) -> "RunInfo":
    """The run, if the requester owns it or is admin; else NotOwner (what JobManager checks too)."""
    info = get_run(run_id)
    if not (admin or is_owner(info.status, requester)):
        raise NotOwner(f"you cannot {verb} run {run_id}: it belongs to another session "
                       "(only its owner or an admin can)")
    return info


# ----------------------------------------------------------------------------------- process

def process_token(pid: int | None = None) -> str | None:
    """host:pid:start-time of a process, or None where /proc is missing; tells a live pid from a reused one."""
    pid = os.getpid() if pid is None else pid
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields_after_name = stat.rsplit(")", 1)[-1].split()
    if len(fields_after_name) < 20:
        return None
    return f"{socket.gethostname()}:{pid}:{fields_after_name[19]}"  # field 22: start time in ticks


def _owned_by_live_process(status: dict) -> bool:
    token = status.get("process")
    if not isinstance(token, str) or token == process_token():
        return False
    try:
        host, pid, _ = token.rsplit(":", 2)
        return host == socket.gethostname() and process_token(int(pid)) == token
    except ValueError:
        return False


# -------------------------------------------------------------------------------------- runs

@dataclass
class RunInfo:
    id: str
    dir: str
    state: str
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)
    has_weights: bool = False
    created: float = 0.0
    resumable: bool = False
    problem: str = ""  # why the folder is "unreadable" (a malformed file); "" for a sound run

    @property
    def name(self) -> str:
        return self.status.get("name") or self.config.get("name") or self.id

    def owned_by(self, requester: str | None) -> bool:
        return is_owner(self.status, requester)


def create_run(cfg: Any, owner: str, **status_fields: Any) -> str:
    """Make runs/<new id>/ with config.json and a queued status.json; return the folder."""
    d = cfg_dict(cfg)
    root = runs_root()
    os.makedirs(root, exist_ok=True)
    for _ in range(20):
        run_id = new_run_id(d)
        final = os.path.join(root, run_id)
        if os.path.exists(final):
            continue  # same second, same method and model, same 4 hex digits: draw again
        # Built under a hidden name and renamed in one step: readers see a whole run or none.
        tmp = tempfile.mkdtemp(dir=root, prefix=f".tmp-{run_id}-")
        try:
            now = time.time()
            atomic_write_json(os.path.join(tmp, "config.json"), d)
            status = dict(status_fields)
            status.update(state="queued", run_id=run_id, owner=owner_tag(owner), created=now,
                          updated=now, name=d.get("name") or "",
                          method=(d.get("method") or {}).get("name", ""),
                          model=(d.get("model") or {}).get("name", ""))
            atomic_write_json(os.path.join(tmp, "status.json"), status)
            os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
            os.rename(tmp, final)  # fails if another process just took the same id
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if os.path.exists(final):
                continue
            raise
        _fsync_dir(root)
        return final
    raise RuntimeError("could not find a free run id")  # 20 collisions in a row: the clock is stuck


def write_status(run_dir: str, state: str, **fields: Any) -> dict:
    """Merge fields into status.json and set its state; returns the new status."""
    if state not in STATES:
        raise ValueError(f"unknown run state {state!r}; one of {STATES}")
    with _status_lock:
        status = _read_json(os.path.join(run_dir, "status.json"))
        status.update(fields)
        status["state"] = state
        status["updated"] = time.time()
        atomic_write_json(os.path.join(run_dir, "status.json"), status)
    return status


def read_status(run_dir: str) -> dict:
    return _read_json(os.path.join(run_dir, "status.json"))


def read_config(run_dir: str) -> dict:
    return _read_json(os.path.join(run_dir, "config.json"))


def read_summary(run_dir: str) -> dict:
    return _read_json(os.path.join(run_dir, "summary.json"))


def write_summary(run_dir: str, summary: dict) -> None:
    atomic_write_json(os.path.join(run_dir, "summary.json"), summary)


def append_metric(run_dir: str, event: dict) -> None:
    """One JSON line per event, fsync'd: after a crash, every event that returned is on disk."""
    line = to_json(event)
    path = os.path.join(run_dir, "metrics.jsonl")
    with _metrics_lock, open(path, "a+b") as fh:
        # A crash can leave a torn line without its newline; start on a fresh line so the
        # new event is not glued to it and lost with it.
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                line = "\n" + line
        fh.write((line + "\n").encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


def read_metrics(run_dir: str) -> list[dict]:
    """The run's events, oldest first. Garbage lines (a torn last line, a hand edit, binary) and
    lines longer than MAX_METRIC_LINE_BYTES are skipped; of a huge file only the last
    MAX_METRICS_BYTES are read, so one file cannot exhaust the server's memory."""
    out: list[dict] = []
    try:
        with open(os.path.join(run_dir, "metrics.jsonl"), "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - MAX_METRICS_BYTES))
            if size > MAX_METRICS_BYTES:
                fh.readline()  # the first line read is cut: skip it
            while True:
                line = fh.readline(MAX_METRIC_LINE_BYTES + 1)
                if not line:
                    break
                if len(line) > MAX_METRIC_LINE_BYTES:
                    while line and not line.endswith(b"\n"):  # drop the rest of the overlong line
                        line = fh.readline(MAX_METRIC_LINE_BYTES)
                    continue
                line = line.strip()
                if not line:
                    continue
                try:
                    event = json.loads(line.decode("utf-8", errors="replace"))
                except (ValueError, RecursionError):
                    continue  # the torn line a crash leaves behind, or garbage
                if isinstance(event, dict):
                    out.append(event)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    return out


def weights_dir(run_dir: str) -> str | None:
    for name in WEIGHTS_DIRS:
        path = os.path.join(run_dir, name)
        if os.path.isdir(path) and not os.path.islink(path) and holds_weights(path):
            return path
    return None


WEIGHT_FILE_ENDINGS = (".safetensors", ".bin", ".pt", ".gguf")


def holds_weights(folder: str) -> bool:
    """A folder with a weights file in it: a save that died after README.md or the config is not one."""
    try:
        for dirpath, _, names in os.walk(folder):  # peft puts a named adapter in a subfolder
            for name in names:
                path = os.path.join(dirpath, name)
                if name.endswith(WEIGHT_FILE_ENDINGS) and not os.path.islink(path) and os.path.getsize(path) > 0:
                    return True
    except OSError:
        return False
    return False


def latest_checkpoint(run_dir: str) -> str | None:
    """The complete checkpoints/checkpoint-N folder with the highest N (numerically: 10 after 9).

    The Trainer writes a checkpoint in place and its trainer_state.json last: a process killed
    mid-save leaves a folder without it, which cannot be resumed from, so it does not count.
    """
    folder = os.path.join(run_dir, CHECKPOINTS_DIR)
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    found = [(int(m.group(1)), n) for n in names
             if (m := _CHECKPOINT.fullmatch(n)) and os.path.isfile(os.path.join(folder, n, CHECKPOINT_MARKER))]
    return os.path.join(folder, max(found)[1]) if found else None


def resume_checkpoint(run_dir: str) -> str | None:
    """For the trainer: the checkpoint this run should resume from (status fields set by submit)."""
    status = read_status(run_dir)
    source = status.get("resume_from")
    if not source:
        return None
    try:
        return latest_checkpoint(run_dir_for(source))
    except ConfigError:
        return None


# ------------------------------------------------------------------------- validating reader
# Every file in a run folder is untrusted input: a hand edit, a half-restored backup, another
# tool, or a visitor who found a way to write one. The pages only ever see what passed these
# checks; a folder that fails them is listed as "unreadable" with the reason, never a traceback.

UNREADABLE = "unreadable"
MAX_RUN_JSON_BYTES = 4 * 1024 * 1024     # config/status/summary: a few KB normally (anatomy: ~100 KB)
MAX_METRICS_BYTES = 64 * 1024 * 1024     # read from the end beyond this: the newest events matter
MAX_METRIC_LINE_BYTES = 1024 * 1024
_NUMERIC_SUMMARY = ("trainable_params", "total_params", "trainable_percent", "n_train", "n_val", "threads",
                    "train_time_s", "wall_time_s", "samples_per_second", "steps", "peak_rss_mb",
                    "peak_cuda_mb", "latency_ms_per_sample")
_TEXT_STATUS = ("owner", "name", "state", "message", "hint", "method", "model", "run_id", "resume_from")
_TEXT_SUMMARY = ("state", "model", "method", "task", "device", "precision")


class Unreadable(ConfigError):
    """A run file is malformed; the message names the file and what is wrong with it."""


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a text", bool: "true/false", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _load_object(path: str, required: bool) -> dict:
    name = os.path.basename(path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        if required:
            raise Unreadable(f"{name} is missing") from None
        return {}
    except OSError as e:
        raise Unreadable(f"{name} cannot be read ({e.strerror or e})") from None
    if size > MAX_RUN_JSON_BYTES:
        raise Unreadable(f"{name} is {size / 1e6:.1f} MB, more than a run file may hold "
                         f"({MAX_RUN_JSON_BYTES / 1e6:.0f} MB)")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (ValueError, RecursionError) as e:
        raise Unreadable(f"{name} is not valid JSON ({str(e)[:80]})") from None
    except OSError as e:
        raise Unreadable(f"{name} cannot be read ({e.strerror or e})") from None
    if not isinstance(data, dict):
        raise Unreadable(f"{name} holds {_kind(data)}, not an object")
    return data


def _check_fields(name: str, data: dict, text: tuple = (), numbers: tuple = (), objects: tuple = ()) -> None:
    for key in text:
        if data.get(key) is not None and not isinstance(data[key], str):
            raise Unreadable(f"{name}: {key} is {_kind(data[key])}, not a text")
    for key in numbers:
        if data.get(key) is not None and not is_finite_number(data[key]):
            raise Unreadable(f"{name}: {key}={str(data[key])[:40]!r} is not a number")
    for key in objects:
        if data.get(key) is not None and not isinstance(data[key], dict):
            raise Unreadable(f"{name}: {key} is {_kind(data[key])}, not an object")


def validate_status(status: dict) -> dict:
    _check_fields("status.json", status, text=_TEXT_STATUS, numbers=("created", "updated", "finished", "duration_s"))
    return status


def validate_config(config: dict) -> dict:
    _check_fields("config.json", config, text=("name", "experiment"),
                  objects=("model", "data", "method", "train"))
    _check_fields("config.json: model", config.get("model") or {}, text=("name",))
    _check_fields("config.json: data", config.get("data") or {}, text=("source", "task", "eval_source"))
    _check_fields("config.json: method", config.get("method") or {}, text=("name",), objects=("params",))
    return config


def validate_summary(summary: dict) -> dict:
    _check_fields("summary.json", summary, text=_TEXT_SUMMARY, numbers=_NUMERIC_SUMMARY,
                  objects=("final", "initial"))
    for part in ("final", "initial"):
        for key, value in (summary.get(part) or {}).items():
            if value is not None and not is_finite_number(value):
                raise Unreadable(f"summary.json: {part}.{key}={str(value)[:40]!r} is not a number")
    return summary


def read_run_files(run_dir: str) -> tuple[dict, dict, dict]:
    """(status, config, summary) of a run folder, each checked; raises Unreadable naming the fault."""
    status = validate_status(_load_object(os.path.join(run_dir, "status.json"), required=True))
    config = validate_config(_load_object(os.path.join(run_dir, "config.json"), required=False))
    summary = validate_summary(_load_object(os.path.join(run_dir, "summary.json"), required=False))
    return status, config, summary


def _unreadable_info(run_id: str, run_dir: str, problem: str) -> RunInfo:
    # Keep the owner when it is sound, so its owner can still delete the broken run.
    try:
        raw = _load_object(os.path.join(run_dir, "status.json"), required=False)
    except Unreadable:
        raw = {}
    owner = raw.get("owner") if isinstance(raw.get("owner"), str) else ""
    created = raw.get("created") if is_finite_number(raw.get("created")) else 0.0
    return RunInfo(id=run_id, dir=run_dir, state=UNREADABLE, status={"owner": owner, "message": problem},
                   created=float(created), problem=problem)


def _run_info(run_id: str, run_dir: str) -> RunInfo:
    try:
        status, config, summary = read_run_files(run_dir)
    except Unreadable as e:
        log.warning("run %s is unreadable: %s", run_id, e)
        return _unreadable_info(run_id, run_dir, str(e))
    return _sound_run_info(run_id, run_dir, status, config, summary)


def _sound_run_info(run_id: str, run_dir: str, status: dict, config: dict, summary: dict) -> RunInfo:
    state = status.get("state") if status.get("state") in STATES else "unknown"
    created = status.get("created")
    if not isinstance(created, (int, float)) or isinstance(created, bool) or not math.isfinite(created):
        created = 0.0
    return RunInfo(
        id=run_id, dir=run_dir, state=state, config=config,
        summary=summary, status=status, has_weights=weights_dir(run_dir) is not None,
        created=float(created),
        resumable=state == "interrupted" and latest_checkpoint(run_dir) is not None,
    )


def get_run(run_id: str) -> RunInfo:
    run_dir = run_dir_for(run_id)
    if not os.path.isdir(run_dir):
        raise NotFound(f"run {run_id} does not exist (it may have been deleted)")
    return _run_info(run_id, run_dir)


def list_runs() -> list[RunInfo]:
    """Every run, newest first; folders that are not runs (temp, trash, stray files) are skipped."""
    root = runs_root()
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    infos = []
    for name in names:
        path = os.path.join(root, name)
        if is_valid_run_id(name) and os.path.isdir(path) and not os.path.islink(path):
            infos.append(_run_info(name, path))
    infos.sort(key=lambda r: (r.created, r.id), reverse=True)
    return infos


def delete_run(run_id: str) -> bool:
    """Remove a run folder; False if it did not exist."""
    run_dir = run_dir_for(run_id)
    if not os.path.isdir(run_dir):
        return False
    # Rename first so the run vanishes from listings at once, even if rmtree is slow or fails.
    trash = os.path.join(runs_root(), f".trash-{run_id}-{secrets.token_hex(4)}")
    try:
        os.rename(run_dir, trash)
    except FileNotFoundError:
        return False
    shutil.rmtree(trash, ignore_errors=True)
    return True


def _sweep_leftovers() -> None:
    root = runs_root()
    now = time.time()
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return
    for entry in entries:
        try:
            old = now - entry.stat(follow_symlinks=False).st_mtime > _STALE_S
            if entry.name.startswith(".trash-") or (entry.name.startswith(".tmp-") and old):
                shutil.rmtree(entry.path, ignore_errors=True)
            elif is_valid_run_id(entry.name) and entry.is_dir(follow_symlinks=False):
                for inner in os.scandir(entry.path):
                    if (inner.name.startswith(".") and inner.name.endswith(".tmp")
                            and now - inner.stat(follow_symlinks=False).st_mtime > _STALE_S):
                        os.unlink(inner.path)
        except OSError:
            continue


def recover_on_startup() -> list[RunInfo]:
    """Runs left queued or running by a dead process become interrupted; returns them."""
    recovered = []
    for info in list_runs():
        if info.state not in ACTIVE_STATES or _owned_by_live_process(info.status):
            continue
        was = info.state
        resumable = latest_checkpoint(info.dir) is not None
        message = (f"the server restarted while this run was {was}"
                   + ("; it can resume from its last checkpoint" if resumable else "; submit it again"))
        try:
            write_status(info.dir, "interrupted", message=message, interrupted_from=was,
                         finished=time.time())
        except OSError as e:
            log.warning("could not mark %s interrupted: %s", info.id, e)
            continue
        recovered.append(_run_info(info.id, info.dir))
    _sweep_leftovers()
    return recovered


# --------------------------------------------------------------------------------- downloads

def zip_weights(run_dir: str) -> bytes:
    """The run's weights folder as zip bytes, ready for a download button."""
    folder = weights_dir(run_dir)
    if folder is None:
        raise ConfigError("this run has no saved weights (it may have stopped before saving)")
    base = os.path.basename(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not follow symlinked dirs
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path):
                    continue  # a link could point anywhere on the server
                arcname = os.path.join(base, os.path.relpath(path, folder))
                # Weights barely compress; deflating them only costs the server CPU time.
                small_text = name.endswith((".json", ".txt", ".md", ".yaml", ".model"))
                zf.write(path, arcname, compress_type=zipfile.ZIP_DEFLATED if small_text else zipfile.ZIP_STORED)
    return buf.getvalue()


def shown_path(path: str) -> str:
    """A server path as a visitor may see it: relative to the runs folder when inside it, else only
    its last part (an upload's <id>.jsonl, which data.load_rows finds in the uploads folder again)."""
    text = str(path)
    if not (os.path.isabs(text) or text.startswith("~")):
        return text
    full, root = os.path.abspath(os.path.expanduser(text)), runs_root()
    if full == root or full.startswith(root + os.sep):
        return os.path.relpath(full, root)
    return os.path.basename(full.rstrip("/\\")) or "."


def public_config(config: dict) -> dict:
    """A copy of a run's config fit to show or download: every absolute path made a shown_path."""
    def scrub(value: Any) -> Any:
        if isinstance(value, dict):  # label_map holds the visitor's labels, not paths
            return {k: v if k == "label_map" else scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [scrub(v) for v in value]
        return shown_path(value) if isinstance(value, str) else value
    return scrub(config)


def public_yaml(config: dict) -> str:
    """A config as YAML to show or download, without any absolute server path (public_config)."""
    import yaml
    return yaml.safe_dump(public_config(config), sort_keys=False, allow_unicode=True)


def config_yaml(run_dir: str) -> str:
    return public_yaml(read_config(run_dir))


def headless_command(run_id: str) -> str:
    """The command that reruns a run, run from the app's folder; `runs/` stands for the runs folder
    (PLAYGROUND_RUNS_DIR), whose real path a visitor is not shown."""
    return f"python -m core.train --config runs/{os.path.basename(run_dir_for(run_id))}/config.json"
