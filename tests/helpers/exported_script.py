"""Run an exported training script the way a person would: a fresh interpreter, no app on the path."""
from __future__ import annotations

import os
import re
import subprocess
import sys


def run_exported(script: str, tmp_path) -> tuple[float, str]:
    """(the script's own final training loss, its stdout); fails the test if the script fails."""
    path = tmp_path / "exported.py"
    path.write_text(script, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    out = subprocess.run([sys.executable, str(path)], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    found = re.search(r"final training loss: (\S+)", out.stdout)
    assert found, out.stdout[-2000:]
    return float(found.group(1)), out.stdout
