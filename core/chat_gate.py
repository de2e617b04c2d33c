"""Who may ask a shared model for an answer, and when: per-session rate limit and one answer in flight.

A flood on Compare (one 20k-character prompt and ~100 rapid sends) once left 55 script threads
waiting on one model's lock while another visitor's "hi" went unanswered for minutes. The pieces
that hold now:
  - a prompt's length is capped in characters and tokens (core.infer, core.limits);
  - a session has one generation in flight: a new send from the same session cancels the one
    before it (its script run was superseded anyway), which stops at its next token;
  - a session may send PLAYGROUND_CHAT_PER_MINUTE messages a minute; the rest are refused, in words;
  - a request waits at most PLAYGROUND_MODEL_WAIT_SECONDS for a model another session is using,
    then says the model is busy (core.infer.RunModel.view), so threads never pile up.
Process-wide state, guarded by one lock; no Streamlit here.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Optional

from core import limits
from core.config import ConfigError

WINDOW_S = 60.0


class ChatRefused(ConfigError):
    """A send that this server will not answer now; the message says why and when to try again."""


class _Gate:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sends: dict[str, collections.deque] = {}
        self._in_flight: dict[str, threading.Event] = {}

    def check_rate(self, session: str, now: Optional[float] = None) -> None:
        """Count one send for `session`, or raise ChatRefused when it has sent its share this minute."""
        now = time.monotonic() if now is None else now
        limit = limits.chat_per_minute()
        with self._lock:
            sent = self._sends.setdefault(session, collections.deque())
            while sent and now - sent[0] > WINDOW_S:
                sent.popleft()
            if len(sent) >= limit:
                wait = max(1, int(WINDOW_S - (now - sent[0]) + 0.999))
                raise ChatRefused(f"you sent {len(sent)} messages in the last minute; this server answers at most "
                                  f"{limit} a minute per visitor (PLAYGROUND_CHAT_PER_MINUTE): try again in {wait} s")
            sent.append(now)
            if len(self._sends) > 10_000:  # a long-lived server forgets sessions idle for a minute
                for key in [k for k, v in self._sends.items() if not v or now - v[-1] > WINDOW_S]:
                    del self._sends[key]

    def begin(self, session: str) -> threading.Event:
        """A cancel flag for this session's new generation; the previous one (if any) is cancelled."""
        cancel = threading.Event()
        with self._lock:
            previous = self._in_flight.get(session)
            if previous is not None:
                previous.set()
            self._in_flight[session] = cancel
        return cancel

    def end(self, session: str, cancel: threading.Event) -> None:
        with self._lock:
            if self._in_flight.get(session) is cancel:
                del self._in_flight[session]

    def in_flight(self, session: str) -> bool:
        with self._lock:
            return session in self._in_flight

    def reset(self) -> None:
        with self._lock:
            for event in self._in_flight.values():
                event.set()
            self._in_flight.clear()
            self._sends.clear()


_gate = _Gate()
check_rate = _gate.check_rate
begin = _gate.begin
end = _gate.end
in_flight = _gate.in_flight
reset = _gate.reset
