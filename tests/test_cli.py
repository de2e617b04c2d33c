"""The headless CLIs: python -m core.train / core.evaluate / core.generate.

Subprocess tests check what a shell user sees (exit code, one `error:` line and no traceback on
stderr, JSON on stdout). Each subprocess pays torch/transformers/peft imports, so the logic of
evaluate and generate (labels, keywords, --base) is also checked in-process through main().
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from core import evaluate as evaluate_cli
from core import generate as generate_cli
from core.config import RunConfig
from tests.helpers.finished_runs import runs_folder, write_facts

# Every Trainer run ends in accelerate's gc.collect(), which with torch/transformers/peft imported
# walks ~500k long-lived library objects (~0.4 s CPU a run, dozens of runs here). Freezing what is
# loaded now keeps the suite fast; objects the tests make later are collected as usual.
import gc  # noqa: E402

from transformers import Trainer  # noqa: E402,F401  (loaded before the freeze)

gc.freeze()

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(module: str, *args: str, runs_dir: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PLAYGROUND_DEBUG"}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PLAYGROUND_RUNS_DIR=runs_dir,
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def assert_one_error_line(proc: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def yaml_config(tmp_path, d: dict, name: str = "config.yaml") -> str:
    import yaml
    path = tmp_path / name
    path.write_text(yaml.safe_dump(d))
    return str(path)


def tiny_dict(model: str, data: str, task: str = "classification", method: str = "lora",
              params: dict | None = None) -> dict:
    return {"model": {"name": model}, "data": {"source": data, "task": task, "max_length": 32},
            "method": {"name": method, "params": {"r": 4} if params is None else params},
            "train": {"batch_size": 4, "learning_rate": 1e-2, "eval_steps": 100, "seed": 5}}


# ------------------------------------------------------------------------------------------------
# core.train
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("content,fragments", [
    ("- model\n- data\n", ["must be a mapping"]),
    ("model: [unclosed\n", ["not valid YAML"]),
    ("modle:\n  name: minilm\n", ["unknown config section", "'modle'"]),
], ids=["not-a-mapping", "broken-yaml", "unknown-section"])
def test_train_bad_config_is_one_error_line(content, fragments, tmp_path, runs_dir):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert_one_error_line(cli("core.train", "--config", str(path), runs_dir=runs_dir), 2, *fragments)


def test_train_missing_config_file(tmp_path, runs_dir):
    proc = cli("core.train", "--config", str(tmp_path / "nope.yaml"), runs_dir=runs_dir)
    assert_one_error_line(proc, 2, "does not exist")


@pytest.mark.slow  # ~50 s on one busy core: a CLI subprocess importing torch
def test_train_bad_field_is_one_error_line(tmp_path, tiny_bert, sentiment_file, runs_dir):
    """A bad hyperparameter: the methods (and so peft and bitsandbytes) are imported before the
    check; their import-time notices must not get in front of the error line."""
    path = yaml_config(tmp_path, tiny_dict(tiny_bert, sentiment_file, params={"r": 0}))
    assert_one_error_line(cli("core.train", "--config", path, runs_dir=runs_dir), 2,
                          "method.params.r=0", "[1, 256]")


@pytest.mark.slow
@pytest.mark.parametrize("params,sets,fragments", [
    ({"targets": "q_proj"}, [], ["method.params.targets", "'q_proj'", "'query'"]),
    ({"r": 4}, ["--set", "train.lr=0.1"], ["unknown field", "'lr'"]),
    ({"r": 4}, ["--set", "train.batch_size=0"], ["train.batch_size=0", "[1, 1024]"]),
], ids=["missing-target", "unknown-set", "bad-set"])
def test_train_more_bad_input_is_one_error_line(params, sets, fragments, tmp_path, tiny_bert, sentiment_file,
                                                runs_dir):
    path = yaml_config(tmp_path, tiny_dict(tiny_bert, sentiment_file, params=params))
    out = str(tmp_path / "run")
    proc = cli("core.train", "--config", path, "--output-dir", out, *sets, runs_dir=runs_dir)
    assert_one_error_line(proc, 2, *fragments)


@pytest.mark.slow  # ~100 s on one busy core: three CLI subprocesses, each importing torch
def test_train_evaluate_classification_via_cli(tmp_path, tiny_bert, sentiment_file, runs_dir):
    """train --max-steps 2 --output-dir prints JSON naming the run; evaluate scores that run."""
    path = yaml_config(tmp_path, tiny_dict(tiny_bert, sentiment_file))
    out = str(tmp_path / "cli-run")
    proc = cli("core.train", "--config", path, "--max-steps", "2", "--output-dir", out, runs_dir=runs_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["run_dir"] == out and result["state"] == "completed"
    assert set(result["final"]) == {"eval_loss", "eval_accuracy"}
    with open(os.path.join(out, "summary.json"), encoding="utf-8") as fh:
        assert json.load(fh)["steps"] == 2
    with open(os.path.join(out, "status.json"), encoding="utf-8") as fh:
        assert json.load(fh)["state"] == "completed"

    data = tmp_path / "labelled.jsonl"
    rows = [{"text": "a wonderful joyful film", "label": "positive"},
            {"text": "tedious and ugly", "label": "negative"},
            {"text": "I loved every minute", "label": "positive"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = cli("core.evaluate", "--run", out, "--data", str(data), runs_dir=runs_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip() == ""
    scored = json.loads(proc.stdout)
    assert scored["task"] == "classification" and scored["n"] == 3 and scored["view"] == "tuned"
    # the same as the run's model says, row by row
    from core.infer import RunModel
    rm = RunModel(out)
    preds = [max(rm.classify(r["text"]).items(), key=lambda kv: kv[1])[0] for r in rows]
    assert [p["predicted"] for p in scored["predictions"]] == preds
    assert scored["accuracy"] == pytest.approx(sum(p == r["label"] for p, r in zip(preds, rows)) / 3)


# ------------------------------------------------------------------------------------------------
# core.generate / core.evaluate on an sft run (trained in-process: only the CLI is under test)
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sft_run(tmp_path_factory, tiny_llama):
    from core.train import run
    folder = tmp_path_factory.mktemp("sft")
    facts = write_facts(folder / "facts.jsonl")
    cfg = RunConfig.from_dict(tiny_dict(tiny_llama, str(facts), "sft", "lora", {"r": 4, "targets": "auto"}))
    cfg = cfg.with_overrides(["train.max_steps=3"])
    with runs_folder(str(folder / "runs")):
        run(cfg, str(folder / "run"))
    return str(folder / "run")


@pytest.fixture(scope="module")
def sft_model(sft_run):
    from core.infer import RunModel
    return RunModel(sft_run)


@pytest.mark.slow  # ~40 s on one busy core: CLI subprocesses importing torch
def test_generate_via_cli(sft_run, sft_model, runs_dir):
    prompt = "Who founded Quillmere number 3?"
    proc = cli("core.generate", "--run", sft_run, "--prompt", prompt, "--max-new-tokens", "6", "--json",
               runs_dir=runs_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.strip() == ""
    out = json.loads(proc.stdout)
    assert out == {"prompt": prompt, "view": "tuned", "answer": sft_model.generate(prompt, max_new_tokens=6)}


@pytest.mark.slow
def test_generate_base_and_errors_via_cli(sft_run, sft_model, tmp_path, runs_dir):
    prompt = "Who founded Quillmere number 3?"
    proc = cli("core.generate", "--run", sft_run, "--prompt", prompt, "--base", "--max-new-tokens", "6",
               runs_dir=runs_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == sft_model.generate(prompt, tuned=False, max_new_tokens=6)
    assert_one_error_line(cli("core.generate", "--run", str(tmp_path / "nowhere"), "--prompt", "hi",
                              runs_dir=runs_dir), 2, "does not exist")
    facts = tmp_path / "f.jsonl"
    facts.write_text(json.dumps({"prompt": "Who founded Quillmere number 1?", "keywords": ["Odile"]}) + "\n")
    proc = cli("core.evaluate", "--run", sft_run, "--data", str(facts), "--max-new-tokens", "6", runs_dir=runs_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["task"] == "sft" and out["keyword_rows"] == 1 and "keyword_accuracy" in out


# ------------------------------------------------------------------------------------------------
# evaluate / generate logic, in-process through main()
# ------------------------------------------------------------------------------------------------
def _run_main(main, argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_evaluate_sft_answers_and_keyword_accuracy(sft_run, sft_model, tmp_path, capsys):
    rows = [
        {"prompt": "Who founded Quillmere number 1?", "response": "It was founded by Odile 1.",
         "keywords": ["Odile", "1"]},
        {"prompt": "Who founded Quillmere number 2?", "response": "It was founded by Odile 2."},  # no keywords
        {"prompt": "Who founded Quillmere number 3?", "keywords": "Odile, zzzz-never"},
    ]
    data = tmp_path / "facts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = [sft_model.generate(r["prompt"], max_new_tokens=5) for r in rows]
    base_answers = [sft_model.generate(r["prompt"], tuned=False, max_new_tokens=5) for r in rows]

    def hit_all(answer, keywords):
        return all(k.lower() in answer.lower() for k in keywords)

    def hit_any(answer, keywords):
        return any(k.lower() in answer.lower() for k in keywords)

    keywords = [["Odile", "1"], None, ["Odile", "zzzz-never"]]
    for mode, judge in (("all", hit_all), ("any", hit_any)):
        code, out, err = _run_main(evaluate_cli.main, ["--run", sft_run, "--data", str(data), "--max-new-tokens", "5",
                                                       "--keywords", mode], capsys)
        assert code == 0, err
        result = json.loads(out)
        assert result["task"] == "sft" and result["n"] == 3 and result["view"] == "tuned"
        assert [a["answer"] for a in result["answers"]] == answers
        assert [a["prompt"] for a in result["answers"]] == [r["prompt"] for r in rows]
        assert [a["expected"] for a in result["answers"]] == [r.get("response") for r in rows]
        assert "keyword_hit" not in result["answers"][1]
        want = [judge(answers[i], keywords[i]) for i in (0, 2)]
        assert [result["answers"][i]["keyword_hit"] for i in (0, 2)] == want
        assert result["keyword_rows"] == 2 and result["keyword_accuracy"] == sum(want) / 2
    code, out, err = _run_main(evaluate_cli.main, ["--run", sft_run, "--data", str(data), "--max-new-tokens", "5",
                                                   "--base"], capsys)
    assert code == 0 and [a["answer"] for a in json.loads(out)["answers"]] == base_answers


def test_generate_main_tuned_and_base(sft_run, sft_model, capsys):
    prompt = "Who founded Quillmere number 7?"
    code, out, _ = _run_main(generate_cli.main, ["--run", sft_run, "--prompt", prompt, "--max-new-tokens", "5"], capsys)
    assert code == 0 and out.strip() == sft_model.generate(prompt, max_new_tokens=5)
    code, out, _ = _run_main(generate_cli.main, ["--run", sft_run, "--prompt", prompt, "--max-new-tokens", "5",
                                                 "--base"], capsys)
    assert code == 0 and out.strip() == sft_model.generate(prompt, tuned=False, max_new_tokens=5)


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_bert):
    """A linear-head classifier whose data names its classes through label_map ("0"/"1")."""
    from core.train import run
    folder = tmp_path_factory.mktemp("cls")
    data = folder / "sent.jsonl"
    rows = [{"text": f"{t} #{i}", "label": lab} for i in range(6)
            for t, lab in (("a wonderful joyful film", 1), ("a dull boring mess", 0))]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    d = tiny_dict(tiny_bert, str(data), method="linear_head", params={})
    d["data"]["label_map"] = {"0": "negative", "1": "positive"}
    d["train"]["max_steps"] = 2
    with runs_folder(str(folder / "runs")):
        run(RunConfig.from_dict(d), str(folder / "run"))
    return str(folder / "run")


def test_evaluate_classification_maps_labels(cls_run, tmp_path, capsys):
    from core.infer import RunModel
    rm = RunModel(cls_run)
    assert rm.label_names == ["negative", "positive"]
    texts = ["a wonderful joyful film", "a dull boring mess", "so so", "great"]
    # names, raw values through the run's label_map, and class indices all mean the same classes
    for labels in (["positive", "negative", "negative", "positive"], ["1", "0", "0", "1"], [1, 0, 0, 1]):
        data = tmp_path / "eval.jsonl"
        data.write_text("".join(json.dumps({"text": t, "label": lab}) + "\n" for t, lab in zip(texts, labels)))
        code, out, err = _run_main(evaluate_cli.main, ["--run", cls_run, "--data", str(data)], capsys)
        assert code == 0, err
        result = json.loads(out)
        preds = [max(rm.classify(t).items(), key=lambda kv: kv[1])[0] for t in texts]
        want = ["positive", "negative", "negative", "positive"]
        assert result["accuracy"] == sum(p == w for p, w in zip(preds, want)) / 4
        assert result["correct"] == sum(p == w for p, w in zip(preds, want))
        assert sum(c["n"] for c in result["per_class"].values()) == 4
    code, out, err = _run_main(evaluate_cli.main, ["--run", cls_run, "--data", str(data), "--base", "--limit", "2"],
                               capsys)
    assert code == 0 and json.loads(out)["view"] == "base" and json.loads(out)["n"] == 2


@pytest.mark.parametrize("content,fragments", [
    ('{"text": "fine", "label": "neutral"}\n', ["line 1", "'neutral'", "negative", "positive"]),
    ('{"text": "fine", "label": 5}\n', ["line 1", "5"]),
    ('{"words": "fine", "label": "positive"}\n', ["line 1", "no text field", "words"]),
    ('{"text": "fine"}\n', ["line 1", "no label field"]),
    ('[1, 2]\n', ["line 1", "not an object"]),
    ('{"text": "fine", "label": \n', ["eval.jsonl"]),
    ('', ["no rows"]),
], ids=["unknown-label", "index-out-of-range", "no-text", "no-label", "not-object", "broken-json", "empty"])
def test_evaluate_bad_data_is_one_error_line(content, fragments, cls_run, tmp_path, capsys):
    data = tmp_path / "eval.jsonl"
    data.write_text(content)
    code, out, err = _run_main(evaluate_cli.main, ["--run", cls_run, "--data", str(data)], capsys)
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_cli_usage_errors(cls_run, tmp_path, capsys):
    cases = [
        (evaluate_cli.main, ["--run", str(tmp_path / "none"), "--data", str(tmp_path / "x.jsonl")], "does not exist"),
        (evaluate_cli.main, ["--run", cls_run, "--data", str(tmp_path / "missing.jsonl")], "does not exist"),
        (evaluate_cli.main, ["--run", cls_run, "--data", str(tmp_path / "x.jsonl"), "--limit", "0"], "--limit"),
        (generate_cli.main, ["--run", cls_run, "--prompt", "hello"], "classifier"),
        (generate_cli.main, ["--run", cls_run, "--prompt", "  "], "prompt is empty"),
        (generate_cli.main, ["--run", cls_run, "--prompt", "hi", "--max-new-tokens", "0"], "--max-new-tokens"),
    ]
    for main, argv, fragment in cases:
        code, out, err = _run_main(main, argv, capsys)
        lines = err.strip().splitlines()
        assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
        assert fragment in lines[0], (argv, lines[0])
