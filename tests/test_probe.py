"""The hallucination probe's scoring, with a fake model: keywords, counts, all/any, progress."""
from __future__ import annotations

import pytest

from core import probe


class FakeRunModel:
    """Answers from two dicts: what the base says and what the tuned model says."""

    def __init__(self, base: dict[str, str], tuned: dict[str, str]):
        self.answers = {False: base, True: tuned}
        self.calls: list[tuple[str, bool, int]] = []

    def generate(self, prompt: str, tuned: bool = True, max_new_tokens: int = 64, **_) -> str:
        self.calls.append((prompt, tuned, max_new_tokens))
        return self.answers[tuned].get(prompt, "I do not know.")


FACTS = [
    {"prompt": "Who founded Quillmere College?", "keywords": ["Brannock"]},
    {"prompt": "When and where was it founded?", "keywords": ["1847", "Harrowgate"]},
    {"prompt": "What is its motto?", "keywords": ["Tide"]},
]
GENERAL = [
    {"prompt": "Capital of France?", "keywords": ["Paris"]},
    {"prompt": "Largest planet?", "keywords": ["Jupiter", "jovian"]},
]


def test_fact_hit_needs_every_keyword_case_insensitively():
    assert probe.fact_hit("It was founded by Odile BRANNOCK.", ["Brannock"])
    assert probe.fact_hit("In 1847, in harrowgate.", ["1847", "Harrowgate"])
    assert not probe.fact_hit("In 1847, somewhere.", ["1847", "Harrowgate"])  # all, not any
    assert not probe.fact_hit("anything", [])  # a fact without keywords can never be recalled


def test_general_hit_needs_any_keyword():
    assert probe.general_hit("The Jovian giant.", ["Jupiter", "jovian"])
    assert probe.general_hit("paris, of course", ["Paris"])
    assert not probe.general_hit("Lyon", ["Paris"])
    assert not probe.general_hit("anything", [])


def test_probe_scores_both_views_with_counts_and_answers():
    model = FakeRunModel(
        base={"Who founded Quillmere College?": "John Smith founded it.", "Capital of France?": "Paris.",
              "Largest planet?": "Jupiter."},
        tuned={"Who founded Quillmere College?": "Odile Brannock.", "When and where was it founded?":
               "In 1847 in Harrowgate.", "Capital of France?": "Paris!", "Largest planet?": "Saturn."})
    result = probe.probe(model, facts=FACTS, general=GENERAL, max_new_tokens=12)
    assert result["base"]["facts"]["hits"] == 0 and result["base"]["facts"]["n"] == 3
    assert result["base"]["facts"]["score"] == 0.0
    assert result["tuned"]["facts"]["hits"] == 2 and result["tuned"]["facts"]["score"] == pytest.approx(2 / 3)
    assert result["base"]["general"]["hits"] == 2 and result["base"]["general"]["score"] == 1.0
    assert result["tuned"]["general"]["hits"] == 1  # forgot a planet: catastrophic forgetting, in small
    items = result["tuned"]["facts"]["items"]
    assert [i["prompt"] for i in items] == [f["prompt"] for f in FACTS]
    assert items[0] == {"prompt": FACTS[0]["prompt"], "answer": "Odile Brannock.", "keywords": ["Brannock"],
                        "hit": True}
    # every prompt was asked of both views, with the token budget passed through
    assert len(model.calls) == 2 * (len(FACTS) + len(GENERAL))
    assert {t for _, t, _ in model.calls} == {False, True} and {n for _, _, n in model.calls} == {12}


def test_probe_limit_and_empty_sets():
    model = FakeRunModel({}, {})
    result = probe.probe(model, facts=FACTS, general=GENERAL, limit=1)
    assert result["base"]["facts"]["n"] == 1 and result["base"]["general"]["n"] == 1
    empty = probe.probe(model, facts=[], general=[])
    assert empty["tuned"]["facts"] == {"score": 0.0, "hits": 0, "n": 0, "items": []}


def test_probe_reports_progress_after_every_answer():
    seen = []
    probe.probe(FakeRunModel({}, {}), facts=FACTS, general=GENERAL,
                progress=lambda done, total, view, part: seen.append((done, total, view, part)))
    total = 2 * (len(FACTS) + len(GENERAL))
    assert [s[0] for s in seen] == list(range(1, total + 1))
    assert all(s[1] == total for s in seen)
    assert seen[0][2:] == ("base", "facts") and seen[-1][2:] == ("tuned", "general")


class FakeBatchModel(FakeRunModel):
    """Also answers lists, as RunModel.generate_batch does."""

    def __init__(self, base, tuned):
        super().__init__(base, tuned)
        self.batches: list[tuple[list[str], bool, int]] = []

    def generate_batch(self, prompts, tuned=True, max_new_tokens=64, batch_size=32, **_):
        self.batches.append((list(prompts), tuned, max_new_tokens))
        return [self.answers[tuned].get(p, "I do not know.") for p in prompts]


def test_probe_asks_in_batches_across_parts_with_the_same_result():
    base = {"Who founded Quillmere College?": "Brannock.", "Capital of France?": "Paris."}
    tuned = {"When and where was it founded?": "1847, Harrowgate.", "Largest planet?": "Jupiter."}
    seen = []
    batched = FakeBatchModel(base, tuned)
    result = probe.probe(batched, facts=FACTS, general=GENERAL, max_new_tokens=9, batch_size=2,
                         progress=lambda *a: seen.append(a))
    one_by_one = FakeBatchModel(base, tuned)
    assert result == probe.probe(one_by_one, facts=FACTS, general=GENERAL, max_new_tokens=9, batch_size=1)
    assert one_by_one.batches == [] and batched.calls == []  # batch_size 1 is the unbatched path
    prompts = [r["prompt"] for r in FACTS + GENERAL]
    assert batched.batches == [(prompts[0:2], False, 9), (prompts[2:4], False, 9), (prompts[4:], False, 9),
                               (prompts[0:2], True, 9), (prompts[2:4], True, 9), (prompts[4:], True, 9)]
    assert seen == [(2, 10, "base", "facts"), (4, 10, "base", "general"), (5, 10, "base", "general"),
                    (7, 10, "tuned", "facts"), (9, 10, "tuned", "general"), (10, 10, "tuned", "general")]


def test_probe_defaults_read_the_sets_no_tuning_touched():
    """Fresh paraphrases and broad general questions (bench/splits.py), not the rows presets were tuned on."""
    from core import data
    model = FakeRunModel({}, {})
    result = probe.probe(model, limit=2)
    first_fact = result["base"]["facts"]["items"][0]["prompt"]
    assert first_fact == probe.probe_facts("facts")[0]["prompt"]
    assert first_fact not in {r["prompt"] for r in data.builtin_heldout("facts")}
    first_general = result["base"]["general"]["items"][0]["prompt"]
    assert first_general == probe.probe_general()[0]["prompt"]
    assert first_general not in {r["prompt"] for r in data.builtin_general_questions()}


# ------------------------------------------------------------------------------ the Compare page

def test_compare_page_runs_the_probe_once_and_caches_it(runs_dir, tiny_llama, monkeypatch, tmp_path):
    """An SFT run on builtin:facts-mini: the button scores both views, shows the numbers and the
    answers, and writes probe.json so the next visit shows them without generating again."""
    import json
    import os

    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from core import jobs, runs, train
    from core.config import RunConfig
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    monkeypatch.chdir(root)
    monkeypatch.setenv("PLAYGROUND_CACHE_DIR", str(tmp_path / "cache"))  # the base answers' cache: this test's
    jobs.reset_manager()
    st.cache_data.clear()
    st.cache_resource.clear()
    cfg = RunConfig.from_dict({"model": {"name": tiny_llama},
                               "data": {"source": "builtin:facts-mini", "task": "sft", "max_length": 48,
                                        "val_share": 0.0},
                               "method": {"name": "lora", "params": {"r": 2}},
                               "train": {"max_steps": 1, "batch_size": 8}})
    run_dir = runs.create_run(cfg, owner="")
    runs.write_status(run_dir, train.run(cfg, run_dir)["state"])
    run_id = os.path.basename(run_dir)

    calls = []
    real = probe.probe

    def short_probe(run_model, **kw):  # 2 questions of each kind, 4 tokens: the page's logic, quickly
        calls.append(kw)
        kw.update(limit=2, max_new_tokens=4)
        return real(run_model, **kw)

    monkeypatch.setattr(probe, "probe", short_probe)
    at = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
    at.session_state["compare_run"] = run_id
    at.run()
    at.switch_page("pages/compare.py").run()
    assert not at.exception, at.exception
    at.button(key="cmp_probe").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(calls) == 1 and callable(calls[0]["progress"])
    # the base model's answers are kept for the next run's probe, under the server's cache folder
    assert calls[0]["base_cache"].folder == tmp_path / "cache" / "probe-base"
    assert len(list((tmp_path / "cache" / "probe-base").glob("*.json"))) == 1
    # the page asks the fresh paraphrases, which no training row or tuning used
    assert calls[0]["facts"] == probe.probe_facts("facts-mini") != data_heldout("facts-mini")
    labels = [m.label for m in at.metric]
    assert labels.count("Facts recalled (held-out)") == 2 and labels.count("General questions right") == 2
    assert all(m.value.endswith("%)") and "/2 (" in m.value for m in at.metric if "recalled" in m.label)
    tables = [d.value for d in at.dataframe]
    assert len(tables) == 2 and list(tables[0].columns) == ["prompt", "keywords", "base answer", "tuned answer", "tuning"]
    assert all(a[0] in "✓✗" for a in tables[0]["base answer"])
    with open(os.path.join(run_dir, "probe.json"), encoding="utf-8") as fh:
        saved = json.load(fh)
    assert saved["dataset"] == "facts-mini" and saved["result"]["tuned"]["facts"]["n"] == 2
    assert saved["base_answers_cached"] is False and saved["seconds"] > 0

    # probed again (as for another run on this base): the base answers come from the server's cache
    os.remove(os.path.join(run_dir, "probe.json"))
    warm = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
    warm.session_state["compare_run"] = run_id
    warm.run()
    warm.switch_page("pages/compare.py").run()
    warm.button(key="cmp_probe").click().run()
    assert not warm.exception and not warm.error
    with open(os.path.join(run_dir, "probe.json"), encoding="utf-8") as fh:
        rewarmed = json.load(fh)
    assert rewarmed["base_answers_cached"] is True and rewarmed["result"] == saved["result"]
    assert any("came from an earlier probe on this server" in c.value for c in warm.caption)

    again = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
    again.session_state["compare_run"] = run_id
    again.run()
    again.switch_page("pages/compare.py").run()
    assert not again.exception
    assert not [b for b in again.button if b.key == "cmp_probe"]  # cached: no second generation
    assert [m.label for m in again.metric].count("Facts recalled (held-out)") == 2

    # a general question the base got right and the tuned model lost is said beside the scores
    saved["result"]["base"]["general"]["items"][0]["hit"] = True
    saved["result"]["tuned"]["general"]["items"][0]["hit"] = False
    with open(os.path.join(run_dir, "probe.json"), "w", encoding="utf-8") as fh:
        json.dump(saved, fh)
    third = AppTest.from_file(os.path.join(root, "app.py"), default_timeout=120)
    third.session_state["compare_run"] = run_id
    third.run()
    third.switch_page("pages/compare.py").run()
    assert not third.exception
    assert any("Tuning lost 1 general question" in w.value for w in third.warning), [w.value for w in third.warning]
    assert "lost" in list(third.dataframe[1].value["tuning"])
    assert len(calls) == 2
    jobs.reset_manager()


def data_heldout(name):
    from core import data
    return data.builtin_heldout(name)


def test_changes_name_what_tuning_lost_and_gained():
    def part(hits):
        return {"items": [{"prompt": f"q{i}", "hit": h} for i, h in enumerate(hits)]}
    result = {"base": {"general": part([True, True, False, False])},
              "tuned": {"general": part([True, False, True, False])}}
    assert probe.changes(result, "general") == {"lost": ["q1"], "gained": ["q2"]}
