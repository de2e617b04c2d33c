"""The benchmark protocol (bench/common.py) and run_all's sanity checks, without running a benchmark."""
from __future__ import annotations

import math

import pytest

from bench import common, run_all


def test_fewer_than_five_pairs_is_refused_unless_quick():
    with pytest.raises(common.ProtocolError, match="at least 5"):
        common.check_pairs(2, quick=False)
    common.check_pairs(5, quick=False)
    common.check_pairs(1, quick=True)


def test_engine_vs_tutorial_refuses_one_pair_before_running_anything(monkeypatch):
    from bench import engine_vs_tutorial
    monkeypatch.setattr(engine_vs_tutorial, "run_side", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(common.ProtocolError):
        engine_vs_tutorial.main(["--pairs", "1"])


def test_sides_alternate_and_ratios_are_median_and_range():
    assert common.pair_order(0, ["a", "b"]) == ["a", "b"]
    assert common.pair_order(1, ["a", "b"]) == ["b", "a"]
    s = common.spread([1.2, 0.9, 1.0, 1.5, 1.1])
    assert s == {"median": 1.1, "min": 0.9, "max": 1.5, "n": 5}
    assert common.spread_text(s) == "1.1 (0.9–1.5, 5 pairs)"


def test_a_ratio_needs_the_same_precision_and_threads():
    common.check_same_setting({"precision": "float32", "threads": 2}, {"precision": "float32", "threads": 2})
    with pytest.raises(common.ProtocolError, match="precision"):
        common.check_same_setting({"precision": "bf16 mixed", "threads": 2}, {"precision": "float32", "threads": 2})
    with pytest.raises(common.ProtocolError, match="threads"):
        common.check_same_setting({"precision": "float32", "threads": 1}, {"precision": "float32", "threads": 2})


def test_time_to_accuracy_reads_the_first_evaluation_at_target():
    curve = [[0.0, 0.5, 0], [10.0, 0.79, 30], [20.0, 0.81, 60], [30.0, 0.86, 90]]
    assert common.time_to(curve, 0.80) == 20.0
    assert common.time_to(curve, 0.85) == 30.0
    assert common.time_to(curve, 0.90) is None
    assert common.time_to([], 0.8) is None


def test_every_table_header_names_machine_flags_versions_and_load():
    rec = common.machine_record()
    text = common.protocol_header(rec, 1.0, 2.5, "train_steps", 5)
    assert "CPU flags" in text and "torch" in text and "1.00 / 2.50" in text and "5 alternating pairs" in text
    assert "NOT A RESULT" in common.protocol_header(rec, 1, 1, quick=True)
    assert set(rec["flags"]) >= {"avx512f", "avx512_bf16", "amx_bf16"}


def _evt_payload(**change):
    run = {"who": "engine", "pair": 0, "train_steps_s": 10.0, "_wall_s": 30.0, "accuracy": 0.7,
           "curve": [[0.0, 0.5, 0], [5.0, 0.6, 10], [10.0, 0.7, 20]]}
    run.update(change)
    return {"args": {"pairs": 1}, "steps_ratio": {"median": 1.1, "n": 1}, "wall_ratio": {"median": 1.0, "n": 1},
            "runs": [run, {**run, "who": "tutorial"}]}


def test_sanity_passes_sane_figures_and_names_each_insane_one():
    assert run_all.sanity("engine_vs_tutorial", _evt_payload(), quick=True) == []
    bad = run_all.sanity("engine_vs_tutorial", _evt_payload(accuracy=1.7), quick=True)
    assert bad and "accuracy 1.7" in bad[0]
    bad = run_all.sanity("engine_vs_tutorial", _evt_payload(curve=[[5.0, 0.6, 10], [1.0, 0.7, 20]]), quick=True)
    assert any("out of order" in b for b in bad)
    bad = run_all.sanity("engine_vs_tutorial", _evt_payload(train_steps_s=math.nan), quick=True)
    assert any("train_steps_s" in b for b in bad)
    bad = run_all.sanity("engine_vs_tutorial", {"steps_ratio": {}}, quick=True)
    assert bad and "not where they should be" in bad[0]
    bad = run_all.sanity("imdb_report", {"table": [{"test_accuracy": 0.4, "n_test": 1000, "test_fingerprint": "a",
                                                    "dev_fingerprint": "b"}]}, quick=False)
    assert bad == ["the shipped default scored 0.400 on the test part: below 0.6, something broke"]


def test_run_all_rejects_an_unknown_study():
    with pytest.raises(SystemExit):
        run_all.main(["--quick", "--only", "no_such_study"])
