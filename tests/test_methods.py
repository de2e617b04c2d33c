"""Every method on every task and model kind it supports, through the real engine (core.train.run).

Each case trains a tiny model for 3 steps at a high learning rate and checks that
  * every trainable tensor moved and every frozen one is bitwise unchanged,
  * the trainable count is the one peft itself reports (peft methods) or the expected one,
  * the saved run reloads (core.infer.RunModel) to exactly the in-memory trained model's outputs,
  * the reloaded base view (tuned=False) gives the untrained model's outputs.
Outputs are classification logits/probabilities, or for sft the next-token logits and the greedy
tokens the public generate() call produces.
"""
from __future__ import annotations

import dataclasses

import pytest
import torch

import core.train as train_mod
from core.config import RunConfig
from core.infer import REPETITION_PENALTY, RunModel
from core.scoring import label_word_probs
from core.methods import all_methods

# Every Trainer run ends in accelerate's gc.collect(), which with torch/transformers/peft imported
# walks ~500k long-lived library objects (~0.4 s CPU a run, dozens of runs here). Freezing what is
# loaded now keeps the suite fast; objects the tests make later are collected as usual.
import gc  # noqa: E402

from transformers import Trainer  # noqa: E402,F401  (loaded before the freeze)

gc.freeze()

TEXTS = ["a wonderful joyful film", "tedious and ugly, I hated it"]
PROMPT = "Who founded Quillmere number 3?"
NEW_TOKENS = 4


def make_cfg(model: str, data: str, task: str = "classification", method: str = "lora",
             params: dict | None = None, **train) -> RunConfig:
    t = dict(max_steps=3, batch_size=4, learning_rate=1e-2, lr_scheduler="constant", warmup_ratio=0.0,
             eval_steps=100, logging_steps=1, seed=7)
    t.update(train)
    return RunConfig.from_dict({"model": {"name": model},
                                "data": {"source": data, "task": task, "max_length": 32},
                                "method": {"name": method, "params": dict(params or {})}, "train": t})


# ------------------------------------------------------------------------------------------------
# Outputs of a model, the way RunModel shows them
# ------------------------------------------------------------------------------------------------
def _inner(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@torch.no_grad()
def class_outputs(model, tokenizer, kind: str, label_names: list[str]) -> torch.Tensor:
    """Logits per text (or label-word probabilities for a causal LM with no classifier head)."""
    was_training = model.training
    model.eval()
    try:
        if kind == "causal" and not hasattr(_inner(model), "score"):
            return torch.tensor(label_word_probs(model, tokenizer, TEXTS, label_names, 32))
        rows = []
        for text in TEXTS:
            enc = tokenizer(text, truncation=True, max_length=32, return_tensors="pt")
            if kind == "causal":
                enc.pop("token_type_ids", None)
            rows.append(model(**enc).logits[0].float())
        return torch.stack(rows)
    finally:
        model.train(was_training)


def prompt_ids(tokenizer) -> torch.Tensor:
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return torch.tensor([list(ids)])


@torch.no_grad()
def sft_outputs(model, tokenizer) -> tuple[torch.Tensor, list[int]]:
    """(next-token logits after the prompt, greedy new tokens with RunModel.generate's settings)."""
    was_training = model.training
    model.eval()
    try:
        ids = prompt_ids(tokenizer)
        mask = torch.ones_like(ids)
        logits = model(input_ids=ids, attention_mask=mask).logits[0, -1].float()
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, do_sample=False,
                             repetition_penalty=REPETITION_PENALTY, pad_token_id=tokenizer.pad_token_id)
        return logits, out[0, ids.shape[1]:].tolist()
    finally:
        model.train(was_training)


def outputs(model, tokenizer, kind: str, task: str, label_names):
    if task == "sft":
        return sft_outputs(model, tokenizer)
    return class_outputs(model, tokenizer, kind, label_names)


def assert_same_outputs(got, want, what: str):
    if isinstance(want, tuple):  # sft
        torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5, msg=f"{what}: next-token logits")
        assert got[1] == want[1], f"{what}: greedy tokens {got[1]} != {want[1]}"
    else:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=f"{what}: logits")


# ------------------------------------------------------------------------------------------------
# A run with the in-memory model captured
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Trained:
    summary: dict
    run_dir: str
    prepared: object
    before: dict            # parameter name -> tensor right after the method was applied
    trainable_names: set
    untrained: object       # outputs of the freshly built model, before the method touched it
    events: list


def train_capturing(cfg: RunConfig, run_dir: str, monkeypatch) -> Trained:
    from core import models
    cap: dict = {}
    tokenizer = models.load_tokenizer(cfg.model.name)
    real_build, real_prepare = train_mod.build_model, train_mod.prepare

    def build(cfg_, label_names, device):
        model, kind = real_build(cfg_, label_names, device)
        if "untrained" not in cap:  # prepare's build; apply() will change this very object
            cap["untrained"] = outputs(model, tokenizer, kind, cfg_.data.task, label_names)
        return model, kind

    def prepare(cfg_, events=lambda e: None):
        p = real_prepare(cfg_, events)
        cap["p"] = p
        cap["before"] = {n: t.detach().clone() for n, t in p.model.named_parameters()}
        cap["trainable"] = {n for n, t in p.model.named_parameters() if t.requires_grad}
        return p

    events: list = []
    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "build_model", build)
        mp.setattr(train_mod, "prepare", prepare)
        summary = train_mod.run(cfg, run_dir, on_event=events.append)
    return Trained(summary, run_dir, cap["p"], cap["before"], cap["trainable"], cap["untrained"], events)


# ------------------------------------------------------------------------------------------------
# The matrix
# ------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Case:
    model: str      # fixture name
    task: str
    method: str
    params: tuple = ()

    @property
    def id(self) -> str:
        extra = "-".join(f"{k}={v}" for k, v in self.params)
        return f"{self.model}-{self.task}-{self.method}" + (f"-{extra}" if extra else "")


def _cases() -> list:
    """One fast case per (method, task, model); each knob is covered on one model in the fast set,
    the remaining combinations of knobs are marked slow."""
    fast_params = {  # (method, model, task) -> params for the fast case
        ("linear_head", "tiny_bert", "classification"): (("cache_features", False), ("head_hidden", 16)),
        ("linear_head", "tiny_llama", "classification"): (("cache_features", True), ("head_hidden", 16)),
        ("lora", "tiny_llama", "classification"): (("use_dora", True), ("use_rslora", True)),
        ("prompt_tuning", "tiny_bert", "classification"): (("init", "text"), ("init_text", "Is it good?")),
    }
    slow_params = {  # method -> extra variants run everywhere the method runs, marked slow
        "linear_head": [(), (("cache_features", False),)],
        "lora": [(), (("use_dora", True),), (("use_rslora", True), ("targets", "auto"))],
        "prompt_tuning": [(), (("init", "text"),)],
    }
    out = []
    for model, task in (("tiny_bert", "classification"), ("tiny_llama", "classification"),
                        ("tiny_llama", "sft")):
        for name, method in all_methods().items():
            if task not in method.tasks:
                continue
            fast = fast_params.get((name, model, task), ())
            out.append(pytest.param(Case(model, task, name, fast), id=Case(model, task, name, fast).id))
            for params in slow_params.get(name, []):
                if params != fast:
                    case = Case(model, task, name, params)
                    out.append(pytest.param(case, id=case.id, marks=pytest.mark.slow))
    return out


CASES = _cases()


def test_matrix_covers_every_method_and_task():
    covered = {(c.values[0].method, c.values[0].task, c.values[0].model) for c in CASES if not c.marks}
    for name, method in all_methods().items():
        for task in method.tasks:
            models = ["tiny_llama"] if task == "sft" else ["tiny_bert", "tiny_llama"]
            for model in models:
                assert (name, task, model) in covered, f"{name} on {task}/{model} is not tested"


@pytest.mark.parametrize("case", CASES)
def test_method_trains_saves_and_reloads(case: Case, request, tmp_path, runs_dir, monkeypatch):
    model_dir = request.getfixturevalue(case.model)
    data = request.getfixturevalue("facts_file" if case.task == "sft" else "sentiment_file")
    method = all_methods()[case.method]
    cfg = make_cfg(model_dir, data, case.task, case.method, dict(case.params))
    t = train_capturing(cfg, str(tmp_path / "run"), monkeypatch)
    p, summary = t.prepared, t.summary
    assert summary["state"] == "completed"

    # -- what trained and what did not ---------------------------------------------------------
    after = dict(p.model.named_parameters())
    assert set(after) == set(t.before)
    frozen_changed = [n for n in t.before if n not in t.trainable_names and not torch.equal(after[n].detach(), t.before[n])]
    assert not frozen_changed, f"frozen parameters changed: {frozen_changed[:5]}"
    unchanged = [n for n in t.trainable_names if torch.equal(after[n].detach(), t.before[n])]
    assert not unchanged, f"trainable parameters that did not move: {unchanged[:5]}"
    if method.trains:
        assert t.trainable_names and summary["steps"] == 3
        steps = sorted({e["step"] for e in t.events if e["type"] == "log"})
        assert steps == [1, 2, 3]
    else:
        assert not t.trainable_names and summary["trainable_params"] == 0

    # -- counts ----------------------------------------------------------------------------------
    n_trainable = sum(x.numel() for n, x in after.items() if n in t.trainable_names)
    assert summary["trainable_params"] == p.trainable
    if method.saves_adapter:
        peft_trainable, _ = p.model.get_nb_trainable_parameters()
        assert p.trainable == peft_trainable
    else:
        assert p.trainable == n_trainable
    if case.method == "full":
        assert p.trainable == p.total
    if case.method == "linear_head":
        head = p.model.classifier if case.model == "tiny_bert" else p.model.score
        assert p.trainable == sum(x.numel() for x in head.parameters())
        hidden = dict(case.params).get("head_hidden", 0)
        if hidden:  # the hidden layer asked for is really there, on either kind of model
            assert any(getattr(m, "out_features", None) == hidden for m in head.modules())

    # -- reload: tuned == in memory, base == untrained ---------------------------------------------
    loaded = RunModel(t.run_dir)
    kind, labels = p.kind, p.label_names
    trained = outputs(p.model, p.tokenizer, kind, case.task, labels)
    with loaded.view(tuned=True) as m:
        assert_same_outputs(outputs(m, loaded.tokenizer, kind, case.task, labels), trained, "reloaded tuned")
    with loaded.view(tuned=False) as m:
        assert_same_outputs(outputs(m, loaded.tokenizer, kind, case.task, labels), t.untrained, "reloaded base")
    # the public calls agree too
    if case.task == "classification":
        probs = loaded.classify(TEXTS[0])
        assert list(probs) == labels
        want = trained[0] if kind == "causal" and not method.trains else torch.softmax(trained[0], -1)
        torch.testing.assert_close(torch.tensor(list(probs.values())), want, rtol=1e-4, atol=1e-5)
        base_probs = loaded.classify(TEXTS[0], tuned=False)
        want = t.untrained[0] if kind == "causal" and not method.trains else torch.softmax(t.untrained[0], -1)
        torch.testing.assert_close(torch.tensor(list(base_probs.values())), want, rtol=1e-4, atol=1e-5)
    else:
        text = loaded.generate(PROMPT, max_new_tokens=NEW_TOKENS)
        assert text == loaded.tokenizer.decode(trained[1], skip_special_tokens=True).strip()
        base_text = loaded.generate(PROMPT, tuned=False, max_new_tokens=NEW_TOKENS)
        assert base_text == loaded.tokenizer.decode(t.untrained[1], skip_special_tokens=True).strip()
    # and after a base view the tuned one is back
    with loaded.view(tuned=True) as m:
        if case.task == "sft":
            with torch.no_grad():
                logits = m(input_ids=prompt_ids(loaded.tokenizer)).logits[0, -1].float()
            torch.testing.assert_close(logits.detach(), trained[0], rtol=1e-4, atol=1e-5)
        else:
            assert_same_outputs(outputs(m, loaded.tokenizer, kind, case.task, labels), trained, "tuned after base")


# ------------------------------------------------------------------------------------------------
# LoRA knobs: which modules get adapters (prepare only, nothing trains)
# ------------------------------------------------------------------------------------------------
def _adapted(model) -> dict[str, set[int]]:
    """module short name -> layer numbers that carry a LoRA adapter."""
    from core.anatomy import lora_anatomy
    out: dict[str, set[int]] = {}
    for e in lora_anatomy(model):
        out.setdefault(e["module"], set()).add(e["layer"])
    return out


@pytest.mark.parametrize("model_fixture,params,want", [
    ("tiny_bert", {"targets": "auto"}, {"query": {0, 1}, "value": {0, 1}}),
    ("tiny_llama", {"targets": "auto"}, {"q_proj": {0, 1}, "v_proj": {0, 1}}),
    ("tiny_bert", {"targets": "all-linear"}, {"query": {0, 1}, "key": {0, 1}, "value": {0, 1}, "dense": {0, 1}}),
    ("tiny_llama", {"targets": "all-linear"},
     {m: {0, 1} for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}),
    ("tiny_bert", {"targets": "key"}, {"key": {0, 1}}),
    ("tiny_llama", {"targets": "k_proj, o_proj"}, {"k_proj": {0, 1}, "o_proj": {0, 1}}),
    ("tiny_llama", {"targets": "all-linear", "top_layers": 1},
     {m: {1} for m in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}),
    ("tiny_bert", {"targets": "query", "top_layers": 5}, {"query": {0, 1}}),  # more than there are: all
], ids=["bert-auto", "llama-auto", "bert-all", "llama-all", "bert-explicit", "llama-explicit",
        "llama-top1", "bert-top-too-many"])
def test_lora_targets(model_fixture, params, want, request, sentiment_file):
    cfg = make_cfg(request.getfixturevalue(model_fixture), sentiment_file, params=params)
    p = train_mod.prepare(cfg)
    assert _adapted(p.model) == want
    # the new head trains beside the adapters, and nothing else of the base does
    base_trainable = [n for n, x in p.model.named_parameters()
                      if x.requires_grad and "lora_" not in n and "modules_to_save" not in n]
    assert base_trainable == []


def test_lora_dora_and_rslora_change_the_adapter(tiny_llama, sentiment_file):
    plain = train_mod.prepare(make_cfg(tiny_llama, sentiment_file, params={"r": 4, "alpha": 8, "targets": "q_proj"}))
    fancy = train_mod.prepare(make_cfg(tiny_llama, sentiment_file, params={
        "r": 4, "alpha": 8, "targets": "q_proj", "use_dora": True, "use_rslora": True}))
    layer = lambda p: p.model.base_model.model.model.layers[0].self_attn.q_proj
    assert layer(plain).scaling["default"] == pytest.approx(8 / 4)
    assert layer(fancy).scaling["default"] == pytest.approx(8 / 4 ** 0.5)
    assert "default" in layer(fancy).lora_magnitude_vector and not layer(plain).lora_magnitude_vector
    assert fancy.trainable == plain.trainable + 2 * 32  # one magnitude per output unit, per layer


def test_qlora_build_fixes_the_mmap_threshold(tiny_llama, facts_file, monkeypatch):
    """A quantised base turns off glibc's sliding mmap threshold (RSS: see return_freed_memory_promptly)."""
    from core.methods import qlora
    calls = []
    monkeypatch.setattr(qlora, "return_freed_memory_promptly", lambda: calls.append(1) or True)
    train_mod.prepare(make_cfg(tiny_llama, facts_file, "sft", "qlora", {"targets": "q_proj"}))
    assert calls == [1]
    train_mod.prepare(make_cfg(tiny_llama, facts_file, "sft", "lora", {"targets": "q_proj"}))
    assert calls == [1]  # only for a 4-bit base


def test_mmap_threshold_is_set_on_glibc():
    import platform

    from core.methods.qlora import return_freed_memory_promptly
    assert return_freed_memory_promptly() is (platform.libc_ver()[0] == "glibc")


def test_qlora_base_is_4bit_and_its_weights_stay_unpacked(tiny_llama, facts_file):
    """bitsandbytes repacks 4-bit weights in place on their first eval forward on AVX512-bf16 CPUs,
    after which training forwards lose their gradient; the engine keeps them in the plain layout."""
    import bitsandbytes as bnb
    p = train_mod.prepare(make_cfg(tiny_llama, facts_file, "sft", "qlora", {"targets": "q_proj"}))
    layers = [m for m in p.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(not m.support_avx512bf16_for_cpu for m in layers)
    # 4-bit weights are stored two to a byte; the counts use their real element count
    real = sum(m.in_features * m.out_features for m in layers)
    stored = sum(m.weight.numel() for m in layers)
    assert p.total == sum(x.numel() for x in p.model.parameters()) - stored + real
