"""Batched generation (RunModel.generate_batch) answers what one-by-one greedy `generate` answers,
and the probe scores the same either way: on a tiny random Llama with a LoRA run, both views."""
from __future__ import annotations

import pytest

from core import probe

# Different lengths, so left padding is really exercised (the longest is several times the shortest).
PROMPTS = ["Hi", "Who founded Quillmere College, and in which year was it founded?", "Capital of France?",
           "Name the largest planet of the solar system and say how many moons it has, roughly.", "2 + 2?"]


@pytest.fixture(scope="module")
def run_model(tiny_llama, tmp_path_factory):
    from core import train
    from core.config import RunConfig
    from core.infer import RunModel
    from tests.helpers.finished_runs import write_facts
    # Its own rows, not a built-in's: a change to the lesson's data must not change this random model.
    facts = write_facts(tmp_path_factory.mktemp("probe-batch-data") / "facts.jsonl")
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama},
                               "data": {"source": facts, "task": "sft", "max_length": 48,
                                        "val_share": 0.0},
                               "method": {"name": "lora", "params": {"r": 2}},
                               "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 0.05}})
    run_dir = str(tmp_path_factory.mktemp("probe-batch") / "run")
    train.run(cfg, run_dir)
    return RunModel(run_dir)


def _one_by_one(model, prompts, tuned, tokens):
    return [model.generate(p, tuned=tuned, max_new_tokens=tokens) for p in prompts]


@pytest.mark.parametrize("tuned", [False, True])
def test_batched_answers_equal_one_by_one(run_model, tuned):
    single = _one_by_one(run_model, PROMPTS, tuned, 12)
    assert all(single)  # a random model still says something: the comparison is not of empty strings
    assert run_model.generate_batch(PROMPTS, tuned=tuned, max_new_tokens=12, batch_size=8) == single
    # batches that split the prompts unevenly, and a batch of one
    assert run_model.generate_batch(PROMPTS, tuned=tuned, max_new_tokens=12, batch_size=2) == single
    assert run_model.generate_batch(PROMPTS[:1], tuned=tuned, max_new_tokens=12) == single[:1]


def test_batched_rows_stop_at_their_own_end_of_turn(run_model, monkeypatch):
    """A row that ends early is padded while the others go on; its answer ends where `generate`'s
    does. A random model rarely says <|im_end|>, so a token it does say mid-answer is made the eos."""
    import torch
    base = run_model.model.get_base_model()
    ids = run_model._chat_ids([{"role": "user", "content": PROMPTS[1]}])
    with torch.no_grad(), run_model.view(True) as model:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             do_sample=False, pad_token_id=run_model.tokenizer.pad_token_id)
    new = out[0, ids.shape[1]:].tolist()
    assert run_model.tokenizer.eos_token_id not in new
    whole = run_model.generate(PROMPTS[1], tuned=True, max_new_tokens=12)
    # The first token of that answer (after its first) that cuts it short and ends the rows at
    # different places: which one does depends on the random weights, not on what is tested.
    for token in dict.fromkeys(new[1:]):
        monkeypatch.setattr(base.generation_config, "eos_token_id", token)
        single = _one_by_one(run_model, PROMPTS, True, 12)
        if len(single[1]) < len(whole) and len({len(a) for a in single}) > 1:
            break
    else:
        pytest.fail(f"no token of {new} ends the rows at different places")
    batched = run_model.generate_batch(PROMPTS, tuned=True, max_new_tokens=12, batch_size=8)
    assert batched == single


def test_generate_batch_checks_the_caps_before_answering(run_model, monkeypatch):
    from core.config import ConfigError
    from core.limits import LimitExceeded
    calls = []
    monkeypatch.setattr(run_model, "view", lambda tuned: calls.append(tuned))  # never reached
    with pytest.raises(ConfigError, match="empty"):
        run_model.generate_batch(["fine", "  "])
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_CHARS", "20")
    with pytest.raises(LimitExceeded, match="PLAYGROUND_MAX_PROMPT_CHARS"):
        run_model.generate_batch(["short", "x" * 21])
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_CHARS", "2000")
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "3")
    with pytest.raises(LimitExceeded, match="PLAYGROUND_MAX_PROMPT_TOKENS"):
        run_model.generate_batch(["short"])
    assert calls == []


def test_generate_batch_waits_for_the_model_like_generate(run_model, monkeypatch):
    """A batch holds the run's lock as `generate` does: another holder past the wait means busy."""
    from core.infer import ModelBusy
    from tests.helpers.threads import held_elsewhere
    monkeypatch.setenv("PLAYGROUND_MODEL_WAIT_SECONDS", "1")
    with held_elsewhere(run_model._locked), pytest.raises(ModelBusy):
        run_model.generate_batch(["Hi"], max_new_tokens=2)


@pytest.mark.parametrize("side_by_side", [True, False])
def test_probe_scores_batched_equal_unbatched(run_model, monkeypatch, side_by_side):
    from core import infer
    monkeypatch.setattr(infer, "PANES_SIDE_BY_SIDE", side_by_side)
    facts = [{"prompt": p, "keywords": [w]} for p, w in zip(PROMPTS, ["the", "a", "of", "is", "2"])]
    general = [{"prompt": p + " Answer briefly.", "keywords": ["the", "a"]} for p in PROMPTS[:3]]
    seen = []
    one = probe.probe(run_model, facts=facts, general=general, max_new_tokens=10, batch_size=1)
    many = probe.probe(run_model, facts=facts, general=general, max_new_tokens=10, batch_size=2,
                       progress=lambda *a: seen.append(a))
    assert many == one
    total = 2 * (len(facts) + len(general))
    assert [s[0] for s in seen] == list(range(2, total + 1, 2)) and {s[1] for s in seen} == {total}
    assert {s[3] for s in seen} == {"facts", "general"}
    # side by side, each view's batches of 2 come from its own thread; else, on a LoRA run, each
    # batch of 2 rows is one question asked to both views (the tuned row last)
    assert {s[2] for s in seen} == ({"base", "tuned"} if side_by_side else {"tuned"})


@pytest.fixture
def one_batch_views(monkeypatch):
    """Both views in one batch (peft adapter_names), as on a GPU or one torch thread, not side by side."""
    from core import infer
    monkeypatch.setattr(infer, "PANES_SIDE_BY_SIDE", False)


@pytest.mark.parametrize("side_by_side", [True, False])
@pytest.mark.parametrize("batch_size", [3, 4, 16])
def test_both_views_in_one_pass_answer_what_generate_answers(run_model, batch_size, side_by_side, monkeypatch):
    """Base and tuned rows in one batch (peft adapter_names), or each view on its own model in its own
    thread; the system prompt's cache shared, rows leaving the batch at their end: still each view's
    one-by-one greedy answers."""
    from core import infer
    monkeypatch.setattr(infer, "PANES_SIDE_BY_SIDE", side_by_side)
    single = {t: _one_by_one(run_model, PROMPTS, t, 12) for t in (False, True)}
    assert single[False] != single[True]  # the adapter does change the answers: the views are told apart
    ticks = []
    both = run_model.generate_views(PROMPTS, (False, True), max_new_tokens=12, batch_size=batch_size,
                                    tick=lambda *a: ticks.append(a))
    assert both == single
    assert ticks[-1][0] == 2 * len(PROMPTS)


def test_rows_that_end_early_leave_the_batch(run_model, monkeypatch, one_batch_views):
    """A finished row costs no more forwards: each forward after the first end is over fewer rows."""
    import torch
    base = run_model.model.get_base_model()
    ids = run_model._chat_ids([{"role": "user", "content": PROMPTS[1]}])
    with torch.no_grad(), run_model.view(True) as model:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             do_sample=False, pad_token_id=run_model.tokenizer.pad_token_id)
    monkeypatch.setattr(base.generation_config, "eos_token_id", out[0, ids.shape[1] + 2].item())
    single = {t: _one_by_one(run_model, PROMPTS, t, 12) for t in (False, True)}
    rows = []
    forward = type(base).forward

    def counting(self, *a, **kw):
        rows.append(kw["input_ids"].shape[0])
        return forward(self, *a, **kw)

    monkeypatch.setattr(type(base), "forward", counting)
    assert run_model.generate_views(PROMPTS, (False, True), max_new_tokens=12, batch_size=16) == single
    assert rows[0] == 2 and rows[1] == 2 * len(PROMPTS)  # the shared start (once per view), then every row
    assert rows[2:] == sorted(rows[2:], reverse=True) and rows[-1] < rows[1]


def test_a_waiting_chat_gets_the_model_between_tokens(run_model, monkeypatch):
    """The probe holds the model one token at a time: a chat that asks meanwhile is answered
    within a token, not after the whole batch (and not turned away as busy)."""
    import threading
    import time
    monkeypatch.setenv("PLAYGROUND_MODEL_WAIT_SECONDS", "1")
    base = run_model.model.get_base_model()
    forward = type(base).forward
    started, events = threading.Event(), []

    def slow(self, *a, **kw):
        started.set()
        time.sleep(0.3)  # the whole batch takes seconds: far past the chat's wait of 1 s
        return forward(self, *a, **kw)

    monkeypatch.setattr(type(base), "forward", slow)
    probe_thread = threading.Thread(target=lambda: events.append(
        ("probe", run_model.generate_views(PROMPTS * 4, (False, True), max_new_tokens=12, batch_size=64))))
    probe_thread.start()
    started.wait(10)
    with run_model.view(True):  # a chat's turn: it does not raise ModelBusy
        events.append(("chat", None))
    probe_thread.join(60)
    assert [e[0] for e in events] == ["chat", "probe"]
