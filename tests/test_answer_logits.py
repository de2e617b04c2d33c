"""An SFT run's model projects only the answer tokens onto the vocabulary (core.trainer_setup:
AnswerLogitsOnly): the same loss at every step and the same validation loss as projecting every
token, fewer rows through the output layer, and the normal path where the mask cannot apply."""
from __future__ import annotations

import pytest
import torch

from core import loop, trainer_setup
from core.config import RunConfig
from core.train import run


def sft_cfg(model: str, data: str, method: str = "lora", params: dict | None = None) -> RunConfig:
    return RunConfig.from_dict({
        "model": {"name": model},
        "data": {"source": data, "task": "sft", "max_length": 64, "val_share": 0.25},
        "method": {"name": method, "params": params if params is not None else {"r": 4, "targets": "all-linear"}},
        "train": {"epochs": 2, "batch_size": 4, "learning_rate": 5e-3, "eval_steps": 2, "logging_steps": 1,
                  "seed": 5}})


class OutputRows:
    """Counts the positions the output layer projects, and which collator the run used."""

    def __init__(self, monkeypatch):
        self.rows: list[int] = []
        self.collators: list[str] = []
        built = loop._training_collator

        def spying(p):
            collate = built(p)
            self.collators.append(type(collate).__name__)
            head = p.model.get_output_embeddings()
            head.register_forward_hook(lambda _m, args, _out: self.rows.append(args[0].shape[:-1].numel()))
            return collate
        monkeypatch.setattr(loop, "_training_collator", spying)


def _run(cfg, folder):
    events: list[dict] = []
    summary = run(cfg, str(folder), events.append, write_metrics=False)
    losses = [(e["step"], e["loss"]) for e in events if e["type"] == "log"]
    evals = [(e["step"], e["eval_loss"]) for e in events if e["type"] == "eval"]
    return summary, losses, evals


def test_answer_tokens_only_train_exactly_like_every_token(tiny_llama, facts_file, tmp_path, runs_dir,
                                                            monkeypatch):
    spy = OutputRows(monkeypatch)
    kept, kept_losses, kept_evals = _run(sft_cfg(tiny_llama, facts_file), tmp_path / "kept")
    kept_rows = sum(spy.rows)
    assert spy.collators == ["AnswerLogitsOnly"]

    monkeypatch.setattr(loop, "keeps_answer_logits", lambda p: False)
    spy.rows.clear()
    every, every_losses, every_evals = _run(sft_cfg(tiny_llama, facts_file), tmp_path / "every")
    assert spy.collators[-1] != "AnswerLogitsOnly"

    assert len(kept_losses) == kept["steps"] >= 4 and [s for s, _ in kept_losses] == [s for s, _ in every_losses]
    assert [a for _, a in kept_losses] == pytest.approx([b for _, b in every_losses], rel=1e-4, abs=1e-5)
    assert len(kept_evals) >= 2
    assert [a for _, a in kept_evals] == pytest.approx([b for _, b in every_evals], rel=1e-4, abs=1e-5)
    # The prompts (chat template + question) are most of each row: far fewer positions projected.
    assert 0 < kept_rows < 0.7 * sum(spy.rows)


def test_the_mask_marks_the_positions_whose_next_token_is_a_label():
    plain = lambda rows: {"labels": torch.tensor([r["labels"] for r in rows])}  # noqa: E731
    batch = trainer_setup.AnswerLogitsOnly(plain)([{"labels": [-100, -100, 7, 8, -100]},
                                                   {"labels": [-100, 5, -100, -100, -100]}])
    assert batch["logits_to_keep"].tolist() == [[False, True, True, False, False],
                                                [True, False, False, False, False]]
    assert batch["shift_labels"].tolist() == [7, 8, 5]
    assert batch["logits_to_keep"].dtype == torch.bool  # an integer tensor would mean positions


def test_prompt_learning_and_classification_take_the_normal_path(tiny_llama, tiny_bert, facts_file, sentiment_file,
                                                                 tmp_path, runs_dir, monkeypatch):
    spy = OutputRows(monkeypatch)
    _run(sft_cfg(tiny_llama, facts_file, "prompt_tuning", {"num_virtual_tokens": 4}), tmp_path / "prompt")
    assert spy.collators == ["DataCollatorForSeq2Seq"]  # virtual tokens would shift the mask
    cfg = RunConfig.from_dict({"model": {"name": tiny_bert},
                               "data": {"source": sentiment_file, "task": "classification", "max_length": 32},
                               "method": {"name": "lora", "params": {"r": 4}},
                               "train": {"epochs": 1, "batch_size": 8, "seed": 5}})
    monkeypatch.setattr(loop, "_training_collator", lambda p: spy.collators.append(
        "answer" if trainer_setup.keeps_answer_logits(p) else "normal") or trainer_setup.batch_collator(p))
    _run(cfg, tmp_path / "classify")
    assert spy.collators[-1] == "normal"
