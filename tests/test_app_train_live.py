"""Train's live view polls every 2 s while a run trains: a poll that brought no new point for the
charts must not build (and send) the figures again (issue 22: the app's seconds over headless)."""
from __future__ import annotations

from pages.shared import job_panel


def _log(step: int, loss: float) -> dict:
    return {"type": "log", "step": step, "loss": loss, "learning_rate": 1e-3}


def _progress(step: int) -> dict:
    return {"type": "progress", "step": step, "max_steps": 10}


def test_a_poll_with_only_progress_lines_reuses_the_figures(monkeypatch):
    built = []
    real = job_panel.metrics_charts
    monkeypatch.setattr(job_panel, "metrics_charts", lambda events: built.append(len(events)) or real(events))
    cache: dict = {}
    events = [_progress(0), _log(1, 2.0)]
    first = job_panel.live_figures(cache, "run-a", events, styled=False)
    assert built == [2] and "train_loss" in first

    events += [_progress(2), _progress(3), {"type": "anatomy", "step": 3, "layers": []}]
    assert job_panel.live_figures(cache, "run-a", events, styled=False) is first
    assert built == [2]  # nothing plotted changed: not built again

    events.append(_log(4, 1.0))
    again = job_panel.live_figures(cache, "run-a", events, styled=False)
    assert built == [2, 6]
    assert list(again["train_loss"].data[0].y) == [2.0, 1.0]  # the new point is on the chart


def test_another_run_or_presentation_mode_builds_the_figures_again(monkeypatch):
    built = []
    real = job_panel.metrics_charts
    monkeypatch.setattr(job_panel, "metrics_charts", lambda events: built.append(1) or real(events))
    cache: dict = {}
    events = [_log(1, 2.0)]
    job_panel.live_figures(cache, "run-a", events, styled=False)
    job_panel.live_figures(cache, "run-b", events, styled=False)
    job_panel.live_figures(cache, "run-b", events, styled=True)
    assert len(built) == 3
