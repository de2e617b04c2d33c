"""Model registry and loader: embedded models, Hugging Face Hub ids and local folders.

`python -m core.models --prepare` builds the caches ahead of time (e.g. in a Docker build).
"""
from __future__ import annotations

import logging
import time

from core.config import ConfigError
from core.models.registry import list_models, MINILM, SMOLLM2
from core.models.locate import minilm_dir
from core.models.gguf import ensure_smollm2_cache


def prepare() -> dict[str, str]:
    """Make every embedded model ready to load offline; returns key -> folder."""
    return {MINILM: str(minilm_dir()), SMOLLM2: str(ensure_smollm2_cache())}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m core.models", description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="build the embedded models' caches now")
    parser.add_argument("--list", action="store_true", help="list the known models")
    args = parser.parse_args(argv)
    if not (args.prepare or args.list):
        parser.print_help()
        return 0
    if args.list:
        for entry in list_models():
            where = "embedded" if entry.embedded else "hub"
            print(f"{entry.key:32} {entry.kind:8} {where:9} {entry.label}")
    if args.prepare:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        started = time.monotonic()
        try:
            for key, folder in prepare().items():
                print(f"{key}: {folder}")
        except ConfigError as e:
            print(f"error: {e}")
            return 2
        print(f"ready in {time.monotonic() - started:.1f} s")
    return 0
