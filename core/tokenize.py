"""Rows -> token ids: classification inputs and chat-formatted SFT pairs.

Padding is left to the collator (dynamic, per batch): padding everything to max_length wastes
most of the compute on short texts.
"""
from __future__ import annotations

from torch.utils.data import Dataset


class RowsDataset(Dataset):
    """A list of feature dicts; the Trainer's LengthGroupedSampler reads `input_ids` lengths."""

    def __init__(self, rows: list[dict]):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def head_tail(ids: list[int], max_length: int, n_special_start: int, n_special_end: int) -> list[int]:
    """Keep the start and the end of a long text (Sun et al. 2019: reviews conclude at the end)."""
    if len(ids) <= max_length:
        return ids
    body = ids[n_special_start:len(ids) - n_special_end]
    room = max_length - n_special_start - n_special_end
    head = room // 3
    tail = room - head
    return ids[:n_special_start] + body[:head] + body[len(body) - tail:] + ids[len(ids) - n_special_end:]


def encode_classification(rows: list[dict], tokenizer, max_length: int, truncation: str = "head",
                          prefix: str = "") -> list[dict]:
    if not rows:  # e.g. no validation rows (val_share 0): transformers' tokenizer fails on []
        return []
    texts = [prefix + r["text"] if prefix else r["text"] for r in rows]
    if truncation == "head_tail":
        enc = tokenizer(texts, truncation=False)
        probe = tokenizer("a")["input_ids"]
        core = tokenizer("a", add_special_tokens=False)["input_ids"]
        start = probe.index(core[0]) if core and core[0] in probe else 0
        end = len(probe) - start - len(core)
        ids_list = [head_tail(ids, max_length, start, end) for ids in enc["input_ids"]]
    else:
        ids_list = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    out = []
    for ids, row in zip(ids_list, rows):
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(row["label"])})
    return out


def chat_prompt_ids(tokenizer, prompt: str) -> list[int]:
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                            tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)
    # No template (a base model): a plain instruction format the model can still learn.
    return tokenizer(f"### Question:\n{prompt}\n### Answer:\n", add_special_tokens=True)["input_ids"]


def encode_sft(rows: list[dict], tokenizer, max_length: int) -> list[dict]:
    """Chat-template the prompt; the loss sees only the response (prompt labels are -100)."""
    eos = tokenizer.eos_token_id
    out = []
    for row in rows:
        prompt_ids = chat_prompt_ids(tokenizer, row["prompt"])
        response_ids = tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        end = end_of_turn_ids(tokenizer)
        response_ids = response_ids + end
        ids = (prompt_ids + response_ids)[:max_length]
        labels = ([-100] * len(prompt_ids) + response_ids)[:max_length]
        if all(lab == -100 for lab in labels):
            continue  # the prompt alone fills max_length: nothing to learn from this row
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return out


def end_of_turn_ids(tokenizer) -> list[int]:
    """The token(s) that close an assistant turn, so the tuned model learns to stop."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if "<|im_end|>" in template:
        ids = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(ids, int) and ids != tokenizer.unk_token_id:
            return [ids]
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
