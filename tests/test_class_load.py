"""Smoke test of bench/class_load.py --quick: three students (one in a real browser) submit a run each
over the app's websocket and poll until it ends. No timing assertions: the machine is shared."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers.browser import ROOT  # skips this file where chromium or Playwright is missing


@pytest.mark.slow
@pytest.mark.e2e
def test_class_load_quick_reports_every_student(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "class_load.py"), "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    report = result["reports"][0]
    assert report["n_errors"] == 0, report["errors"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (report["mode"], report["students"], report["browsers"], report["completed"]) == ("1worker", 3, 1, 3)
    assert all(s["state"] == "completed" and s["finish_s"] > 0 and s["wait_s"] >= 0 for s in report["per_student"])
    assert report["page_s"]["n"] >= 3 and report["page_s"]["p50"] > 0
    assert report["runs_per_hour"] > 0
    assert json.loads((tmp_path / "class_load_quick.json").read_text()) == result
