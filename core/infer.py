"""Inference on a finished run: base vs tuned from one loaded model where possible.

Adapter runs load the base once and switch the adapter off with peft's `disable_adapter()` for the
base view; full and head-only runs keep the initial weights beside the tuned ones. Calls into a
shared model go through its lock (the app serves many sessions from one object).
"""
from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import statistics
import threading
import time
from typing import Iterator

import torch

from core.config import ConfigError, RunConfig
from core.methods.zero_shot import label_prompt  # the zero-shot method owns its prompt

# Plain greedy decoding. A penalty of 1.1 also punishes the question's own words in the answer:
# the base SmolLM2 then missed 3 of the 20 general questions ("2 plus 2" -> probability theory).
REPETITION_PENALTY = 1.0


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
    from core.train import _collator
    collate = _collator(p)
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
    from core.train import _collator
    collate = _collator(p)
    preds = []
    for start in range(0, len(rows), 32):
        batch = collate([{k: v for k, v in r.items() if k != "labels"} for r in rows[start:start + 32]])
        batch = {k: v.to(p.model.device) for k, v in batch.items()}
        preds.extend(p.model(**batch).logits.argmax(-1).tolist())
    return preds


@torch.no_grad()
def measure_latency(p, rows: list[dict], n: int = 16) -> float | None:
    """Median milliseconds for one forward pass over one example (batch 1), as a user would call it."""
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
    return round(statistics.median(times), 3)


# ----------------------------------------------------------------------------------------------
# A finished run, loaded for side-by-side comparison.
# ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _adapter_disabled(peft_model):
    """The base model as it was before training, from a peft model holding a trained adapter.

    peft's disable_adapter() serves LoRA and IA3 (their layers and the saved head copy switch
    off). For prompt learning (prompt/prefix tuning) it only swaps forward(), reads
    prepare_inputs_for_generation (classifiers have none: AttributeError) and leaves the trained
    head copy (modules_to_save) on, so there the bare base model runs with its original head.
    """
    if not peft_model.peft_config[peft_model.active_adapter].is_prompt_learning:
        with peft_model.disable_adapter():
            yield peft_model
        return
    from peft.utils.other import AuxiliaryTrainingWrapper
    wrappers = [m for m in peft_model.modules() if isinstance(m, AuxiliaryTrainingWrapper)]
    was_disabled = [m.disable_adapters for m in wrappers]
    grads = [(p, p.requires_grad) for m in wrappers for p in m.parameters()]  # enable_adapters sets them
    for m in wrappers:
        m.enable_adapters(False)
    try:
        yield peft_model.get_base_model()
    finally:
        for m, disabled in zip(wrappers, was_disabled):
            m.enable_adapters(not disabled)
        for p, flag in grads:
            p.requires_grad_(flag)


class _AnyEvent:
    """is_set() of either of two flags (one may be None)."""

    def __init__(self, *events):
        self.events = [e for e in events if e is not None]

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


class ModelBusy(ConfigError):
    """Another session has used this run's model for longer than PLAYGROUND_MODEL_WAIT_SECONDS."""


def _stop_when(cancel: threading.Event | None, deadline: float, timed_out: list):
    """A StoppingCriteria checked after every new token: the caller went away (its session closed or
    its script run was superseded: `cancel`), or the answer used its time budget."""
    from transformers import StoppingCriteria

    class _Stop(StoppingCriteria):
        def __call__(self, input_ids, scores, **kw):
            late = time.monotonic() > deadline
            if late and not timed_out:
                timed_out.append(True)
            stop = late or (cancel is not None and cancel.is_set())
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)
    return _Stop()


class RunModel:
    def __init__(self, run_dir: str):
        from core import models
        from core.train import build_model
        self.run_dir = run_dir
        if not os.path.isdir(run_dir):
            raise ConfigError(f"run folder {os.path.basename(os.path.normpath(run_dir)) or run_dir} does not exist; "
                              "give a folder under runs/ (the Runs page lists them)")
        if not os.path.isfile(os.path.join(run_dir, "config.json")):
            raise ConfigError(f"{os.path.basename(os.path.normpath(run_dir)) or run_dir} is not a run folder (it has no "
                              "config.json); give a folder under runs/ (the Runs page lists them)")
        with open(os.path.join(run_dir, "config.json"), encoding="utf-8") as fh:
            self.cfg = RunConfig.from_dict(json.load(fh))
        path = os.path.join(run_dir, "weights.json")
        if not os.path.exists(path):
            raise ConfigError("this run has no saved weights (it did not finish); choose a completed run")
        with open(path, encoding="utf-8") as fh:
            self.meta = json.load(fh)
        self.task = self.meta["task"]
        self.kind = self.meta["kind"]
        self.label_names = self.meta.get("label_names")
        self.format = self.meta["format"]
        self.lock = threading.RLock()
        self.tokenizer = models.load_tokenizer(self.cfg.model.name)
        device = models.pick_device(self.cfg.model.device)
        # The same seed as training: an untrained head starts from the same random weights the run did.
        torch.manual_seed(self.cfg.train.seed)
        model, _ = build_model(self.cfg, self.label_names, device)
        self.base_head = None
        if self.format == "peft":
            from peft import PeftModel
            model = PeftModel.from_pretrained(model, os.path.join(run_dir, "adapter"))
        elif self.format == "full":
            self.base = model
            model = self._load_full(device)
        elif self.format == "head":
            from safetensors.torch import load_model
            head = model.classifier if hasattr(model, "classifier") else model.score
            self.base_head = copy.deepcopy(head)
            load_model(head, os.path.join(run_dir, "weights", "head.safetensors"))
        self.model = model.eval()
        if self.format == "full":
            self.base.eval()

    def _load_full(self, device):
        from safetensors.torch import load_model

        from core.heads import PooledClassifier
        from core.train import build_model
        folder = os.path.join(self.run_dir, "model")
        if isinstance(self.base, PooledClassifier):
            torch.manual_seed(self.cfg.train.seed)
            tuned, _ = build_model(self.cfg, self.label_names, device)
            load_model(tuned, os.path.join(folder, "model.safetensors"))
            return tuned
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
        cls = AutoModelForCausalLM if self.task == "sft" else AutoModelForSequenceClassification
        return cls.from_pretrained(folder, trust_remote_code=False).to(device)

    @contextlib.contextmanager
    def _locked(self):
        # A bounded wait: a visitor hears "busy" in seconds instead of a thread parked on the lock.
        from core import limits
        wait = limits.model_wait_seconds()
        if not self.lock.acquire(timeout=wait):
            raise ModelBusy(f"this model is busy answering another visitor (waited {wait} s, "
                            "PLAYGROUND_MODEL_WAIT_SECONDS); send again in a few seconds")
        try:
            yield
        finally:
            self.lock.release()

    @contextlib.contextmanager
    def view(self, tuned: bool):
        """The model as tuned, or as it was before training."""
        with self._locked():
            if tuned or self.format == "none":
                yield self.model
            elif self.format == "peft":
                with _adapter_disabled(self.model) as base:
                    yield base
            elif self.format == "full":
                yield self.base
            else:  # head: swap the initial head in for the duration
                holder = self.model
                name = "classifier" if hasattr(holder, "classifier") else "score"
                trained = getattr(holder, name)
                setattr(holder, name, self.base_head)
                try:
                    yield holder
                finally:
                    setattr(holder, name, trained)

    # -- classification ---------------------------------------------------------------------
    @torch.no_grad()
    def classify(self, text: str, tuned: bool = True) -> dict[str, float]:
        if not text.strip():
            raise ConfigError("the text is empty; type a sentence to classify")
        from core import limits
        limits.check_prompt_chars(text, "the text", factor=limits.CLASSIFY_CHARS_FACTOR)
        with self.view(tuned) as model:
            if self.kind == "causal" and not hasattr(self._inner(model), "score"):
                probs = label_word_probs(model, self.tokenizer, [text], self.label_names,
                                         self.cfg.data.max_length)[0]
            else:
                enc = self.tokenizer(text, truncation=True, max_length=self.cfg.data.max_length,
                                     return_tensors="pt").to(model.device)
                enc.pop("token_type_ids", None) if self.kind == "causal" else None
                probs = torch.softmax(model(**enc).logits[0].float(), -1).tolist()
        return dict(zip(self.label_names, probs))

    @staticmethod
    def _inner(model):
        return model.get_base_model() if hasattr(model, "get_base_model") else model

    # -- generation -------------------------------------------------------------------------
    def check_prompt(self, prompt: str, history: list[dict] | None = None) -> None:
        """Refuse, before waiting for the model, a prompt above the server's caps (chars, tokens)."""
        from core import limits
        limits.check_prompt_chars(prompt)
        limits.check_prompt_tokens(int(self._chat_ids(list(history or []) + [{"role": "user", "content": prompt}])
                                       .shape[1]))

    def generate_stream(self, prompt: str, tuned: bool = True, max_new_tokens: int = 64,
                        temperature: float = 0.0, history: list[dict] | None = None,
                        cancel: threading.Event | None = None) -> Iterator[str]:
        """The answer, piece by piece. It stops early when `cancel` is set, when the consumer stops
        reading (the generator is closed), or at PLAYGROUND_GENERATION_SECONDS (then says so)."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        from core import limits
        if self.task != "sft":
            raise ConfigError("this run is a classifier; generation needs an instruction-tuned (sft) run")
        if not prompt.strip():
            raise ConfigError("the prompt is empty; type a question")
        limits.check_prompt_chars(prompt)  # before tokenising: a 100k-character prompt costs seconds
        messages = list(history or []) + [{"role": "user", "content": prompt}]
        ids = self._chat_ids(messages)
        limits.check_prompt_tokens(int(ids.shape[1]))
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        budget = limits.generation_seconds()
        timed_out: list = []
        stop_flag = threading.Event()  # set when the consumer leaves: the thread must not run on
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                      streamer=streamer, pad_token_id=self.tokenizer.pad_token_id,
                      do_sample=temperature > 0, repetition_penalty=REPETITION_PENALTY)
        if temperature > 0:
            kwargs["temperature"] = temperature
        errors: list[BaseException] = []
        with self.view(tuned) as model:
            kwargs["input_ids"] = ids.to(model.device)
            kwargs["attention_mask"] = kwargs["attention_mask"].to(model.device)
            # The clock starts once the model is ours: waiting for it is bounded separately.
            either = _AnyEvent(cancel, stop_flag)
            if either.is_set():
                return  # replaced by a newer send while it waited for the model: nothing to answer
            kwargs["stopping_criteria"] = StoppingCriteriaList([_stop_when(either, time.monotonic() + budget,
                                                                           timed_out)])

            def work():
                try:
                    with torch.no_grad():
                        model.generate(**kwargs)
                except BaseException as exc:  # surfaced to the caller below
                    errors.append(exc)
                    streamer.end()

            thread = threading.Thread(target=work, daemon=True, name="playground-generate")
            thread.start()
            try:
                for piece in streamer:
                    yield piece
            finally:
                # Closed early (a new send, a closed tab): stop at the next token, and keep the model
                # locked until the thread is done with it.
                stop_flag.set()
                thread.join()
        if errors:
            raise errors[0]
        if timed_out:
            yield (f"\n\n_(stopped: the server's time limit of {budget} s per answer, "
                   "PLAYGROUND_GENERATION_SECONDS)_")

    def generate(self, prompt: str, tuned: bool = True, **kw) -> str:
        return "".join(self.generate_stream(prompt, tuned, **kw)).strip()

    def _chat_ids(self, messages: list[dict]) -> torch.Tensor:
        from core.tokenize import chat_prompt_ids
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return torch.tensor([list(ids)])
        return torch.tensor([chat_prompt_ids(self.tokenizer, messages[-1]["content"])])
