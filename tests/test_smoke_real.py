"""Smoke tests on the real embedded models (slow; they run in CI).

- MiniLM + LoRA on real IMDb reviews beats the untrained model by a wide margin on held-out reviews.
- SmolLM2 + LoRA on the invented facts: the tuned model states trained facts the base model
  hallucinates.
"""
import json
import os

import pytest

from conftest import IMDB_SAMPLE, needs_imdb_sample

pytestmark = pytest.mark.slow


def _events(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


@needs_imdb_sample
def test_minilm_lora_on_imdb_beats_the_untrained_model(tmp_path, runs_dir):
    from core.config import load_config
    from core.train import run
    cfg = load_config("examples/lora_imdb.yaml").with_overrides([
        f"data.source={IMDB_SAMPLE}",
        "data.n_samples=480", "data.val_share=0.05", "train.eval_max_rows=200"])
    run_dir = str(tmp_path / "run")
    summary = run(cfg, run_dir)
    initial = next(e for e in _events(run_dir) if e["type"] == "eval" and e["step"] == 0)["eval_accuracy"]
    final = summary["final"]["eval_accuracy"]
    assert summary["n_val"] == 200
    assert final >= 0.68 and final >= initial + 0.12, (initial, final)


def test_smollm2_lora_learns_the_facts_the_base_hallucinates(tmp_path, runs_dir):
    from core import data
    from core.config import load_config
    from core.infer import RunModel
    from core.probe import fact_hit
    from core.train import run
    cfg = load_config("examples/lora_facts.yaml")
    run_dir = str(tmp_path / "run")
    run(cfg, run_dir)
    rm = RunModel(run_dir)
    rows = data.load_rows(cfg.data).train
    # One trained question per fact; the rehearsal rows (ordinary questions) have no fact to recall.
    checked = list({r["fact_id"]: r for r in rows if r["keywords"]}.values())
    tuned = sum(fact_hit(rm.generate(r["prompt"], tuned=True, max_new_tokens=32), r["keywords"]) for r in checked)
    base = sum(fact_hit(rm.generate(r["prompt"], tuned=False, max_new_tokens=32), r["keywords"]) for r in checked)
    assert tuned >= 0.8 * len(checked), (tuned, len(checked))
    assert base <= 0.2 * len(checked), (base, len(checked))
