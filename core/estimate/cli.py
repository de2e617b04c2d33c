"""python -m core.estimate: one method's counts and memory as JSON."""
from __future__ import annotations

import argparse
import json
import sys
from typing import NoReturn, Sequence

from core.estimate.configs import TASKS, list_models
from core.estimate.memory_bytes import DEVICES, DTYPE_BYTES, OPTIMIZER_STATE_BYTES, report
from core.estimate.method_kinds import METHODS


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: scripts and the UI show it as is.
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _parser() -> _Parser:
    p = _Parser(prog="python -m core.estimate",
                description="Parameter and memory estimate for a PEFT method, from a model config alone.")
    p.add_argument("--model", required=True, help=f"one of {list(list_models())} or a path to a config.json")
    p.add_argument("--method", default="lora", help=f"one of {list(METHODS)}")
    p.add_argument("--r", type=int, default=8, help="LoRA rank")
    p.add_argument("--targets", default=None, help="comma-separated module names, or all-linear")
    p.add_argument("--batch", type=int, default=8, help="batch size")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per example")
    p.add_argument("--dtype", default="float32", help=f"one of {list(DTYPE_BYTES)}")
    p.add_argument("--task", default=None, help=f"one of {list(TASKS)} (default: from the config)")
    p.add_argument("--num-labels", type=int, default=2)
    p.add_argument("--num-virtual-tokens", type=int, default=20)
    p.add_argument("--head-hidden", type=int, default=0)
    p.add_argument("--optimizer", default="adamw", help=f"one of {list(OPTIMIZER_STATE_BYTES)}")
    p.add_argument("--device", default="cuda", help=f"one of {list(DEVICES)} (cpu adds the allocator's workspace)")
    p.add_argument("--autocast", action="store_true", help="16-bit matmuls over float32 weights (mixed precision)")
    p.add_argument("--sdpa", action="store_true", help="attention through SDPA's kernels rather than eager")
    p.add_argument("--top-layers", type=int, default=0, help="LoRA on the last N blocks only (0: all)")
    p.add_argument("--gradient-checkpointing", action="store_true",
                   help="recompute each block in the backward pass instead of keeping its activations")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        result = report(args.model, args.method, r=args.r, targets=args.targets, batch_size=args.batch,
                        seq_len=args.seq_len, dtype=args.dtype, num_labels=args.num_labels,
                        num_virtual_tokens=args.num_virtual_tokens, head_hidden=args.head_hidden,
                        task=args.task, optimizer=args.optimizer, autocast=args.autocast, device=args.device,
                        flash_attention=args.sdpa, top_layers=args.top_layers,
                        gradient_checkpointing=args.gradient_checkpointing)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"model": args.model, **result}, indent=2))
    return 0
