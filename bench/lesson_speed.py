"""Issue 22's table, every row, headless and in the app in a real browser: is each lesson at the speed of talk?

    python bench/lesson_speed.py [--rows sentiment,facts,probe,which,chat,cold] [--reps 3]
                                 [--headless-only | --app-only] [--app-which] [--quick]
                                 [--out bench/out/lesson_speed.json]

Rows (issue 22, "Targets"):
  sentiment  "LoRA on sentiment": Start -> result card, the lesson's own preset (core.lessons), and
             its validation accuracy
  facts      "Fix a hallucination": Start -> result card, and the probe's paraphrase / general scores
  probe      the hallucination probe, base + tuned, every question (core.probe), on that run: the
             first probe on a fresh server (the base answers' cache cold) and a later one (warm)
  which      "Which method wins?" (core.experiments preset, every run): total wall time, each run's
             accuracy and its "still rising" flag; in the app only with --app-which (it is long)
  chat       one chat turn, both panes (the Compare page's first example, its shipped defaults: Max
             new tokens and Short answers, core.chat_stream): time to the first streamed words and to
             the full answer, and why each pane's answer ended
  cold       a fresh server (health answers) -> Learn content visible / Train form usable, in Chromium

Headless: each repetition is a fresh child process (`--child`, below) calling the core API as the
app's worker does (core.train.run, core.infer.RunModel, core.probe.probe), model loading included and
reported apart, with the phases read from the run's own events. The facts, probe and chat rows are one
lecture: a child trains the facts lesson, loads the run's model, probes it and chats with it, in that
order, as a lecturer does on one server. In the app: a fresh `streamlit run app.py` per repetition
(bench/appserver.py), one Chromium page at 1280x720 opening the shipped lesson links
(/train?lesson=..., /experiments?lesson=...) and clicking what a lecturer clicks (bench/lesson_app.py).
Headless and app alternate per repetition (bench/common.pair_order). Fewer than 3 repetitions, or
--quick (tiny budgets: 2 steps, 4 probe questions, 8 new tokens; the CI smoke test), label every
table NOT A RESULT. Writes --out (JSON) and the same name with .md (the table for BENCHMARKS.md).

The figures (a quiet 2-core machine; PLAYGROUND_CACHE_DIR holding the converted SmolLM2), a row group
at a time so that one failure costs little; minutes are rough, before -> after issue 22's targets:
    python bench/lesson_speed.py --rows sentiment --reps 3                  #  5-10 min
    python bench/lesson_speed.py --rows facts,probe,chat --reps 3           # 15-40 min (one lecture a rep)
    python bench/lesson_speed.py --rows cold --reps 3                       #  2-4 min
    python bench/lesson_speed.py --rows which --reps 3 --headless-only      # 12-32 min
    python bench/lesson_speed.py --rows which --reps 3 --app-only --app-which   # 12-32 min
(each with --out bench/out/lesson_speed_<group>.json to keep the tables apart).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench import common  # noqa: E402
from core.chat_stream import CHAT_MAX_NEW_TOKENS, SHORT_ANSWERS  # noqa: E402  (no torch import)

ROWS = ("sentiment", "facts", "probe", "which", "chat", "cold")
TITLES = {"sentiment": '"LoRA on sentiment": Start -> result card',
          "facts": '"Fix a hallucination": Start -> result card',
          "probe": "hallucination probe (base + tuned, all questions)",
          "which": '"Which method wins?" (every run of the preset)',
          "chat": "chat turn, both panes: first words / full answer",
          "cold": "cold start: server up -> Learn content / Train form usable"}
TARGETS = {"sentiment": "<= 45 s, accuracy >= now", "facts": "<= 60 s; paraphrases >= 85 %, general >= 95 %",
           "probe": "<= 30 s", "which": "<= 4 min, each method converged", "chat": "first words <= 1 s, full <= 4 s",
           "cold": "<= 2 s / <= 5 s, never blank"}
LESSONS = {"sentiment": "lora_sentiment", "facts": "fix_hallucination", "which": "which_method"}
MIN_REPS = 3
# The Compare page's chat defaults (core.chat_stream: the "Max new tokens" slider and the "Short
# answers" toggle start there, temperature 0); the app side reads the slider it actually shows and
# records it. Before 2026-12-07 14:00 UTC the default was 128 tokens without short answers.
CHAT_TOKENS = CHAT_MAX_NEW_TOKENS
# --quick: a run of a few steps on a few rows, a probe of a few questions, a short answer.
QUICK_TRAIN = ["train.max_steps=2", "data.n_samples=32", "train.eval_max_rows=16"]
QUICK_PROBE = {"limit": 4, "max_new_tokens": 8}
QUICK_CHAT_TOKENS = 8


# ------------------------------------------------------------------------------ where the time went

def phases_from_metrics(run_dir: str) -> dict:
    """Seconds per phase of a run, from its own metrics.jsonl ("phase" and "start" events carry the
    time they began): loading data / loading model / tokenising / training / saving (incl. the
    latency measurement). The same reader for a headless run and one the app started."""
    from core import runs
    try:
        events = runs.read_metrics(run_dir)
    except Exception:
        return {}
    marks = [(e["time"], e.get("phase") if e.get("type") == "phase" else "training")
             for e in events if e.get("type") in ("phase", "start", "end") and isinstance(e.get("time"), (int, float))]
    ends = [e["time"] for e in events if e.get("type") == "end" and isinstance(e.get("time"), (int, float))]
    out = {}
    for (t, name), nxt in zip(marks, marks[1:] + [(ends[-1] if ends else None, None)]):
        if name and nxt[0] is not None:
            out[name] = round(out.get(name, 0.0) + nxt[0] - t, 2)
    return out


def eval_accuracies(run_dir: str) -> list:
    from core import runs
    try:
        return [e.get("eval_accuracy") for e in runs.read_metrics(run_dir) if e.get("type") == "eval"]
    except Exception:
        return []


def run_facts(run_dir: str) -> dict:
    """A finished run's summary figures a row reports."""
    try:
        with open(os.path.join(run_dir, "summary.json"), encoding="utf-8") as fh:
            s = json.load(fh)
    except (OSError, ValueError):
        return {}
    final = s.get("final") or {}
    return {"accuracy": final.get("eval_accuracy"), "eval_loss": final.get("eval_loss"), "n_train": s.get("n_train"),
            "n_val": s.get("n_val"), "steps": s.get("steps"), "threads": s.get("threads"),
            "precision": s.get("precision"), "train_time_s": s.get("train_time_s"), "wall_time_s": s.get("wall_time_s"),
            "samples_per_second": s.get("samples_per_second"), "phases_s": phases_from_metrics(run_dir)}


def probe_scores(result: dict) -> dict:
    return {f"{view}_{part}": result[view][part]["score"] for view in ("base", "tuned") for part in ("facts", "general")}


def probe_answers(result: dict) -> list[str]:
    return [i["answer"] for view in ("base", "tuned") for part in ("facts", "general") for i in result[view][part]["items"]]


def chat_prompt(cfg) -> str:
    """The Compare page's first example button for a run of this config (core.data.example_inputs,
    the page's own rule): the app side clicks it, so both sides ask the same question."""
    from core import data
    return data.example_inputs(cfg.to_dict()["data"], cfg.data.task, cfg.train.seed)[0]


# ------------------------------------------------------------------------------ headless children

def _lesson_config(key: str, quick: bool):
    from core import lessons
    cfg = lessons.get(key).preset()  # what the Train page loads for the lesson link, on this machine
    return cfg.with_overrides(QUICK_TRAIN) if quick else cfg


def _timed_run(cfg, run_dir: str) -> dict:
    """core.train.run as the worker calls it, timed from the call (model loading included)."""
    from core.train import run
    t0 = time.perf_counter()
    run(cfg, run_dir)
    return {"start_to_result_s": round(time.perf_counter() - t0, 2), "run_dir": run_dir, **run_facts(run_dir)}


def child_lesson(spec: dict) -> dict:
    t0 = time.perf_counter()
    import torch
    import transformers  # noqa: F401 - imported before the clock, as a warm app server has it
    import core.train  # noqa: F401
    out = {"import_s": round(time.perf_counter() - t0, 2), "torch_threads": torch.get_num_threads()}
    cfg = _lesson_config(spec["lesson"], spec["quick"])
    with common.evaluation_clock() as evals:
        out.update(_timed_run(cfg, spec["run_dir"]))
    out["eval_s"] = round(evals[0], 2)
    if not (spec.get("probe") or spec.get("chat")):
        return out
    from core import probe
    from core.infer import RunModel
    t = time.perf_counter()
    model = RunModel(spec["run_dir"])
    out["model_load_s"] = round(time.perf_counter() - t, 2)
    if spec.get("probe"):
        facts = probe.probe_facts(cfg.data.source.split(":", 1)[-1])
        kw = QUICK_PROBE if spec["quick"] else {}
        # The page keeps the base model's answers per server (core.probe.BaseAnswerCache): the first
        # probe on a fresh server (cache cold) and a later one (warm: another student's run on the same
        # base asks only the tuned view) are separate figures. A fresh cache folder per repetition.
        cache = probe.BaseAnswerCache(spec["run_dir"] + "-probe-cache")
        t = time.perf_counter()
        result = probe.probe(model, facts=facts, base_cache=cache, **kw)
        out["probe_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        warm = probe.probe(model, facts=facts, base_cache=cache, **kw)
        out["probe_warm_s"] = round(time.perf_counter() - t, 2)
        out["probe_warm_alike"] = sum(a == b for a, b in zip(probe_answers(result), probe_answers(warm)))
        out["probe_questions"] = 2 * (result["base"]["facts"]["n"] + result["base"]["general"]["n"])
        out["probe_scores"] = probe_scores(result)
    if spec.get("chat"):
        out["chat"] = chat_turn(model, chat_prompt(cfg), QUICK_CHAT_TOKENS if spec["quick"] else CHAT_TOKENS)
    return out


def chat_turn(model, prompt: str, max_new_tokens: int) -> dict:
    """Both panes, as the Compare page streams them (RunModel.generate_views_stream): seconds from
    the send to each pane's first non-blank piece and to its end."""
    t0 = time.perf_counter()
    first, text, done, endings = {}, {"base": [], "tuned": []}, {}, {}
    for pane, piece in model.generate_views_stream(prompt, {}, {"base": False, "tuned": True},
                                                   max_new_tokens=max_new_tokens, temperature=0.0,
                                                   short=SHORT_ANSWERS, endings=endings):
        if piece is None:
            done[pane] = time.perf_counter() - t0
            continue
        if pane not in first and piece.strip():
            first[pane] = time.perf_counter() - t0
        text[pane].append(piece)
    panes = {p: {"first_words_s": round(first[p], 3) if p in first else None,
                 "done_s": round(done.get(p, time.perf_counter() - t0), 3), "chars": len("".join(text[p]).strip()),
                 "ended_by": endings.get(p)}
             for p in ("base", "tuned")}
    return {"prompt": prompt, "max_new_tokens": max_new_tokens, "short_answers": SHORT_ANSWERS, "first_words_s": panes["base"]["first_words_s"],
            "full_answer_s": max(panes[p]["done_s"] for p in panes), "panes": panes}


def child_which(spec: dict) -> dict:
    t0 = time.perf_counter()
    import torch
    import core.train  # noqa: F401
    from core import experiments, runs
    out = {"import_s": round(time.perf_counter() - t0, 2), "torch_threads": torch.get_num_threads()}
    configs = experiments.preset_runs(spec["preset"])
    if spec["quick"]:
        configs = [c.with_overrides(QUICK_TRAIN) for c in configs]
    from core.train import run
    t = time.perf_counter()
    folders = []
    for cfg in configs:  # one after another, as the app's single CPU worker takes them
        folders.append(runs.create_run(cfg, owner="", process=runs.process_token()))
        run(cfg, folders[-1])
    out["total_s"] = round(time.perf_counter() - t, 2)
    out["runs"] = [which_run(cfg.method.name, folder) for cfg, folder in zip(configs, folders)]
    return out


def which_run(method: str, run_dir: str) -> dict:
    """One run of the race: its accuracy, and core.experiments' verdict on its own curve (a run
    called without the job queue has no "completed" status for experiments.results to read)."""
    from core import experiments
    facts = run_facts(run_dir)
    return {"method": method, "accuracy": facts.get("accuracy"), "train_time_s": facts.get("train_time_s"),
            "wall_time_s": facts.get("wall_time_s"), "n_train": facts.get("n_train"), "steps": facts.get("steps"),
            "evaluations": len(eval_accuracies(run_dir)),
            "still_rising": experiments.still_rising(eval_accuracies(run_dir))}


CHILDREN = {"lesson": child_lesson, "which": child_which}


def headless(spec: dict, runs_dir: str, timeout: float) -> dict:
    r = common.run_child([common.PY, os.path.abspath(__file__), "--child", json.dumps(spec)], timeout=timeout,
                         env={"PLAYGROUND_RUNS_DIR": runs_dir})
    if r["_rc"] != 0:
        return {"error": (r.get("_stderr_tail") or f"exit status {r['_rc']}")[-1500:], "process_s": r["_wall_s"]}
    return {**{k: v for k, v in r.items() if not k.startswith("_")}, "process_s": r["_wall_s"],
            "loadavg": r["_loadavg"]}


# ------------------------------------------------------------------------------ the table

def figure(reps: list[dict], key: str) -> dict:
    """Median and range over the repetitions that have the figure."""
    vals = []
    for rep in reps:
        v = rep
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            vals.append(float(v))
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(vals), 3), "min": round(min(vals), 3), "max": round(max(vals), 3),
            "n": len(vals)}


def fig_text(f: dict, unit: str = " s", pct: bool = False) -> str:
    if not f["n"]:
        return "n/a"
    fmt = (lambda x: f"{100 * x:.1f} %") if pct else (lambda x: f"{x:.3g}{unit}")
    return fmt(f["median"]) + (f" ({fmt(f['min'])}–{fmt(f['max'])}, n={f['n']})" if f["n"] > 1 else " (n=1)")


def where_time_went(reps: list[dict]) -> str:
    """Median seconds of each phase over the repetitions (the first repetition's phase names)."""
    names = next((list(r["phases_s"]) for r in reps if r.get("phases_s")), [])
    parts = [f"{n} {figure(reps, 'phases_s.' + n)['median']:.1f}" for n in names
             if figure(reps, "phases_s." + n)["n"]]
    extra = [("eval_s", "evaluations (within training)"), ("import_s", "imports (before the clock)"),
             ("queue_s", "click -> first event"),
             ("open_compare_s", "click Compare -> page ready (run model load)"),
             ("probe_server_s", "first probe's answers in the server"),
             ("probe_warm_server_s", "later probe's answers in the server"),
             ("chat.panes.base.done_s", "base pane done at")]
    parts += [f"{lbl} {figure(reps, k)['median']:.1f}" for k, lbl in extra if figure(reps, k)["n"]]
    return "; ".join(parts)


SUMMARIES = {  # row -> [(column label, figure key, percent?)]
    "sentiment": [("Start -> result card", "start_to_result_s", False), ("validation accuracy", "accuracy", True)],
    "facts": [("Start -> result card", "start_to_result_s", False),
              ("paraphrases (tuned)", "probe_scores.tuned_facts", True),
              ("general (tuned)", "probe_scores.tuned_general", True)],
    "probe": [("first probe (base answers' cache cold)", "probe_s", False),
              ("later probe (cache warm: tuned view only)", "probe_warm_s", False),
              ("run model load (Compare opens)", "model_load_s", False)],
    "which": [("total", "total_s", False)],
    "chat": [("first words", "chat.first_words_s", False), ("full answer", "chat.full_answer_s", False)],
    "cold": [("Learn content", "learn_s", False), ("Train form usable", "train_s", False),
             ("first paint", "first_paint_s", False)],
}


def summarise(results: dict) -> list[dict]:
    table = []
    for row, sides in results.items():
        for side, reps in sides.items():
            good = [r for r in reps if "error" not in r]
            cells = [f"{label} {fig_text(figure(good, key), pct=pct)}" for label, key, pct in SUMMARIES[row]
                     if figure(good, key)["n"]]
            if row == "which":
                cells += [_which_runs(good)]
            if row == "cold":
                seen = [r.get("engine_note_seen") for r in good if r.get("engine_note_seen") is not None]
                cells += [f"'loading the engine' note seen in {sum(seen)}/{len(seen)}"] if seen else []
            table.append({"row": TITLES[row], "side": side, "reps": f"{len(good)}/{len(reps)}",
                          "figures": "; ".join(cells) or "no figures",
                          "where": where_time_went(good), "target": TARGETS[row],
                          "errors": "; ".join(r["error"].strip().splitlines()[-1][:160] for r in reps if "error" in r)})
    return table


def _which_runs(reps: list[dict]) -> str:
    methods = {}
    for rep in reps:
        for run in rep.get("runs") or []:
            methods.setdefault(run.get("method"), []).append(run)
    parts = []
    for method, runs in methods.items():
        acc = figure(runs, "accuracy")
        rising = sum(bool(r.get("still_rising")) for r in runs)
        wall = figure(runs, "wall_time_s")
        parts.append(f"{method} {fig_text(acc, pct=True)}" + (f" in {wall['median']:.0f} s" if wall["n"] else "")
                     + (f", still rising in {rising}/{len(runs)}" if rising else ""))
    return "per run: " + ", ".join(parts)


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=common.ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=common.ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+uncommitted changes" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# ------------------------------------------------------------------------------ main

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, of {', '.join(ROWS)}")
    ap.add_argument("--reps", type=int, default=MIN_REPS)
    side = ap.add_mutually_exclusive_group()
    side.add_argument("--headless-only", action="store_true")
    side.add_argument("--app-only", action="store_true")
    ap.add_argument("--app-which", action="store_true", help="also run 'Which method wins?' in the app (long)")
    ap.add_argument("--quick", action="store_true", help="tiny budgets: a smoke run, NOT A RESULT")
    ap.add_argument("--out", default=None, help="JSON path (default bench/out/<name>.json); the table goes "
                    "beside it as .md")
    ap.add_argument("--name", default="lesson_speed", help="the output's name when --out is not given (run_all)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds allowed for one repetition of a row")
    ap.add_argument("--chromium", default=os.environ.get("PLAYGROUND_CHROMIUM", "/usr/bin/chromium"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown or not args.rows:
        ap.error(f"unknown row(s) {unknown}; choose from {', '.join(ROWS)}")
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    args.out = args.out or os.path.join(common.out_dir(), f"{args.name}.json")
    return args


def sides_of(row: str, args) -> list[str]:
    sides = [] if args.app_only else ["headless"]
    if not args.headless_only and (row != "which" or args.app_which):
        sides.append("app")
    return [s for s in sides if not (row == "cold" and s == "headless")]  # a cold start is a browser's


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["kind"]](spec)), flush=True)
        return {}
    import torch
    record, load_before = common.machine_record(), common.loadavg()
    tmp = tempfile.mkdtemp(prefix="lesson-speed-")
    results: dict[str, dict[str, list]] = {row: {s: [] for s in sides_of(row, args)} for row in args.rows}
    results = {row: sides for row, sides in results.items() if sides}
    facts_rows = [r for r in ("facts", "probe", "chat") if r in results]
    app = None
    if any("app" in sides for sides in results.values()):
        from bench import lesson_app
        app = lesson_app.App(tmp, args.chromium, args.timeout, args.quick)
    for rep in range(args.reps):
        for row in ("sentiment", "facts", "which", "cold"):
            group = facts_rows if row == "facts" else [row] if row in results else []
            if not group:
                continue
            sides = sorted({s for r in group for s in results[r]}, key=["headless", "app"].index)
            for side in common.pair_order(rep, sides):
                t = time.perf_counter()
                out = (measure_headless(row, group, rep, tmp, args) if side == "headless"
                       else app.measure(row, group, rep))
                for r, value in out.items():
                    if side in results[r]:
                        results[r][side].append({"rep": rep, **value})
                print(f"rep {rep} {side} {'+'.join(group)}: {time.perf_counter() - t:.0f} s "
                      + json.dumps({r: _brief(v) for r, v in out.items()}), file=sys.stderr, flush=True)
    table = summarise(results)
    payload = {"quick": args.quick, "reps": args.reps, "rows": args.rows, "commit": commit(),
               "torch_threads": torch.get_num_threads(), "cpu": record["cpu"], "date": record["date"],
               "machine": record, "loadavg_before": load_before, "loadavg_after": common.loadavg(),
               "args": {k: v for k, v in vars(args).items() if k not in ("child", "name")}, "results": results, "table": table}
    md = markdown(payload, record, load_before)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, default=str)
    with open(os.path.splitext(args.out)[0] + ".md", "w", encoding="utf-8") as fh:
        fh.write(md)
    print(md)
    return payload


def _brief(value: dict) -> dict:
    keys = ("error", "start_to_result_s", "accuracy", "probe_s", "probe_warm_s", "total_s", "learn_s", "train_s")
    out = {k: value[k] for k in keys if k in value}
    if "chat" in value:
        out["chat"] = {k: value["chat"].get(k) for k in ("first_words_s", "full_answer_s")}
    return out


def measure_headless(row: str, group: list[str], rep: int, tmp: str, args) -> dict:
    runs_dir = os.path.join(tmp, "headless-runs")
    if row == "which":
        return {"which": headless({"kind": "which", "preset": LESSONS["which"], "quick": args.quick}, runs_dir,
                                  args.timeout)}
    spec = {"kind": "lesson", "lesson": LESSONS[row], "quick": args.quick,
            "run_dir": os.path.join(runs_dir, f"{row}-{rep}"), "chat": "chat" in group,
            "probe": bool({"probe", "facts"} & set(group)) and row == "facts"}
    out = headless(spec, runs_dir, args.timeout)
    return {row: out} if row != "facts" else split_lecture(out, group)


GENERATION_KEYS = ("model_load_s", "probe_s", "probe_warm_s", "probe_warm_alike", "probe_questions", "probe_scores",
                   "chat")


def split_lecture(out: dict, group: list[str]) -> dict:
    """One facts lecture (train, open Compare, probe, chat) as the rows it measured: the training
    figures to "facts", the probe's and the chat's own to theirs."""
    if "error" in out:
        return {r: out for r in group}
    common_keys = {k: out[k] for k in ("loadavg", "process_s", "torch_threads", "threads", "run_dir") if k in out}
    rows = {"facts": {k: v for k, v in out.items() if k not in GENERATION_KEYS or k == "probe_scores"},
            "probe": {**common_keys, **{k: out[k] for k in ("model_load_s", "probe_s", "probe_warm_s",
                                                            "probe_warm_alike", "probe_questions", "probe_scores")
                                        if k in out}},
            "chat": {**common_keys, **{k: out[k] for k in ("model_load_s", "chat") if k in out}}}
    return {r: rows[r] for r in group}


def markdown(payload: dict, record: dict, load_before: float) -> str:
    not_result = payload["quick"] or payload["reps"] < MIN_REPS
    head = common.protocol_header(record, load_before, payload["loadavg_after"], quick=not_result)
    if not_result and not payload["quick"]:
        head = head.replace("tiny sizes", f"{payload['reps']} repetition(s), fewer than {MIN_REPS}")
    return (head + f"Lessons at the speed of talk (`python bench/lesson_speed.py`), commit {payload['commit']}, "
            f"{payload['reps']} repetition(s) per side, torch threads {payload['torch_threads']} in the parent "
            "(each run's own in the JSON); median (range, n). App: a fresh server per repetition, Chromium at "
            "1280x720, the shipped lesson links.\n\n"
            + common.md_table(payload["table"], ["row", "side", "reps", "figures", "where", "target", "errors"],
                              ["what", "where", "reps ok", "measured", "where the time went (median s)", "target",
                               "errors"]) + "\n")


if __name__ == "__main__":
    main()
