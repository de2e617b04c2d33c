"""Shared CLI behaviour: a user error is one line starting with `error:`, never a traceback."""
from __future__ import annotations

import os
import sys
from typing import Callable

from core import settings
from core.config import ConfigError


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
        from core.jobs import explain_failure
        message, hint = explain_failure(exc)
        print(f"error: {message}" + (f" ({hint})" if hint else ""), file=sys.stderr)
        return 1
