"""Streamed answers for the Compare chat: several rows of one `model.generate`, each row's new text
handed out as it is decoded, tagged with its row's key (a chat pane).

transformers' TextIteratorStreamer takes a batch of one; `RowStreamer` is the same decoding once per
row. The batch itself (left padding, per-row end of turn, sampling, peft's per-row `adapter_names`)
is `model.generate`'s own.
"""
from __future__ import annotations

import queue
import threading
import time
from typing import Iterator

import torch

# Plain greedy decoding. A penalty of 1.1 also punishes the question's own words in the answer:
# the base SmolLM2 then missed 3 of the 20 general questions ("2 plus 2" -> probability theory).
REPETITION_PENALTY = 1.0


def time_limit_note(budget: float) -> str:
    return (f"\n\n_(stopped: the server's time limit of {budget} s per answer, "
            "PLAYGROUND_GENERATION_SECONDS)_")


class AnyEvent:
    """is_set() of either of two flags (one may be None)."""

    def __init__(self, *events):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def stop_when(cancel, deadline: float, timed_out: list):
    """A StoppingCriteria checked after every new token: the caller went away (its session closed or
    its script run was superseded: `cancel`), or the answer used its time budget."""
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            late = time.monotonic() > deadline
            if late and not timed_out:
                timed_out.append(True)
            stop = late or (cancel is not None and cancel.is_set())
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
    return _Stop()


def eos_ids(model, tokenizer) -> set[int]:
    """The ids `model.generate` stops a row at (its generation config's, as `generate` uses them)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


_END = object()


def row_streamer(tokenizer, keys: list, eos: set[int], out: queue.Queue, cut_note=lambda: ""):
    """A `generate` streamer for a batch: puts (key, text) on `out` as each row's words are decoded
    (the pieces TextIteratorStreamer gives for that row alone), (key, None) once the row has ended
    (its end of turn; every row at the end of generation), then `_END`. A row still going when
    generation ends gets `cut_note()` as its last piece (why it was cut short, if it was)."""
    from transformers.generation.streamers import BaseStreamer, TextStreamer

    class _Row(TextStreamer):
        def __init__(self, key):
            super().__init__(tokenizer, skip_prompt=False, skip_special_tokens=True)
            self.key, self.ended = key, False

        def on_finalized_text(self, text: str, stream_end: bool = False):
            if text:
                out.put((self.key, text))

        def finish(self, note: str = ""):
            if not self.ended:
                self.ended = True
                super().end()  # flushes the words still held back
                self.on_finalized_text(note)
                out.put((self.key, None))

    class _Rows(BaseStreamer):
        def __init__(self):
            self.rows, self.prompt_seen = [_Row(k) for k in keys], False

        def put(self, value):
            if not self.prompt_seen:  # generate's first put is the prompt
                self.prompt_seen = True
                return
            for row, token in zip(self.rows, value.reshape(len(self.rows), -1)[:, -1].tolist()):
                if row.ended:
                    continue  # generate pads a finished row until the last one ends
                row.put(torch.tensor([token]))
                if token in eos:
                    row.finish()

        def end(self):
            note = cut_note()
            for row in self.rows:
                row.finish(note)  # a row that ended at its end of turn is left as it is
            out.put(_END)

    return _Rows()


def stream_rows(model, tokenizer, rows: list[list[int]], keys: list, max_new_tokens: int, temperature: float,
                cancel, budget: float, **generate_kw) -> Iterator[tuple[object, str | None]]:
    """(key, text) pieces of each row's answer as `model.generate` makes them, (key, None) when that
    row's answer is complete. The caller holds the model. It stops early when `cancel` is set, when
    the consumer stops reading (the generator is closed), or after `budget` seconds (a row cut short
    then says so). Rows are left-padded: generate's position ids count only the real tokens."""
    from transformers import StoppingCriteriaList
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
    out: queue.Queue = queue.Queue()
    stop_flag, timed_out, errors = threading.Event(), [], []  # stop_flag: the consumer left
    streamer = row_streamer(tokenizer, keys, eos_ids(model, tokenizer), out,
                            lambda: time_limit_note(budget) if timed_out else "")
    kwargs = dict(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, streamer=streamer,
                  pad_token_id=pad, do_sample=temperature > 0, repetition_penalty=REPETITION_PENALTY,
                  stopping_criteria=StoppingCriteriaList([stop_when(AnyEvent(cancel, stop_flag),
                                                                    time.monotonic() + budget, timed_out)]),
                  **generate_kw)
    if temperature > 0:
        kwargs["temperature"] = temperature  # each row draws its own tokens from its own distribution

    def work():
        try:
            with torch.no_grad():
                model.generate(**kwargs)
        except BaseException as exc:  # surfaced to the consumer below
            errors.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, daemon=True, name="playground-generate")
    thread.start()
    try:
        while (event := out.get()) is not _END:
            yield event
    finally:
        stop_flag.set()  # closed early (a new send, a closed tab): stop at the next token
        thread.join()  # and keep the model held until the thread is done with it
    if errors:
        raise errors[0]
