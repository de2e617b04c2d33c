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
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama},
                               "data": {"source": "builtin:facts-mini", "task": "sft", "max_length": 48,
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
    monkeypatch.setattr(base.generation_config, "eos_token_id", new[3])
    single = _one_by_one(run_model, PROMPTS, True, 12)
    batched = run_model.generate_batch(PROMPTS, tuned=True, max_new_tokens=12, batch_size=8)
    assert batched == single
    assert len(single[1]) < len(whole)  # the made-up eos did cut this answer short
    assert len({len(a) for a in single}) > 1  # the rows did end at different places


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
    import threading

    from core.infer import ModelBusy
    monkeypatch.setenv("PLAYGROUND_MODEL_WAIT_SECONDS", "1")
    held, release = threading.Event(), threading.Event()

    def hold():
        with run_model._locked():
            held.set()
            release.wait(10)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    try:
        with pytest.raises(ModelBusy):
            run_model.generate_batch(["Hi"], max_new_tokens=2)
    finally:
        release.set()
        thread.join()


def test_probe_scores_batched_equal_unbatched(run_model):
    facts = [{"prompt": p, "keywords": [w]} for p, w in zip(PROMPTS, ["the", "a", "of", "is", "2"])]
    general = [{"prompt": p + " Answer briefly.", "keywords": ["the", "a"]} for p in PROMPTS[:3]]
    seen = []
    one = probe.probe(run_model, facts=facts, general=general, max_new_tokens=10, batch_size=1)
    many = probe.probe(run_model, facts=facts, general=general, max_new_tokens=10, batch_size=2,
                       progress=lambda *a: seen.append(a))
    assert many == one
    total = 2 * (len(facts) + len(general))
    # a view's 5 facts and 3 general questions in batches of 2, the third batch across both parts
    assert [s[0] for s in seen] == [2, 4, 6, 8, 10, 12, 14, 16] and seen[-1][0] == total
    assert [s[2:] for s in seen[:4]] == [("base", "facts")] * 2 + [("base", "general")] * 2
    assert seen[-1][2:] == ("tuned", "general")
