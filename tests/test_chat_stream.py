"""Both Compare panes at once (RunModel.generate_views_stream), in one batch or side by side in two
threads: each pane's answer is what one-by-one greedy `generate` answers with that pane's own history;
runs that cannot, and sampling, answer one pane after the other; a cancel, a closed reader or a failed
pane stops the answer."""
from __future__ import annotations

import threading

import pytest

PROMPT = "Who founded Quillmere College, and in which year?"
# The panes' histories differ (Remember chat): the rows have different lengths, so left padding is used.
HISTORIES = {"base": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}],
             "tuned": [{"role": "user", "content": "Name the largest planet of the solar system and say how "
                                                   "many moons it has, roughly."},
                       {"role": "assistant", "content": "Jupiter, with about ninety-five moons."}]}
VIEWS = {"base": False, "tuned": True}


def _run(tiny_llama, folder, method: str, params: dict):
    from core import train
    from core.config import RunConfig
    from core.infer import RunModel
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama},
                               "data": {"source": "builtin:facts-mini", "task": "sft", "max_length": 48,
                                        "val_share": 0.0},
                               "method": {"name": method, "params": params},
                               "train": {"max_steps": 2, "batch_size": 8, "learning_rate": 0.05}})
    train.run(cfg, str(folder / "run"))
    return RunModel(str(folder / "run"))


@pytest.fixture(scope="module")
def lora_model(tiny_llama, tmp_path_factory):
    return _run(tiny_llama, tmp_path_factory.mktemp("chat-lora"), "lora", {"r": 2})


@pytest.fixture(scope="module")
def ia3_model(tiny_llama, tmp_path_factory):
    return _run(tiny_llama, tmp_path_factory.mktemp("chat-ia3"), "ia3", {})


def _collect(events):
    """{pane: text} and the order of the events' panes ("base"/"tuned", "end:<pane>" for a pane's end)."""
    texts, order = {}, []
    for pane, piece in events:
        order.append(pane if piece is not None else f"end:{pane}")
        if piece is not None:
            texts[pane] = texts.get(pane, "") + piece
    return texts, order


def _forward_batches(monkeypatch, run_model):
    """The batch sizes and adapter_names of every forward of the run's base model."""
    base = run_model.model.get_base_model()
    forward, seen = type(base).forward, []

    def counting(self, *a, **kw):
        seen.append(kw["input_ids"].shape[0])
        return forward(self, *a, **kw)

    monkeypatch.setattr(type(base), "forward", counting)
    return seen


def test_both_panes_in_one_generation_equal_one_by_one(lora_model, monkeypatch):
    one_by_one = {p: lora_model.generate(PROMPT, tuned=t, max_new_tokens=12, history=HISTORIES[p])
                  for p, t in VIEWS.items()}
    assert all(one_by_one.values()) and one_by_one["base"] != one_by_one["tuned"]  # the adapter matters
    rows = [len(lora_model._chat_ids(HISTORIES[p] + [{"role": "user", "content": PROMPT}])[0]) for p in VIEWS]
    assert rows[0] != rows[1]  # left padding is exercised
    batches = _forward_batches(monkeypatch, lora_model)
    texts, order = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=12,
                                                             one_batch=True))
    assert {p: t.strip() for p, t in texts.items()} == one_by_one
    # the shared start once per view, then both panes' rows in every forward: 12 tokens in 12 forwards
    assert batches[1:] == [2] * 12 and batches[0] == 2, batches
    # streamed: both panes' words interleave, each pane ends once
    first_end = order.index(next(o for o in order if o.startswith("end:")))
    assert {"base", "tuned"} <= set(order[:first_end])
    assert sorted(o for o in order if o.startswith("end:")) == ["end:base", "end:tuned"]


def test_a_pane_that_is_done_leaves_the_batch(lora_model, monkeypatch):
    """The base pane often talks to its token limit while the tuned one answers in a line: the
    finished row costs nothing more. A token the tuned pane says early is made the end of turn."""
    one_by_one = lora_model.generate(PROMPT, tuned=True, max_new_tokens=12, history=HISTORIES["tuned"])
    ids = lora_model._chat_ids(HISTORIES["tuned"] + [{"role": "user", "content": PROMPT}])
    import torch
    with torch.no_grad(), lora_model.view(True) as model:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                             pad_token_id=lora_model.tokenizer.pad_token_id)
    base = lora_model.model.get_base_model()
    monkeypatch.setattr(base.generation_config, "eos_token_id", out[0, ids.shape[1] + 2].item())
    single = {p: lora_model.generate(PROMPT, tuned=t, max_new_tokens=12, history=HISTORIES[p])
              for p, t in VIEWS.items()}
    assert len(single["tuned"]) < len(one_by_one)
    batches = _forward_batches(monkeypatch, lora_model)
    texts, order = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=12,
                                                             one_batch=True))
    assert {p: t.strip() for p, t in texts.items()} == single
    assert order.index("end:tuned") < order.index("end:base")
    assert 1 in batches and batches[-1] == 1, batches  # the base row went on alone


def test_both_panes_with_the_same_history_equal_one_by_one(lora_model):
    one_by_one = {p: lora_model.generate(PROMPT, tuned=t, max_new_tokens=10) for p, t in VIEWS.items()}
    texts, _ = _collect(lora_model.generate_views_stream(PROMPT, {}, VIEWS, max_new_tokens=10, one_batch=True))
    assert {p: t.strip() for p, t in texts.items()} == one_by_one


def test_sampling_answers_one_pane_after_the_other(lora_model, monkeypatch):
    import torch
    batches = _forward_batches(monkeypatch, lora_model)
    torch.manual_seed(1)
    texts, order = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=10,
                                                             temperature=1.0, one_batch=True))
    assert set(texts) == {"base", "tuned"} and all(t.strip() for t in texts.values())
    ended = order.index("end:base")
    assert set(order[:ended]) == {"base"} and set(order[ended + 1:]) == {"tuned", "end:tuned"}
    assert set(batches) == {1}


def _assert_one_pane_after_the_other(model, monkeypatch, one_batch):
    """Each pane's answer as one-by-one greedy decoding gives it, one row per forward, the base pane
    done before the tuned pane starts."""
    one_by_one = {p: model.generate(PROMPT, tuned=t, max_new_tokens=10, history=HISTORIES[p])
                  for p, t in VIEWS.items()}
    batches = _forward_batches(monkeypatch, model)
    texts, order = _collect(model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=10,
                                                        one_batch=one_batch))
    assert {p: t.strip() for p, t in texts.items()} == one_by_one
    assert set(batches) == {1}
    ended = order.index("end:base")
    assert set(order[:ended]) == {"base"} and set(order[ended + 1:]) == {"tuned", "end:tuned"}


def test_a_run_that_cannot_mix_adapters_answers_one_pane_after_the_other(ia3_model, monkeypatch):
    assert not ia3_model._mixed_views()
    _assert_one_pane_after_the_other(ia3_model, monkeypatch, one_batch=True)


def test_a_cancel_mid_answer_ends_both_panes_at_once(lora_model):
    cancel = threading.Event()
    stream = lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=200, cancel=cancel,
                                              one_batch=True)
    first = next(stream)
    assert first[1]
    cancel.set()  # a newer send from the same session
    rest = list(stream)
    assert sorted(p for p, t in rest if t is None) == ["base", "tuned"]
    texts, _ = _collect([first] + rest)
    assert sum(len(t.split()) for t in texts.values()) < 40  # far from 2 x 200 tokens


def test_a_cancel_before_the_model_is_free_answers_nothing(lora_model):
    cancel = threading.Event()
    cancel.set()
    assert list(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, cancel=cancel, one_batch=True)) == []


def test_a_closed_reader_frees_the_model(lora_model):
    stream = lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=200, one_batch=True)
    next(stream)
    stream.close()  # a closed tab, or Streamlit stopping the script run
    with lora_model.view(True, wait=1):  # the lock is free again
        pass


def test_a_probe_and_a_chat_take_turns_a_token_at_a_time(lora_model, monkeypatch):
    """Neither is told "busy": the chat's forwards and the probe's interleave (both asking the one
    model, as they do where the views are not answered side by side)."""
    import time

    from core import infer
    monkeypatch.setattr(infer, "PANES_SIDE_BY_SIDE", False)
    monkeypatch.setenv("PLAYGROUND_MODEL_WAIT_SECONDS", "1")
    base = lora_model.model.get_base_model()
    forward, log = type(base).forward, []

    def slow(self, *a, **kw):
        log.append(threading.current_thread().name)
        time.sleep(0.05)
        return forward(self, *a, **kw)

    monkeypatch.setattr(type(base), "forward", slow)
    probe = threading.Thread(name="probe", target=lambda: lora_model.generate_views(
        [PROMPT] * 4, (False, True), max_new_tokens=30, batch_size=64))
    probe.start()
    while "probe" not in log:
        time.sleep(0.01)
    texts, _ = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=30,
                                                         one_batch=True))
    probe.join(60)
    assert set(texts) == {"base", "tuned"}
    first_chat = log.index("MainThread")
    assert "probe" in log[first_chat:] and "MainThread" in log[log.index("probe", first_chat):]


def test_the_time_limit_note_goes_to_each_pane_cut_short(lora_model, monkeypatch):
    import time
    monkeypatch.setenv("PLAYGROUND_GENERATION_SECONDS", "1")
    hook = lora_model.model.get_base_model().register_forward_pre_hook(lambda *_: time.sleep(0.05))
    try:
        texts, _ = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=500,
                                                             one_batch=True))
    finally:
        hook.remove()
    assert all(t.rstrip().endswith("PLAYGROUND_GENERATION_SECONDS)_") for t in texts.values()), texts


def test_the_caps_are_checked_for_each_pane_before_answering(lora_model, monkeypatch):
    from core.config import ConfigError
    from core.limits import LimitExceeded
    monkeypatch.setattr(lora_model, "view", lambda *a, **k: pytest.fail("the model was used"))
    with pytest.raises(ConfigError, match="empty"):
        list(lora_model.generate_views_stream("  ", {}, VIEWS))
    monkeypatch.setenv("PLAYGROUND_MAX_PROMPT_TOKENS", "30")
    short_history = {"base": [], "tuned": HISTORIES["tuned"]}  # only the tuned pane's row is too long
    with pytest.raises(LimitExceeded, match="PLAYGROUND_MAX_PROMPT_TOKENS"):
        list(lora_model.generate_views_stream("Hi", short_history, VIEWS))


@pytest.mark.parametrize("one_batch", [None, False])
def test_without_side_by_side_the_panes_answer_one_after_the_other(lora_model, monkeypatch, one_batch):
    """PANES_IN_ONE_BATCH is off (see core/infer.py): the same answers, one pane after the other."""
    from core import infer
    monkeypatch.setattr(infer, "PANES_SIDE_BY_SIDE", False)
    _assert_one_pane_after_the_other(lora_model, monkeypatch, one_batch)


# ------------------------------------------------------------- both panes at once, in threads (issue 22)

def _forward_threads(monkeypatch, module_class):
    """(thread name, torch threads, model object id) of every forward of models of this class."""
    import torch
    forward, seen = module_class.forward, []

    def recording(self, *a, **kw):
        seen.append((threading.current_thread().name, torch.get_num_threads(), id(self)))
        return forward(self, *a, **kw)

    monkeypatch.setattr(module_class, "forward", recording)
    return seen


def _threads_of_a_new_thread() -> int:
    import torch
    out: list[int] = []
    thread = threading.Thread(target=lambda: out.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return out[0]


@pytest.fixture
def two_torch_threads():
    """Side by side needs two torch threads to share; CI's 2 cores give them, a 1-core box may not."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_by_default_the_panes_answer_at_once_each_on_its_own_model_and_thread(lora_model, monkeypatch,
                                                                              two_torch_threads):
    """The answers one-by-one greedy decoding gives; the base pane on a second, bare copy of the base
    (not the run's model with its adapter switched off), each pane in its own thread at one torch
    thread; threads started later still get the process's count."""
    one_by_one = {p: lora_model.generate(PROMPT, tuned=t, max_new_tokens=12, history=HISTORIES[p])
                  for p, t in VIEWS.items()}
    assert one_by_one["base"] != one_by_one["tuned"]
    before = _threads_of_a_new_thread()
    seen = _forward_threads(monkeypatch, type(lora_model.model.get_base_model()))
    texts, order = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=12))
    assert {p: t.strip() for p, t in texts.items()} == one_by_one
    assert sorted(o for o in order if o.startswith("end:")) == ["end:base", "end:tuned"]
    threads = {name for name, _, _ in seen}
    assert len(threads) == 2 and all(name.startswith("playground-side") for name in threads), threads
    assert {n for _, n, _ in seen} == {1}
    models = {model for _, _, model in seen}
    assert id(lora_model._side_base) in models and id(lora_model.model.get_base_model()) in models
    assert _threads_of_a_new_thread() == before


def test_a_cancel_or_a_closed_reader_stops_both_panes_answered_at_once(lora_model, two_torch_threads):
    cancel = threading.Event()
    stream = lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=200, cancel=cancel)
    first = next(stream)
    cancel.set()
    rest = list(stream)
    assert sorted(p for p, t in rest if t is None) == ["base", "tuned"]
    texts, _ = _collect([first] + rest)
    assert sum(len(t.split()) for t in texts.values()) < 60  # far from 2 x 200 tokens
    stream = lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=200)
    next(stream)
    stream.close()  # a closed tab: the threads are done when close returns
    assert not lora_model.lock._is_owned() and lora_model.lock.acquire(timeout=0)
    lora_model.lock.release()
    assert lora_model._side_lock.acquire(timeout=0)
    lora_model._side_lock.release()


def test_a_pane_that_fails_stops_the_other_and_says_why(lora_model, monkeypatch, two_torch_threads):
    from core.infer import ModelBusy
    from tests.helpers.threads import held_elsewhere
    monkeypatch.setenv("PLAYGROUND_MODEL_WAIT_SECONDS", "1")
    with held_elsewhere(lambda: lora_model.view(True)), pytest.raises(ModelBusy, match="busy"):
        list(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=200))
    assert lora_model._side_lock.acquire(timeout=0)  # the base pane stopped too
    lora_model._side_lock.release()


def test_each_pane_answered_at_once_says_when_the_time_limit_cut_it(lora_model, monkeypatch, two_torch_threads):
    import time
    monkeypatch.setenv("PLAYGROUND_GENERATION_SECONDS", "1")
    slow = lambda *_: time.sleep(0.05)  # noqa: E731
    hooks = [m.register_forward_pre_hook(slow) for m in (lora_model.model.get_base_model(), lora_model._base_for_side())]
    try:
        texts, _ = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=500))
    finally:
        for hook in hooks:
            hook.remove()
    assert all(t.rstrip().endswith("PLAYGROUND_GENERATION_SECONDS)_") for t in texts.values()), texts


def test_a_base_too_large_to_copy_answers_one_pane_after_the_other(tiny_llama, tmp_path, monkeypatch,
                                                                    two_torch_threads):
    from core import infer
    monkeypatch.setattr(infer, "SIDE_BY_SIDE_MAX_BYTES", 1)
    model = _run(tiny_llama, tmp_path, "lora", {"r": 2})
    _assert_one_pane_after_the_other(model, monkeypatch, one_batch=None)
    assert model._side_base is None


def test_one_torch_thread_answers_one_pane_after_the_other(lora_model, monkeypatch):
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _assert_one_pane_after_the_other(lora_model, monkeypatch, one_batch=None)
    finally:
        torch.set_num_threads(before)


def test_two_sessions_chatting_with_one_run_at_once_each_get_their_own_answers(lora_model, two_torch_threads):
    """A class shares a run's model: two chats at once share its second base copy and its tuned view
    a token at a time, and neither gets the other's words."""
    other = "Capital of France?"
    expected = {"a": {p: lora_model.generate(PROMPT, tuned=t, max_new_tokens=12, history=HISTORIES[p])
                      for p, t in VIEWS.items()},
                "b": {p: lora_model.generate(other, tuned=t, max_new_tokens=12) for p, t in VIEWS.items()}}
    asked = {"a": (PROMPT, HISTORIES), "b": (other, {})}
    got, errors = {}, []

    def session(name: str) -> None:
        try:
            prompt, histories = asked[name]
            texts, _ = _collect(lora_model.generate_views_stream(prompt, histories, VIEWS, max_new_tokens=12))
            got[name] = {p: t.strip() for p, t in texts.items()}
        except Exception as exc:  # reported below
            errors.append(exc)

    sessions = [threading.Thread(target=session, args=(name,)) for name in asked]
    for thread in sessions:
        thread.start()
    for thread in sessions:
        thread.join(60)
    assert not errors and got == expected


def test_side_by_side_is_for_a_cpu_only(lora_model, monkeypatch, two_torch_threads):
    """On a GPU two threads would only take turns on one device: the panes go one after the other."""
    import torch
    assert lora_model._answers_side_by_side(VIEWS.values())
    assert not lora_model._answers_side_by_side([False, False])

    class OnAGpu:
        device = torch.device("cuda", 0)

    monkeypatch.setattr(lora_model, "model", OnAGpu())
    assert not lora_model._answers_side_by_side(VIEWS.values())


def test_a_full_run_answers_at_once_from_the_weights_it_keeps(tiny_llama, tmp_path, monkeypatch, two_torch_threads):
    model = _run(tiny_llama, tmp_path, "full", {})
    one_by_one = {p: model.generate(PROMPT, tuned=t, max_new_tokens=8, history=HISTORIES[p]) for p, t in VIEWS.items()}
    seen = _forward_threads(monkeypatch, type(model.model))
    texts, _ = _collect(model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=8))
    assert {p: t.strip() for p, t in texts.items()} == one_by_one
    assert {m for _, _, m in seen} == {id(model.base), id(model.model)} and model._side_base is None


# ------------------------------------------------------------------ where an answer ends (issue 22)

@pytest.mark.parametrize("text, ends", [
    ("its potential applications in medicine.", True), ("Really?", True), ("Wow!", True),
    ('He said "yes."', True), ("founded in 2019.", True), ("It is Mars.", True),
    ("is Dr.", False), ("Elena K.", False), ("for e.g.", False), ("\n1.", False), ("(Dr.", False),
    ("Paris", False), ("a list:", False)])
def test_what_ends_a_sentence(text, ends):
    from core.chat_stream import sentence_ended
    assert sentence_ended(text) is ends


class _WordTokenizer:
    """Token i is WORDS[i]; decoding joins them."""
    WORDS = ["<end>", "One", " two", ".", " Three", " Dr", " Elam", "\n", "!"]

    def decode(self, tokens, skip_special_tokens=True):
        return "".join(self.WORDS[t] for t in tokens if t != 0)


def _take_all(tokens, max_new=50, short=True, after=2, monkeypatch=None):
    from core import chat_stream
    monkeypatch.setattr(chat_stream, "SENTENCE_STOP_AFTER", after)
    ending = chat_stream.Ending(_WordTokenizer(), {0}, max_new, short)
    taken = []
    for t in tokens:
        if not ending.take(t):
            break
        taken.append(t)
    return taken, ending.reason


def test_a_short_answer_ends_before_the_word_that_starts_a_new_sentence(monkeypatch):
    # "One two. Three": the answer is "One two." and " Three" is not said
    assert _take_all([1, 2, 3, 4, 2], monkeypatch=monkeypatch) == ([1, 2, 3], "sentence")
    assert _take_all([1, 2, 3, 7, 4], monkeypatch=monkeypatch) == ([1, 2, 3], "sentence")  # a line break too
    # the model's own end of turn right after the sentence: a whole answer, no reason to give
    assert _take_all([1, 2, 3, 0], monkeypatch=monkeypatch) == ([1, 2, 3, 0], None)
    # before the minimum, a sentence end does not stop it; an abbreviation never does
    assert _take_all([1, 3, 4, 3, 4], after=3, monkeypatch=monkeypatch) == ([1, 3, 4, 3], "sentence")
    assert _take_all([1, 2, 5, 3, 6, 3, 0], monkeypatch=monkeypatch) == ([1, 2, 5, 3, 6, 3, 0], None)
    # off: the answer runs on; cut by the limit only when it did not end there
    assert _take_all([1, 2, 3, 4, 2], short=False, monkeypatch=monkeypatch) == ([1, 2, 3, 4, 2], None)
    assert _take_all([1, 2, 3, 4], max_new=3, short=False, monkeypatch=monkeypatch)[1] == "limit"
    assert _take_all([1, 2, 0], max_new=3, short=False, monkeypatch=monkeypatch)[1] is None


def _greedy_tokens(model, tuned, history, max_new_tokens):
    """The new tokens of plain greedy `model.generate` (no streamer, no stopping rule of ours)."""
    import torch
    ids = model._chat_ids(list(history) + [{"role": "user", "content": PROMPT}])
    with torch.no_grad(), model.view(tuned) as m:
        out = m.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=model.tokenizer.pad_token_id)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("one_batch", [False, True])
def test_without_short_answers_each_pane_says_what_plain_generate_says(lora_model, one_batch):
    endings = {}
    texts, _ = _collect(lora_model.generate_views_stream(PROMPT, HISTORIES, VIEWS, max_new_tokens=12,
                                                         one_batch=one_batch, endings=endings))
    for pane, tuned in VIEWS.items():
        tokens = _greedy_tokens(lora_model, tuned, HISTORIES[pane], 12)
        assert texts[pane] == lora_model._as_streamed(tokens)
        said_end = any(t in lora_model.tokenizer.all_special_ids for t in tokens)
        assert endings[pane] == (None if said_end else "limit"), (pane, tokens)


@pytest.mark.parametrize("one_batch", [False, True])
def test_short_answers_stop_at_a_new_sentence_and_compute_no_token_after_it(lora_model, monkeypatch, one_batch):
    """Every word is made to end a sentence: after 3 tokens, the first token that starts with a space
    ends the answer before it; that token is the last one computed for its pane."""
    from core import chat_stream
    monkeypatch.setattr(chat_stream, "SENTENCE_STOP_AFTER", 3)
    monkeypatch.setattr(chat_stream, "sentence_ended", lambda text: True)
    tok = lora_model.tokenizer
    said, stops = {}, {}
    for pane, tuned in VIEWS.items():
        said[pane] = tokens = _greedy_tokens(lora_model, tuned, [], 16)
        stops[pane] = next(i for i in range(3, len(tokens))
                           if tok.decode(tokens[:i + 1], skip_special_tokens=True)[
                               len(tok.decode(tokens[:i], skip_special_tokens=True)):][:1].isspace())
        assert said[pane][stops[pane]] not in tok.all_special_ids
    batches = _forward_batches(monkeypatch, lora_model)
    endings = {}
    texts, _ = _collect(lora_model.generate_views_stream(PROMPT, {}, VIEWS, max_new_tokens=16,
                                                         one_batch=one_batch, short=True, endings=endings))
    assert texts == {p: lora_model._as_streamed(said[p][:stops[p]]) for p in VIEWS}
    assert endings == {"base": "sentence", "tuned": "sentence"}
    if one_batch:  # the shared start, then one forward per token until the longer pane's stop token
        assert len(batches) == 1 + max(stops.values()) + 1, (batches, stops)
    else:
        assert len(batches) == sum(stops.values()) + 2, (batches, stops)
