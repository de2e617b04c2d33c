"""Shared CLI behaviour: a user error is one line starting with `error:`, never a traceback; and the
plain words for any failure (explain_failure), which the job manager and the pages show as well."""
from __future__ import annotations

import errno
import os
import re
import sys
from typing import Callable

from core import settings
from core.config import ConfigError
from core.errors import NonFiniteLoss, RunInterrupted, disk_problem, shorten

OOM_HINT = "lower batch size or max length, or use QLoRA"
NAN_HINT = "lower the learning rate"
GENERIC_HINT = "check the settings and try again; if it happens again, try a smaller model or fewer steps"
_NONFINITE = re.compile(r"\bnan\b|\binf\b|non-finite|not finite|infinite", re.IGNORECASE)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError, named so that torch is not imported here.
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc)
    return "out of memory" in text.lower() or "DefaultCPUAllocator: can't allocate" in text


DISK_FULL_HINT = "free some disk space (delete old runs or uploads), or ask the server's admin"
READ_ONLY_HINT = "the server's admin must make the runs folder writable (PLAYGROUND_RUNS_DIR)"


def os_cause(exc: BaseException) -> tuple[str, str] | None:
    """The real cause of a failure that is an OSError somewhere in its chain (disk full, read-only
    folder, missing file), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError):
            where = os.path.basename(str(exc.filename or "").rstrip("/")) if exc.filename else ""
            at = f" ({where})" if where else ""
            problem = disk_problem(exc)
            if problem == "full":
                return f"the disk is full: a file could not be written{at}", DISK_FULL_HINT
            if problem == "read-only":
                return f"the server's folder is read-only or not writable{at}", READ_ONLY_HINT
            if exc.errno == errno.ENOENT:
                return f"a file the run needs does not exist{at}", "check that the run or data file still exists"
        exc = exc.__cause__ or exc.__context__
    return None


def explain_failure(exc: BaseException) -> tuple[str, str]:
    """(message, hint) in plain words for a run that raised."""
    if isinstance(exc, ConfigError):
        return shorten(str(exc), 1000), ""
    if isinstance(exc, RunInterrupted):
        return str(exc), "submit it again (or resume it from its last checkpoint on Runs)"
    cause = os_cause(exc)
    if cause is not None:
        return cause
    if _is_oom(exc):
        return "out of memory: the model, batch and sequence length did not fit", OOM_HINT
    if isinstance(exc, NonFiniteLoss) or _NONFINITE.search(str(exc)):
        return "the loss became NaN or infinite (training diverged)", NAN_HINT
    detail = shorten(str(exc).strip().splitlines()[0]) if str(exc).strip() else ""
    return f"training failed: {type(exc).__name__}: {detail}".rstrip(": "), GENERIC_HINT


def cli_guard(fn: Callable[[], int]) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import logging
    # bitsandbytes logs at import (peft imports it) that optional CPU kernels are missing: noise
    # in front of the one `error:` line, and not the user's problem.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        return fn()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a failure during training: one line, the details are in the run folder
        if settings.debug():
            raise
        message, hint = explain_failure(exc)
        print(f"error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return 1
