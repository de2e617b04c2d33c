"""Inference on a finished run: base vs tuned from one loaded model where possible.

Adapter runs load the base once and switch the adapter off with peft's `disable_adapter()` for the
base view; full and head-only runs keep the initial weights beside the tuned ones. Calls into a
shared model go through its lock (the app serves many sessions from one object).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
import time
from typing import Iterator

import torch

from core import limits, models
from core.build import build_model
from core.chat_stream import (Ending, RowText, ending_criteria, ending_streamer, greedy_rows, side_by_side,
                              time_limit_note)
from core.config import ConfigError, RunConfig
from core.scoring import label_word_probs
from core.tokenize import chat_prompt_ids

# Plain greedy decoding. A penalty of 1.1 also punishes the question's own words in the answer:
# the base SmolLM2 then missed 3 of the 20 general questions ("2 plus 2" -> probability theory).
REPETITION_PENALTY = 1.0
# Rows per batch in generate_views (core.probe.BATCH_SIZE says what sizes cost); the model is held a
# token at a time, so a chat on the same run never waits for a whole batch.
GENERATE_BATCH_SIZE = 32
# Whether the Compare chat asks a LoRA run's two panes in one batch (greedy). Off: on this server's
# 2-core AVX2 CPU a two-row forward of SmolLM2-135M costs ~1.7x a one-row forward at one torch thread
# (MKL's product for two rows is not one pass over the weights; the 49k-word head 2.3x), and far
# more at two threads on a busy machine; the batch gave the same full answer and first words twice
# as late (issue 22, measured 2026-12-07 under load: re-measure on a quiet machine before turning it on).
PANES_IN_ONE_BATCH = False
# Whether the base and tuned views answer at once (the Compare chat's two panes, the probe's two
# views), each on its own model in its own thread at one torch thread (core.chat_stream.side_by_side),
# on a CPU with two torch threads or more. A LoRA or IA3 run's base view is then a second, bare copy of
# the base (built at the first such call): only for bases up to SIDE_BY_SIDE_MAX_BYTES, so a larger
# Hub model never doubles its memory.
PANES_SIDE_BY_SIDE = True
SIDE_BY_SIDE_MAX_BYTES = 1536 << 20


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


class _Flag:
    """A `stopped()` callable seen as an event."""

    def __init__(self, stopped):
        self.is_set = stopped


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


def _eos_ids(model, tokenizer) -> set[int]:
    """The ids `model.generate` stops a row at (its generation config's, as `generate` uses them)."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        return set()
    return {int(e) for e in eos} if isinstance(eos, (list, tuple)) else {int(eos)}


class RunModel:
    def __init__(self, run_dir: str):
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
        self._waiting, self._waiting_guard, self._turns = 0, threading.Lock(), 0  # see _locked
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
        self._side_base, self._side_lock, self._side_build = None, threading.Lock(), threading.Lock()

    def _load_full(self, device):
        from safetensors.torch import load_model

        from core.heads import PooledClassifier
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
    def _locked(self, wait: float | None = None):
        # A bounded wait: a visitor hears "busy" in seconds instead of a thread parked on the lock.
        wait = limits.model_wait_seconds() if wait is None else wait
        with self._waiting_guard:
            self._waiting += 1
        try:
            got = self.lock.acquire(timeout=wait)
        finally:
            with self._waiting_guard:
                self._waiting -= 1
        if not got:
            raise ModelBusy(f"this model is busy answering another visitor (waited {wait} s, "
                            "PLAYGROUND_MODEL_WAIT_SECONDS); send again in a few seconds")
        self._turns += 1
        turn = self._turns
        try:
            yield
        finally:
            self.lock.release()
            # A lock is not fair: a thread looping over short holds (the probe, a token at a time)
            # would take it again before a waiting chat wakes up. Let a waiter in first.
            deadline = time.monotonic() + 1.0
            while (self._waiting and self._turns == turn and not self.lock._is_owned()
                   and time.monotonic() < deadline):
                time.sleep(0.002)

    @contextlib.contextmanager
    def view(self, tuned: bool, wait: float | None = None):
        """The model as tuned, or as it was before training (`wait`: seconds to wait for the lock)."""
        with self._locked(wait):
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
        limits.check_prompt_chars(prompt)
        limits.check_prompt_tokens(int(self._chat_ids(list(history or []) + [{"role": "user", "content": prompt}])
                                       .shape[1]))

    def generate_stream(self, prompt: str, tuned: bool = True, max_new_tokens: int = 64,
                        temperature: float = 0.0, history: list[dict] | None = None,
                        cancel: threading.Event | None = None, short: bool = False,
                        reasons: list | None = None) -> Iterator[str]:
        """The answer, piece by piece. It stops early when `cancel` is set, when the consumer stops
        reading (the generator is closed), or at PLAYGROUND_GENERATION_SECONDS (then says so); with
        `short`, at a sentence end (core.chat_stream.Ending). Once the answer is over, why it ended
        is appended to `reasons`: "sentence", "limit" (cut at `max_new_tokens`) or None."""
        from transformers import StoppingCriteriaList
        if self.task != "sft":
            raise ConfigError("this run is a classifier; generation needs an instruction-tuned (sft) run")
        if not prompt.strip():
            raise ConfigError("the prompt is empty; type a question")
        limits.check_prompt_chars(prompt)  # before tokenising: a 100k-character prompt costs seconds
        messages = list(history or []) + [{"role": "user", "content": prompt}]
        ids = self._chat_ids(messages)
        limits.check_prompt_tokens(int(ids.shape[1]))
        budget = limits.generation_seconds()
        timed_out: list = []
        stop_flag = threading.Event()  # set when the consumer leaves: the thread must not run on
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                      pad_token_id=self.tokenizer.pad_token_id,
                      do_sample=temperature > 0, repetition_penalty=REPETITION_PENALTY)
        if temperature > 0:
            kwargs["temperature"] = temperature
        errors: list[BaseException] = []
        with self.view(tuned) as model:
            kwargs["input_ids"] = ids.to(model.device)
            kwargs["attention_mask"] = kwargs["attention_mask"].to(model.device)
            ending = Ending(self.tokenizer, _eos_ids(model, self.tokenizer), max_new_tokens, short)
            kwargs["streamer"] = streamer = ending_streamer(self.tokenizer, ending)
            # The clock starts once the model is ours: waiting for it is bounded separately.
            either = _AnyEvent(cancel, stop_flag)
            if either.is_set():
                return  # replaced by a newer send while it waited for the model: nothing to answer
            kwargs["stopping_criteria"] = StoppingCriteriaList([_stop_when(either, time.monotonic() + budget,
                                                                           timed_out),
                                                                ending_criteria(ending, ids.shape[1])])

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
            yield time_limit_note(budget)
        if reasons is not None:
            reasons.append(None if timed_out or (cancel is not None and cancel.is_set()) else ending.reason)

    def generate_views_stream(self, prompt: str, histories: dict[str, list[dict] | None], views: dict[str, bool],
                              max_new_tokens: int = 64, temperature: float = 0.0,
                              cancel: threading.Event | None = None, one_batch: bool | None = None,
                              short: bool = False, endings: dict | None = None
                              ) -> Iterator[tuple[str, str | None]]:
        """Each pane's answer to `prompt`, given the pane's own `histories[pane]` and view
        (`views[pane]`: tuned or base): (pane, piece) while it is made, (pane, None) once that pane's
        answer is over. With `one_batch` (default PANES_IN_ONE_BATCH) a LoRA run answers greedily
        with all panes in one batch (peft's per-row `adapter_names`; a pane that is done leaves it),
        the model held a token at a time as the probe holds it; otherwise, and for sampling and
        runs that cannot mix views in a batch, one pane after the other (generate_stream). `short`:
        an answer may end at a sentence end (generate_stream); `endings[pane]` is set to why each
        pane's answer ended ("sentence", "limit" or None) before its (pane, None)."""
        if self.task != "sft":
            raise ConfigError("this run is a classifier; generation needs an instruction-tuned (sft) run")
        if not prompt.strip():
            raise ConfigError("the prompt is empty; type a question")
        limits.check_prompt_chars(prompt)  # before tokenising: a 100k-character prompt costs seconds
        panes = list(views)
        rows = [self._chat_ids(list(histories.get(p) or []) + [{"role": "user", "content": prompt}])[0].tolist()
                for p in panes]
        for row in rows:
            limits.check_prompt_tokens(len(row))
        one_batch = PANES_IN_ONE_BATCH if one_batch is None else one_batch
        if not one_batch and temperature <= 0 and self._answers_side_by_side(views.values()):
            yield from self._panes_side_by_side(panes, rows, views, max_new_tokens, cancel, short, endings)
            return
        if not one_batch or temperature > 0 or len(set(views.values())) < 2 or not self._mixed_views():
            for pane in panes:
                reasons: list = []
                for piece in self.generate_stream(prompt, views[pane], max_new_tokens, temperature,
                                                  histories.get(pane), cancel, short, reasons):
                    yield pane, piece
                if endings is not None:
                    endings[pane] = reasons[-1] if reasons else None
                yield pane, None
            return
        budget, timed_out, used = limits.generation_seconds(), [], [0.0]
        texts = [RowText(self.tokenizer) for _ in rows]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        eos = _eos_ids(self.model, self.tokenizer)
        ends = [Ending(self.tokenizer, eos, max_new_tokens, short) for _ in rows]
        for row, token in greedy_rows(self._token_forward(True, True, budget, used), rows, [views[p] for p in panes],
                                      pad, eos, max_new_tokens, lambda: cancel is not None and cancel.is_set(),
                                      lambda: used[0] > budget, timed_out, lambda r, t: ends[r].take(t)):
            if token is not None:
                pieces = texts[row].put(token)
            else:
                pieces = texts[row].end() + ([time_limit_note(budget)] if row in timed_out else [])
            for piece in pieces:
                yield panes[row], piece
            if token is None:
                if endings is not None:
                    cut = row in timed_out or (cancel is not None and cancel.is_set())
                    endings[panes[row]] = None if cut else ends[row].reason
                yield panes[row], None

    def _answers_side_by_side(self, views) -> bool:
        """Whether these views (one base, one tuned: False, True) can be answered at once
        (PANES_SIDE_BY_SIDE)."""
        if not PANES_SIDE_BY_SIDE or sorted(views) != [False, True] or torch.get_num_threads() < 2:
            return False
        if self.model.device.type != "cpu":
            return False  # one GPU stream: two threads would only take turns on it
        return self._base_for_side() is not None

    def _base_for_side(self):
        """A model of the base view that the tuned view does not share (None when there is none):
        a full run's initial weights, or for a LoRA or IA3 run a second copy of the bare base, built
        on first use when it is small enough. Prompt learning and 4-bit bases go one pane at a time."""
        if self.format == "full":
            return self.base
        if self.format != "peft" or self.model.peft_config[self.model.active_adapter].is_prompt_learning:
            return None
        from core.methods import get_method
        if get_method(self.cfg.method.name).quantized_base:
            return None
        with self._side_build:
            if self._side_base is None:
                base = self.model.get_base_model()
                size = sum(p.numel() * p.element_size() for n, p in base.named_parameters() if "lora_" not in n
                           and "ia3_" not in n)
                if size > SIDE_BY_SIDE_MAX_BYTES:
                    return None
                bare, _ = build_model(self.cfg, self.label_names, models.pick_device(self.cfg.model.device))
                self._side_base = bare.eval()
            return self._side_base

    def _panes_side_by_side(self, panes: list[str], rows: list[list[int]], views: dict[str, bool],
                            max_new_tokens: int, cancel, short: bool, endings: dict | None
                            ) -> Iterator[tuple[str, str | None]]:
        """generate_views_stream with each pane greedy on its own model, in its own thread."""
        budget = limits.generation_seconds()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        eos = _eos_ids(self.model, self.tokenizer)
        ends = [Ending(self.tokenizer, eos, max_new_tokens, short) for _ in panes]
        timed_out: list[list] = [[] for _ in panes]

        def maker(i: int):
            tuned = views[panes[i]]

            def tokens(stopped):
                used = [0.0]
                forward = self._token_forward(False, tuned, budget, used, self._side_hold(tuned))
                for _, token in greedy_rows(forward, [rows[i]], [tuned], pad, eos, max_new_tokens,
                                            lambda: stopped() or (cancel is not None and cancel.is_set()),
                                            lambda: used[0] > budget, timed_out[i], lambda r, t: ends[i].take(t)):
                    yield token
            return tokens

        texts = [RowText(self.tokenizer) for _ in panes]
        for i, token in side_by_side([maker(i) for i in range(len(panes))]):
            pieces = texts[i].put(token) if token is not None else (
                texts[i].end() + ([time_limit_note(budget)] if timed_out[i] else []))
            for piece in pieces:
                yield panes[i], piece
            if token is None:
                if endings is not None:
                    cut = bool(timed_out[i]) or (cancel is not None and cancel.is_set())
                    endings[panes[i]] = None if cut else ends[i].reason
                yield panes[i], None

    def _side_hold(self, tuned: bool):
        """`_token_forward`'s `hold` for a view answered side by side: the tuned view is this run's
        model as usual (None), the base view its own copy (`_base_for_side`) under its own lock."""
        if tuned:
            return None
        base = self._base_for_side()

        @contextlib.contextmanager
        def holding(wait):
            with self._side_lock:
                yield base
        return holding

    def generate(self, prompt: str, tuned: bool = True, **kw) -> str:
        return "".join(self.generate_stream(prompt, tuned, **kw)).strip()

    def generate_batch(self, prompts: list[str], tuned: bool = True, max_new_tokens: int = 64,
                       batch_size: int = GENERATE_BATCH_SIZE,
                       cancel: threading.Event | None = None) -> list[str]:
        """What `generate` (greedy) answers to each prompt, `batch_size` prompts at a time (see
        `generate_views`)."""
        answers = self.generate_views(prompts, (tuned,), max_new_tokens, batch_size, cancel)[tuned]
        return [a for a in answers if a is not None]  # cancelled: the answers given so far

    def generate_views(self, prompts: list[str], views=(False, True), max_new_tokens: int = 64,
                       batch_size: int = GENERATE_BATCH_SIZE, cancel: threading.Event | None = None,
                       tick=None) -> dict[bool, list[str]]:
        """{tuned: answers} for each view in `views` (False: base, True: tuned): what `generate`
        (greedy) answers to each prompt, `batch_size` rows per batch; `tick(done, index, tuned)` after
        each batch (index, tuned: its last row's prompt and view). Every prompt is checked against the caps before any is answered.

        Work not done (issue 22): the chat template's shared start (system prompt) is run once per
        batch and its cache shared by the rows; a row leaves the batch at its end of turn; on a CPU
        the two views are answered at once, each on its own model in its own thread (see
        `_answers_side_by_side`), else LoRA runs answer base and tuned rows in one batch (peft's
        adapter_names). The model is locked one
        token at a time and a waiting chat goes first, so the probe never makes a chat "busy".
        PLAYGROUND_GENERATION_SECONDS bounds each batch, as it bounds each answer of `generate`."""
        if self.task != "sft":
            raise ConfigError("this run is a classifier; generation needs an instruction-tuned (sft) run")
        prompts = list(prompts)
        for prompt in prompts:
            if not prompt.strip():
                raise ConfigError("the prompt is empty; type a question")
            limits.check_prompt_chars(prompt)
        ids = [self._chat_ids([{"role": "user", "content": p}])[0].tolist() for p in prompts]
        for row in ids:
            limits.check_prompt_tokens(len(row))
        answers: dict[bool, list] = {v: [None] * len(ids) for v in views}
        if not ids:
            return answers
        # Short prompts together: less padding.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        if self._answers_side_by_side(views):
            return self._views_side_by_side(ids, order, answers, max_new_tokens, batch_size, cancel, tick)
        mixed = self._mixed_views() and len(views) > 1
        # A LoRA run's base and tuned rows of a prompt side by side.
        rows = [(i, v) for i in order for v in views] if mixed else [(i, v) for v in views for i in order]
        size = max(1, int(batch_size))
        groups = [rows] if mixed else [[r for r in rows if r[1] == v] for v in views]  # else one view a batch
        for chunk in (g[s:s + size] for g in groups for s in range(0, len(g), size)):
            texts = self._greedy_batch([ids[i] for i, _ in chunk], [v for _, v in chunk], max_new_tokens,
                                       cancel, mixed)
            if texts is None:
                break  # the caller went away
            for (i, v), text in zip(chunk, texts):
                answers[v][i] = text
            if tick:
                tick(sum(a is not None for v in views for a in answers[v]), *chunk[-1])
        return answers

    def _views_side_by_side(self, ids: list[list[int]], order: list[int], answers: dict[bool, list],
                            max_new_tokens: int, batch_size: int, cancel, tick) -> dict[bool, list]:
        """generate_views for both views at once, each on its own model in its own thread (as the
        Compare chat's panes, `_panes_side_by_side`); `tick` is called here, in the caller's thread."""
        size = max(1, int(batch_size))

        def maker(tuned: bool):
            hold = self._side_hold(tuned)

            def batches(stopped):
                either = _AnyEvent(cancel, _Flag(stopped))
                for start in range(0, len(order), size):
                    chunk = order[start:start + size]
                    texts = self._greedy_batch([ids[i] for i in chunk], [tuned] * len(chunk), max_new_tokens,
                                               either, False, hold)
                    if texts is None:
                        return  # the caller went away
                    yield tuned, chunk, texts
            return batches

        for _, (tuned, chunk, texts) in side_by_side([maker(False), maker(True)]):
            for i, text in zip(chunk, texts):
                answers[tuned][i] = text
            if tick:
                tick(sum(a is not None for v in answers for a in answers[v]), chunk[-1], tuned)
        return answers

    def _mixed_views(self) -> bool:
        """Whether base and tuned rows can share a batch: peft's LoRA layers take `adapter_names`
        per row ("__base__": adapter off); DoRA and prompt learning cannot."""
        if self.format != "peft":
            return False
        from peft import PeftType
        config = self.model.peft_config[self.model.active_adapter]
        return config.peft_type == PeftType.LORA and not getattr(config, "use_dora", False)

    def _greedy_batch(self, rows: list[list[int]], views: list[bool], max_new_tokens: int,
                      cancel, mixed: bool, hold=None) -> list[str] | None:
        """Greedy answers to chat-prompt token rows (None if `cancel` was set before the first token).

        The same argmax `model.generate(do_sample=False)` takes, with less work: the rows' common
        start goes through the model once per view and its cache is copied to the rows; a row that
        said its end of turn leaves the batch (generate would go on computing it until the last row
        ends). Rows are left-padded after the common start: position ids count only real tokens."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        if self.format == "peft" and self.model.peft_config[self.model.active_adapter].is_prompt_learning:
            # peft feeds virtual tokens (and a cache of its own) into every forward: generate knows how
            return self._generate_rows(rows, views[0], max_new_tokens, cancel, pad)
        budget, timed_out, used = limits.generation_seconds(), [], [0.0]
        step_view = views[0]  # a batch that is not mixed has one view
        eos = _eos_ids(self.model if mixed or step_view else getattr(self, "base", self.model), self.tokenizer)
        tokens: list[list[int]] | None = None
        for row, token in greedy_rows(self._token_forward(mixed, step_view, budget, used, hold), rows, views, pad, eos,
                                      max_new_tokens, lambda: cancel is not None and cancel.is_set(),
                                      lambda: used[0] > budget, timed_out):
            tokens = tokens or [[] for _ in rows]
            if token is not None:
                tokens[row].append(token)
        if tokens is None:
            return None
        note = time_limit_note(budget)
        return [(self._as_streamed(t) + (note if r in timed_out else "")).strip() for r, t in enumerate(tokens)]

    def _token_forward(self, mixed: bool, step_view: bool, budget: float, used: list, hold=None):
        """`greedy_rows`' forward: the model held one token at a time (a waiting chat or probe goes
        first between tokens); `used[0]` adds up the seconds it held the model. `hold(wait)`: the
        context that gives the model (default: this run's view)."""
        # The first wait is a chat's (busy past PLAYGROUND_MODEL_WAIT_SECONDS); once started, a batch
        # waits out another's turn, and its time budget counts only its own time with the model.
        waits = [None, budget + limits.model_wait_seconds()]
        names = {False: "__base__", True: self.model.active_adapter} if mixed else None

        def forward(row_views: list[bool], **kw):
            held = hold(waits[0]) if hold is not None else self.view(True if mixed else step_view, wait=waits[0])
            with held as model, torch.inference_mode():
                waits[:], start = waits[-1:], time.monotonic()
                if names is not None:
                    kw["adapter_names"] = [names[v] for v in row_views]
                logits = model(**{k: v.to(model.device) if torch.is_tensor(v) else v for k, v in kw.items()},
                               use_cache=True).logits
                used[0] += time.monotonic() - start
                return logits[:, -1].float().argmax(-1).cpu()
        return forward

    def _generate_rows(self, rows: list[list[int]], tuned: bool, max_new_tokens: int, cancel, pad) -> list[str] | None:
        """`_greedy_batch` through one `model.generate` call, left-padded (prompt learning)."""
        from transformers import StoppingCriteriaList
        width = max(len(r) for r in rows)
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        budget, timed_out = limits.generation_seconds(), []
        with self.view(tuned) as model, torch.no_grad():
            if cancel is not None and cancel.is_set():
                return None  # the caller went away while it waited for the model
            out = model.generate(input_ids=input_ids.to(model.device), attention_mask=mask.to(model.device),
                                 max_new_tokens=max_new_tokens, pad_token_id=pad, do_sample=False,
                                 repetition_penalty=REPETITION_PENALTY,
                                 stopping_criteria=StoppingCriteriaList(
                                     [_stop_when(cancel, time.monotonic() + budget, timed_out)]))
            eos = _eos_ids(model, self.tokenizer)
        answers = []
        for row in out[:, width:].tolist():
            ended = next((i for i, t in enumerate(row) if t in eos), None)
            # A finished row goes on being filled with pads: its answer ends with its first eos.
            row = row if ended is None else row[:ended + 1]
            note = time_limit_note(budget) if timed_out and ended is None else ""
            answers.append((self._as_streamed(row) + note).strip())
        return answers

    def _as_streamed(self, tokens: list[int]) -> str:
        """The text `generate` joins from its streamer's pieces for these new tokens: the streamer
        decodes a growing cache and flushes it at line ends, which is not always decode(tokens)."""
        text = RowText(self.tokenizer)
        return "".join([piece for t in tokens for piece in text.put(t)] + text.end())

    def _chat_ids(self, messages: list[dict]) -> torch.Tensor:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return torch.tensor([list(ids)])
        return torch.tensor([chat_prompt_ids(self.tokenizer, messages[-1]["content"])])
