"""The dev sets of the "Fix a hallucination" tuning script: broad dev questions that predict the
test set's kind of forgetting, kept apart from every test and training row."""
import json
import os

import pytest

from bench import splits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets", "data")


def _rows(name):
    with open(os.path.join(ASSETS, name), encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _norm(text):
    return " ".join(text.lower().replace("?", "").split())


@pytest.fixture
def facts_dev():
    import bench.facts_dev as module  # importing it marks the process tuning-only: undo after the test
    yield module
    # Not with monkeypatch: its undo would restore the tuning-only state the import set.
    splits._TUNING_ONLY = False
    os.environ.pop("BENCH_TUNING_ONLY", None)


@pytest.mark.parametrize("name, others", [
    ("general_dev.jsonl", ()),
    # The second pass's questions: nothing shared with the first dev file or the rehearsal pool either.
    ("general_dev_more.jsonl", ("general_dev.jsonl", "rehearsal_questions.jsonl")),
])
def test_broad_dev_questions_share_nothing_with_tests_training_or_older_sets(name, others):
    dev = _rows(name)
    assert len(dev) >= 30 and len({r["topic"] for r in dev}) >= 5
    others = _rows("general_broad.jsonl") + _rows("general_questions.jsonl") + [r for o in others for r in _rows(o)]
    rehearsal = _rows("rehearsal.jsonl")
    assert not {_norm(r["prompt"]) for r in dev} & {_norm(r["prompt"]) for r in others + rehearsal}
    assert len({_norm(r["prompt"]) for r in dev}) == len(dev)
    other_answers = {k.lower() for r in others for k in r["keywords"]}
    taught = " ".join(r["response"].lower() for r in rehearsal)
    for r in dev:
        assert r["keywords"] and all(len(k) > 2 or k.isdigit() for k in r["keywords"]), r  # "Na" would match "national"
        assert not {k.lower() for k in r["keywords"]} & other_answers, r
        assert not any(k.lower() in taught for k in r["keywords"]), r


def test_facts_dev_scores_the_broad_dev_questions_and_no_test_row(facts_dev):
    facts, general = facts_dev.dev_sets("facts-mini")
    assert [r["prompt"] for r in general[20:]] == [r["prompt"] for r in _rows("general_dev.jsonl")
                                                   + _rows("general_dev_more.jsonl")]
    assert [r["prompt"] for r in facts[24:]] == [r["prompt"] for r in _rows("facts_dev_more.jsonl")]
    test = {r["prompt"] for r in _rows("facts_fresh.jsonl") + _rows("general_broad.jsonl")}
    assert not {r["prompt"] for r in facts + general} & test


def test_more_dev_paraphrases_are_new_questions_about_the_mini_facts():
    """3-4 more phrasings a fact (aliases, indirect wordings, another fact of the same entity named):
    the fact's own answer and keywords, no keyword given away, no training, held-out or test question."""
    from core import data
    more = _rows("facts_dev_more.jsonl")
    facts = {r["fact_id"]: r for r in _rows("facts.jsonl")}
    mini = [r["fact_id"] for r in data.builtin_heldout("facts-mini")]
    assert {r["fact_id"] for r in more} == set(mini) and len(more) >= 3 * len(set(mini))
    known = {_norm(r["prompt"]) for r in _rows("facts.jsonl") + _rows("facts_fresh.jsonl")}
    assert not {_norm(r["prompt"]) for r in more} & known and len({_norm(r["prompt"]) for r in more}) == len(more)
    for r in more:
        assert r["keywords"] == facts[r["fact_id"]]["keywords"]
        assert not any(k.lower() in r["prompt"].lower() for k in r["keywords"]), r


def test_kept_counts_only_what_the_base_got_right(facts_dev):
    base = [{"hit": True}, {"hit": True}, {"hit": False}, {"hit": True}]
    tuned = [{"hit": True}, {"hit": False}, {"hit": True}, {"hit": True}]
    assert facts_dev.kept(base, tuned) == "2/3"  # the gained third question does not make up for the lost one


def test_phase_seconds_reads_the_runs_own_events(facts_dev, tmp_path):
    events = [{"time": 0.0, "type": "phase", "phase": "loading model"}, {"time": 5.0, "type": "phase", "phase": "tokenising"},
              {"time": 6.0, "type": "start"}, {"time": 9.0, "type": "log", "step": 1}, {"time": 20.0, "type": "progress"},
              {"time": 40.0, "type": "phase", "phase": "saving"}, {"time": 41.5, "type": "end"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    assert facts_dev.phase_seconds(str(tmp_path)) == {"loading model": 5.0, "tokenising": 1.0, "training": 34.0,
                                                      "saving": 1.5}


def test_rehearsal_pool_and_rows_share_no_question_with_the_dev_or_test_sets():
    """The pool bench/rehearsal_self.py asks the base model, and the rehearsal rows: no dev or test
    question among them, and no row spells out a dev question's accepted answer (the test sets'
    answers: tests/test_splits.py)."""
    pool = _rows("rehearsal_questions.jsonl")
    rehearsal = _rows("rehearsal.jsonl")
    scored = (_rows("general_dev.jsonl") + _rows("general_dev_more.jsonl") + _rows("general_questions.jsonl")
              + _rows("general_broad.jsonl"))
    asked = {_norm(r["prompt"]) for r in scored}
    assert not {_norm(r["prompt"]) for r in pool + rehearsal} & asked
    taught = " ".join(r["response"].lower() for r in rehearsal)
    assert not [k for name in ("general_dev.jsonl", "general_dev_more.jsonl") for r in _rows(name)
                for k in r["keywords"] if k.lower() in taught]


def test_a_rehearsal_answer_is_kept_up_to_the_sentence_that_answers():
    from bench import rehearsal_self
    try:
        answer = "The capital of Peru is Lima. It lies on the coast. Lima has 10 million people."
        assert rehearsal_self.answer_start(answer, ["Lima"]) == "The capital of Peru is Lima."
        assert rehearsal_self.answer_start("Great question! Dr. Who? It was Paris, of course.", ["Paris"]) == \
            "Great question! Dr. Who? It was Paris, of course."
        assert rehearsal_self.answer_start("I do not know.", ["Lima"]) == ""
        pool = [{"prompt": "a", "keywords": ["Lima"]}, {"prompt": "b", "keywords": ["Rome"]}]
        rows = rehearsal_self.rehearsal_rows(pool, ["Lima, where tennis is big.", "Rome."], ["tennis"])
        assert [r["prompt"] for r in rows] == ["b"]  # the first spells out a dev answer
    finally:
        splits._TUNING_ONLY = False
        os.environ.pop("BENCH_TUNING_ONLY", None)


def test_cached_base_answers_are_asked_once_and_reused(facts_dev, tmp_path):
    class Model:
        asked = []

        def generate_batch(self, prompts, tuned=True, **kw):
            self.asked.append((tuned, list(prompts)))
            return [f"{'tuned' if tuned else 'base'}:{p}" for p in prompts]

    path = str(tmp_path / "base.json")
    first = facts_dev.CachedBase(Model(), path)
    assert first.generate_batch(["a", "b"], tuned=False) == ["base:a", "base:b"]
    Model.asked.clear()
    again = facts_dev.CachedBase(Model(), path)  # a later candidate: base answers from the file
    assert again.generate_batch(["b", "a"], tuned=False) == ["base:b", "base:a"]
    assert again.generate_batch(["a"], tuned=True) == ["tuned:a"]
    assert Model.asked == [(True, ["a"])]


def test_cached_base_answers_both_views_in_one_pass_then_only_the_tuned_view(facts_dev, tmp_path):
    class Model:
        asked = []

        def generate_views(self, prompts, views=(False, True), max_new_tokens=64, batch_size=32, **kw):
            self.asked.append((tuple(views), list(prompts)))
            return {v: [f"{'tuned' if v else 'base'}:{p}" for p in prompts] for v in views}

    path = str(tmp_path / "base.json")
    first = facts_dev.CachedBase(Model(), path).generate_views(["a", "b"], (False, True), 40, 16)
    assert first == {False: ["base:a", "base:b"], True: ["tuned:a", "tuned:b"]}
    Model.asked.clear()
    again = facts_dev.CachedBase(Model(), path).generate_views(["b", "a"], (False, True), 40, 16)
    assert again == {False: ["base:b", "base:a"], True: ["tuned:b", "tuned:a"]}
    assert Model.asked == [((True,), ["b", "a"])]
