"""Hallucination probe: does the model state the invented facts, and does it still know the world?

Scores base and tuned views of one run on (a) paraphrases of the fictional facts that no training
row and no tuning of the presets used (recall = every keyword of the fact appears in the answer) and
(b) broad general-knowledge questions of other kinds than the rehearsal rows (correct = any accepted
keyword appears): catastrophic forgetting made visible where it happens.

Which rows: `probe_facts(dataset)` takes `assets/data/facts_fresh.jsonl` for every fact that has
fresh paraphrases and the older held-out rows for the others; `probe_general()` is
`assets/data/general_broad.jsonl`. The older held-out rows of facts-mini and
`general_questions.jsonl` were what the "Fix a hallucination" preset was iterated against, so they
are no longer what a class is shown (bench/splits.py).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

# progress(done, total, view, part): called after every batch of answers, e.g. to move a progress bar.
Progress = Callable[[int, int, str, str], None]
# Answers (rows) per batch. One generate per question took ~189 s for the probe on 2 cores (issue
# 22); one transformers `generate` per 16 questions per view ~1.09 s per answer. RunModel.generate_views
# does less work per batch (the system prompt's cache shared, rows leaving at their end of turn, a
# LoRA run's base and tuned rows together), and holds the model a token at a time, so the size no
# longer bounds a chat's wait; PLAYGROUND_GENERATION_SECONDS still bounds each batch's own time.
BATCH_SIZE = 32
# New tokens per probe answer: a fact's name and number come in the first sentence.
PROBE_TOKENS = 40


@dataclass
class ProbeItem:
    prompt: str
    answer: str
    keywords: list
    hit: bool


def fact_hit(answer: str, keywords: list[str]) -> bool:
    low = answer.lower()
    return bool(keywords) and all(k.lower() in low for k in keywords)


def general_hit(answer: str, keywords: list[str]) -> bool:
    low = answer.lower()
    return any(k.lower() in low for k in keywords)


FRESH_FACTS_FILE = "facts_fresh.jsonl"
BROAD_GENERAL_FILE = "general_broad.jsonl"


def probe_facts(dataset: str) -> list[dict]:
    """Fact questions for the probe of a run on a built-in fact set: fresh paraphrases where written."""
    from core import data
    heldout = data.builtin_heldout(dataset)
    path = data.BUILTIN_DIR / FRESH_FACTS_FILE
    if not path.is_file():  # a trimmed install: the older held-out rows still make a probe
        return heldout
    ids = {r.get("fact_id") for r in heldout}
    fresh = [r for r in data.read_jsonl(str(path)) if r.get("fact_id") in ids and isinstance(r.get("prompt"), str)]
    covered = {r["fact_id"] for r in fresh}
    return fresh + [r for r in heldout if r.get("fact_id") not in covered]


def probe_general() -> list[dict]:
    """Broad general-knowledge questions (history, science, literature, geography, everyday life)."""
    from core import data
    path = data.BUILTIN_DIR / BROAD_GENERAL_FILE
    if not path.is_file():
        return data.builtin_general_questions()
    out = []
    for row in data.read_jsonl(str(path)):
        prompt, keywords = row.get("prompt"), row.get("keywords") or []
        if isinstance(prompt, str) and prompt.strip() and isinstance(keywords, list):
            out.append({**row, "keywords": [str(k) for k in keywords if k is not None]})
    return out


# ------------------------------------------------------------------------- base answers, kept on disk
# The base model's greedy answers to a fixed question set cannot change between probes (same base
# weights, same questions, same decoding), so a server keeps them: the second probe of a class
# (issue 22) asks only the tuned model, half the rows. What is kept are answers to the built-in
# sets; pages/shared/probe_card.py only ever probes those (no visitor-given question is asked, so
# none is kept). Every file is read as hostile: checked, and recomputed when anything is off.
BASE_CACHE_FORMAT = 1          # bump when decoding changes in a way the key below cannot see
BASE_CACHE_ENTRIES = 32        # files kept, least recently used dropped: base x question set x budget
BASE_CACHE_FILE_BYTES = 1 << 20  # a larger file is not one of ours: ignored unread
STALE_TEMP_S = 3600           # a half-written file older than this belongs to a writer that died
SAMPLE_PER_TENSOR = 4096       # elements of a weight read for its fingerprint (every one if fewer)


def _base_parameters(run_model) -> tuple[list, object] | None:
    """(name, tensor) of the weights the base view runs, or None when it cannot be told."""
    fmt, model = getattr(run_model, "format", None), getattr(run_model, "model", None)
    if model is None or not hasattr(model, "named_parameters"):
        return None
    if fmt == "full":
        model, skip = getattr(run_model, "base", None), set()
    elif fmt == "peft":  # peft names adapter weights "<layer>.lora_A.<adapter>.weight" and alike
        skip = set(getattr(model, "peft_config", None) or {}) or {"default"}
    elif fmt == "none":
        skip = set()
    else:  # a head-only run swaps heads in place; it never generates anyway
        return None
    if model is None:
        return None
    return [(_plain_name(n), p) for n, p in model.named_parameters() if not skip & set(n.split("."))], model


def _plain_name(name: str) -> str:
    """A base weight's name as the bare model calls it: a LoRA, IA3 or full run on one base shares
    its entry (peft adds "base_model.model." in front and wraps layers in base_layer/original_module)."""
    name = name.removeprefix("base_model.model.")
    return ".".join(part for part in name.split(".") if part not in ("base_layer", "original_module"))


def _weights_fingerprint(named: list) -> str:
    """Name, shape, dtype and device of every base weight, and a strided sample of its values (all
    of a small one: norms, biases): another checkpoint, dtype or device gives another fingerprint;
    hashing 0.5 GB of weights for every probe would cost more than it protects."""
    import torch
    h = hashlib.sha256()
    for name, p in named:
        t = p.detach()
        if t.device.type == "meta":
            raise ValueError(f"{name} is not loaded")
        flat = t.reshape(-1)
        if flat.numel() > SAMPLE_PER_TENSOR:
            flat = flat[::flat.numel() // SAMPLE_PER_TENSOR][:SAMPLE_PER_TENSOR]
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|{t.device.type}\n".encode())
        h.update(flat.to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def base_answers_key(run_model, prompts: list[str], max_new_tokens: int) -> str | None:
    """A digest of everything that decides the base view's greedy answers: its weights (sampled),
    model config and generation config, the prompts' exact token ids (text, tokenizer, chat
    template), the token budget, the decoding settings, dtype/device and library versions. None when
    the model cannot say what its base is (a test double, a head-only run): nothing is cached."""
    try:
        parts = _base_parameters(run_model)
        if parts is None:
            return None
        named, module = parts
        import peft
        import torch
        import transformers

        from core import infer, tokenize
        tok = run_model.tokenizer
        config = getattr(module, "config", None)
        config = config.to_dict() if hasattr(config, "to_dict") else {}
        config.pop("_name_or_path", None)  # where it was read from; the weights say what it is
        gen = getattr(module, "generation_config", None)
        ids = hashlib.sha256(json.dumps([tokenize.chat_prompt_ids(tok, p) for p in prompts]).encode())
        material = {"format": BASE_CACHE_FORMAT, "model": str(run_model.cfg.model.name),
                    "weights": _weights_fingerprint(named), "config": config,
                    "generation": gen.to_dict() if hasattr(gen, "to_dict") else None,
                    "tokens": ids.hexdigest(), "n": len(prompts), "pad": tok.pad_token_id, "eos": tok.eos_token_id,
                    "max_new_tokens": int(max_new_tokens), "repetition_penalty": infer.REPETITION_PENALTY,
                    "versions": [torch.__version__, transformers.__version__, peft.__version__]}
        return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    except Exception as exc:  # a cache must never break the probe: no key, no caching
        log.warning("probe base cache: no key for this model (%s)", exc)
        return None


class BaseAnswerCache:
    """The base view's answers by `base_answers_key`, one small JSON file per key in `folder`
    (default: `default_folder()`). Written atomically (two sessions may write the same key: the
    last complete file wins, both are right), at most BASE_CACHE_ENTRIES files."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_folder()
        self.hits = 0  # answers lists served from the folder by this object (the page says so)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str | None, n: int, max_new_tokens: int) -> list[str] | None:
        """The n answers kept for `key`, or None: missing, unreadable, too large, a link, another
        key's file or any field off is a miss (computed again and written over), never an error."""
        if not _is_key(key):
            return None
        path = self._path(key)
        try:
            # not through a link, and never blocked on a pipe someone put there
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as fh:
                raw = fh.read(BASE_CACHE_FILE_BYTES + 1) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
            saved = json.loads(raw.decode("utf-8")) if 0 < len(raw) <= BASE_CACHE_FILE_BYTES else None
        except (OSError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested past the parser
            return None
        answers = saved.get("answers") if isinstance(saved, dict) else None
        longest = 64 * max(int(max_new_tokens), 1) + 64  # no token decodes to 64 characters
        ok = (isinstance(saved, dict) and saved.get("format") == BASE_CACHE_FORMAT and saved.get("key") == key
              and isinstance(answers, list) and len(answers) == n
              and all(isinstance(a, str) and len(a) <= longest for a in answers))
        if not ok:
            log.warning("probe base cache: ignoring %s (not a valid entry for this key)", path.name)
            return None
        try:
            os.utime(path)  # recently used: kept longest
        except OSError:
            pass
        self.hits += 1
        return list(answers)

    def put(self, key: str | None, answers: list) -> None:
        """Keep complete answers (one cut by the time limit, or missing, is not what the base says)."""
        from core import runs
        from core.chat_stream import TIME_LIMIT_MARK
        if not _is_key(key) or not all(isinstance(a, str) and TIME_LIMIT_MARK not in a for a in answers):
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            runs.atomic_write_text(str(self._path(key)), json.dumps(
                {"format": BASE_CACHE_FORMAT, "key": key, "created": time.time(), "answers": list(answers)}))
            self._prune()
        except OSError as exc:  # a read-only or full disk costs the next probe time, nothing else
            log.warning("probe base cache: not written (%s)", exc)

    def _prune(self) -> None:
        """At most BASE_CACHE_ENTRIES entries, and no temporary file a crashed writer left behind."""
        entries, stale = [], []
        for path in self.folder.iterdir():
            try:
                mtime = path.lstat().st_mtime
            except OSError:
                continue
            if path.suffix == ".json":
                entries.append((mtime, path))
            elif path.suffix == ".tmp" and time.time() - mtime > STALE_TEMP_S:
                stale.append(path)
        for path in [p for _, p in sorted(entries, reverse=True)[BASE_CACHE_ENTRIES:]] + stale:
            try:
                path.unlink()
            except OSError:
                pass


def default_folder() -> Path:
    """PLAYGROUND_CACHE_DIR/probe-base where this process may write there; else the user's own
    ~/.cache (the Space image builds PLAYGROUND_CACHE_DIR as root, read-only to the app's user)."""
    from core import settings
    candidates = [settings.cache_dir() / "probe-base", Path("~/.cache/peft-playground/probe-base").expanduser()]
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    return candidates[0]  # read-only: answers put there beforehand are still read


def _is_key(key) -> bool:
    return isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def _answers(run_model, prompts: list[str], tuned: bool, max_new_tokens: int, batch_size: int, tick):
    """Answers in order; `tick(done_in_this_list)` after each batch (one by one when batch_size <= 1
    or the model has no generate_batch)."""
    batched = getattr(run_model, "generate_batch", None)
    if batch_size <= 1 or batched is None:
        for i, prompt in enumerate(prompts):
            yield run_model.generate(prompt, tuned=tuned, max_new_tokens=max_new_tokens)
            tick(i + 1)
        return
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        yield from batched(chunk, tuned=tuned, max_new_tokens=max_new_tokens, batch_size=batch_size)
        tick(start + len(chunk))


def _score(rows: list[dict], answers: list[str], judge) -> dict:
    items = [ProbeItem(row["prompt"], answer, list(row["keywords"]), judge(answer, row["keywords"]))
             for row, answer in zip(rows, answers)]
    hits = sum(i.hit for i in items)
    return {"score": hits / max(len(items), 1), "hits": hits, "n": len(items), "items": [asdict(i) for i in items]}


def probe(run_model, facts: list[dict] | None = None, general: list[dict] | None = None,
          max_new_tokens: int = 40, limit: int | None = None, progress: Progress | None = None,
          batch_size: int = BATCH_SIZE, base_cache: BaseAnswerCache | None = None) -> dict:
    """{"base": {"facts": {...}, "general": {...}}, "tuned": {...}} with scores and the answers.

    Facts count when *all* their keywords appear in the answer (a fact is a name and a number,
    say), general questions when *any* accepted keyword does ("Paris" or "paris, france").
    A model with `generate_views` (RunModel) answers both views in one pass, `batch_size` answers
    at a time; otherwise a view's questions are asked `batch_size` at a time through `generate_batch`
    (1: one `generate` call per question); `progress(done, total, view, part)` is called after each
    batch, `view` and `part` being those of the batch's last answer.
    With `base_cache`, the base view's answers are read from it when it holds them for this exact
    base, question list and budget (then only the tuned view is asked), and kept in it otherwise.
    """
    facts = facts if facts is not None else probe_facts("facts")
    general = general if general is not None else probe_general()
    if limit:
        facts, general = facts[:limit], general[:limit]
    out = {}
    total = 2 * (len(facts) + len(general))
    prompts = [r["prompt"] for r in facts + general]
    key = base_answers_key(run_model, prompts, max_new_tokens) if base_cache is not None and prompts else None
    kept = base_cache.get(key, len(prompts), max_new_tokens) if key else None
    views = getattr(run_model, "generate_views", None)
    if views is not None and batch_size > 1:  # both views in one pass (RunModel.generate_views)
        asked = (True,) if kept is not None else (False, True)
        before = len(prompts) if kept is not None else 0
        if kept is not None and progress:
            progress(before, total, "base", "general")

        def tick_both(done: int, index: int, tuned: bool) -> None:
            if progress:
                progress(before + done, total, "tuned" if tuned else "base",
                         "facts" if index < len(facts) else "general")

        both = views(prompts, asked, max_new_tokens, batch_size, tick=tick_both)
        if kept is None:
            if key:
                base_cache.put(key, both[False])
        else:
            both[False] = kept
        return {view: {"facts": _score(facts, both[tuned][:len(facts)], fact_hit),
                       "general": _score(general, both[tuned][len(facts):], general_hit)}
                for view, tuned in (("base", False), ("tuned", True))}
    for i, (view, tuned) in enumerate((("base", False), ("tuned", True))):
        def tick(done: int, before: int = i * len(prompts), view: str = view) -> None:
            if progress:
                progress(before + done, total, view, "facts" if done <= len(facts) else "general")

        # Facts and general questions share batches: a part's short tail batch would cost nearly as
        # much as a full one (each batch decodes until its longest answer ends).
        if not tuned and kept is not None:
            answers = kept
            tick(len(prompts))
        else:
            answers = list(_answers(run_model, prompts, tuned, max_new_tokens, batch_size, tick))
            if not tuned and key:
                base_cache.put(key, answers)
        out[view] = {"facts": _score(facts, answers[:len(facts)], fact_hit),
                     "general": _score(general, answers[len(facts):], general_hit)}
    return out


def changes(result: dict, part: str) -> dict[str, list[str]]:
    """What tuning changed on one part of a probe result: the questions the base answered right and
    the tuned model did not ("lost": forgetting, or a new invention), and the reverse ("gained")."""
    lost, gained = [], []
    for base, tuned in zip(result["base"][part]["items"], result["tuned"][part]["items"]):
        if base["hit"] and not tuned["hit"]:
            lost.append(base["prompt"])
        elif tuned["hit"] and not base["hit"]:
            gained.append(base["prompt"])
    return {"lost": lost, "gained": gained}
