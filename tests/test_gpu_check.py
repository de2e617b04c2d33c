"""bench/gpu_check.py --dry-run: every method and the GPU preset of "Fix a hallucination" run on CPU
against tiny random twins of the shelf configs (no downloads), and the table says pass."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # ~80 CPU-seconds: every method plus the lesson, on CI only
def test_gpu_check_dry_run_passes(tmp_path):
    env = {**os.environ, "PLAYGROUND_RUNS_DIR": str(tmp_path / "runs"), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.rstrip().endswith(("pass",)) or " FAIL " in line]
    checks = {line.split()[0] for line in rows}
    assert checks == {"full", "lora", "qlora", "prompt_tuning", "prefix_tuning", "ia3", "linear_head", "zero_shot",
                      "lesson"}
    assert all(line.rstrip().endswith("pass") for line in rows)
    lesson = next(line for line in rows if line.startswith("lesson"))
    assert "fix_hallucination (qwen2.5-0.5b" in lesson


def test_gpu_check_refuses_without_a_gpu():
    from bench import gpu_check
    if __import__("torch").cuda.is_available():
        return
    assert gpu_check.main([]) == 2  # a clear message, not a crash, on a machine without CUDA


def test_gpu_check_model_must_be_a_causal_shelf_model():
    from bench import gpu_check
    assert gpu_check.main(["--dry-run", "--model", "roberta-base"]) == 2


def test_shelf_memory_table_has_every_model_and_method(capsys):
    from bench import shelf_memory
    from core import gpu_shelf
    assert shelf_memory.main([]) == 0
    out = capsys.readouterr().out
    assert "ESTIMATES, not measurements" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert len(rows) == len(gpu_shelf.SHELF) * len(shelf_memory.METHODS)
    gc_rows = {line.split(" | ")[0]: line for line in rows if " | lora+gc | " in line}
    lora_rows = {line.split(" | ")[0]: line for line in rows if " | lora | " in line}
    for model, line in gc_rows.items():  # checkpointing lowers every total
        assert float(line.split(" | ")[6]) < float(lora_rows[model].split(" | ")[6])
