"""A method is one file: the engine, the estimate, the export and the pages all ask the method object.

* building a config (and listing the methods) imports none of torch, peft, transformers;
* a toy method registered here, from the test file alone, shows up in the Train form's data, in the
  estimate (with the engine's own trainable count), in an exported script that reproduces its run,
  and in what the Runs page reads of a run;
* for every shipped config, the modules the engine adapts are the modules the estimate counts;
* the exported script's template is real, lint-clean Python.
"""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from dataclasses import dataclass

import pytest

from core import estimate, export, presets
from core.config import RunConfig, hp
from core.methods import Method, all_methods, get_method, register, unregister
from core.methods import targets as target_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_building_a_config_imports_no_torch_peft_or_transformers():
    code = ("import sys, core.config, core.methods\n"
            "core.methods.all_methods()\n"
            "cfg = core.config.load_config('examples/lora_imdb.yaml')\n"
            "core.methods.get_method(cfg.method.name).estimate_args(cfg.method.params)\n"
            "print(sorted(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", out.stdout


# ------------------------------------------------------------------------------ a toy method

@dataclass
class BitFitParams:
    train_head: bool = hp(True, help="Train the new classification head too")


def _bias_owner(name: str, head_names: list[str]) -> bool:
    return not any(part in head_names for part in name.split("."))


def _bitfit_apply(model, params, ctx):
    from torch import nn
    for p in model.parameters():
        p.requires_grad_(False)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.bias is not None and _bias_owner(name, ctx.head_names):
            module.bias.requires_grad_(True)
        if params.train_head and name.split(".")[-1] in ctx.head_names:
            for p in module.parameters():
                p.requires_grad_(True)
    return model


def _bitfit_trainable(shapes) -> int:
    # the biases of the linears inside the blocks (the engine drops a BERT pooler it never reads)
    return sum(s.out_features for s in shapes if s.has_bias and s.layer is not None)


def _bitfit_export(params, ctx) -> str:
    return ("for param in model.parameters():\n    param.requires_grad_(False)\n"
            "for module_name, module in model.named_modules():\n"
            f"    if isinstance(module, nn.Linear) and module.bias is not None and not any(\n"
            f"            part in {ctx.head_names!r} for part in module_name.split('.')):\n"
            "        module.bias.requires_grad_(True)\n"
            f"    if {params['train_head']!r} and module_name.split('.')[-1] in {ctx.head_names!r}:\n"
            "        for param in module.parameters():\n            param.requires_grad_(True)")


@pytest.fixture
def bitfit():
    method = register(Method(
        name="bitfit", label="BitFit (biases only)", summary="Only the biases of the linear layers train.",
        params_cls=BitFitParams, apply=_bitfit_apply, tasks=("classification",), saves_adapter=False,
        weights_format="full", estimate_trainable=_bitfit_trainable, export=_bitfit_export))
    yield method
    unregister("bitfit")


def test_a_registered_method_is_in_the_train_form(bitfit):
    # pages/train.py lists all_methods() that support the task, by label, and builds widgets from schema()
    offered = {k: m for k, m in all_methods().items() if "classification" in m.tasks}
    assert "bitfit" in offered and offered["bitfit"].label == "BitFit (biases only)"
    assert "bitfit" not in {k for k, m in all_methods().items() if "sft" in m.tasks}
    assert [f["name"] for f in get_method("bitfit").schema()] == ["train_head"]
    cfg = RunConfig.from_dict({"model": {"name": "minilm"}, "data": {"source": "builtin:sentiment"},
                               "method": {"name": "bitfit", "params": {"train_head": False}}})
    assert cfg.method.typed.train_head is False


def test_a_registered_method_is_estimated_and_exported_and_described(bitfit, tiny_bert, sentiment_file,
                                                                    tmp_path, runs_dir):
    from core.train import run
    cfg = RunConfig.from_dict({"model": {"name": tiny_bert},
                               "data": {"source": sentiment_file, "task": "classification", "max_length": 32,
                                        "val_share": 0.25},
                               "method": {"name": "bitfit", "params": {}},
                               "train": dict(max_steps=4, batch_size=4, learning_rate=1e-2, eval_steps=2,
                                             logging_steps=1, seed=7)})
    run_dir = str(tmp_path / "run")
    run(cfg, run_dir)
    from core import runs
    summary = runs.read_summary(run_dir)

    # the estimate: the method's own arguments, and the engine's trainable count
    name, kwargs = estimate.method_args({"name": "bitfit", "params": cfg.method.params})
    assert (name, kwargs) == ("bitfit", {})
    model_cfg = estimate.load_config(tiny_bert)
    report = estimate.report(model_cfg, name, task="classification", device="cpu", **kwargs)
    assert report["trainable"] == summary["trainable_params"] > 0
    assert report["memory"]["gradients"] == 4 * report["trainable"]

    # what the Runs page reads of a run: its config's method, whether it trained, its weights
    saved = runs.read_config(run_dir)
    assert saved["method"]["name"] == "bitfit" and get_method(saved["method"]["name"]).trains
    with open(os.path.join(run_dir, "weights.json"), encoding="utf-8") as fh:
        assert json.load(fh)["format"] == "full"

    # the export: the method's code in a script that trains the same run again
    script = export.export_script(run_dir)
    assert "module.bias.requires_grad_(True)" in script
    from tests.helpers.exported_script import run_exported
    loss, stdout = run_exported(script, tmp_path)
    assert f"trainable parameters: {summary['trainable_params']:,} of" in stdout
    assert loss == pytest.approx(export.final_training_loss(run_dir), rel=1e-3)


# ------------------------------------------------------------------------------ engine == estimate

def _shipped_configs() -> dict[str, RunConfig]:
    found = {f"examples/{n}": presets.load_example(n) for n in presets.list_examples()}
    found.update({"presets.app_defaults": presets.app_defaults(), "presets.facts_defaults": presets.facts_defaults()})
    return found


SHIPPED = _shipped_configs()


def test_every_shipped_method_is_covered_by_the_check_below():
    assert {cfg.method.name for cfg in SHIPPED.values()} >= {"lora", "qlora", "full", "linear_head", "prompt_tuning"}


def _built(cfg: RunConfig):
    """The engine's own build + method_context + apply, on the config's real (embedded) model."""
    import torch

    from core import models
    from core.build import build_model, method_context
    if cfg.method.name == "qlora":
        from core.methods.qlora import bitsandbytes_available
        if not bitsandbytes_available():
            pytest.skip("bitsandbytes is not installed")
    labels = ["negative", "positive"] if cfg.data.task == "classification" else None
    torch.manual_seed(0)
    model, kind = build_model(cfg, labels, "cpu")
    ctx = method_context(model, kind, cfg.data.task, models.load_tokenizer(cfg.model.name), cfg.model.name)
    return get_method(cfg.method.name).apply(model, cfg.method.typed, ctx)


@pytest.mark.parametrize("key", [k for k, c in SHIPPED.items() if c.method.name in ("lora", "qlora", "ia3")])
def test_the_engine_adapts_the_modules_the_estimate_counts(key):
    cfg = SHIPPED[key]
    method = get_method(cfg.method.name)
    adapted = _built(cfg).base_model.targeted_module_names

    name, kwargs = method.estimate_args(cfg.method.params)
    model_cfg = estimate.load_config(cfg.model.name)
    chosen = target_table.ia3_targets(model_cfg["model_type"]) if name == "ia3" else kwargs.get("targets")
    counted = estimate.targeted_layers(model_cfg, chosen, cfg.data.task, kwargs.get("top_layers", 0))
    paths = sorted(s.path for s in counted)
    matched = sorted(next((p for p in paths if a == p or a.endswith("." + p)), f"(not counted) {a}") for a in adapted)
    assert matched == paths
    assert len(adapted) == len(counted) > 0


@pytest.mark.parametrize("key", [k for k, c in SHIPPED.items() if get_method(c.method.name).trains])
def test_the_engine_trains_as_many_parameters_as_the_estimate_counts(key):
    """Trainable and total parameters of the engine's model (for classification: the encoder without
    its [CLS] pooler, under our own head) are the estimate's, as the Train page shows them."""
    from core.build import count_params
    cfg = SHIPPED[key]
    model = _built(cfg)
    trainable, _ = count_params(model)
    # peft keeps a frozen original next to the trained copy of a modules_to_save head: one head, counted once
    total = sum(p.numel() for name, p in model.named_parameters() if ".original_module." not in name)
    if cfg.method.name == "qlora":
        total = count_params(model)[1]
    name, kwargs = get_method(cfg.method.name).estimate_args(cfg.method.params)
    counted = inspect.signature(estimate.method_counts).parameters  # the rest (dropout...) is for memory
    counts = estimate.method_counts(estimate.load_config(cfg.model.name), name, task=cfg.data.task,
                                    **{k: v for k, v in kwargs.items() if k in counted})
    assert (counts.trainable, counts.total) == (trainable, total)


def test_auto_targets_are_one_table_for_engine_estimate_and_models():
    """distilbert used to get its first two linears from the engine (k_lin, lin1), q_lin/v_lin from the estimate."""
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    from core.train import method_context
    torch.manual_seed(0)
    tiny = DistilBertModel(DistilBertConfig(vocab_size=100, dim=16, n_layers=1, n_heads=2, hidden_dim=32))
    ctx = method_context(tiny, "encoder", "classification", None, "some/distilbert")
    assert ctx.default_targets == estimate.default_targets("distilbert") == target_table.lora_targets("distilbert")
    assert target_table.lora_targets("unknown-arch", ["b", "a", "c"]) == ["b", "a"]  # something, always


# ------------------------------------------------------------------------------ the export template

def test_the_export_template_is_lint_clean_python_with_every_block():
    with open(export.TEMPLATE, encoding="utf-8") as fh:
        source = fh.read()
    compile(source, export.TEMPLATE, "exec")
    from pyflakes.api import check
    from pyflakes.reporter import Reporter
    import io
    warnings, errors = io.StringIO(), io.StringIO()
    assert check(source, export.TEMPLATE, Reporter(warnings, errors)) == 0, warnings.getvalue() + errors.getvalue()
    blocks = {"docstring": '"""x"""', "settings": "", "model": "", "data": "", "engine": "", "method": ""}
    assert "# >>>" not in export.fill_template(blocks, source)
    with pytest.raises(ValueError):
        export.fill_template({"docstring": ""}, source)


def test_the_engine_helpers_are_copied_from_the_engine_not_retyped():
    import importlib
    copied = export.engine_source()
    for module, name in export.ENGINE_CODE:
        first = inspect.getsource(getattr(importlib.import_module(module), name)).strip().splitlines()
        body = next(line.strip() for line in first if line.strip().startswith(("def ", "class ")))
        assert body in copied, (module, name)
    assert "from core" not in copied and "import core" not in copied
