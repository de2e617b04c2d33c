"""Greedy decoding of several chat rows at once, a token at a time, and each row's tokens as the
text pieces a streamer gives: what the probe's batches and the Compare chat's two panes run on.

Why not `model.generate`: it keeps computing a row after its end of turn until the last row ends,
and on a CPU a batch of two costs ~1.7x a batch of one per token (MKL's matrix product for two rows
is not one pass over the weights). The chat's base pane often talks to its token limit while the
tuned one answers in a line: there generate's two-row batch was slower than the two answers one
after the other. Here a finished row leaves the batch.
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch


def time_limit_note(budget: float) -> str:
    """What an answer cut short by PLAYGROUND_GENERATION_SECONDS ends with."""
    return (f"\n\n_(stopped: the server's time limit of {budget} s per answer, "
            "PLAYGROUND_GENERATION_SECONDS)_")


def greedy_rows(forward: Callable, rows: list[list[int]], views: list, pad: int, eos: set[int],
                max_new_tokens: int, stopped: Callable[[], bool], late: Callable[[], bool],
                timed_out: list) -> Iterator[tuple[int, int | None]]:
    """(row, token) for each new greedy token of each row, (row, None) once a row's answer ends: its
    end of turn, `max_new_tokens`, or every row still going when `stopped()` or `late()` (those cut
    by `late()` are added to `timed_out` first). Nothing when `stopped()` before the first token.

    `forward(row_views, **model_kwargs)` runs the model over the rows still in the batch (their
    views, for a batch that mixes them) and returns each row's argmax token. The rows' common start
    goes through the model once per view and its cache is copied to the rows; rows are left-padded
    after it, with position ids counting only real tokens."""
    from transformers import DynamicCache
    if stopped():
        return
    # Keep one real token per row after the shared part: its logits give the first answer token.
    common = _common_prefix(rows, min(len(r) for r in rows) - 1)
    kinds = sorted(set(views))
    width = max(len(r) - common for r in rows)
    input_ids = torch.tensor([[pad] * (width - len(r) + common) + r[common:] for r in rows])
    mask = torch.tensor([[1] * common + [0] * (width - len(r) + common) + [1] * (len(r) - common) for r in rows])
    alive, counts = list(range(len(rows))), [0] * len(rows)  # alive: batch slot -> row
    cache = DynamicCache()
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
        if done:  # finished rows leave the batch: no more work for them
            keep = torch.tensor([s for s in range(len(alive)) if s not in done])
            cache.batch_select_indices(keep)
            mask, nxt = mask[keep], nxt[keep]
            alive = [alive[s] for s in keep.tolist()]
        mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=mask.dtype)], -1)
        nxt = forward([views[r] for r in alive], input_ids=nxt[:, None], attention_mask=mask,
                      position_ids=mask.sum(-1, keepdim=True) - 1, past_key_values=cache)


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
