"""The Train page's result card says where and how a run computed (its throughput's help)."""


def test_compute_note_says_where_and_how_a_run_computed():
    from pages.ui import compute_note
    assert compute_note({"device": "cpu", "threads": 2, "precision": "bf16 mixed"}) == \
        "cpu, 2 threads, bf16 mixed precision"
    assert compute_note({"device": "cuda", "threads": 2, "precision": "fp16 mixed"}) == "cuda, fp16 mixed precision"
    assert compute_note({"device": "cpu", "threads": 1}) == "cpu, 1 thread"
    assert compute_note({}) is None  # a run from before these fields
