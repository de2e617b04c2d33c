"""The rules of a server shared by a class: who is admin, how many runs may wait (all together, per
person, per hour), when a gone visitor's runs leave the queue, how long a run may take, the order in
which waiting runs start, and what a typed nickname may hold. Pure functions of the settings
(core.settings) and their arguments; core.jobs applies them.
"""
from __future__ import annotations

import collections
import hmac
import re
from typing import Any, Optional

from core import settings

# The whole queue, all owners together: a guard for the server, not the per-person limit.
DEFAULT_MAX_QUEUE = 100
# Per owner: the largest custom grid (core.experiments, 24 runs) fits, and so does every lesson's.
DEFAULT_MAX_QUEUED_PER_OWNER = 24
DEFAULT_MAX_RUNS_PER_HOUR = 48
# Queued runs of an owner with no page open for this long leave the queue (0: never).
DEFAULT_OWNER_TIMEOUT_S = 900.0
NICKNAME_MAX = 32


def is_admin(token: Optional[str]) -> bool:
    expected = settings.admin_token()
    if not expected or not isinstance(token, str) or not token:
        return False  # no token configured: nobody is admin
    return hmac.compare_digest(token.encode("utf-8"), expected.encode("utf-8"))


def admin_configured() -> bool:
    return bool(settings.admin_token())


def max_queue() -> int:
    try:
        return max(0, int(settings.raw("PLAYGROUND_MAX_QUEUE", DEFAULT_MAX_QUEUE)))
    except ValueError:
        return DEFAULT_MAX_QUEUE


def _env_number(name: str, default: float) -> float:
    try:
        value = float(settings.raw(name, default))
    except ValueError:
        return default
    return value if value == value and value >= 0 else default  # NaN or negative: the default


def max_queued_per_owner() -> int:
    return int(_env_number("PLAYGROUND_MAX_QUEUED_PER_OWNER", DEFAULT_MAX_QUEUED_PER_OWNER))


def max_runs_per_hour() -> int:
    return int(_env_number("PLAYGROUND_MAX_RUNS_PER_HOUR", DEFAULT_MAX_RUNS_PER_HOUR))


def owner_timeout_s() -> float:
    return _env_number("PLAYGROUND_OWNER_TIMEOUT_S", DEFAULT_OWNER_TIMEOUT_S)


_NICK_DROP = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")


def clean_nickname(text: Any) -> str:
    """A typed nickname as stored: no control or direction characters, spaces folded, at most NICKNAME_MAX.
    Still visitor text: every place that shows it escapes it."""
    if not isinstance(text, str):
        return ""
    return " ".join(_NICK_DROP.sub("", text).split())[:NICKNAME_MAX]


def fair_order(queue: list[str], owner_of: dict[str, str], last_served: dict[str, int],
               front: list[str] = ()) -> list[str]:
    """The order in which the waiting runs would start: bumped ones first, then round-robin over owners.

    queue: run ids in the order they were queued; owner_of: id -> owner; last_served: owner -> the
    tick of its latest start (higher = more recent; absent = never served)."""
    waiting = set(queue)
    order = [j for j in front if j in waiting]
    taken = set(order)
    per_owner: dict[str, collections.deque] = {}
    for j in queue:
        if j not in taken:
            per_owner.setdefault(owner_of[j], collections.deque()).append(j)
    first_index = {j: i for i, j in enumerate(queue)}
    served = dict(last_served)
    tick = max(served.values(), default=0)
    for j in order:  # a bumped run counts as its owner's turn
        tick += 1
        served[owner_of[j]] = tick
    while per_owner:
        owner = min(per_owner, key=lambda o: (served.get(o, -1), first_index[per_owner[o][0]]))
        order.append(per_owner[owner].popleft())
        tick += 1
        served[owner] = tick
        if not per_owner[owner]:
            del per_owner[owner]
    return order


def max_run_seconds() -> float:
    # A cooperative time limit so that one student's 100-epoch run cannot hold the box all day (0: none).
    return _env_number("PLAYGROUND_MAX_RUN_SECONDS", 0.0)
