"""Sentences the Compare page offers beside a run's own validation rows, with the label the tuned
model gives them. Each must be one the shipped preset gets right: a showcase the tuned model
fails tells a class the opposite of the lesson (tests/test_showcase.py trains the preset and checks).

"I expected to hate it, and somehow I loved every minute." was one: a contrast that the preset scores
at a coin toss (52 % negative in issue 23, 57 % positive in a rerun), so it was dropped.
"""
from __future__ import annotations

SHOWCASE: dict[str, list[tuple[str, str]]] = {
    "builtin:sentiment": [
        ("A warm, funny and beautifully acted film; I loved every minute.", "positive"),
        ("A complete waste of time.", "negative"),
    ],
}


def sentences(source: str) -> list[str]:
    return [text for text, _ in SHOWCASE.get(str(source), [])]
