"""Cold start (issue 22): Learn and the Train form draw before torch, transformers and peft are in.

* importing what app.py, pages/learn.py and pages/train.py import (read from their source, so a
  new import is covered) loads none of torch, transformers, peft;
* under AppTest, with the warm-up's torch import held back, Learn and the whole Train form (Start
  enabled) are drawn by script runs that never ask for torch; Train says the engine is loading
  meanwhile, then draws itself again with the estimate once the warm-up is done.

The real-browser check (a fresh server: the Train page shows the form or the loading note, never an
empty main area) is tests/test_cold_start_e2e.py.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("torch", "transformers", "peft")
FIRST_VIEW_SCRIPTS = ("app.py", "pages/learn.py", "pages/train.py")


def imported_modules(path: str) -> list[str]:
    """The modules a script imports at its top level (what running it imports before drawing)."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    names = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module != "__future__":
            names += [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_the_first_views_import_no_torch_transformers_or_peft():
    modules = sorted({m for path in FIRST_VIEW_SCRIPTS for m in imported_modules(path)})
    assert "pages.shared.train_inputs.model_section" in modules  # the parse found the Train form's parts
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n"
            "    try:\n"
            "        importlib.import_module(name)\n"
            "    except ModuleNotFoundError:\n"  # `from package import function`: the package is in
            "        importlib.import_module(name.rsplit('.', 1)[0])\n"
            f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stdout


# Run in a fresh interpreter: torch must not be imported yet. The warm-up thread's torch import waits
# until RELEASE_AFTER_S and then fails (no real torch: fast); any other thread asking for a heavy
# package before that is recorded, and refused, so a page that needs one shows it as an error.
APPTEST_SCRIPT = r"""
import json, sys, threading, time, traceback
sys.path.insert(0, ROOT)
HEAVY = {"torch", "transformers", "peft"}
early, released = [], threading.Event()


class HoldBackTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] not in HEAVY:
            return None
        if threading.current_thread().name == "playground-warm-up":
            time.sleep(RELEASE_AFTER_S)
            released.set()
        elif released.is_set() and REAL_AFTER_RELEASE:
            return None
        elif not released.is_set():
            where = [f"{f.filename.removeprefix(ROOT)}:{f.lineno}" for f in traceback.extract_stack()
                     if f.filename.startswith(ROOT) and "/.venv/" not in f.filename]
            early.append(f"{name} from {threading.current_thread().name} at {' < '.join(reversed(where))}")
        raise ImportError(f"{name} is held back by the test")


sys.meta_path.insert(0, HoldBackTorch())
if GPU_DRIVER:
    import core.device
    core.device.GPU_DRIVER_PATHS = (ROOT,)  # a path that exists: this machine "has" a GPU driver
from tests.helpers.apptest import open_app

at = open_app(PAGE, direct=True, query=QUERY, timeout=240)
start = [b for b in at.button if b.label == "Start training"]
print(json.dumps({
    "early": early, "released": released.is_set(), "exceptions": [e.value for e in at.exception],
    "headings": [h.value for h in at.title] + [h.value for h in at.subheader],
    "start": [not b.disabled for b in start], "metrics": [m.label for m in at.metric],
    "sidebar": [c.value for c in at.sidebar.caption] + [m.value for m in at.sidebar.markdown] +
               [e.value for e in at.sidebar.error],
}))
"""


def first_view(page: str | None, query: dict | None = None, real_torch_after: bool = False,
               gpu_driver: bool = False) -> dict:
    """What APPTEST_SCRIPT saw of `page` (None: Learn, the default) opened first in a fresh process.
    With `real_torch_after`, torch really imports once the warm-up's (failed) turn is over; with
    `gpu_driver`, the machine looks as if it had a GPU driver (core.device.gpu_driver_present)."""
    code = (f"ROOT = {ROOT!r}\nRELEASE_AFTER_S = 3.0\nPAGE = {page!r}\nQUERY = {query or {}!r}\n"
            f"REAL_AFTER_RELEASE = {real_torch_after!r}\nGPU_DRIVER = {gpu_driver!r}\n" + APPTEST_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                         env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["early"] == [], f"asked for before the warm-up had it: {seen['early']}"
    assert seen["exceptions"] == []
    # The warm-up was waited for at the end (the device line), and its failure is said in words.
    assert seen["released"]
    assert any("held back by the test" in text for text in seen["sidebar"]), seen["sidebar"]
    return seen


def test_learn_draws_while_torch_is_still_loading():
    seen = first_view(None)
    assert "Fine-tuning, and doing it cheaply" in seen["headings"], seen["headings"]


def test_the_train_form_draws_while_torch_is_still_loading():
    seen = first_view("pages/train.py")
    assert seen["start"] == [True], "Start training is missing or disabled"
    # The run that waited for the warm-up drew the page again, with the estimate (a CPU assumed:
    # the warm-up's device probe failed here).
    assert "Trainable parameters" in seen["metrics"], seen["metrics"]


def test_a_lesson_link_waits_for_torch_behind_the_note_not_in_the_script():
    """A lesson's model depends on the GPU (core.gpu_shelf asks torch): on a machine with a GPU
    driver Train waits for the warm-up, saying so, instead of importing torch itself at the same
    moment."""
    seen = first_view("pages/train.py", {"lesson": "lora_sentiment"}, real_torch_after=True, gpu_driver=True)
    assert seen["start"] == [True], "Start training is missing or disabled"


def test_a_lesson_link_on_a_machine_without_a_gpu_driver_draws_before_torch():
    """No GPU driver (the free CPU Space): there is no GPU for torch to find, so the lesson's CPU
    preset and its whole form draw while torch is still loading (no heavy import asked for early)."""
    seen = first_view("pages/train.py", {"lesson": "lora_sentiment"})
    assert seen["start"] == [True], "Start training is missing or disabled"
    assert "Trainable parameters" in seen["metrics"], seen["metrics"]


def test_the_warm_up_imports_peft_after_the_first_page_is_drawn(monkeypatch):
    """transformers and peft hold the interpreter lock for seconds while they import: a lesson link's
    Train form, drawn once torch is in, must not share it with them (app.py calls page_drawn())."""
    import threading
    import types

    import core.models
    from pages.shared import session
    imported, torch_in = [], threading.Event()
    monkeypatch.setattr(core.models, "device_summary", lambda: torch_in.set() or {"device": "cpu"})
    monkeypatch.setattr(session, "importlib", types.SimpleNamespace(import_module=imported.append))
    engine = session.Engine()
    engine.thread.start()
    assert engine.device_known.wait(10) and torch_in.is_set()
    engine.thread.join(0.5)
    assert imported == [] and engine.thread.is_alive(), "peft imported while the page was still drawing"
    engine.page_drawn.set()
    engine.thread.join(10)
    # then what the first run's worker would import after Start: the Trainer and the training loop
    assert imported == ["peft", "transformers.trainer", "core.loop"]
