"""Command lines that re-run a run's config headless: one process, several GPUs, or torchrun.

    commands("runs/20261122-031501-lora-minilm-3f9a")   # a run folder: its config.json
    commands("examples/lora_sentiment.yaml")             # or a config file
    -> {"single": "python -m core.train --config …",
        "multi_gpu": "accelerate launch --config_file examples/accelerate/ddp.yaml -m core.train --config …",
        "torchrun": "torchrun --nproc_per_node 2 -m core.train --config …"}

The Runs page shows these for copy and paste. `train.batch_size` is per process: with N processes
each step sees N times as many rows, so halve it (with 2 processes) to keep a run's global batch.
Every process trains; only rank 0 writes the run folder (core.distributed).
"""
from __future__ import annotations

import os
import shlex

ACCELERATE_CONFIGS = {
    "ddp": "examples/accelerate/ddp.yaml",
    "deepspeed_zero2": "examples/accelerate/deepspeed_zero2.yaml",
    "fsdp": "examples/accelerate/fsdp.yaml",
}


def config_path(run_dir_or_config_path: str) -> str:
    """A run folder stands for its config.json; a file path is kept as given."""
    path = str(run_dir_or_config_path)
    if os.path.isdir(path):
        return os.path.join(path, "config.json")
    return path


def commands(run_dir_or_config_path: str, nproc: int = 2, accelerate_config: str = "ddp") -> dict[str, str]:
    """Shell commands (quoted for POSIX shells) that train the same config again, as a new run."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc={nproc!r} must be a whole number >= 1")
    config_file = ACCELERATE_CONFIGS.get(accelerate_config, accelerate_config)
    args = f"-m core.train --config {shlex.quote(config_path(run_dir_or_config_path))}"
    return {
        "single": f"python {args}",
        "multi_gpu": f"accelerate launch --config_file {shlex.quote(config_file)} {args}",
        "torchrun": f"torchrun --nproc_per_node {nproc} {args}",
    }
