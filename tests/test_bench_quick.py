"""Smoke test of the headline benchmarks: `bench/run_all --quick --only headline` runs the studies
BENCHMARKS.md's first three sections come from, at tiny sizes, and their figures pass the sanity
checks (bench/run_all.py: SANITY) and are labelled as not a result. No timing assertions: CI machines
are noisy. A few minutes on 2 quiet cores; the other studies run in `bench/run_all --quick`."""
from __future__ import annotations

import json
import math
import os
import subprocess

import pytest

from conftest import needs_imdb_sample

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
@needs_imdb_sample
def test_run_all_quick_headline_figures_are_sane(tmp_path):
    from bench.run_all import HEADLINE
    out = tmp_path / "bench-out"
    proc = subprocess.run([os.path.join(ROOT, "bench", "run_all"), "--quick", "--only", "headline", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SANITY" not in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert set(results["studies"]) == set(HEADLINE)
    assert {k: v["status"] for k, v in results["studies"].items()} == {k: "ok" for k in HEADLINE}
    assert all(v["sanity"] == [] for v in results["studies"].values())

    imdb = json.loads((out / "imdb_report_quick.json").read_text())
    row = imdb["table"][0]
    assert row["n_test"] == 64 and 0.0 <= row["test_accuracy"] <= 1.0
    assert row["test_fingerprint"] == "66084e919a18"  # the documented test part, not some other rows

    facts = json.loads((out / "facts_probe_quick.json").read_text())
    sets = {(r["split"], r["set"]) for r in facts["table"]}
    assert ("test", "fresh paraphrases") in sets and ("test", "broad general") in sets
    assert all(0.0 <= r["base_score"] <= 1.0 and 0.0 <= r["tuned_score"] <= 1.0 for r in facts["table"])

    evt = json.loads((out / "engine_vs_tutorial_quick.json").read_text())
    assert {r["who"] for r in evt["runs"]} == {"tutorial", "engine", "shipped"}
    ratio = evt["steps_ratio"]["median"]
    assert math.isfinite(ratio) and ratio > 0
    for r in evt["runs"]:  # both sides on equal terms, and each evaluated inside training
        assert r["precision"] == evt["runs"][0]["precision"] and r["torch_threads"] == 1
        assert 0 < r["train_steps_s"] <= r["_wall_s"] and r["curve"]
    for name in HEADLINE:  # every table says it is a smoke run
        assert "NOT A RESULT" in (out / f"{name}_quick.md").read_text()
