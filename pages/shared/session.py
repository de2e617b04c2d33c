"""Who is asking (the owner token, admin), the process-wide job manager, and the background
import of torch/transformers/peft. No torch at import: pages import this on every rerun."""
from __future__ import annotations

import importlib
import os
import re
import secrets
import threading
import time
from collections.abc import Callable

import streamlit as st

from core.jobs import OPENMP_SPINCOUNT
from pages.shared.keys import ADMIN_TOKEN_KEY, GPU_PARTS_SKIPPED_KEY, OWNER_KEY

# libgomp reads it once, when torch loads: set here, before any page imports torch.
os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)

OWNER_COOKIE = "peft_playground_owner"  # pages/classroom.py writes it; see owner_id()
_OWNER_TOKEN = re.compile(r"[0-9a-f]{48}")


def owner_id() -> str:
    """The owner token of this browser: it owns the runs submitted from any of its tabs.

    Kept in a cookie (pages/classroom.remember_owner writes it), so a reload, a new tab or a browser
    restart on the same machine keeps the runs; not in the URL, which people share (a copied link
    would hand over Stop and Delete). 192 random bits: unguessable. A cookie that does not look like
    one of ours is ignored (hostile input), and without cookies it is one token per session."""
    if OWNER_KEY not in st.session_state:
        try:
            cookie = st.context.cookies.get(OWNER_COOKIE)
        except Exception:  # no request context (AppTest, a bare script run)
            cookie = None
        ok = isinstance(cookie, str) and _OWNER_TOKEN.fullmatch(cookie)
        st.session_state[OWNER_KEY] = cookie if ok else secrets.token_hex(24)
    return st.session_state[OWNER_KEY]


def manager():
    """The process-wide job manager. Each call also tells it this owner still has a page open
    (pages poll through here), so their queued runs are not dropped as abandoned."""
    from core import jobs
    mgr = jobs.get_manager()
    try:
        mgr.heartbeat(owner_id())
    except Exception:  # outside a script run there is no session: nothing to report
        pass
    return mgr


# What a run's worker imports after torch: peft (and transformers), then the Trainer and our
# training loop, which a first run used to import after Start (1-2 s on 2 cores, issue 22).
ENGINE_MODULES = ("peft", "transformers.trainer", "core.loop")
PEFT_IMPORT_DELAY_MAX_S = 10.0  # the longest the warm-up waits for the first page before it imports peft
ENGINE_NOTE = "Loading the engine (torch, transformers): {what} in a few seconds."


class Engine:
    """The background import of torch, transformers and peft, and the device probe, done once.

    `device` is set (or `error`) as soon as torch is in: the sidebar and the estimate need only that;
    `thread` ends once transformers and peft are in too."""

    def __init__(self) -> None:
        self.device: dict | None = None
        self.error: Exception | None = None
        self.device_known = threading.Event()
        self.page_drawn = threading.Event()  # page_drawn(): the first page is on the screen
        self.thread = threading.Thread(target=self._load, name="playground-warm-up", daemon=True)

    def _load(self) -> None:
        try:
            from core.models import device_summary
            self.device = device_summary()  # imports torch
        except Exception as exc:  # device_info() shows it where the device is drawn
            self.error = exc
        finally:
            self.device_known.set()
        # transformers and peft hold the interpreter lock for seconds while they import: not while
        # the page that waited for torch draws itself (a lesson link's Train form), but after it.
        self.page_drawn.wait(PEFT_IMPORT_DELAY_MAX_S)
        for name in ENGINE_MODULES:
            try:
                importlib.import_module(name)
            except Exception:  # the run that needs them reports the problem itself
                pass


_started: Engine | None = None  # the latest warm_up(), for engine_ready() to ask without starting one


@st.cache_resource(show_spinner=False)
def warm_up() -> Engine:
    """Start importing torch, transformers and peft in the background, once per server.

    A page first draws what needs none of them (Learn, the Train form: tests/test_cold_start.py),
    then calls this: an import competing with the first drawing for the one interpreter lock would
    delay it. Call wait_for_warm_up() before importing them yourself: two threads importing the same
    big package at once can see it half-initialised.
    """
    global _started
    engine = _started = Engine()
    engine.thread.start()
    return engine


def engine_ready() -> bool:
    """Whether device_info() answers at once (without starting the warm-up)."""
    return _started is not None and _started.device_known.is_set()


def wait_for_engine(tick: Callable[[float], object] | None = None) -> None:
    """Wait for the device probe (torch imported); meanwhile tick(seconds waited) every half second.

    Let `tick` write to the page (a note saying what is loading): each write is where Streamlit
    stops this script run when the visitor clicks something, so a click is not held until torch
    has loaded."""
    engine = warm_up()
    started = time.monotonic()
    while not engine.device_known.wait(0.5):
        if tick is not None:
            tick(time.monotonic() - started)


def device_info() -> dict:
    """core.models.device_summary(), once per server (waits for the warm-up's torch import)."""
    engine = warm_up()
    engine.device_known.wait()
    if engine.error is not None:
        raise engine.error
    return engine.device


def gpu_probe_allowed() -> bool:
    """Whether a page part may ask the GPU (torch) now. Until the warm-up has imported torch, it
    leaves its GPU hint out (a cold start draws at once); app.py redraws the page once torch is in,
    if there is a GPU to show."""
    if engine_ready():
        return True
    st.session_state[GPU_PARTS_SKIPPED_KEY] = True
    return False


def page_drawn() -> None:
    """The script run has drawn its page (app.py, at its end): the warm-up may import the rest."""
    if _started is not None:
        _started.page_drawn.set()


def wait_for_warm_up() -> None:
    engine = warm_up()
    engine.page_drawn.set()  # wanted now: no reason left to wait for the page
    engine.thread.join()


def is_admin() -> bool:
    from core import queue_rules
    token = st.session_state.get(ADMIN_TOKEN_KEY) or ""
    return queue_rules.is_admin(token)

