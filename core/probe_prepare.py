"""Answer the hallucination probe's questions with the bare base model ahead of time.

`python -m core.probe_prepare` (the Docker image's build and scripts/start.sh run it after
`python -m core.models --prepare`): the base model's greedy answers to the built-in probe sets go
into the same per-server cache the Compare page reads (core.probe.BaseAnswerCache), so even the
first probe a class runs on a fresh Space asks only the fine-tuned model. The cache key is built from
the base weights as the bare model names them, so a LoRA, IA3 or full run on this base finds the
entry; a key that does not match (another device, dtype, library version) costs nothing but the
answers being computed at the first probe, as without this step.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time

from core import probe

log = logging.getLogger(__name__)

# The lessons whose runs the Compare page probes: their base model and their facts set.
LESSON_EXAMPLES = ("lora_facts",)


def _base_only_run(folder: str, cfg) -> str:
    """A run folder that RunModel opens as the untrained base ("format": "none"): the lesson's own
    config, so the model is built exactly as the lesson's run builds it."""
    from core import runs, save
    run_dir = os.path.join(folder, "base")
    os.makedirs(run_dir)
    runs.atomic_write_json(os.path.join(run_dir, "config.json"), cfg.to_dict())
    save.write_weights_meta(run_dir, "none", cfg, "causal", None)
    return run_dir


def prepare(examples=LESSON_EXAMPLES, cache: probe.BaseAnswerCache | None = None) -> dict[str, str]:
    """{example: what was done} for each lesson in `examples` (see `prepare_config`)."""
    from core.presets import load_example
    cache = cache or probe.BaseAnswerCache()
    return {name: prepare_config(load_example(name), cache) for name in examples}


def prepare_config(cfg, cache: probe.BaseAnswerCache, max_new_tokens: int = probe.PROBE_TOKENS) -> str:
    """Answer the probe's questions for runs of `cfg` (its base model, its built-in facts set) with
    the bare base model into `cache`: "cached", "already cached" or "skipped: why"."""
    from core.infer import RunModel
    source = cfg.data.source
    if not source.startswith("builtin:"):
        return "skipped: not a built-in facts set"
    prompts = [r["prompt"] for r in probe.probe_facts(source.removeprefix("builtin:")) + probe.probe_general()]
    with tempfile.TemporaryDirectory(prefix="probe-prepare-") as tmp:
        model = RunModel(_base_only_run(tmp, cfg))
        key = probe.base_answers_key(model, prompts, max_new_tokens)
        if key is None:
            return "skipped: the base model cannot be fingerprinted"
        if cache.get(key, len(prompts), max_new_tokens) is not None:
            return "already cached"
        cache.put(key, model.generate_views(prompts, (False,), max_new_tokens, probe.BATCH_SIZE)[False])
        return "cached"


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    started = time.monotonic()
    try:
        done = prepare()
    except Exception as exc:  # optional: the first probe then computes the answers itself
        print(f"probe answers not prepared ({type(exc).__name__}: {exc}); the first probe will compute them")
        return 0
    print(json.dumps(done), f"in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
