"""Exceptions the engine raises for failures that are not the user's configuration."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite: the run cannot recover from it."""


class TrainingStopped(Exception):
    """Raised nowhere on purpose: a stop is cooperative and ends the run as `stopped`."""


class RunInterrupted(RuntimeError):
    """The machine or process running a run went away (e.g. a Ray node died): the run ends
    `interrupted`, not `failed`, keeping the metrics it had; its settings were not at fault."""
