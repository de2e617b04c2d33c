"""A causal LM's hidden-layer classification head is as wide as what the model outputs, not its
hidden_size: OPT projects its last hidden state out to word_embed_proj_dim (opt-350m: 512, hidden
size 1024), and a head built 1024 wide fails on the first batch. Tiny random OPT, built offline."""
from __future__ import annotations

import pytest
import torch

from core.config import RunConfig

HIDDEN, PROJECTED = 32, 16  # hidden_size and word_embed_proj_dim: they differ, as in opt-350m


@pytest.fixture(scope="module")
def tiny_opt(tmp_path_factory, tiny_bert) -> str:
    from transformers import AutoTokenizer, OPTConfig, OPTForCausalLM
    folder = tmp_path_factory.mktemp("tiny-opt")
    tok = AutoTokenizer.from_pretrained(tiny_bert)  # MiniLM's, saved with the tiny BERT
    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=len(tok), hidden_size=HIDDEN, word_embed_proj_dim=PROJECTED, ffn_dim=64,
                    num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                    pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
    OPTForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _cfg(model: str, data: str, **params) -> RunConfig:
    return RunConfig.from_dict({"model": {"name": model},
                                "data": {"source": data, "task": "classification", "max_length": 32},
                                "method": {"name": "linear_head", "params": params},
                                "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-2, "eval_steps": 100,
                                          "logging_steps": 1, "seed": 3}})


def test_opt_hidden_layer_head_reads_the_projected_width_forward_and_backward(tiny_opt, sentiment_file):
    from core.build import build_model
    model, kind = build_model(_cfg(tiny_opt, sentiment_file, head_hidden=8), ["negative", "positive"], "cpu")
    assert kind == "causal"
    assert model.score[1].in_features == PROJECTED, model.score
    ids = torch.randint(5, 100, (2, 7))
    out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.tensor([0, 1]))
    assert out.logits.shape == (2, 2)
    out.loss.backward()
    assert all(p.grad is not None for p in model.score.parameters())


@pytest.mark.parametrize("cache_features", [True, False])
def test_opt_hidden_layer_head_trains_through_the_engine(cache_features, tiny_opt, sentiment_file, tmp_path,
                                                         runs_dir):
    from core.train import run
    summary = run(_cfg(tiny_opt, sentiment_file, head_hidden=8, cache_features=cache_features),
                  str(tmp_path / "run"))
    assert summary["state"] == "completed", summary
    assert summary["trainable_params"] == PROJECTED * 8 + 8 + 8 * 2 + 2


@pytest.mark.slow  # ~60 s on one busy core: the script runs in a fresh interpreter
def test_opt_hidden_layer_head_run_exports_a_script_that_trains(tiny_opt, sentiment_file, tmp_path, runs_dir):
    # the exported script builds its head the way core.build does (core/templates/train_script.py)
    from core import export
    from core.train import run
    from tests.helpers.exported_script import run_exported
    run_dir = str(tmp_path / "run")
    run(_cfg(tiny_opt, sentiment_file, head_hidden=8, cache_features=False), run_dir)
    got, stdout = run_exported(export.export_script(run_dir), tmp_path)
    assert got == pytest.approx(export.final_training_loss(run_dir), rel=1e-3), stdout[-2000:]
