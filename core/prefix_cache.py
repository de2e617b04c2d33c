"""Frozen-prefix caching: don't recompute what cannot change.

When only the top k blocks of an encoder train (LoRA or IA3 with `top_layers`), the embeddings and
the blocks below never change, so their output for a row is computed once; every epoch, every
evaluation and every later run in this process on the same rows and base (an experiment grid) then
runs only the top blocks and the head. The linear head is the limiting case (every block frozen:
what is cached is the pooled feature, core.loop.extract_features); both keep their results in the
one process-wide LRU here.

Which blocks are frozen is read from the adapted model itself (no parameter that requires a
gradient below block `first`, none in the embeddings, none outside the top blocks and the head), so
any method that leaves a frozen bottom gets it, and anything else (prompt or prefix tuning, full
fine-tuning, a causal LM) takes the normal path.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

# One entry holds a run's train + validation rows. Two: a grid alternating two datasets (or a
# linear-head run's pooled features beside a LoRA run's hidden states) still hits.
MAX_ENTRIES = 2
# Hidden states are rows x tokens x hidden x 4 bytes: IMDb's 2,000 rows at 128 tokens on MiniLM are
# ~0.4 GB. Above this a dataset is not cached at all: the run takes the normal path.
MAX_ENTRY_BYTES = 1 << 30

_entries: OrderedDict = OrderedDict()
_lock = threading.Lock()
_computing: dict = {}  # key -> the lock its first computation holds
# How often the frozen part really ran, and how often a run reused its output (tests, benchmarks).
stats = {"computed": 0, "reused": 0, "bottom_batches": 0}


def clear() -> None:
    with _lock:
        _entries.clear()
        _computing.clear()
        for key in stats:
            stats[key] = 0


def fingerprint(rows: list[dict]) -> str:
    """The token ids decide the frozen part's output: the text, the tokenizer, max_length,
    truncation and any prompt prefix are all in them."""
    h = hashlib.sha1()
    for row in rows:
        h.update(len(row["input_ids"]).to_bytes(4, "little"))
        h.update(torch.as_tensor(row["input_ids"], dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


def remembered(key: tuple, compute: Callable[[], Any], nbytes: int) -> Any | None:
    """compute()'s result, from the cache when this key was computed before; None (nothing
    computed) when it would take more than MAX_ENTRY_BYTES. A parallel run of the same grid waits
    for the one computing this key and reuses its result rather than computing it twice; runs on
    other keys do not wait."""
    with _lock:
        if key not in _entries and nbytes > MAX_ENTRY_BYTES:
            return None
        key_lock = _computing.setdefault(key, threading.Lock())
    with key_lock:
        with _lock:
            if key in _entries:
                _entries.move_to_end(key)
                stats["reused"] += 1
                return _entries[key]
        value = compute()
        with _lock:
            stats["computed"] += 1
            _entries[key] = value
            while len(_entries) > MAX_ENTRIES:
                _entries.popitem(last=False)
            _computing.pop(key, None)
        return value


# ----------------------------------------------------------------------------------------------
# Where the frozen bottom ends
# ----------------------------------------------------------------------------------------------
@dataclass
class FrozenPrefix:
    owner: Any            # the PooledClassifier (inside the peft wrapper)
    embeddings: nn.Module
    blocks: nn.ModuleList
    first: int            # the lowest block with trainable weights; blocks below it are frozen

    def keep_in_eval(self) -> None:
        """Why: the frozen bottom's dropout would make every epoch see a different output of blocks
        that do not learn, which no cache can reproduce. So the frozen bottom runs in eval mode
        (no dropout) on BOTH paths, cached or not, and the two train identically. Its dropout only
        added noise to fixed features; the trained top blocks and the head keep theirs. The Trainer
        calls model.train() every step, so the modules themselves refuse to leave eval mode."""
        pin_eval([self.embeddings, *self.blocks[:self.first]])

    # The interface core.loop trains through, shared with core.decoder_prefix.DecoderPrefix
    def bottom_states(self, rows: list[dict], collate, autocast) -> list:
        return bottom_states(self, rows, collate, autocast)

    def state_bytes(self, *row_sets: list[dict]) -> int:
        return state_bytes(self, *row_sets)

    def top(self) -> nn.Module:
        return TopBlocks(self)

    @staticmethod
    def collate(rows: list[dict]) -> dict:
        return collate_states(rows)


def pin_eval(modules) -> None:
    """These modules stay in eval mode whatever model.train() says (see FrozenPrefix.keep_in_eval)."""
    for module in modules:
        module.train = _eval_only(module)
        module.eval()


def _eval_only(module: nn.Module):
    def train(mode: bool = True):
        return nn.Module.train(module, False)
    return train


def find_frozen_prefix(model) -> FrozenPrefix | None:
    """The frozen bottom of an adapted BERT-family classifier, or None where there is none to skip."""
    from core.heads import PooledClassifier
    owner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(owner, PooledClassifier):
        return None  # causal LMs keep transformers' own head and forward: the normal path
    encoder = owner.encoder
    embeddings = getattr(encoder, "embeddings", None)
    blocks = getattr(getattr(encoder, "encoder", None), "layer", None)
    if embeddings is None or not isinstance(blocks, nn.ModuleList) or getattr(encoder.config, "is_decoder", False):
        return None
    learns = [any(p.requires_grad for p in block.parameters()) for block in blocks]
    if True not in learns or learns.index(True) == 0:
        return None  # nothing frozen below the trained blocks (or nothing trains in them)
    first = learns.index(True)
    allowed = {id(p) for block in blocks[first:] for p in block.parameters()}
    allowed |= {id(p) for p in owner.classifier.parameters()}
    if any(p.requires_grad and id(p) not in allowed for p in model.parameters()):
        return None  # e.g. trained embeddings or a prompt encoder: the bottom's output changes
    return FrozenPrefix(owner=owner, embeddings=embeddings, blocks=blocks, first=first)


# ----------------------------------------------------------------------------------------------
# Computing the bottom once, and the top on its output
# ----------------------------------------------------------------------------------------------
def _attention_mask(config, hidden: torch.Tensor, mask: torch.Tensor):
    """The mask the blocks take, built by the function BertModel.forward builds it with."""
    from transformers.masking_utils import create_bidirectional_mask
    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=mask)


@torch.no_grad()
def per_row_states(rows: list[dict], collate, run_bottom: Callable, batch_size: int = 32) -> list:
    """Per row, what run_bottom(token batch) -> [rows, tokens, hidden] gives for its own tokens (no
    padding, found by the attention mask, whichever side the tokenizer pads), in batches of similar
    lengths. The encoder's and the decoder's (core.decoder_prefix) frozen bottoms both run here."""
    out: list = [None] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))  # less padding
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([{k: v for k, v in rows[i].items() if k != "labels"} for i in idx])
        hidden = run_bottom(batch)
        stats["bottom_batches"] += 1
        keep = batch["attention_mask"].to(hidden.device).bool()
        for j, i in enumerate(idx):
            out[i] = hidden[j][keep[j]].clone()  # a copy frees the padded batch
    return out


def bottom_states(prefix: FrozenPrefix, rows: list[dict], collate, autocast, batch_size: int = 32) -> list:
    """Per row, the hidden states after the frozen blocks ([its tokens, hidden], no padding)."""
    config = prefix.owner.encoder.config
    device = next(prefix.embeddings.parameters()).device

    def run_bottom(batch):
        with autocast():
            hidden = prefix.embeddings(input_ids=batch["input_ids"].to(device),
                                       token_type_ids=batch["token_type_ids"].to(device)
                                       if "token_type_ids" in batch else None)
            block_mask = _attention_mask(config, hidden, batch["attention_mask"].to(device))
            for block in prefix.blocks[:prefix.first]:
                hidden = block(hidden, block_mask)
        return hidden
    return per_row_states(rows, collate, run_bottom, batch_size)


def states_bytes(hidden_size: int, *row_sets: list[dict], element_size: int = 4) -> int:
    """What per_row_states keeps for these rows."""
    tokens = sum(len(r["input_ids"]) for rows in row_sets for r in rows)
    return tokens * int(hidden_size) * element_size


def state_bytes(prefix: FrozenPrefix, *row_sets: list[dict]) -> int:
    return states_bytes(prefix.owner.encoder.config.hidden_size, *row_sets)


class TopBlocks(nn.Module):
    """What the Trainer trains on cached hidden states: the top blocks and the head of the adapted
    model, the same module objects (so the peft model it belongs to saves, exports and draws its
    anatomy as after a normal run), then the classifier's own pooling and loss."""

    def __init__(self, prefix: FrozenPrefix):
        super().__init__()
        self.blocks = nn.ModuleList(list(prefix.blocks)[prefix.first:])
        self.classifier = prefix.owner.classifier
        self._owner = [prefix.owner]  # a list: not registered as a submodule (its bottom is not trained)

    def forward(self, hidden_states=None, attention_mask=None, labels=None, **_):
        owner = self._owner[0]
        block_mask = _attention_mask(owner.encoder.config, hidden_states, attention_mask)
        hidden = hidden_states
        for block in self.blocks:
            hidden = block(hidden, block_mask)
        return owner.classify(owner.pool(hidden, attention_mask), labels)


def padded_states(rows: list[dict], pad_to_multiple_of: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Cached states padded on the right as the token collator pads (to a multiple of 8), so a
    batch has the same shape, and the top blocks' dropout draws the same masks, as on the uncached
    path: ([rows, length, hidden], the attention mask)."""
    longest = max(r["hidden_states"].shape[0] for r in rows)
    length = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    first = rows[0]["hidden_states"]
    hidden = first.new_zeros((len(rows), length, first.shape[1]))
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, r in enumerate(rows):
        n = r["hidden_states"].shape[0]
        hidden[i, :n] = r["hidden_states"]
        mask[i, :n] = 1
    return hidden, mask


def collate_states(rows: list[dict]) -> dict:
    hidden, mask = padded_states(rows)
    return {"hidden_states": hidden, "attention_mask": mask,
            "labels": torch.tensor([r["labels"] for r in rows], dtype=torch.long)}
