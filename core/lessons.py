"""The built-in lessons: a title, the page a link opens, its preset, guidance and what to notice.

The texts live in assets/lessons.yaml so a teacher can edit them without touching code. A lesson
link is the target page's URL with ?lesson=<key>; the page applies the preset and shows the text.
"""
from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from functools import lru_cache

from core.config import ConfigError, RunConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LESSONS_FILE = os.path.join(ROOT, "assets", "lessons.yaml")
PAGES = {"train": "pages/train.py", "experiments": "pages/experiments.py", "compare": "pages/compare.py"}
URL_PATHS = {"train": "train", "experiments": "experiments", "compare": "compare"}


@dataclass(frozen=True)
class Lesson:
    key: str
    title: str
    page: str                      # "train" | "experiments"
    summary: str
    guidance: tuple[str, ...]
    notice: str
    example: str = ""              # train lessons: examples/<example>.yaml
    experiment: str = ""           # experiment lessons: a core.experiments preset
    then: str = ""                 # where the lesson continues ("compare")
    extra: dict = field(default_factory=dict)

    @property
    def page_path(self) -> str:
        return PAGES[self.page]

    @property
    def url(self) -> str:
        """Relative link a teacher can share: train?lesson=fix_hallucination."""
        return f"{URL_PATHS[self.page]}?lesson={self.key}"

    def preset(self, hardware: bool = True) -> RunConfig | None:
        """The Train preset (None for experiment lessons): on a GPU the lesson's shelf model that
        fits it (core.gpu_shelf), else the embedded model of the example; hardware=False: always
        the example as written."""
        return self.preset_and_gpu_model(hardware)[0]

    def preset_and_gpu_model(self, hardware: bool = True):
        """(preset, the GPU shelf entry it uses or None)."""
        if not self.example:
            return None, None
        from core.presets import load_example
        cpu = load_example(self.example)
        if not hardware:
            return cpu, None
        from core import gpu_shelf
        return gpu_shelf.lesson_choice(self.key, cpu)

    def hardware_note(self) -> str:
        """Which model this machine's lesson uses, when a GPU changed it ("" on a CPU)."""
        cfg, entry = self.preset_and_gpu_model()
        if entry is None:
            return ""
        from core import gpu_shelf
        return gpu_shelf.describe(cfg, entry)


# What makes two runs the same job for timing: a lesson's time is what its own preset took here.
_SAME_JOB = (("model", "name"), ("method", "name"), ("data", "source"), ("data", "max_length"),
             ("train", "epochs"), ("train", "max_steps"), ("train", "batch_size"))


def measured_seconds(preset: RunConfig, infos) -> tuple[float, int] | None:
    """(median wall seconds, how many runs) of the completed runs on this server that ran the same
    job as `preset`, or None before the first one: a lesson quotes the time its run takes on the
    machine it runs on (issue 22), not a promise written for another machine."""
    want = preset.to_dict()
    times = []
    for info in infos:
        if info.state != "completed" or info.problem:
            continue
        if any((info.config.get(a) or {}).get(b) != (want.get(a) or {}).get(b) for a, b in _SAME_JOB):
            continue
        seconds = info.summary.get("wall_time_s")
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and 0 < seconds < 86400:
            times.append(float(seconds))
    return (statistics.median(times), len(times)) if times else None


_FACT = re.compile(r"\{(\w+)\|([^{}]*)\}")


def fill(text: str, facts: dict[str, str] | None = None) -> str:
    """Lesson text with its {name|fallback} slots filled from the screen's own numbers.

    A lesson must not assert a number the page beside it contradicts ("well under one percent"
    beside 1.45 %): it names the fact, the page supplies it, and the fallback words are used only
    while the page has no number yet."""
    facts = facts or {}
    return _FACT.sub(lambda m: str(facts.get(m.group(1)) or m.group(2)), str(text))


def _text(value, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{LESSONS_FILE}: {what} must be non-empty text")
    return value.strip()


@lru_cache(maxsize=4)
def _load(path: str, mtime: float) -> dict[str, Lesson]:
    import yaml
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must map lesson keys to lessons")
    out = {}
    for key, item in raw.items():
        if not isinstance(item, dict):
            raise ConfigError(f"{path}: lesson {key!r} must be a mapping")
        page = item.get("page")
        if page not in ("train", "experiments"):
            raise ConfigError(f"{path}: lesson {key!r} has page {page!r}; use train or experiments")
        guidance = item.get("guidance") or []
        if not isinstance(guidance, list) or not guidance:
            raise ConfigError(f"{path}: lesson {key!r} needs a list of guidance sentences")
        lesson = Lesson(key=str(key), title=_text(item.get("title"), f"{key}.title"), page=page,
                        summary=_text(item.get("summary"), f"{key}.summary"),
                        guidance=tuple(_text(g, f"{key}.guidance") for g in guidance),
                        notice=_text(item.get("notice"), f"{key}.notice"),
                        example=str(item.get("example") or ""), experiment=str(item.get("experiment") or ""),
                        then=str(item.get("then") or ""))
        if page == "train" and not lesson.example:
            raise ConfigError(f"{path}: train lesson {key!r} needs an example")
        if page == "experiments" and not lesson.experiment:
            raise ConfigError(f"{path}: experiments lesson {key!r} needs an experiment preset")
        out[lesson.key] = lesson
    return out


def all_lessons(path: str = LESSONS_FILE) -> dict[str, Lesson]:
    return _load(path, os.path.getmtime(path))


def get(key: str) -> Lesson | None:
    """The lesson of a URL value, or None for an unknown key (the page warns)."""
    try:
        return all_lessons().get(str(key or ""))
    except (OSError, ConfigError):
        return None
