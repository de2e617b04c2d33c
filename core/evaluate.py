"""Score a finished run on a labelled JSON Lines file, headless.

    python -m core.evaluate --run RUN_DIR --data FILE.jsonl [--base] [--limit N]

Classification rows: {"text": ..., "label": ...}; the label is a class name of the run (or a raw
value its data.label_map names, or a class index). Prints the accuracy.
SFT rows: {"prompt": ..., "response": ..., "keywords": [...]} (response and keywords optional);
prints every answer beside the expected response and, when rows carry keywords, the share of
answers that contain them (all of a row's keywords by default, --keywords any for any of them).
The run's own column names (data.text_column, ...) are accepted as well. Output is one JSON
object on stdout; a problem is one `error:` line on stderr (exit 2).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from core.cli import cli_guard
from core.config import ConfigError
from core.data import read_jsonl
from core.probe import fact_hit, general_hit
from core.trainer_setup import quiet_library_logs


def _column(row: dict, names: list[str], what: str, row_no: int, name: str):
    for key in names:
        if key in row and row[key] is not None:
            return row[key]
    raise ConfigError(f"{name} line {row_no}: no {what} field (expected {' or '.join(repr(n) for n in names)}); "
                      f"fields found: {sorted(row)}")


def _label_index(raw, label_names: list[str], label_map: dict, row_no: int, name: str) -> int:
    """A row's label as the index of one of the run's classes."""
    text = str(raw).strip() if not isinstance(raw, bool) else str(raw).lower()
    text = label_map.get(text, text)
    if text in label_names:
        return label_names.index(text)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(label_names):
        return raw
    raise ConfigError(f"{name} line {row_no}: label {raw!r} is not a class of this run; "
                      f"its classes are {label_names}")


def _keywords(row: dict) -> list[str]:
    value = row.get("keywords")
    if value is None:
        return []
    if isinstance(value, str):
        value = [k for k in value.split(",")]
    if not isinstance(value, list):
        return [str(value)]
    return [str(k).strip() for k in value if k is not None and str(k).strip()]


def read_rows(path: str, limit: int | None = None) -> list[dict]:
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise ConfigError(f"data file {path} does not exist")
    rows = read_jsonl(path)  # UTF-8 and JSON problems come back as one-line ConfigErrors
    if not rows:
        raise ConfigError(f"{name} has no rows")
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ConfigError(f"{name} line {i}: a row must be a JSON object, got {type(row).__name__}")
    return rows[:limit] if limit else rows


def evaluate_classification(rm, rows: list[dict], name: str, tuned: bool = True) -> dict:
    cfg = rm.cfg.data
    labels = list(rm.label_names or [])
    text_cols = list(dict.fromkeys(["text", cfg.text_column]))
    label_cols = list(dict.fromkeys(["label", cfg.label_column]))
    wanted = [(str(_column(r, text_cols, "text", i, name)),
               _label_index(_column(r, label_cols, "label", i, name), labels, cfg.label_map, i, name))
              for i, r in enumerate(rows, 1)]  # every row checked before the model runs
    correct = 0
    per_class = {n: {"n": 0, "correct": 0} for n in labels}
    predictions = []
    for text, want in wanted:
        probs = rm.classify(text, tuned=tuned)
        pred = max(range(len(labels)), key=lambda k: probs[labels[k]])
        correct += int(pred == want)
        per_class[labels[want]]["n"] += 1
        per_class[labels[want]]["correct"] += int(pred == want)
        predictions.append({"text": text, "label": labels[want], "predicted": labels[pred],
                            "probability": round(float(probs[labels[pred]]), 6)})
    return {"n": len(wanted), "correct": correct, "accuracy": correct / len(wanted), "label_names": labels,
            "per_class": {k: {**v, "accuracy": v["correct"] / v["n"] if v["n"] else None}
                          for k, v in per_class.items()},
            "predictions": predictions}


def evaluate_sft(rm, rows: list[dict], name: str, tuned: bool = True, max_new_tokens: int = 64,
                 mode: str = "all") -> dict:
    judge = fact_hit if mode == "all" else general_hit
    cfg = rm.cfg.data
    prompt_cols = list(dict.fromkeys(["prompt", cfg.prompt_column]))
    response_cols = list(dict.fromkeys(["response", cfg.response_column]))
    prompts = [str(_column(r, prompt_cols, "prompt", i, name)) for i, r in enumerate(rows, 1)]
    answers, scored, hits = [], 0, 0
    for prompt, row in zip(prompts, rows):
        answer = rm.generate(prompt, tuned=tuned, max_new_tokens=max_new_tokens)
        expected = next((row[c] for c in response_cols if row.get(c) is not None), None)
        item = {"prompt": prompt, "answer": answer, "expected": expected}
        keywords = _keywords(row)
        if keywords:
            item["keywords"] = keywords
            item["keyword_hit"] = judge(answer, keywords)
            scored += 1
            hits += int(item["keyword_hit"])
        answers.append(item)
    out = {"n": len(answers), "answers": answers}
    if scored:
        out.update(keyword_rows=scored, keyword_hits=hits, keyword_accuracy=hits / scored, keyword_mode=mode)
    return out


def evaluate(run_dir: str, data_path: str, tuned: bool = True, limit: int | None = None,
             max_new_tokens: int = 64, keyword_mode: str = "all") -> dict:
    from core.infer import RunModel  # loads torch: only once a run is scored
    if not os.path.isdir(run_dir):
        raise ConfigError(f"run folder {run_dir} does not exist")
    rows = read_rows(data_path, limit)
    rm = RunModel(run_dir)
    name = os.path.basename(data_path)
    if rm.task == "classification":
        result = evaluate_classification(rm, rows, name, tuned)
    else:
        result = evaluate_sft(rm, rows, name, tuned, max_new_tokens, keyword_mode)
    return {"run_dir": run_dir, "data": data_path, "task": rm.task, "view": "tuned" if tuned else "base",
            "method": rm.cfg.method.name, "model": rm.cfg.model.name, **result}


def quiet_libraries() -> None:
    """Only our JSON on stdout and our `error:` line on stderr: no load bars or library notices."""
    import warnings
    quiet_library_logs()
    warnings.simplefilter("ignore", FutureWarning)
    warnings.simplefilter("ignore", UserWarning)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.evaluate", description="Score a finished run on a labelled file.")
    ap.add_argument("--run", required=True, help="the run's folder (runs/<id>)")
    ap.add_argument("--data", required=True, help="JSON Lines: text/label rows, or prompt/response[/keywords] rows")
    ap.add_argument("--base", action="store_true", help="score the base model instead of the tuned one")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N rows")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="answer length for sft runs")
    ap.add_argument("--keywords", choices=("all", "any"), default="all",
                    help="an answer hits when it contains all (default) or any of its row's keywords")
    args = ap.parse_args(argv)

    def work() -> int:
        quiet_libraries()
        if args.limit is not None and args.limit < 1:
            raise ConfigError(f"--limit={args.limit} must be a whole number >= 1")
        if not 1 <= args.max_new_tokens <= 4096:
            raise ConfigError(f"--max-new-tokens={args.max_new_tokens} is out of range; allowed: in [1, 4096]")
        result = evaluate(args.run, args.data, tuned=not args.base, limit=args.limit,
                          max_new_tokens=args.max_new_tokens, keyword_mode=args.keywords)
        print(json.dumps(result, ensure_ascii=False))
        return 0

    return cli_guard(work)


if __name__ == "__main__":
    sys.exit(main())
