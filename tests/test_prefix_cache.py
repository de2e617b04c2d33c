"""Frozen-prefix caching (core.prefix_cache): a LoRA run on the top blocks trains on cached hidden
states of the frozen bottom, with the same losses and accuracy as the normal path, reuses them in a
later run on the same rows, and leaves every other run on the normal path."""
from __future__ import annotations

import os

import pytest
import torch

from core import prefix_cache
from core.config import RunConfig
from core.train import run

# tiny_bert has 2 blocks: top_layers=1 freezes block 0 and the embeddings
TOP = {"targets": "all-linear", "top_layers": 1}


def make_cfg(model: str, data: str, params: dict, method: str = "lora", **train) -> RunConfig:
    t = dict(epochs=1, batch_size=4, learning_rate=1e-2, eval_steps=3, logging_steps=1, seed=3)
    t.update(train)
    return RunConfig.from_dict({"model": {"name": model},
                                "data": {"source": data, "task": "classification", "max_length": 32},
                                "method": {"name": method, "params": params}, "train": t})


@pytest.fixture(autouse=True)
def empty_cache():
    prefix_cache.clear()
    yield
    prefix_cache.clear()


def _run(cfg, folder, events=None):
    seen = events if events is not None else []
    summary = run(cfg, str(folder), seen.append, write_metrics=False)
    return summary, seen


def _losses(events):
    return [(e["step"], e["loss"]) for e in events if e["type"] == "log"]


def _evals(events):
    return [(e["step"], e["eval_loss"]) for e in events if e["type"] == "eval"]


def test_cached_prefix_trains_exactly_like_the_normal_path(tiny_bert, sentiment_file, tmp_path, runs_dir):
    cached, ev_cached = _run(make_cfg(tiny_bert, sentiment_file, {**TOP, "cache_frozen_prefix": True}),
                             tmp_path / "cached")
    assert prefix_cache.stats["computed"] == 1 and prefix_cache.stats["bottom_batches"] > 0
    batches = prefix_cache.stats["bottom_batches"]
    plain, ev_plain = _run(make_cfg(tiny_bert, sentiment_file, {**TOP, "cache_frozen_prefix": False}),
                           tmp_path / "plain")
    assert prefix_cache.stats["bottom_batches"] == batches  # the normal path never touched the cache
    assert any("cached" in e.get("phase", "") for e in ev_cached)
    assert not any("cached" in e.get("phase", "") for e in ev_plain)
    a, b = _losses(ev_cached), _losses(ev_plain)
    assert len(a) == cached["steps"] >= 6 and [s for s, _ in a] == [s for s, _ in b]
    assert [la for _, la in a] == pytest.approx([lb for _, lb in b], rel=1e-4, abs=1e-5)
    assert [la for _, la in _evals(ev_cached)] == pytest.approx([lb for _, lb in _evals(ev_plain)], rel=1e-4)
    assert cached["final"]["eval_accuracy"] == plain["final"]["eval_accuracy"]
    assert cached["final"]["eval_loss"] == pytest.approx(plain["final"]["eval_loss"], rel=1e-4)
    assert a[0][1] != pytest.approx(a[-1][1], abs=1e-3)  # it did learn something


def test_the_saved_adapter_reloads_to_the_trained_model(tiny_bert, sentiment_file, tmp_path, runs_dir, monkeypatch):
    """The top blocks trained on cached states are the peft model's own modules: the run saves,
    and a fresh load of base + adapter predicts what the model in memory predicts."""
    import core.train as train_mod
    from core.infer import RunModel
    captured = {}
    real_prepare = train_mod.prepare

    def prepare(cfg_, events=lambda e: None):
        captured["p"] = real_prepare(cfg_, events)
        captured["before"] = {n: t.detach().clone() for n, t in captured["p"].model.named_parameters()}
        return captured["p"]

    monkeypatch.setattr(train_mod, "prepare", prepare)
    summary, events = _run(make_cfg(tiny_bert, sentiment_file, TOP, epochs=1), tmp_path / "run")
    assert any("cached" in e.get("phase", "") for e in events)
    p, before = captured["p"], captured["before"]
    moved = {n for n, t in p.model.named_parameters() if not torch.equal(t.detach(), before[n])}
    trainable = {n for n, t in p.model.named_parameters() if t.requires_grad}
    assert moved == trainable and any(".layer.1." in n and "lora_" in n for n in moved)
    texts = ["a wonderful joyful film", "tedious and ugly, I hated it"]
    p.model.eval()
    with torch.no_grad():
        want = torch.stack([p.model(**p.tokenizer(t, return_tensors="pt")).logits[0] for t in texts])
    loaded = RunModel(str(tmp_path / "run"))
    with loaded.view(tuned=True) as m, torch.no_grad():
        got = torch.stack([m(**loaded.tokenizer(t, return_tensors="pt")).logits[0] for t in texts])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert os.path.exists(tmp_path / "run" / "adapter" / "adapter_config.json")


def test_a_second_run_on_the_same_rows_reuses_the_states(tiny_bert, sentiment_file, tmp_path, runs_dir):
    _run(make_cfg(tiny_bert, sentiment_file, TOP, epochs=1), tmp_path / "a")
    batches = prefix_cache.stats["bottom_batches"]
    # another point of a grid: other rank and learning rate, same base, rows and frozen depth
    _, events = _run(make_cfg(tiny_bert, sentiment_file, {**TOP, "r": 4}, epochs=1, learning_rate=3e-3),
                     tmp_path / "b")
    assert prefix_cache.stats == {"computed": 1, "reused": 1, "bottom_batches": batches}
    assert any("cached" in e.get("phase", "") for e in events)
    # other rows (a shorter max_length cuts the token ids): computed anew
    cfg = make_cfg(tiny_bert, sentiment_file, TOP, epochs=1).with_overrides(["data.max_length=8"])
    _run(cfg, tmp_path / "c")
    assert prefix_cache.stats["computed"] == 2 and prefix_cache.stats["bottom_batches"] > batches


@pytest.mark.parametrize("method,params", [
    ("lora", {"targets": "all-linear"}),                      # every block adapted: nothing frozen below
    ("lora", {**TOP, "cache_frozen_prefix": False}),          # switched off
    ("prompt_tuning", {"num_virtual_tokens": 4}),             # a trained prompt changes every block's input
], ids=["all-blocks", "switched-off", "prompt-tuning"])
def test_where_it_does_not_apply_the_run_takes_the_normal_path(method, params, tiny_bert, sentiment_file, tmp_path,
                                                              runs_dir):
    summary, events = _run(make_cfg(tiny_bert, sentiment_file, params, method=method, max_steps=2), tmp_path / "r")
    assert summary["steps"] == 2
    assert prefix_cache.stats == {"computed": 0, "reused": 0, "bottom_batches": 0}
    assert not any("cached" in e.get("phase", "") for e in events)


def test_over_the_budget_it_falls_back_silently(tiny_bert, sentiment_file, tmp_path, runs_dir, monkeypatch):
    monkeypatch.setattr(prefix_cache, "MAX_ENTRY_BYTES", 1000)
    summary, events = _run(make_cfg(tiny_bert, sentiment_file, TOP, max_steps=2), tmp_path / "r")
    assert summary["steps"] == 2 and summary["final"]["eval_accuracy"] >= 0
    assert prefix_cache.stats["bottom_batches"] == 0
    assert not any("cached" in e.get("phase", "") for e in events)


def test_frozen_bottom_runs_without_dropout_even_when_the_model_trains(tiny_bert):
    from core.build import method_context
    from core.heads import PooledClassifier
    from core.methods import get_method
    from transformers import AutoModel, AutoTokenizer
    encoder = AutoModel.from_pretrained(tiny_bert)
    model = PooledClassifier(encoder.config, encoder)
    ctx = method_context(model, "encoder", "classification", AutoTokenizer.from_pretrained(tiny_bert), tiny_bert)
    lora = get_method("lora")
    model = lora.apply(model, lora.make_params(TOP), ctx)
    prefix = prefix_cache.find_frozen_prefix(model)
    assert prefix is not None and prefix.first == 1
    prefix.keep_in_eval()
    model.train()
    assert not prefix.embeddings.training and not prefix.blocks[0].training
    assert prefix.blocks[1].training and model.training


def test_the_cache_keeps_the_newest_datasets_within_its_budget():
    calls = []
    compute = lambda name: (lambda: calls.append(name) or name)
    for name in ("a", "b", "a", "c", "a", "b"):  # a stays recent; b is evicted by c, then computed again
        assert prefix_cache.remembered((name,), compute(name), 10) == name
    assert calls == ["a", "b", "c", "b"] and prefix_cache.MAX_ENTRIES == 2
    assert prefix_cache.remembered(("huge",), compute("huge"), prefix_cache.MAX_ENTRY_BYTES + 1) is None
    assert calls[-1] == "b"  # refused before computing anything


# ----------------------------------------------------------------------------------------------
# Decoder LMs (core.decoder_prefix): an SFT run on the top blocks of a Llama-family model
# ----------------------------------------------------------------------------------------------
def sft_cfg(model: str, data: str, params: dict, **train) -> RunConfig:
    t = dict(epochs=2, batch_size=4, learning_rate=5e-3, eval_steps=2, logging_steps=1, seed=3)
    t.update(train)
    return RunConfig.from_dict({"model": {"name": model},
                                "data": {"source": data, "task": "sft", "max_length": 64, "val_share": 0.25},
                                "method": {"name": "lora", "params": {"r": 4, "dropout": 0.1, **params}},
                                "train": t})


@pytest.mark.parametrize("checkpointing", [False, True], ids=["plain", "gradient-checkpointing"])
def test_a_decoder_trains_on_its_cached_bottom_exactly_like_the_normal_path(checkpointing, tiny_llama, facts_file,
                                                                            tmp_path, runs_dir):
    extra = {"gradient_checkpointing": checkpointing}  # checkpointed top blocks still learn from cached input
    cached, ev_cached = _run(sft_cfg(tiny_llama, facts_file, TOP, **extra), tmp_path / "cached")
    assert prefix_cache.stats["computed"] == 1 and prefix_cache.stats["bottom_batches"] > 0
    batches = prefix_cache.stats["bottom_batches"]
    plain, ev_plain = _run(sft_cfg(tiny_llama, facts_file, {**TOP, "cache_frozen_prefix": False}, **extra),
                           tmp_path / "plain")
    assert prefix_cache.stats["bottom_batches"] == batches
    assert any("cached" in e.get("phase", "") for e in ev_cached)
    assert not any("cached" in e.get("phase", "") for e in ev_plain)
    a, b = _losses(ev_cached), _losses(ev_plain)
    assert len(a) == cached["steps"] >= 6 and [s for s, _ in a] == [s for s, _ in b]
    # dropout 0.1 in the top blocks' adapters: the same random draws on both paths
    assert [la for _, la in a] == pytest.approx([lb for _, lb in b], rel=1e-4, abs=1e-5)
    assert len(_evals(ev_cached)) >= 2
    assert [la for _, la in _evals(ev_cached)] == pytest.approx([lb for _, lb in _evals(ev_plain)], rel=1e-4)
    assert cached["final"]["eval_loss"] == pytest.approx(plain["final"]["eval_loss"], rel=1e-4)
    assert a[0][1] != pytest.approx(a[-1][1], abs=1e-3)


def test_a_decoder_run_on_cached_states_saves_the_model_it_trained(tiny_llama, facts_file, tmp_path, runs_dir,
                                                                   monkeypatch):
    import core.train as train_mod
    from core.infer import RunModel
    captured = {}
    real_prepare = train_mod.prepare

    def prepare(cfg_, events=lambda e: None):
        captured["p"] = real_prepare(cfg_, events)
        return captured["p"]

    monkeypatch.setattr(train_mod, "prepare", prepare)
    _, events = _run(sft_cfg(tiny_llama, facts_file, TOP, epochs=1), tmp_path / "run")
    assert any("cached" in e.get("phase", "") for e in events)
    p = captured["p"]
    assert len(p.model.get_base_model().model.layers) == 2  # the cut was put back
    ids = p.tokenizer("Who founded Quillmere College?", return_tensors="pt")
    p.model.eval()
    with torch.no_grad():
        want = p.model(**ids).logits
    loaded = RunModel(str(tmp_path / "run"))
    with loaded.view(tuned=True) as m, torch.no_grad():
        got = m(**ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_a_decoder_outside_the_known_families_takes_the_normal_path(tiny_llama, facts_file, tmp_path, runs_dir,
                                                                    monkeypatch):
    from core import decoder_prefix
    monkeypatch.setattr(decoder_prefix, "FAMILIES", ("mistral",))  # e.g. Gemma scales inputs_embeds
    summary, events = _run(sft_cfg(tiny_llama, facts_file, TOP, max_steps=2), tmp_path / "r")
    assert summary["steps"] == 2 and prefix_cache.stats["bottom_batches"] == 0
    assert not any("cached" in e.get("phase", "") for e in events)


def test_the_cut_is_put_back_when_the_forward_fails(tiny_llama):
    from transformers import AutoModelForCausalLM

    from core.decoder_prefix import DecoderPrefix
    lm = AutoModelForCausalLM.from_pretrained(tiny_llama)
    layers, norm = lm.model.layers, lm.model.norm
    with pytest.raises(RuntimeError), DecoderPrefix(lm=lm, first=1).cut(0, 1, final_norm=False):
        assert len(lm.model.layers) == 1 and isinstance(lm.model.norm, torch.nn.Identity)
        raise RuntimeError("a forward failed")
    assert lm.model.layers is layers and lm.model.norm is norm
