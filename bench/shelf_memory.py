"""The estimator's GPU training memory for every GPU-shelf model x method (BENCHMARKS.md).

    python bench/shelf_memory.py [--dtype bfloat16|float16] [--batch N] [--seq-len N]

These are core.estimate's figures from the shipped configs, not measurements: on a GPU,
bench/gpu_check.py prints measured peaks beside them. Each model runs its shelf recipe (batch
and input length of its GPU preset; LoRA r=16 on the preset's targets) unless told otherwise;
"need" adds the shelf's fit margin and CUDA context, which is what a card's free memory must hold
for the shelf to offer the model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core import estimate, gpu_shelf  # noqa: E402

METHODS = ("full", "lora", "lora+gc", "qlora", "ia3", "prompt_tuning", "prefix_tuning", "linear_head")


def figures(entry: gpu_shelf.ShelfEntry, method: str, dtype: str, batch: int | None, seq_len: int | None) -> dict:
    cfg = gpu_shelf.recipe(entry)
    name = method.removesuffix("+gc")
    targets = ",".join(entry.lora_targets)
    kwargs = {"r": 16, "targets": targets} if name in ("lora", "qlora") else {}
    if name == "ia3":
        kwargs = {}  # peft's own IA3 targets
    b, s = batch or cfg.train.batch_size, seq_len or cfg.data.max_length
    mem = estimate.memory_estimate(entry.config(), name, batch_size=b, seq_len=s, task=cfg.data.task, dtype=dtype,
                                   device="cuda", flash_attention=True, gradient_checkpointing=method.endswith("+gc"),
                                   **kwargs)
    return {"batch": b, "seq_len": s, "task": cfg.data.task, **mem, "need": gpu_shelf.needed_bytes(mem["total"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16"))
    ap.add_argument("--batch", type=int, default=0, help="batch size for every model (default: its recipe's)")
    ap.add_argument("--seq-len", type=int, default=0, help="tokens per example (default: its recipe's)")
    args = ap.parse_args(argv)
    gb = lambda n: f"{n / 2**30:.2f}"
    print(f"core.estimate, {args.dtype} weights, SDPA attention, AdamW; GB = 2^30 bytes. ESTIMATES, not measurements.")
    print("| model | task, batch x tokens | method | weights | activations | grads + AdamW | total | need (x"
          f"{gpu_shelf.FIT_MARGIN} + {gpu_shelf.CUDA_CONTEXT_BYTES // 2**20} MB) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for entry in gpu_shelf.SHELF:
        for method in METHODS:
            f = figures(entry, method, args.dtype, args.batch or None, args.seq_len or None)
            print(f"| {entry.label.split(' (')[0]} | {f['task']}, {f['batch']} x {f['seq_len']} | {method} | "
                  f"{gb(f['weights'])} | {gb(f['activations'])} | {gb(f['gradients'] + f['optimizer'])} | "
                  f"{gb(f['total'])} | {gb(f['need'])} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
