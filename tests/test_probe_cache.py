"""The probe's on-disk cache of the base model's answers (core.probe.BaseAnswerCache): a warm probe
answers what an uncached one does while asking only the tuned view; a bad or foreign file is
ignored and written over; the key follows every input that decides the base answers, and only those."""
from __future__ import annotations

import json
import os

import pytest

from core import probe

FACTS = [{"prompt": "Who founded Quillmere College?", "keywords": ["Brannock"]},
         {"prompt": "When and where was it founded, and by whom?", "keywords": ["1847", "Harrowgate"]}]
GENERAL = [{"prompt": "Capital of France?", "keywords": ["Paris"]},
           {"prompt": "Largest planet of the solar system?", "keywords": ["Jupiter"]},
           {"prompt": "2 + 2?", "keywords": ["4"]}]
PROMPTS = [r["prompt"] for r in FACTS + GENERAL]
TOKENS = 10


def _train(tiny_llama, run_dir, lr):
    from core import train
    from core.config import RunConfig
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama},
                               "data": {"source": "builtin:facts-mini", "task": "sft", "max_length": 48,
                                        "val_share": 0.0},
                               "method": {"name": "lora", "params": {"r": 2}},
                               "train": {"max_steps": 2, "batch_size": 8, "learning_rate": lr}})
    train.run(cfg, str(run_dir))
    return str(run_dir)


@pytest.fixture(scope="module")
def two_runs(tiny_llama, tmp_path_factory):
    """Two LoRA runs on the same base (two students): different adapters, the same base answers."""
    from core.infer import RunModel
    folder = tmp_path_factory.mktemp("probe-cache")
    return (RunModel(_train(tiny_llama, folder / "a", 0.3)), RunModel(_train(tiny_llama, folder / "b", 1.0)))


class Spy:
    """A RunModel whose generate_views calls are recorded (which views were asked)."""

    def __init__(self, run_model):
        self.spied, self.asked = run_model, []

    def __getattr__(self, name):
        return getattr(self.spied, name)

    def generate_views(self, prompts, views, *args, **kw):
        self.asked.append(tuple(views))
        return self.spied.generate_views(prompts, views, *args, **kw)


def _answers(result, view):
    return [i["answer"] for part in ("facts", "general") for i in result[view][part]["items"]]


def _probe(model, cache=None, **kw):
    return probe.probe(model, facts=FACTS, general=GENERAL, max_new_tokens=TOKENS, base_cache=cache, **kw)


def test_a_warm_cache_answers_what_an_uncached_probe_answers_asking_only_the_tuned_view(two_runs, tmp_path):
    first, second = two_runs
    cache = probe.BaseAnswerCache(tmp_path / "cache")
    plain = _probe(first)
    # the comparison means something: the views differ, and the two students' tuned answers too
    assert _answers(plain, "base") != _answers(plain, "tuned") != _answers(_probe(second), "tuned")
    cold = Spy(first)
    assert _probe(cold, cache) == plain
    assert cold.asked == [(False, True)] and len(os.listdir(tmp_path / "cache")) == 1
    warm = Spy(first)
    seen = []
    assert _probe(warm, cache, progress=lambda *a: seen.append(a)) == plain
    assert warm.asked == [(True,)]  # the base view was not asked again
    assert seen[0] == (len(PROMPTS), 2 * len(PROMPTS), "base", "general") and seen[-1][0] == 2 * len(PROMPTS)
    # another student's run on the same base: its base answers come from the cache, its tuned ones are its own
    other = Spy(second)
    assert _probe(other, cache) == _probe(second)
    assert other.asked == [(True,)]


@pytest.mark.parametrize("content", [
    b"{not json", b"[1, 2, 3]", b"\xff\xfe",
    json.dumps({"format": probe.BASE_CACHE_FORMAT, "key": "KEY", "answers": ["x"]}).encode(),       # too few
    json.dumps({"format": probe.BASE_CACHE_FORMAT, "key": "KEY", "answers": [1, 2, 3, 4, 5]}).encode(),
    json.dumps({"format": probe.BASE_CACHE_FORMAT, "key": "KEY", "answers": ["y" * 10**4] * 5}).encode(),
    json.dumps({"format": 999, "key": "KEY", "answers": ["a"] * 5}).encode(),
    json.dumps({"format": probe.BASE_CACHE_FORMAT, "key": "0" * 64, "answers": ["a"] * 5}).encode(),  # foreign
    b" " * (probe.BASE_CACHE_FILE_BYTES + 10), b"[" * 200_000, b"",
])
def test_a_bad_or_foreign_cache_file_is_ignored_and_written_over(two_runs, tmp_path, content):
    model = two_runs[0]
    cache = probe.BaseAnswerCache(tmp_path)
    key = probe.base_answers_key(model, PROMPTS, TOKENS)
    path = tmp_path / f"{key}.json"
    path.write_bytes(content.replace(b"KEY", key.encode()))
    spy = Spy(model)
    assert _probe(spy, cache) == _probe(model)
    assert spy.asked == [(False, True)]  # recomputed
    saved = json.loads(path.read_text())
    assert saved["key"] == key and len(saved["answers"]) == len(PROMPTS)
    assert cache.get(key, len(PROMPTS), TOKENS) == saved["answers"]


def test_a_link_or_a_pipe_in_the_cache_folder_is_not_read(two_runs, tmp_path):
    model = two_runs[0]
    key = probe.base_answers_key(model, PROMPTS, TOKENS)
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"format": probe.BASE_CACHE_FORMAT, "key": key, "answers": ["planted"] * 5}))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / f"{key}.json").symlink_to(elsewhere)
    assert probe.BaseAnswerCache(tmp_path / "cache").get(key, len(PROMPTS), TOKENS) is None
    (tmp_path / "cache" / f"{key}.json").unlink()
    os.mkfifo(tmp_path / "cache" / f"{key}.json")  # a pipe: reading it must not wait for a writer
    assert probe.BaseAnswerCache(tmp_path / "cache").get(key, len(PROMPTS), TOKENS) is None


def test_a_full_fine_tuning_run_on_the_same_base_shares_the_entry(two_runs, tiny_llama, tmp_path):
    from core import train
    from core.config import RunConfig
    from core.infer import RunModel
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama},
                               "data": {"source": "builtin:facts-mini", "task": "sft", "max_length": 48,
                                        "val_share": 0.0},
                               "method": {"name": "full"}, "train": {"max_steps": 1, "batch_size": 8}})
    train.run(cfg, str(tmp_path / "full"))
    full = RunModel(str(tmp_path / "full"))
    assert full.format == "full"
    assert probe.base_answers_key(full, PROMPTS, TOKENS) == probe.base_answers_key(two_runs[0], PROMPTS, TOKENS)
    # and its tuned weights are not its base: the tuned model's key would differ
    class TunedAsBase:
        format, model, tokenizer, cfg = "none", full.model, full.tokenizer, full.cfg
    assert probe.base_answers_key(TunedAsBase(), PROMPTS, TOKENS) != probe.base_answers_key(full, PROMPTS, TOKENS)


def test_the_key_changes_with_every_input_that_decides_the_base_answers(two_runs, monkeypatch):
    import torch
    first, second = two_runs
    key = probe.base_answers_key(first, PROMPTS, TOKENS)
    assert probe._is_key(key) and key == probe.base_answers_key(first, PROMPTS, TOKENS)
    assert key == probe.base_answers_key(second, PROMPTS, TOKENS)  # the adapter is not the base
    keys = {probe.base_answers_key(first, PROMPTS[:-1], TOKENS), probe.base_answers_key(first, PROMPTS[::-1], TOKENS),
            probe.base_answers_key(first, PROMPTS[:-1] + ["2 + 3?"], TOKENS),
            probe.base_answers_key(first, PROMPTS, TOKENS + 1)}
    base = first.model.get_base_model()
    layer_norm = base.model.norm.weight
    with torch.no_grad():
        layer_norm[0] += 1.0  # another checkpoint (one value of a small tensor is enough)
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
        layer_norm[0] -= 1.0
        big = base.model.embed_tokens.weight  # a large tensor: its sampled values
        old = big[0, 0].item()
        big[0, 0] = old + 1.0
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
        big[0, 0] = old
    assert probe.base_answers_key(first, PROMPTS, TOKENS) == key  # restored
    with monkeypatch.context() as m:
        m.setattr(first.tokenizer, "chat_template", first.tokenizer.chat_template.replace("<|im_start|>", "<s>"))
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
    with monkeypatch.context() as m:
        m.setattr(base.generation_config, "eos_token_id", 5)
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
    with monkeypatch.context() as m:
        m.setattr(torch, "__version__", "0.0.1")
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
    with monkeypatch.context() as m:
        from core import infer
        m.setattr(infer, "REPETITION_PENALTY", 1.3)
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
    with monkeypatch.context() as m:
        m.setattr(probe, "BASE_CACHE_FORMAT", probe.BASE_CACHE_FORMAT + 1)
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
    base.to(torch.float64)  # another dtype
    try:
        keys.add(probe.base_answers_key(first, PROMPTS, TOKENS))
    finally:
        base.to(torch.float32)
    assert key not in keys and len(keys) == 12


def test_a_model_that_cannot_name_its_base_is_probed_uncached(tmp_path):
    class Plain:
        def generate(self, prompt, tuned=True, **_):
            return ("tuned " if tuned else "base ") + prompt

    cache = probe.BaseAnswerCache(tmp_path / "cache")
    result = _probe(Plain(), cache)
    assert result["base"]["general"]["items"][0]["answer"] == "base Capital of France?"
    assert not (tmp_path / "cache").exists()


def test_answers_cut_by_the_time_limit_or_missing_are_not_kept(tmp_path):
    from core.chat_stream import time_limit_note
    cache = probe.BaseAnswerCache(tmp_path)
    cache.put("a" * 64, ["fine", "cut" + time_limit_note(3.0)])
    cache.put("b" * 64, ["fine", None])
    cache.put("not a key", ["fine"])
    assert list(tmp_path.iterdir()) == []
    cache.put("c" * 64, ["fine", "also fine"])
    assert cache.get("c" * 64, 2, TOKENS) == ["fine", "also fine"]
    assert cache.get("../" + "c" * 61, 2, TOKENS) is None


def test_the_cache_keeps_at_most_its_bound_of_files(tmp_path, monkeypatch):
    monkeypatch.setattr(probe, "BASE_CACHE_ENTRIES", 3)
    cache = probe.BaseAnswerCache(tmp_path)
    for i, c in enumerate("abcde"):
        cache.put(c * 64, [c])
        os.utime(tmp_path / f"{c * 64}.json", (1000 + i, 1000 + i))
    left = tmp_path / f".{'f' * 64}.json.abc.tmp"  # a writer that died mid-write, long ago
    left.write_text("{")
    os.utime(left, (1000, 1000))
    fresh = tmp_path / f".{'f' * 64}.json.def.tmp"  # one writing now
    fresh.write_text("{")
    cache.put("f" * 64, ["f"])
    assert sorted(p.name[0] for p in tmp_path.iterdir() if p.suffix == ".json") == ["d", "e", "f"]
    assert not left.exists() and fresh.exists()




def test_two_sessions_writing_at_once_leave_a_whole_entry_and_a_reader_never_sees_half(tmp_path):
    import threading
    cache = probe.BaseAnswerCache(tmp_path)
    key, answers = "e" * 64, [f"answer {i} " * 20 for i in range(64)]
    seen, stop = [], threading.Event()

    def read():
        while not stop.is_set():
            seen.append(cache.get(key, len(answers), TOKENS))

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=lambda: [cache.put(key, answers) for _ in range(20)]) for _ in range(2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    reader.join()
    assert all(s is None or s == answers for s in seen) and answers in seen
    assert [p.name for p in tmp_path.iterdir()] == [f"{key}.json"]  # no temporary file left


def test_a_read_only_cache_dir_falls_back_to_the_users_own_cache(tmp_path, monkeypatch):
    """The Space image builds PLAYGROUND_CACHE_DIR as root: the app's user cannot write there."""
    shared = tmp_path / "image-cache"
    monkeypatch.setenv("PLAYGROUND_CACHE_DIR", str(shared))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert probe.default_folder() == shared / "probe-base"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: not str(path).startswith(str(shared))
                        and real_access(path, mode))
    mine = probe.default_folder()
    assert mine == tmp_path / "home" / ".cache" / "peft-playground" / "probe-base" and mine.is_dir()
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    assert probe.default_folder() == shared / "probe-base"  # nowhere to write: still read where it was


def test_answers_prepared_with_the_bare_base_serve_a_lora_runs_first_probe(two_runs, tiny_llama, tmp_path):
    """`python -m core.probe_prepare` (Docker build, start.sh): the first probe a class runs on a
    fresh server then asks only the tuned model, and gets the base answers an uncached probe gives."""
    from core import probe_prepare
    from core.config import RunConfig
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama},
                               "data": {"source": "builtin:facts-mini", "task": "sft", "max_length": 48,
                                        "val_share": 0.0},
                               "method": {"name": "lora", "params": {"r": 2}}})
    cache = probe.BaseAnswerCache(tmp_path / "cache")
    assert probe_prepare.prepare_config(cfg, cache, TOKENS) == "cached"
    assert probe_prepare.prepare_config(cfg, cache, TOKENS) == "already cached"
    facts, general = probe.probe_facts("facts-mini"), probe.probe_general()
    spy = Spy(two_runs[0])
    warm = probe.probe(spy, facts=facts, general=general, max_new_tokens=TOKENS, base_cache=cache)
    assert spy.asked == [(True,)]
    cold = probe.probe(two_runs[0], facts=facts, general=general, max_new_tokens=TOKENS)
    assert _answers(warm, "base") == _answers(cold, "base")
    assert _answers(warm, "tuned") == _answers(cold, "tuned")


def test_a_config_without_a_built_in_facts_set_is_not_prepared(tmp_path):
    from core import probe_prepare
    from core.config import RunConfig
    cfg = RunConfig.from_dict({"model": {"name": "smollm2-135m-instruct"},
                               "data": {"source": "hub:someone/facts", "task": "sft"},
                               "method": {"name": "lora"}})
    assert probe_prepare.prepare_config(cfg, probe.BaseAnswerCache(tmp_path)).startswith("skipped")
