"""What the transformers Trainer is given for a run: its arguments and precision flags, the batch
collator and the classification metric. Inference pads batches with the same collator."""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

from core import distributed, models
from core.config import RunConfig

if TYPE_CHECKING:
    from core.build import Prepared


def run_mixed_precision(cfg: RunConfig, device: str) -> dict[str, bool]:
    """The Trainer's autocast flags for this run: bf16 where supported (a GPU, or a CPU with native
    bf16, not under a 4-bit base), else fp16 + loss scaler on a GPU."""
    from core.methods import get_method
    return models.mixed_precision(device, cfg.model.dtype, get_method(cfg.method.name).quantized_base)


def precision_label(cfg: RunConfig, device: str) -> str:
    """What the run computes in, for the summary: "float32", "bf16 mixed", ..."""
    flags = run_mixed_precision(cfg, device)
    if flags["bf16"] or flags["fp16"]:
        return "bf16 mixed" if flags["bf16"] else "fp16 mixed"
    return str(models.pick_dtype(device, cfg.model.dtype)).removeprefix("torch.")


def training_args(cfg: RunConfig, run_dir: str, device: str, n_train: int, prediction_loss_only: bool):
    from transformers import TrainingArguments
    t = cfg.train
    # batch_size is per process: under torchrun/accelerate each step takes world_size batches
    steps_per_epoch = max(1, math.ceil(n_train / (t.batch_size * t.grad_accum * distributed.world_size())))
    total_steps = t.max_steps if t.max_steps > 0 else math.ceil(steps_per_epoch * t.epochs)
    eval_steps = t.eval_steps or max(1, total_steps // 4)
    cuda = device.startswith("cuda")
    precision = run_mixed_precision(cfg, device)
    return TrainingArguments(
        output_dir=os.path.join(run_dir, "checkpoints"),
        learning_rate=t.learning_rate, num_train_epochs=t.epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=max(t.batch_size, 32),
        gradient_accumulation_steps=t.grad_accum, warmup_steps=int(t.warmup_ratio * total_steps),
        lr_scheduler_type=t.lr_scheduler, weight_decay=t.weight_decay, seed=t.seed, data_seed=t.seed,
        eval_strategy="steps", eval_steps=eval_steps, eval_on_start=True,
        logging_strategy="steps", logging_steps=t.logging_steps, logging_first_step=True,
        # The default filter logs a NaN/inf step loss as the mean of the earlier ones (0.0 at step
        # 1): the run would go on "completed" with NaN weights. Log it as it is: on_log stops the run.
        logging_nan_inf_filter=False,
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps or 500, save_total_limit=1,
        report_to=[], disable_tqdm=True, use_cpu=not cuda and device != "mps",
        bf16=precision["bf16"], fp16=precision["fp16"],
        dataloader_num_workers=0, remove_unused_columns=False, label_names=["labels"],
        # Under DDP every rank must draw the same order: accelerate seeds a plain random sampler by
        # epoch; the length-grouped one draws from each rank's own RNG, which dropout moves apart.
        train_sampling_strategy="group_by_length" if distributed.world_size() == 1 else "random",
        prediction_loss_only=prediction_loss_only,
        # Classification losses are per-row means that ignore num_items_in_batch; with the default
        # the Trainer would still multiply them by world_size under DDP (2x loss, 2x the step).
        # Token-level SFT losses do use it: there the global token average is the right one.
        average_tokens_across_devices=cfg.data.task == "sft",
        include_num_input_tokens_seen=False,
    ), total_steps


def batch_collator(p: Prepared):
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding
    if p.cfg.data.task == "sft":
        return DataCollatorForSeq2Seq(p.tokenizer, label_pad_token_id=-100, padding=True, pad_to_multiple_of=8)
    return DataCollatorWithPadding(p.tokenizer, pad_to_multiple_of=8)


def keeps_answer_logits(p: Prepared) -> bool:
    """Whether this SFT run can have its model compute vocabulary logits only where the loss reads
    them (the answer tokens): the model's forward slices its hidden states by `logits_to_keep`
    (transformers' slice_logits_to_keep) and nothing is prepended to the sequence (prompt learning
    adds virtual tokens, which would shift the mask)."""
    import inspect
    import sys
    if p.cfg.data.task != "sft" or p.kind != "causal":
        return False
    config = getattr(p.model, "active_peft_config", None)
    if config is not None and config.is_prompt_learning:
        return False
    base = p.model.get_base_model() if hasattr(p.model, "get_base_model") else p.model
    module = sys.modules.get(type(base).__module__)
    return ("logits_to_keep" in inspect.signature(base.forward).parameters
            and getattr(module, "slice_logits_to_keep", None) is not None)


class AnswerLogitsOnly:
    """The SFT collator, plus what makes the model project only the answer tokens onto the
    vocabulary: the loss never reads a prompt token's logits, and for SmolLM2-135M that projection
    (49,152 words) is a quarter of a training step's arithmetic while the answers are a quarter of
    the tokens (a step 1.21 -> 1.01 s, the same loss). `logits_to_keep` is the mask of positions
    whose next token is a label; `shift_labels` those next tokens, in the mask's order (the
    Trainer counts them for the loss's denominator, the model's loss takes them as they are)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, rows: list[dict]) -> dict:
        import torch
        batch = self.collate(rows)
        following = torch.nn.functional.pad(batch["labels"], (0, 1), value=-100)[:, 1:]
        keep = following != -100
        batch["logits_to_keep"] = keep
        batch["shift_labels"] = following[keep]
        return batch


def accuracy(eval_pred) -> dict:
    import numpy as np
    preds, labels = eval_pred
    preds = np.asarray(preds).reshape(-1)
    return {"accuracy": float((preds == np.asarray(labels).reshape(-1)).mean())}


def argmax_logits(logits, labels):
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.argmax(-1)


def quiet_library_logs() -> None:
    import logging

    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    for name in ("bitsandbytes", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
