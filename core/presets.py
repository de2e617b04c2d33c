"""Ready-made run configs: the app's defaults and the shipped examples.

The app's default hyperparameters are those of examples/lora_imdb.yaml (the recipe measured to
learn on real reviews within a class-length budget), applied to the built-in sentiment set.
"""
from __future__ import annotations

import os

from core.config import RunConfig, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")


def example_path(name: str) -> str:
    return os.path.join(EXAMPLES, f"{name}.yaml")


def list_examples() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(EXAMPLES) if f.endswith(".yaml"))


def load_example(name: str) -> RunConfig:
    return load_config(example_path(name))


def app_defaults() -> RunConfig:
    cfg = load_example("lora_imdb").to_dict()
    cfg["name"] = ""
    cfg["data"].update(source="builtin:sentiment", n_samples=0, val_share=0.2)
    return RunConfig.from_dict(cfg)


def facts_defaults() -> RunConfig:
    return load_example("lora_facts")
