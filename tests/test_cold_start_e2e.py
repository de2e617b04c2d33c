"""Cold start in a real browser (issue 22): a fresh server's Train page, opened at once, shows the
form or the "Loading the engine" note, never an empty main area, until Start training is usable.

Run: python -m pytest tests/test_cold_start_e2e.py -q -m e2e   (under a minute on 2 CPU cores)
"""
from __future__ import annotations

import time

import pytest

from tests.helpers.browser import PAGE_S, app_server, chromium, new_page

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# What the main area shows, read in the page every 100 ms (as bench/page_render.py --cold does).
MAIN_STATE_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  const text = main ? main.innerText.trim() : '';
  const start = [...document.querySelectorAll('[data-testid="stMain"] button')]
      .find(b => b.innerText.trim() === 'Start training');
  return {text: text.slice(0, 200), note: /loading the engine/i.test(text),
          start: !!(start && !start.disabled && start.offsetParent !== null)};
}"""


def test_a_fresh_train_page_shows_the_form_or_the_loading_note_never_a_blank(tmp_path):
    with chromium() as browser:
        pg = new_page(browser)  # opened before the server: only the app is cold
        with app_server(tmp_path) as url:
            pg.goto(url + "/train", wait_until="commit")
            samples, deadline = [], time.monotonic() + PAGE_S
            while time.monotonic() < deadline:
                try:
                    samples.append(pg.evaluate(MAIN_STATE_JS))
                except Exception:  # the document is being replaced (first load): read again
                    continue
                if samples[-1]["start"]:
                    break
                pg.wait_for_timeout(100)
            pg.wait_for_timeout(500)
            later = pg.evaluate(MAIN_STATE_JS)
    assert samples and samples[-1]["start"], f"Start training never became usable; last: {samples[-1:]}"
    # From the first thing drawn in the main area on, it is never empty again (nothing drawn yet
    # at all is the browser still connecting, before the app could say anything).
    drawn = [i for i, s in enumerate(samples) if s["text"]]
    blank = [s for s in samples[drawn[0]:] if not s["text"]]
    assert not blank, f"{len(blank)} of {len(samples) - drawn[0]} readings after the first drawing had an empty main area"
    # A fresh server has not imported torch: the note must have said why something is still coming.
    assert any(s["note"] for s in samples), [s["text"][:80] for s in samples[::10]]
    assert later["start"], "Start training went away after it was usable"
