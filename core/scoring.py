"""Scoring a model as it is, on tokenised rows: zero-shot label-word likelihood, accuracy or loss,
and the latency of one forward pass. The loop scores zero-shot runs with it, the orchestrator times
the trained model, and core.infer classifies with the same label-word scoring."""
from __future__ import annotations

import math
import statistics
import time

import torch

from core.methods.zero_shot import label_prompt  # the zero-shot method owns its prompt
from core.trainer_setup import batch_collator


# ----------------------------------------------------------------------------------------------
# Zero-shot scoring of a causal LM on classification: which label word is more likely next?
# ----------------------------------------------------------------------------------------------
@torch.no_grad()
def label_word_probs(model, tokenizer, texts: list[str], label_names: list[str], max_length: int = 256):
    first_ids = [tokenizer(" " + name, add_special_tokens=False)["input_ids"][0] for name in label_names]
    out = []
    for text in texts:
        ids = tokenizer(label_prompt(text, label_names), truncation=True, max_length=max_length,
                        return_tensors="pt")["input_ids"].to(model.device)
        logits = model(input_ids=ids).logits[0, -1]
        out.append(torch.softmax(logits[first_ids].float(), -1).tolist())
    return out


def evaluate_rows(p, rows: list[dict]) -> dict:
    """Accuracy (classification) or loss/perplexity (sft) of p.model as it is, on tokenised rows."""
    model = p.model
    model.eval()
    if p.cfg.data.task == "classification":
        if p.kind == "causal" and not hasattr(model, "score"):
            texts = [p.tokenizer.decode(r["input_ids"], skip_special_tokens=True) for r in rows]
            probs = label_word_probs(model, p.tokenizer, texts, p.label_names, p.cfg.data.max_length)
            preds = [max(range(len(pr)), key=pr.__getitem__) for pr in probs]
        else:
            preds = _batched_predictions(p, rows)
        correct = sum(int(pred == r["labels"]) for pred, r in zip(preds, rows))
        return {"eval_accuracy": correct / max(len(rows), 1)}
    collate = batch_collator(p)
    losses, weights = [], []
    with torch.no_grad():
        for start in range(0, len(rows), 16):
            batch = {k: v.to(model.device) for k, v in collate(rows[start:start + 16]).items()}
            n = int((batch["labels"] != -100).sum())
            losses.append(float(model(**batch).loss) * n)
            weights.append(n)
    loss = sum(losses) / max(sum(weights), 1)
    return {"eval_loss": loss, "eval_perplexity": math.exp(min(loss, 50))}


@torch.no_grad()
def _batched_predictions(p, rows: list[dict]) -> list[int]:
    collate = batch_collator(p)
    preds = []
    for start in range(0, len(rows), 32):
        batch = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows[start:start + 32]])
        batch = {k: v.to(p.model.device) for k, v in batch.items()}
        preds.extend(p.model(**batch).logits.argmax(-1).tolist())
    return preds


@torch.no_grad()
def measure_latency(p, rows: list[dict], n: int = 16, budget_s: float = 0.5, at_least: int = 3) -> float | None:
    """Median milliseconds for one forward pass over one example (batch 1), as a user would call it.
    Up to n examples, but no more once budget_s has gone (at least `at_least` of them): it runs
    between the last step and the result card, and 16 passes of SmolLM2-135M took 3.3 s there."""
    rows = rows[:n]
    if not rows:
        return None
    model = p.model
    model.eval()
    times = []
    for r in rows:
        ids = torch.tensor([r["input_ids"]], device=model.device)
        t0 = time.perf_counter()
        model(input_ids=ids, attention_mask=torch.ones_like(ids))
        times.append((time.perf_counter() - t0) * 1000)
        if len(times) >= at_least and sum(times) > budget_s * 1000:
            break
    return round(statistics.median(times), 3)
