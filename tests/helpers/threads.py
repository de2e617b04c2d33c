"""A lock or model held by another thread for the length of a block (a second session, for a test)."""
from __future__ import annotations

import contextlib
import threading
from typing import Callable, ContextManager


@contextlib.contextmanager
def held_elsewhere(hold: Callable[[], ContextManager]):
    """Enter `hold()` in another thread, and stay in it until this block ends."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with hold():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join()
