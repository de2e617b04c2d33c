"""Smoke test of the benchmark suite: `bench/run_all --quick`, every study, runs and writes its
tables. No timing assertions: CI machines are noisy."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from conftest import needs_imdb_sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@needs_imdb_sample
def test_run_all_quick_writes_tables(tmp_path):
    from bench.run_all import STUDIES
    out = tmp_path / "bench-out"
    # the whole quick mode, as a user would run it: about 6 minutes on 2 cores
    proc = subprocess.run([os.path.join(ROOT, "bench", "run_all"), "--quick", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=2400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["matmul"]["flops"] > 0
    assert set(results["studies"]) == set(STUDIES)
    failed = {k: v for k, v in results["studies"].items() if v["status"] != "ok"}
    assert not failed, failed
    md = (out / "results.md").read_text()
    for name in STUDIES:
        assert f"## {name}" in md
    assert md.count("|---|") >= len(STUDIES)  # one table per study
    memory = json.loads((out / "memory_quick.json").read_text())
    assert {r["method"] for r in memory["table"]} == {"full", "linear_head", "lora"}
    assert all(r["rc"] == 0 and r["peak_rss_mb"] > 0 for r in memory["table"])
    # each row's floor is the same job on the model's tiny twin, and the third run lets glibc return memory
    for row in memory["table"]:
        assert not {"floor_error", "prompt_free_error", "prompt_free_floor_error"} & set(row), row
        assert 0 < row["run_floor_mb"] < row["peak_rss_mb"] and row["prompt_free_peak_rss_mb"] > 0
    accuracy = json.loads((out / "accuracy_methods_quick.json").read_text())
    assert all(r["rc"] == 0 and 0.0 <= r["accuracy"] <= 1.0 for r in accuracy["table"])
    # the app started in a real browser and the same run headless, one pair
    browser = json.loads((out / "app_browser_vs_headless_quick.json").read_text())
    assert {r["side"] for r in browser["rows"]} == {"app", "headless"}
    assert all(r["samples_per_second"] > 0 for r in browser["rows"])
    assert browser["ratios"] and browser["ratios"][0] > 0
