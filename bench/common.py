"""Shared helpers for the benchmarks, and the protocol every ratio follows (BENCHMARKS.md, top):

1. both sides run in this one process tree (fresh children of one parent), alternating A/B, B/A;
2. at least MIN_PAIRS pairs, reported as median and range (`check_pairs` refuses fewer unless the
   run is a --quick smoke run, whose tables say "NOT A RESULT");
3. both sides at the same precision and thread count (`check_same_setting`);
4. time measured the same way on both sides, and named (`TIMINGS`);
5. every table records machine, CPU flags, versions and load before/after (`protocol_header`).

Also: machine facts, the fp32 matmul ceiling, fresh-subprocess runs with their own peak RSS
(os.wait4), temp data files, and markdown tables.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# $BENCH_DATA_DIR, else ../shared/data beside the repository (bench/splits.py reads the same place)
DATA = os.environ.get("BENCH_DATA_DIR") or os.path.abspath(os.path.join(ROOT, "..", "shared", "data"))
OUT = os.path.join(ROOT, "bench", "out")
PY = os.path.join(ROOT, ".venv", "bin", "python") if os.path.exists(os.path.join(ROOT, ".venv", "bin", "python")) else sys.executable


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except Exception:
        pass
    ram = None
    try:
        import psutil
        ram = round(psutil.virtual_memory().total / 2**30, 1)
    except Exception:
        pass
    import torch
    return {"cpu": model, "cores": os.cpu_count(), "ram_gb": ram, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "loadavg": os.getloadavg()}


# ------------------------------------------------------------------------------ the protocol

MIN_PAIRS = 5
# How a side's time is taken; both sides of a ratio must use the same one, and the table names it.
TIMINGS = {
    "train_steps": "seconds inside Trainer.train() with no evaluation inside it on either side",
    "train_call": "seconds inside Trainer.train(), each side's in-training evaluations included",
    "end_to_end": "whole process, start to exit (imports, loading, training, final evaluation)",
}


class ProtocolError(RuntimeError):
    """A measurement that would not follow the benchmark protocol."""


def check_pairs(pairs: int, quick: bool) -> None:
    if pairs < MIN_PAIRS and not quick:
        raise ProtocolError(f"--pairs {pairs}: a ratio needs at least {MIN_PAIRS} alternating pairs "
                            "(use --quick for a smoke run, labelled as not a result)")


def quick_label(quick: bool) -> str:
    return ("**QUICK SMOKE RUN: NOT A RESULT** (tiny sizes; it checks that the code runs and the "
            "figures are sane, nothing more)\n\n") if quick else ""


def pair_order(pair: int, sides: list[str]) -> list[str]:
    """A, B on even pairs and B, A on odd ones, so a load trend favours neither side."""
    return list(sides) if pair % 2 == 0 else list(sides)[::-1]


def spread(values: list[float]) -> dict:
    """Median and range of per-pair figures: what a table reports for a ratio."""
    import statistics
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3),
            "max": round(max(vals), 3), "n": len(vals)}


def spread_text(s: dict) -> str:
    if not s.get("n"):
        return "n/a"
    return f"{s['median']:.3g} ({s['min']:.3g}–{s['max']:.3g}, {s['n']} pairs)"


def check_same_setting(a: dict, b: dict, keys=("precision", "threads")) -> None:
    """Both sides of a ratio at the same precision and thread count, or no ratio."""
    diff = {k: (a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k)}
    if diff:
        raise ProtocolError("the two sides differ in " + ", ".join(f"{k} ({x!r} vs {y!r})" for k, (x, y) in diff.items())
                            + ": a ratio needs the same setting on both")


def cpu_flags() -> dict:
    flags = set()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"avx2": "avx2" in flags, "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags}


def versions() -> dict:
    from importlib import metadata
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "peft", "accelerate", "streamlit"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def machine_record() -> dict:
    """What every table records: machine, CPU flags, versions, load now."""
    m = machine()
    return {"cpu": m["cpu"], "cores": m["cores"], "ram_gb": m["ram_gb"], "flags": cpu_flags(),
            "versions": versions(), "date": m["date"], "loadavg": [round(x, 2) for x in os.getloadavg()]}


def protocol_header(record: dict, load_before: float, load_after: float, timing: str | None = None,
                    pairs: int | None = None, quick: bool = False) -> str:
    f = record["flags"]
    flag_text = ", ".join(k for k in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f.get(k)) or "none of avx2/avx512/bf16"
    v = record["versions"]
    lines = [quick_label(quick).rstrip()] if quick else []
    lines.append(f"Machine: {record['cpu']}, {record['cores']} cores, {record['ram_gb']} GB; CPU flags: {flag_text}; "
                 f"python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}; "
                 f"{record['date']}; load average before/after: {load_before:.2f} / {load_after:.2f}")
    if timing:
        lines.append(f"Time: {timing} ({TIMINGS[timing]})" + (f"; {pairs} alternating pairs" if pairs else ""))
    return "\n\n".join(lines) + "\n\n"


def matmul_flops(n: int = 1024, seconds: float = 2.0, threads: int | None = None, precision: str = "fp32") -> dict:
    """The machine's matmul rate (FLOP/s) in `precision` with `threads` torch threads: the MFU denominator.

    Best of several timed batches of n×n @ n×n (2n³ FLOPs each), so a noisy neighbour lowers it less.
    The ceiling must be in the precision the run computed in: bf16 work over an fp32 ceiling
    overstates MFU wherever bf16 matmuls are faster (issue 21).
    """
    import torch
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        for _ in range(3):
            a @ b
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            dt = time.perf_counter() - t0
            best = max(best, 4 * 2 * n ** 3 / dt)
        return {"flops": best, "n": n, "threads": torch.get_num_threads(), "precision": precision, "loadavg": loadavg()}
    finally:
        torch.set_num_threads(old)


def run_child(args: list[str], timeout: float = 1800, env: dict | None = None, cwd: str = ROOT) -> dict:
    """Run a child process; return its last JSON stdout line plus wall time, peak RSS, load average.

    Peak RSS comes from os.wait4's rusage of that one child (ru_maxrss, KiB on Linux): exact, and not
    mixed with earlier children as RUSAGE_CHILDREN would be. But at exec the kernel keeps the
    high-water RSS of the memory the child was forked with, i.e. this process's: a parent that has
    loaded a model makes every child "peak" at least that high. Keep models out of the parent.
    """
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": ROOT, **(env or {})}
    la0 = loadavg()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=full_env, cwd=cwd)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    result = {}
    for line in stdout.strip().splitlines():  # every JSON line, later keys win
        line = line.strip()
        if line.startswith("{"):
            try:
                result.update(json.loads(line))
            except json.JSONDecodeError:
                continue
    result.update({"_rc": proc.returncode, "_wall_s": round(wall, 2), "_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
                   "_cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                   "_loadavg": [la0, loadavg()]})
    if proc.returncode != 0:
        result["_stderr_tail"] = stderr[-2000:]
    return result


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh.read().split("\n") if line.strip()]


def write_jsonl(rows: list[dict], path: str) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"text": r["text"], "label": r["label"]}, ensure_ascii=False) + "\n")
    return path


def tutorial_split(n_train: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    """Exactly the rows bench/tutorial_recipe.py trains and evaluates on."""
    import numpy as np
    rows = read_jsonl(os.path.join(DATA, "imdb_train_4000.jsonl"))
    order = np.random.default_rng(0).permutation(len(rows))
    return [rows[i] for i in order[:n_train]], [rows[i] for i in order[n_train:n_train + n_eval]]


def balanced_split(path: str, n_train: int, n_test: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """A fixed test set (the last n_test of one shuffle) and the first n_train rows of the rest."""
    rows = read_jsonl(path)
    random.Random(seed).shuffle(rows)
    test = rows[len(rows) - n_test:]
    return rows[:min(n_train, len(rows) - n_test)], test


def md_table(rows: list[dict], cols: list[str], headers: list[str] | None = None) -> str:
    headers = headers or cols
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if isinstance(v, float):
                v = f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
            cells.append(str(v) if v is not None else "")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def out_dir() -> str:
    return os.environ.get("BENCH_OUT") or OUT


def save(name: str, payload: dict, markdown: str) -> None:
    out = out_dir()
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, f"{name}.json"), "w") as fh:
        json.dump(payload, fh, indent=1, default=str)
    with open(os.path.join(out, f"{name}.md"), "w") as fh:
        fh.write(markdown.rstrip() + "\n")


def engine_cfg(model: str, method: str, params: dict, train_path: str, eval_path: str | None, *,
               max_length: int = 128, batch_size: int = 16, lr: float = 1e-3, epochs: float = 1.0,
               max_steps: int = -1, task: str = "classification", extra_train: dict | None = None,
               extra_data: dict | None = None) -> dict:
    data = {"source": train_path, "task": task, "max_length": max_length, "val_share": 0.0 if eval_path is None else 0.2}
    if eval_path:
        data["eval_source"] = eval_path
    data.update(extra_data or {})
    train = {"learning_rate": lr, "epochs": epochs, "batch_size": batch_size, "max_steps": max_steps, "seed": 42}
    train.update(extra_train or {})
    return {"model": {"name": model}, "data": data, "method": {"name": method, "params": params}, "train": train}


# Patched into a child before it trains: CPU seconds and wall seconds spent inside Trainer.train().
# With one torch thread, CPU time measures the work done and barely moves with the machine's load.
TRAIN_CLOCK = """
import atexit, json, time, transformers
_orig_train = transformers.Trainer.train
_clock = {"train_cpu_s": 0.0, "train_wall_s": 0.0}
def _train(self, *a, **kw):
    c0, w0 = time.process_time(), time.perf_counter()
    try:
        return _orig_train(self, *a, **kw)
    finally:
        _clock["train_cpu_s"] += time.process_time() - c0
        _clock["train_wall_s"] += time.perf_counter() - w0
transformers.Trainer.train = _train
atexit.register(lambda: print(json.dumps({k: round(v, 3) for k, v in _clock.items()}), flush=True))
"""


# Patched into both sides of a race before they train: the same clock on both. "train_steps_s" is
# wall time inside Trainer.train() less the evaluations run inside it, so a side's evaluation
# cadence does not count as training; "curve" is (train_steps_s so far, eval accuracy, step) at
# every evaluation inside train(): what time-to-accuracy is read from.
@contextlib.contextmanager
def evaluation_clock(clock=time.perf_counter):
    """[seconds by `clock`, count] of Trainer.evaluate calls (mid-run and final) inside the block:
    profile only, to split a run's training time into steps and evaluations."""
    from transformers import Trainer
    spent, orig = [0.0, 0], Trainer.evaluate

    def timed(self, *a, **kw):
        t0 = clock()
        try:
            return orig(self, *a, **kw)
        finally:
            spent[0] += clock() - t0
            spent[1] += 1

    Trainer.evaluate = timed
    try:
        yield spent
    finally:
        Trainer.evaluate = orig


STEP_CLOCK = """
import atexit, json, time, transformers
_T = transformers.Trainer
_orig_train, _orig_eval = _T.train, _T.evaluate
_c = {"train_wall_s": 0.0, "train_cpu_s": 0.0, "eval_in_train_s": 0.0, "evals_in_train": 0}
_curve, _state = [], {"in_train": False, "t0": 0.0}
def _train(self, *a, **kw):
    c0, w0 = time.process_time(), time.perf_counter()
    _state.update(in_train=True, t0=w0)
    try:
        return _orig_train(self, *a, **kw)
    finally:
        _state["in_train"] = False
        _c["train_cpu_s"] += time.process_time() - c0
        _c["train_wall_s"] += time.perf_counter() - w0
def _evaluate(self, *a, **kw):
    if not _state["in_train"]:
        return _orig_eval(self, *a, **kw)
    w0 = time.perf_counter()
    out = _orig_eval(self, *a, **kw)
    dt = time.perf_counter() - w0
    steps_so_far = w0 - _state["t0"] - _c["eval_in_train_s"]
    _c["eval_in_train_s"] += dt
    _c["evals_in_train"] += 1
    acc = next((v for k, v in (out or {}).items() if k.endswith("_accuracy")), None)
    _curve.append([round(steps_so_far, 3), acc, self.state.global_step])
    return out
_T.train, _T.evaluate = _train, _evaluate
def _report():
    out = {k: round(v, 3) for k, v in _c.items()}
    out["train_steps_s"] = round(_c["train_wall_s"] - _c["eval_in_train_s"], 3)
    out["curve"] = _curve
    print(json.dumps(out), flush=True)
atexit.register(_report)
"""


def time_to(curve: list, target: float) -> float | None:
    """Seconds of training (evaluations excluded) at the first evaluation at or above target."""
    for t, acc, _ in curve or []:
        if acc is not None and acc >= target:
            return t
    return None
