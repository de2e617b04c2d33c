"""Frozen-prefix caching for decoder language models: an SFT run whose adapters sit only in the top
blocks (LoRA `top_layers`) computes the frozen bottom's hidden states once per dataset, and
every epoch (and every later run on the same rows and base) runs only the top blocks, the final
norm and the output layer. "Fix a hallucination" trains the top 12 of SmolLM2's 30 blocks for 2
epochs: its bottom 18 blocks run once instead of in every epoch.

Both halves run through the model's own forward, with its list of blocks cut for the call (the
bottom without the final norm; the top from the cached states, given as `inputs_embeds`), so the
model keeps its own causal mask, rotary positions and loss. That is right only for decoders whose
forward takes `inputs_embeds` as they are: the families in FAMILIES (Gemma scales them, GPT-2 adds
position embeddings to them).

The cache itself, its budget and its key are core.prefix_cache's, shared with the encoder path.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core import prefix_cache

FAMILIES = ("llama", "mistral", "qwen2", "qwen3")


@dataclass
class DecoderPrefix:
    lm: Any      # the *ForCausalLM inside the peft wrapper: .model.layers, .model.norm, .lm_head
    first: int   # the lowest block with trainable weights; blocks below it are frozen

    @property
    def blocks(self) -> nn.ModuleList:
        return self.lm.model.layers

    def keep_in_eval(self) -> None:
        """As prefix_cache.FrozenPrefix.keep_in_eval: no dropout in the frozen bottom, on both paths."""
        prefix_cache.pin_eval([self.lm.model.embed_tokens, *self.blocks[:self.first]])

    @contextlib.contextmanager
    def cut(self, lo: int, hi: int | None, final_norm: bool):
        """The model runs blocks[lo:hi] only (and its final norm or not) inside this block."""
        inner = self.lm.model
        layers, norm = inner.layers, inner.norm
        inner.layers = nn.ModuleList(list(layers)[lo:hi])
        if not final_norm:
            inner.norm = nn.Identity()
        try:
            yield
        finally:
            inner.layers, inner.norm = layers, norm

    def bottom_states(self, rows: list[dict], collate, autocast, batch_size: int = 32) -> list:
        """Per row, the hidden states after the frozen blocks ([its tokens, hidden], no padding).
        Whichever side the tokenizer pads, a row's states are its own: rotary attention depends
        only on how far apart two tokens are."""
        device = next(self.lm.parameters()).device

        def run_bottom(batch):
            with autocast(), self.cut(0, self.first, final_norm=False):
                return self.lm.model(input_ids=batch["input_ids"].to(device),
                                     attention_mask=batch["attention_mask"].to(device),
                                     use_cache=False).last_hidden_state
        return prefix_cache.per_row_states(rows, collate, run_bottom, batch_size)

    def state_bytes(self, *row_sets: list[dict]) -> int:
        return prefix_cache.states_bytes(self.lm.config.hidden_size, *row_sets)

    def top(self) -> nn.Module:
        return DecoderTop(self)

    @staticmethod
    def collate(rows: list[dict]) -> dict:
        """Cached states padded as prefix_cache.padded_states pads them, the labels with -100."""
        hidden, mask = prefix_cache.padded_states(rows)
        labels = torch.full(mask.shape, -100, dtype=torch.long)
        for i, r in enumerate(rows):
            n = r["hidden_states"].shape[0]
            labels[i, :n] = torch.as_tensor(r["labels"][:n], dtype=torch.long)
        return {"hidden_states": hidden, "attention_mask": mask, "labels": labels}


class DecoderTop(nn.Module):
    """What the Trainer trains on cached states: the top blocks (the same module objects as in the
    peft model, so it saves and draws its anatomy as after a normal run), run by the model's forward."""

    def __init__(self, prefix: DecoderPrefix):
        super().__init__()
        self.blocks = nn.ModuleList(list(prefix.blocks)[prefix.first:])
        self._prefix = [prefix]  # a list: not registered as a submodule (its bottom is not trained)

    def forward(self, hidden_states=None, attention_mask=None, labels=None, **kwargs):
        # kwargs: logits_to_keep / shift_labels (core.trainer_setup.AnswerLogitsOnly) and the
        # Trainer's num_items_in_batch, all for the model's own loss
        prefix = self._prefix[0]
        with prefix.cut(prefix.first, None, final_norm=True):
            return prefix.lm(inputs_embeds=hidden_states, attention_mask=attention_mask, labels=labels,
                             use_cache=False, **kwargs)


def find_decoder_prefix(model) -> DecoderPrefix | None:
    """The frozen bottom of an adapted decoder LM of FAMILIES, or None where there is none to skip."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner = getattr(lm, "model", None)
    blocks = getattr(inner, "layers", None)
    if (getattr(lm.config, "model_type", None) not in FAMILIES or not isinstance(blocks, nn.ModuleList)
            or not hasattr(inner, "embed_tokens") or not hasattr(inner, "norm")):
        return None
    learns = [any(p.requires_grad for p in block.parameters()) for block in blocks]
    if True not in learns or learns.index(True) == 0:
        return None  # nothing frozen below the trained blocks
    first = learns.index(True)
    allowed = {id(p) for block in blocks[first:] for p in block.parameters()}
    if any(p.requires_grad and id(p) not in allowed for p in model.parameters()):
        return None  # e.g. a trained prompt, embeddings or output layer: the cut would miss them
    return DecoderPrefix(lm=lm, first=first)
