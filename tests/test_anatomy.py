"""LoRA anatomy maths: the spectrum of ΔW = s·B·A from its r×r core, relative norms, layer numbers."""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from core.anatomy import heatmap, lora_anatomy, update_spectrum

# Every Trainer run ends in accelerate's gc.collect(), which with torch/transformers/peft imported
# walks ~500k long-lived library objects (~0.4 s CPU a run, dozens of runs here). Freezing what is
# loaded now keeps the suite fast; objects the tests make later are collected as usual.
from transformers import Trainer  # noqa: E402,F401  (loaded before the freeze)

gc.freeze()


@pytest.mark.parametrize("d,k,r", [(12, 7, 3), (16, 16, 4), (5, 6, 8), (40, 9, 9), (1, 10, 2)],
                         ids=["tall", "square", "rank-above-dims", "full-rank", "single-row"])
@pytest.mark.parametrize("scale", [1.0, 0.25, 4.0])
def test_update_spectrum_equals_svd_of_the_product(d, k, r, scale):
    g = torch.Generator().manual_seed(d * 100 + k * 10 + r)
    A, B = torch.randn(r, k, generator=g), torch.randn(d, r, generator=g)
    want = torch.linalg.svdvals(scale * B @ A)
    got = update_spectrum(A, B, scale)
    n = min(len(got), len(want))
    torch.testing.assert_close(got[:n], want[:n], rtol=1e-4, atol=1e-5)
    # whatever is beyond the rank is zero in the explicit SVD
    assert float(torch.cat([want[n:], torch.zeros(1)]).abs().max()) < 1e-4
    assert float(torch.cat([got[n:], torch.zeros(1)]).abs().max()) < 1e-4
    assert torch.all(got[:-1] >= got[1:])  # descending


def test_update_spectrum_of_a_low_rank_update_has_rank_r():
    g = torch.Generator().manual_seed(1)
    A, B = torch.randn(2, 30, generator=g), torch.randn(20, 2, generator=g)
    s = update_spectrum(A, B, 2.0)
    assert len(s) == 2
    torch.testing.assert_close(s, torch.linalg.svdvals(2.0 * B @ A)[:2], rtol=1e-4, atol=1e-5)
    # the Frobenius norm is the root of the squared singular values
    assert float(torch.sqrt((s ** 2).sum())) == pytest.approx(float(torch.linalg.norm(2.0 * B @ A)), rel=1e-4)


def test_update_spectrum_is_zero_for_a_fresh_adapter():
    A, B = torch.randn(4, 8), torch.zeros(6, 4)  # LoRA starts with B = 0
    assert torch.count_nonzero(update_spectrum(A, B, 2.0)) == 0


# ------------------------------------------------------------------------------------------------
# lora_anatomy on peft models
# ------------------------------------------------------------------------------------------------
def _tiny_llama_with_lora(folder: str, targets: list[str], layers=None, seed: int = 0):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(folder)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, layers_to_transform=layers,
                     init_lora_weights=False)  # random B as well, so ΔW is not zero
    return get_peft_model(model, cfg)


def _explicit(module) -> tuple[torch.Tensor, torch.Tensor]:
    A = module.lora_A["default"].weight.detach()
    B = module.lora_B["default"].weight.detach()
    return module.scaling["default"] * B @ A, module.base_layer.weight.detach()


def test_lora_anatomy_norms_and_spectrum_match_the_explicit_update(tiny_llama):
    model = _tiny_llama_with_lora(tiny_llama, ["q_proj", "v_proj", "down_proj"])
    entries = lora_anatomy(model, top=3)
    assert len(entries) == 6
    for e in entries:
        module = model.get_submodule(e["name"])
        delta, weight = _explicit(module)
        assert e["delta_norm"] == pytest.approx(float(torch.linalg.norm(delta)), rel=1e-4)
        assert e["weight_norm"] == pytest.approx(float(torch.linalg.norm(weight)), rel=1e-5)
        assert e["rel_norm"] == pytest.approx(float(torch.linalg.norm(delta) / torch.linalg.norm(weight)), rel=1e-4)
        s = torch.linalg.svdvals(delta)
        assert e["singular_values"] == pytest.approx(s[:3].tolist(), rel=1e-4, abs=1e-6)
        energy = torch.cumsum(s ** 2, 0) / (s ** 2).sum()
        assert e["energy"] == pytest.approx(energy[:3].tolist(), rel=1e-4)
        assert len(e["singular_values"]) == 3


def test_lora_anatomy_has_one_entry_per_adapted_module_with_its_layer(tiny_llama):
    model = _tiny_llama_with_lora(tiny_llama, ["q_proj", "v_proj"])
    entries = lora_anatomy(model)
    adapted = [n for n, m in model.named_modules() if hasattr(m, "lora_A") and "default" in m.lora_A]
    assert sorted(e["name"] for e in entries) == sorted(adapted)
    assert sorted((e["layer"], e["module"]) for e in entries) == [
        (0, "q_proj"), (0, "v_proj"), (1, "q_proj"), (1, "v_proj")]
    for e in entries:
        assert f".layers.{e['layer']}." in f".{e['name']}."

    only_top = _tiny_llama_with_lora(tiny_llama, ["q_proj", "o_proj", "up_proj"], layers=[1])
    assert sorted((e["layer"], e["module"]) for e in lora_anatomy(only_top)) == [
        (1, "o_proj"), (1, "q_proj"), (1, "up_proj")]

    rows, cols, grid = heatmap(entries)
    assert rows == [0, 1] and cols == ["q_proj", "v_proj"]
    for e in entries:
        assert grid[rows.index(e["layer"])][cols.index(e["module"])] == e["rel_norm"]


def test_lora_anatomy_on_the_engines_encoder(tiny_bert, sentiment_file):
    """The engine's own LoRA on the BERT-like encoder: the layer numbers come from '.layer.N.'."""
    from core.config import RunConfig
    from core.train import prepare
    cfg = RunConfig.from_dict({"model": {"name": tiny_bert}, "data": {"source": sentiment_file},
                               "method": {"name": "lora", "params": {"targets": "all-linear", "top_layers": 1}}})
    entries = lora_anatomy(prepare(cfg).model)
    assert {e["layer"] for e in entries} == {1}
    assert sorted(e["name"].split("encoder.layer.1.")[1] for e in entries) == [
        "attention.output.dense", "attention.self.key", "attention.self.query", "attention.self.value",
        "intermediate.dense", "output.dense"]
    assert all(e["delta_norm"] == 0 and e["rel_norm"] == 0 for e in entries)  # B starts at zero


def test_weight_norms_are_not_mixed_up_between_models():
    """Norms are cached per layer; a later model's layer (which may reuse a freed layer's id())
    must never be served an earlier one's norm, and the cache must not outlive its layers."""
    from peft import LoraConfig, get_peft_model

    from core import anatomy
    gc.collect()
    cached_before = len(anatomy._W_NORMS)
    for seed in range(8):
        torch.manual_seed(seed)
        base = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4))
        with torch.no_grad():
            for p in base.parameters():
                p.mul_(1.0 + seed)  # a different norm for every model
        model = get_peft_model(base, LoraConfig(target_modules=["0", "2"], r=2, init_lora_weights=False))
        for e in lora_anatomy(model):
            weight = model.get_submodule(e["name"]).base_layer.weight
            assert e["weight_norm"] == pytest.approx(float(weight.norm()), rel=1e-5)
        del model, base, weight
    gc.collect()
    assert len(anatomy._W_NORMS) == cached_before  # no entry outlives its layer


def test_non_finite_adapter_reports_nan_instead_of_failing():
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(nn.Sequential(nn.Linear(6, 6)), LoraConfig(target_modules=["0"], r=2))
    with torch.no_grad():
        model.get_submodule("base_model.model.0").lora_B["default"].weight.fill_(float("nan"))
    (entry,) = lora_anatomy(model)
    assert entry["delta_norm"] != entry["delta_norm"]  # NaN


def test_qlora_weight_norm_is_measured_on_the_dequantised_base(tiny_llama, sentiment_file):
    """‖W‖ of a 4-bit layer is the norm of the weight it really applies (x·Wᵀ for x = I)."""
    from core.config import RunConfig
    from core.train import prepare
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama}, "data": {"source": sentiment_file},
                               "method": {"name": "qlora", "params": {"targets": "q_proj"}}})
    model = prepare(cfg).model
    entries = lora_anatomy(model)
    assert sorted((e["layer"], e["module"]) for e in entries) == [(0, "q_proj"), (1, "q_proj")]
    for e in entries:
        base = model.get_submodule(e["name"]).base_layer
        assert base.weight.__class__.__name__ == "Params4bit"
        with torch.no_grad():
            applied = base(torch.eye(base.in_features))
        assert e["weight_norm"] == pytest.approx(float(applied.norm()), rel=1e-5)


def test_the_most_changed_module_is_named_as_in_the_heatmap():
    """BERT has three 'dense' layers per block: the energy curve must say which one it shows."""
    from pages.ui import anatomy_figures
    layer = lambda name, rel: {"name": f"encoder.layer.3.{name}", "layer": 3, "module": name.rsplit(".", 1)[-1],
                               "rel_norm": rel, "energy": [0.5, 1.0]}
    heat, curve, top = anatomy_figures([layer("attention.output.dense", 0.02), layer("output.dense", 0.01),
                                        layer("intermediate.dense", 0.005)])
    assert top["module"] == "attention.output.dense"
    assert "attention.output.dense" in curve.layout.title.text and "attention.output.dense" in heat.data[0].x
