"""Exceptions the engine raises for failures that are not the user's configuration."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run cannot recover from it."""


class TrainingStopped(Exception):
    """Raised nowhere on purpose: a stop is cooperative and ends the run as `stopped`."""


class RunInterrupted(RuntimeError):
    """The machine or process running a run went away (e.g. a Ray node died): the run ends
    `interrupted`, not `failed`, keeping the metrics it had; its settings were not at fault."""
MESSAGE_CHARS = 300  # a value quoted in a message is cut to this: a 20 KB link is no message


def shorten(text: object, limit: int = MESSAGE_CHARS) -> str:
    """One readable line: a long value is cut in the middle, saying how much was left out."""
    text = " ".join(str(text).split())
    if len(text) <= limit:
        return text
    keep = max(limit - 30, 20)
    return f"{text[: keep * 2 // 3]} … ({len(text) - keep:,} characters left out) … {text[-(keep // 3):]}"


def disk_problem(exc: OSError) -> str | None:
    """"full" or "read-only" when an OSError says the disk cannot take a write, else None: the one
    place that knows which errno means which (uploads, weights saves and failed runs all ask)."""
    import errno
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "full"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return "read-only"
    return None
