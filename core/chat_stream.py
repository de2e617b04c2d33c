"""Greedy decoding of several chat rows at once, a token at a time, and each row's tokens as the
text pieces a streamer gives: what the probe's batches and the Compare chat's two panes run on. And
where a chat answer ends (`Ending`): at a sentence end once it is long enough ("Short answers"), or
cut at its token limit, said to the reader either way.

Why not `model.generate`: it keeps computing a row after its end of turn until the last row ends,
and on a CPU a batch of two costs ~1.7x a batch of one per token (MKL's matrix product for two rows
is not one pass over the weights). The chat's base pane often talks to its token limit while the
tuned one answers in a line: there generate's two-row batch was slower than the two answers one
after the other. Here a finished row leaves the batch.
"""
from __future__ import annotations

import queue
import re
import threading
from typing import Callable, Iterator

# The Compare chat's defaults (the page's controls start here; the bench asks with them). torch is
# imported where it is used: the page reads these without waiting for it. A class
# reads an answer on a projector: the base model's made-up facts are in its first sentence, and its
# 100-token ramble after it was most of a turn's time (issue 22). The teacher can raise both.
CHAT_MAX_NEW_TOKENS = 64
SHORT_ANSWERS = True
# With short answers on, an answer may stop at a sentence end once it is this many tokens long: a
# first "Sure." or "I am not sure." is no answer, and a two-sentence reply (what, then when) is kept.
SENTENCE_STOP_AFTER = 32
# A period after these is not a sentence end: "Dr. Elam", "K. Elam", "e.g. this", "1. First".
_NOT_A_SENTENCE_END = re.compile(r"(?:^|\s)[(\"'\u201c]?(?:[A-Z][A-Za-z]{0,2}|\S*\.\S*|\d)\.$")
_SENTENCE_END = re.compile(r"[.!?][\"')\]\u201d\u2019*]*$")


# The fixed end of `time_limit_note`: an answer containing it was cut short (the probe's cache
# keeps no such answer).
TIME_LIMIT_MARK = ", PLAYGROUND_GENERATION_SECONDS)_"


def time_limit_note(budget: float) -> str:
    """What an answer cut short by PLAYGROUND_GENERATION_SECONDS ends with."""
    return f"\n\n_(stopped: the server's time limit of {budget} s per answer{TIME_LIMIT_MARK}"


def sentence_ended(text: str) -> bool:
    """Whether `text` ends a sentence: . ! or ? (a closing quote or bracket may follow), the period
    not after an initial, a short capitalised abbreviation, a number or a dotted word (e.g.)."""
    text = text.rstrip(" \t")
    if not _SENTENCE_END.search(text):
        return False
    bare = text.rstrip("\"')]\u201d\u2019*")
    return not (bare.endswith(".") and _NOT_A_SENTENCE_END.search(bare))


class Ending:
    """Why one answer ends, decided a token at a time. `take(token)`: whether the token is part of
    the answer. With `short`, a token that starts a new sentence after SENTENCE_STOP_AFTER tokens is
    not (the answer ends before it: `reason` "sentence"); the end of turn is always taken. An answer
    that reaches `max_new_tokens` without its end of turn was cut: `reason` "limit"."""

    def __init__(self, tokenizer, eos: set[int], max_new_tokens: int, short: bool):
        self.tokenizer, self.eos, self.max_new_tokens, self.short = tokenizer, eos, max_new_tokens, short
        self.tokens: list[int] = []
        self.reason: str | None = None
        self._verdicts: list[bool] = []

    def take(self, token: int) -> bool:
        if self.reason == "sentence":
            return False
        if self.short and len(self.tokens) >= SENTENCE_STOP_AFTER and token not in self.eos:
            said = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
            more = self.tokenizer.decode(self.tokens + [token], skip_special_tokens=True)
            if more[len(said):][:1].isspace() and sentence_ended(said):
                self.reason = "sentence"
                return False
        self.tokens.append(token)
        if len(self.tokens) >= self.max_new_tokens and token not in self.eos:
            self.reason = "limit"
        return True

    def take_at(self, index: int, token: int) -> bool:
        """`take` for the answer's `index`-th token, asked by two readers of one stream (generate's
        stopping criteria and its streamer): the first asks, the second reads the same verdict."""
        if index == len(self._verdicts):
            self._verdicts.append(self.take(token))
        return self._verdicts[index]


def greedy_rows(forward: Callable, rows: list[list[int]], views: list, pad: int, eos: set[int],
                max_new_tokens: int, stopped: Callable[[], bool], late: Callable[[], bool],
                timed_out: list, takes: Callable[[int, int], bool] | None = None
                ) -> Iterator[tuple[int, int | None]]:
    """(row, token) for each new greedy token of each row, (row, None) once a row's answer ends: its
    end of turn, `max_new_tokens`, `takes(row, token)` False (the answer ends before that token,
    which is not yielded), or every row still going when `stopped()` or `late()` (those cut by
    `late()` are added to `timed_out` first). Nothing when `stopped()` before the first token.

    `forward(row_views, **model_kwargs)` runs the model over the rows still in the batch (their
    views, for a batch that mixes them) and returns each row's argmax token. The rows' common start
    goes through the model once per view and its cache is copied to the rows; rows are left-padded
    after it, with position ids counting only real tokens."""
    import torch
    from transformers import DynamicCache
    if stopped():
        return
    alive, counts = list(range(len(rows))), [0] * len(rows)  # alive: batch slot -> row
    cache = DynamicCache()
    if len(rows) == 1:  # nothing to pad: no mask to build at each step (a Compare pane; issue 22)
        mask = None
        nxt = forward(views, input_ids=torch.tensor(rows), past_key_values=cache, logits_to_keep=1)
    else:
        # Keep one real token per row after the shared part: its logits give the first answer token.
        common = _common_prefix(rows, min(len(r) for r in rows) - 1)
        kinds = sorted(set(views))
        width = max(len(r) - common for r in rows)
        input_ids = torch.tensor([[pad] * (width - len(r) + common) + r[common:] for r in rows])
        mask = torch.tensor([[1] * common + [0] * (width - len(r) + common) + [1] * (len(r) - common)
                             for r in rows])
        if common:  # one row of the shared start per view (mixed: base and tuned in one forward)
            forward(kinds, input_ids=torch.tensor([rows[0][:common]] * len(kinds)), past_key_values=cache,
                    logits_to_keep=1)
            cache.batch_select_indices(torch.tensor([kinds.index(v) for v in views]))
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        nxt = forward(views, input_ids=input_ids, attention_mask=mask, position_ids=position[:, common:],
                      past_key_values=cache, logits_to_keep=1)
    while True:
        done = []
        for slot, row in enumerate(alive):
            token = int(nxt[slot])
            if takes is not None and not takes(row, token):
                done.append(slot)
                yield row, None
                continue
            counts[row] += 1
            yield row, token
            if token in eos or counts[row] >= max_new_tokens:
                done.append(slot)
                yield row, None
        is_late = late()
        if is_late or stopped() or len(done) == len(alive):
            rest = [r for s, r in enumerate(alive) if s not in done]
            if is_late:
                timed_out.extend(rest)
            for row in rest:
                yield row, None
            return
        if mask is None:  # one row, still going: its positions follow the cache
            nxt = forward(views, input_ids=nxt[:, None], past_key_values=cache)
            continue
        if done:  # finished rows leave the batch: no more work for them
            keep = torch.tensor([s for s in range(len(alive)) if s not in done])
            cache.batch_select_indices(keep)
            mask, nxt = mask[keep], nxt[keep]
            alive = [alive[s] for s in keep.tolist()]
        mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype)], -1)
        nxt = forward([views[r] for r in alive], input_ids=nxt[:, None], attention_mask=mask,
                      position_ids=mask.sum(-1, keepdim=True) - 1, past_key_values=cache)


def ending_criteria(ending: Ending, prompt_length: int):
    """A StoppingCriteria for `model.generate` (a batch of one): stop once `ending` does not take the
    newest token. generate asks it before its streamer sees that token, which `ending_streamer` then
    drops (the same verdict for the same token): the token that starts a new sentence is computed,
    never shown, and no token after it is computed."""
    import torch
    from transformers import StoppingCriteria

    class _Criteria(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            taken = ending.take_at(input_ids.shape[1] - prompt_length - 1, int(input_ids[0, -1]))
            return torch.full((input_ids.shape[0],), not taken, dtype=torch.bool, device=input_ids.device)

    return _Criteria()


def ending_streamer(tokenizer, ending: Ending):
    """A TextIteratorStreamer for `model.generate` (a batch of one) that lets through only the new
    tokens `ending` takes: its pieces are the answer up to where `ending` ended it."""
    from transformers import TextIteratorStreamer

    class _Streamer(TextIteratorStreamer):
        def __init__(self):
            super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
            self.index = 0

        def put(self, value):
            if self.next_tokens_are_prompt:
                return super().put(value)
            index, self.index = self.index, self.index + 1
            if ending.take_at(index, int(value.reshape(-1)[0])):
                super().put(value)

    return _Streamer()


class RowText:
    """One row's new tokens as text: the pieces TextIteratorStreamer yields for a batch of one (it
    decodes a growing cache and lets words out at spaces and line ends)."""

    def __init__(self, tokenizer):
        from transformers import TextStreamer
        pieces: list[str] = []

        class _Collect(TextStreamer):
            def on_finalized_text(self, text: str, stream_end: bool = False):
                if text:
                    pieces.append(text)

        self._pieces, self._streamer = pieces, _Collect(tokenizer, skip_prompt=False, skip_special_tokens=True)

    def put(self, token: int) -> list[str]:
        import torch
        self._streamer.put(torch.tensor([token]))
        return self._take()

    def end(self) -> list[str]:
        self._streamer.end()
        return self._take()

    def _take(self) -> list[str]:
        taken = self._pieces[:]
        self._pieces.clear()
        return taken


def _common_prefix(rows: list[list[int]], at_most: int) -> int:
    """How many leading tokens all rows share (the chat template's system prompt), at most `at_most`."""
    n = 0
    while n < at_most and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return n


# --------------------------------------------------------------------------- side by side, in threads
class _Failed:
    def __init__(self, exc: BaseException):
        self.exc = exc


_ENDED = object()
_process_threads_guard = threading.Lock()


def side_by_side(makers: list[Callable[[Callable[[], bool]], Iterator]]) -> Iterator[tuple[int, object]]:
    """(index, item) as the items of `makers[index](stopped)` arrive, each iterator run in its own
    thread with an equal share of the caller's torch threads (at least one). `stopped()` turns True once the consumer leaves (the
    generator is closed) or another iterator failed; the work is over before this ends, and the
    first failure is raised here.

    Why threads (issue 22): a one-row decoding step of a small model on a CPU is bound by reading
    its weights, and a second torch thread buys it nothing (SmolLM2-135M: 56 ms a token at one
    thread, 52-62 ms at two), while two answers made at once, one thread each, cost ~78 ms a pair of
    tokens instead of 112 one after the other. The matrix products release the GIL."""
    import torch
    torch_threads = max(1, torch.get_num_threads() // max(1, len(makers)))
    arrived: queue.SimpleQueue = queue.SimpleQueue()
    leave = threading.Event()

    def run(index: int, make) -> None:
        try:
            _use_threads(torch, torch_threads)
            for item in make(leave.is_set):
                arrived.put((index, item))
        except BaseException as exc:  # raised to the consumer
            arrived.put((index, _Failed(exc)))
        finally:
            arrived.put((index, _ENDED))

    futures = [_pool().submit(run, i, make) for i, make in enumerate(makers)]
    running = len(futures)
    try:
        while running:
            index, item = arrived.get()
            if item is _ENDED:
                running -= 1
            elif isinstance(item, _Failed):
                raise item.exc
            else:
                yield index, item
    finally:
        leave.set()
        for future in futures:
            future.result()


SIDE_THREADS = 16  # answers made at once by every session together; more wait for a free thread
_pool_guard = threading.Lock()
_pools: list = []


def _pool():
    """Long-lived threads for side_by_side: a new thread for every answer started measurably slower
    (its first torch calls), and its per-thread torch setup is done once."""
    from concurrent.futures import ThreadPoolExecutor
    with _pool_guard:
        if not _pools:
            _pools.append(ThreadPoolExecutor(max_workers=SIDE_THREADS, thread_name_prefix="playground-side"))
        return _pools[0]


def _use_threads(torch, n: int) -> None:
    """This thread's torch thread count (OpenMP's is per thread). torch.set_num_threads also sets the
    count every thread started later begins with, a process-wide value: put back the one this
    process had, so a later script run, training or probe keeps its threads."""
    if torch.get_num_threads() == n:
        return
    with _process_threads_guard:
        before: list[int] = []
        _in_new_thread(lambda: before.append(torch.get_num_threads()))  # it starts with the process's
        torch.set_num_threads(n)
        _in_new_thread(lambda: torch.set_num_threads(before[0]))  # set back; this thread keeps its n


def _in_new_thread(work: Callable[[], object]) -> None:
    thread = threading.Thread(target=work, name="playground-threads")
    thread.start()
    thread.join()
