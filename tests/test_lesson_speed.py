"""bench/lesson_speed.py: issue 22's table. The readers and the table without a model (fast), and the
--quick headless run end to end on the embedded models (slow: real models in child processes)."""
from __future__ import annotations

import json
import os

import pytest

from bench import lesson_speed as ls


def _metrics(tmp_path, events):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(run)


def test_the_headless_chat_asks_what_the_app_side_clicks():
    """Like with like: the headless chat turn asks the Compare page's first example (for the facts
    lesson a held-out rephrasing), the question the app side clicks, not a training row."""
    from core import data, lessons
    cfg = lessons.get("fix_hallucination").preset(hardware=False)
    prompt = ls.chat_prompt(cfg)
    assert prompt == data.example_inputs(cfg.to_dict()["data"], "sft", cfg.train.seed)[0]
    assert prompt in {r["prompt"] for r in data.builtin_heldout("facts-mini")}
    assert prompt not in {r["prompt"] for r in data.load_rows(cfg.data, seed=cfg.train.seed).train}


def test_phases_come_from_the_runs_own_events(tmp_path):
    run = _metrics(tmp_path, [
        {"type": "phase", "phase": "loading data", "time": 100.0},
        {"type": "phase", "phase": "loading model", "time": 100.5},
        {"type": "phase", "phase": "tokenising", "time": 103.0},
        {"type": "start", "time": 103.25},
        {"type": "log", "time": 110.0, "loss": 0.7},
        {"type": "phase", "phase": "saving", "time": 140.0},
        {"type": "end", "time": 141.5},
    ])
    assert ls.phases_from_metrics(run) == {"loading data": 0.5, "loading model": 2.5, "tokenising": 0.25,
                                           "training": 36.75, "saving": 1.5}
    assert ls.phases_from_metrics(str(tmp_path / "missing")) == {}


def test_figures_are_median_and_range_over_the_repetitions_that_have_them():
    reps = [{"chat": {"first_words_s": 0.9}}, {"chat": {"first_words_s": 1.5}}, {"chat": {"first_words_s": 0.7}},
            {"error": "boom"}, {"chat": {"first_words_s": None}}]
    f = ls.figure(reps, "chat.first_words_s")
    assert f == {"median": 0.9, "min": 0.7, "max": 1.5, "n": 3}
    assert ls.fig_text(f) == "0.9 s (0.7 s–1.5 s, n=3)"
    assert ls.fig_text(ls.figure([{"accuracy": 0.8125}], "accuracy"), pct=True) == "81.2 % (n=1)"
    assert ls.fig_text(ls.figure([], "x")) == "n/a"


def test_one_lecture_is_split_into_the_rows_it_measured():
    out = {"start_to_result_s": 50.0, "accuracy": None, "phases_s": {"training": 40.0}, "threads": 2,
           "model_load_s": 3.0, "probe_s": 20.0, "probe_warm_s": 11.0, "probe_warm_alike": 128, "probe_questions": 128,
           "probe_scores": {"tuned_facts": 0.9}, "chat": {"first_words_s": 0.5, "full_answer_s": 3.0}}
    rows = ls.split_lecture(out, ["facts", "probe", "chat"])
    assert rows["facts"]["start_to_result_s"] == 50.0 and rows["facts"]["probe_scores"] == {"tuned_facts": 0.9}
    assert "probe_s" not in rows["facts"] and "chat" not in rows["facts"]
    assert rows["probe"]["probe_s"] == 20.0 and "phases_s" not in rows["probe"]
    # the first probe (base answers' cache cold) and a later one (warm) are separate figures
    assert rows["probe"]["probe_warm_s"] == 11.0 and "probe_warm_s" not in rows["facts"]
    table = ls.summarise({"probe": {"headless": [rows["probe"]]}})[0]["figures"]
    assert "first probe (base answers' cache cold) 20 s" in table and "later probe (cache warm" in table
    assert rows["chat"]["chat"]["full_answer_s"] == 3.0 and "probe_s" not in rows["chat"]
    assert set(ls.split_lecture(out, ["chat"])) == {"chat"}
    failed = ls.split_lecture({"error": "no model"}, ["facts", "chat"])
    assert failed == {"facts": {"error": "no model"}, "chat": {"error": "no model"}}


def test_rows_and_sides_follow_the_options(tmp_path):
    args = ls.parse_args(["--rows", "sentiment,which,cold", "--out", str(tmp_path / "x.json")])
    assert args.reps == 3 and ls.sides_of("sentiment", args) == ["headless", "app"]
    assert ls.sides_of("which", args) == ["headless"]          # long: in the app only when asked
    assert ls.sides_of("cold", args) == ["app"]                # a cold start is a browser's
    assert ls.sides_of("which", ls.parse_args(["--app-which"])) == ["headless", "app"]
    assert ls.sides_of("sentiment", ls.parse_args(["--headless-only"])) == ["headless"]
    assert ls.sides_of("cold", ls.parse_args(["--headless-only"])) == []
    assert ls.sides_of("chat", ls.parse_args(["--app-only"])) == ["app"]
    with pytest.raises(SystemExit):
        ls.parse_args(["--rows", "sentiment,nope"])
    with pytest.raises(SystemExit):
        ls.parse_args(["--headless-only", "--app-only"])


def test_the_table_names_each_row_its_target_and_its_errors():
    results = {"sentiment": {"headless": [{"start_to_result_s": 40.0, "accuracy": 0.8, "phases_s": {"training": 30.0}},
                                          {"error": "Traceback...\nRuntimeError: out of memory"}]},
               "which": {"headless": [{"total_s": 200.0, "runs": [{"method": "lora", "accuracy": 0.8, "still_rising": True},
                                                                  {"method": "full", "accuracy": 0.7}]}]}}
    table = ls.summarise(results)
    sentiment = next(r for r in table if r["row"] == ls.TITLES["sentiment"])
    assert sentiment["reps"] == "1/2" and "40 s" in sentiment["figures"] and "80.0 %" in sentiment["figures"]
    assert sentiment["errors"] == "RuntimeError: out of memory" and "training 30.0" in sentiment["where"]
    assert sentiment["target"] == ls.TARGETS["sentiment"]
    which = next(r for r in table if r["row"] == ls.TITLES["which"])
    assert "lora 80.0 % (n=1), still rising in 1/1" in which["figures"] and "full 70.0 %" in which["figures"]


@pytest.mark.slow
def test_quick_headless_run_gives_numbers_for_every_row(tmp_path):
    out = tmp_path / "lesson_speed.json"
    payload = ls.main(["--quick", "--headless-only", "--reps", "1", "--rows", "sentiment,facts,probe,chat",
                       "--out", str(out)])
    saved = json.loads(out.read_text())
    assert saved["rows"] == payload["rows"] == ["sentiment", "facts", "probe", "chat"]
    assert saved["commit"] and saved["cpu"] and saved["date"] and saved["torch_threads"] >= 1
    res = saved["results"]
    assert set(res) == {"sentiment", "facts", "probe", "chat"} and all(set(s) == {"headless"} for s in res.values())
    reps = {row: sides["headless"] for row, sides in res.items()}
    assert all(len(r) == 1 and "error" not in r[0] for r in reps.values()), reps
    sentiment, facts, probe, chat = (reps[k][0] for k in ("sentiment", "facts", "probe", "chat"))
    assert 0 < sentiment["start_to_result_s"] and 0.0 <= sentiment["accuracy"] <= 1.0
    assert {"loading model", "training"} <= set(sentiment["phases_s"])
    assert sentiment["steps"] == 2 and sentiment["threads"] >= 1
    assert 0 < facts["start_to_result_s"] and set(facts["probe_scores"]) == {"base_facts", "base_general",
                                                                             "tuned_facts", "tuned_general"}
    assert 0 < probe["probe_s"] and probe["probe_questions"] == 16 and probe["model_load_s"] > 0
    assert 0 < probe["probe_warm_s"] and probe["probe_warm_alike"] == 16  # the cached base answers are the same
    turn = chat["chat"]
    assert turn["max_new_tokens"] == ls.QUICK_CHAT_TOKENS and turn["prompt"]
    assert 0 < turn["first_words_s"] <= turn["full_answer_s"]
    # the panes answer at once (side by side): either may end first, and the turn ends with the later
    assert turn["full_answer_s"] == max(turn["panes"][p]["done_s"] for p in ("base", "tuned"))
    md = (tmp_path / "lesson_speed.md").read_text()
    assert "NOT A RESULT" in md and all(ls.TITLES[r] in md for r in res)


def test_a_race_run_reports_its_accuracy_and_whether_it_was_still_rising(tmp_path):
    rising = _metrics(tmp_path, [{"type": "eval", "eval_accuracy": a, "time": 1.0 + i}
                                 for i, a in enumerate([0.5, 0.6, 0.75])])
    (tmp_path / "run" / "summary.json").write_text(json.dumps(
        {"final": {"eval_accuracy": 0.75}, "wall_time_s": 30.0, "train_time_s": 25.0, "n_train": 100, "steps": 20}))
    row = ls.which_run("lora", rising)
    assert row["method"] == "lora" and row["accuracy"] == 0.75 and row["wall_time_s"] == 30.0
    assert row["evaluations"] == 3 and row["still_rising"] is True
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "metrics.jsonl").write_text("".join(json.dumps({"type": "eval", "eval_accuracy": a}) + "\n"
                                                for a in (0.5, 0.8, 0.8)))
    assert ls.which_run("full", str(flat))["still_rising"] is False


@pytest.mark.slow
@pytest.mark.e2e
def test_cold_start_in_chromium_gives_both_times(tmp_path):
    from tests.helpers.browser import CHROMIUM  # skips this test where Playwright or chromium is missing
    from bench import lesson_app
    app = lesson_app.App(str(tmp_path), CHROMIUM, timeout_s=300, quick=True)
    cold = app.measure("cold", ["cold"], rep=0)["cold"]
    assert "error" not in cold, cold["error"]
    assert 0 < cold["learn_s"] and 0 < cold["train_s"] and cold["train_path"] == "/" + lesson_app.COLD_TRAIN_PATH
    assert cold["first_paint_s"] is not None and cold["first_paint_s"] <= cold["learn_s"]
    assert isinstance(cold["engine_note_seen"], bool)


def test_each_app_server_gets_a_cold_probe_cache_beside_the_machines_models(tmp_path):
    from bench import lesson_app
    models = tmp_path / "models"
    (models / "smollm2-x").mkdir(parents=True)
    (models / "smollm2-x" / "config.json").write_text("{}")
    (models / "probe-base").mkdir()  # answers kept by an earlier server: not this one's
    mine = lesson_app.server_cache(str(tmp_path / "server"), str(models))
    assert sorted(os.listdir(mine)) == ["smollm2-x"]
    assert os.path.isfile(os.path.join(mine, "smollm2-x", "config.json"))
