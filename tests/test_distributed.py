"""Scale-out: rank helpers, launch commands, and a real 2-process CPU run (torchrun, gloo).

The 2-process test trains a tiny Llama with LoRA on 32 prompt/response rows twice: once in this
process with batch 8, once under `torchrun --nproc_per_node 2` with batch 4 per process (the
same global batch). Both draw rows with the seeded random sampler DDP uses (a rank-consistent
order), the tiny Llama has no dropout and LoRA dropout is 0, and the SFT loss is a global token
average, so every step sees the same rows and the same gradient: the losses agree to float
rounding (measured: ~1e-5). TOLERANCE is 1e-3 absolute, well inside the 0.05 a noisy run would
need, so a real divergence (a rank training on other rows, a loss scaled by world_size, a
gradient not all-reduced) fails it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import pytest
import torch

from core import distributed, launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOLERANCE = 1e-3


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)


# ------------------------------------------------------------------------ rank helpers

def test_single_process_is_main():
    assert distributed.world_size() == 1 and distributed.rank() == 0
    assert distributed.is_main_process() and not distributed.is_distributed()
    assert distributed.broadcast_object("x") == "x"  # no process group needed
    distributed.barrier()
    distributed.shutdown()


@pytest.mark.parametrize("env, main", [
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}, True),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, False),
    ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}, False),  # 2nd machine's first process
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, False),               # a launcher that sets LOCAL_RANK only
])
def test_rank_from_launcher_env(monkeypatch, env, main):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.is_main_process() is main
    assert distributed.is_distributed()


def test_main_only(monkeypatch):
    calls = []
    write = distributed.main_only(lambda x: calls.append(x) or "written")
    assert write(1) == "written"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert write(2) is None
    assert calls == [1]


def test_threads_are_shared_by_the_processes_of_a_machine(monkeypatch):
    from core.train import default_threads
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert default_threads() == 8
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert default_threads() == 4


def test_training_uses_every_core_unless_the_host_says_fewer(monkeypatch):
    from core.train import default_threads
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.delenv("PLAYGROUND_TRAIN_THREADS", raising=False)
    assert default_threads() == 2
    monkeypatch.setenv("PLAYGROUND_TRAIN_THREADS", "1")  # a host that keeps a core for its pages
    assert default_threads() == 1
    monkeypatch.setenv("PLAYGROUND_TRAIN_THREADS", "64")  # never more than the cores
    assert default_threads() == 2
    for junk in ("0", "-1", "two", ""):  # unusable: the default
        monkeypatch.setenv("PLAYGROUND_TRAIN_THREADS", junk)
        assert default_threads() == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_the_trainer_thread_runs_at_lower_priority_and_the_server_does_not(monkeypatch):
    from core import jobs
    monkeypatch.delenv("PLAYGROUND_TRAIN_NICE", raising=False)
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen = {}

    def worker():
        seen["lowered"] = jobs.lower_own_priority()
        seen["nice"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        child = threading.Thread(target=lambda: seen.update(child=os.getpriority(
            os.PRIO_PROCESS, threading.get_native_id())))
        child.start()  # as an OpenMP worker the trainer starts: it inherits the priority
        child.join()

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert seen["lowered"] is (before < jobs.TRAINER_NICE)
    assert seen["nice"] == max(before, jobs.TRAINER_NICE)
    assert seen["child"] == seen["nice"]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before  # the calling (server) thread is untouched


def test_the_trainer_priority_can_be_turned_off(monkeypatch):
    from core import jobs
    monkeypatch.setenv("PLAYGROUND_TRAIN_NICE", "0")
    assert jobs.lower_own_priority() is False
    monkeypatch.setenv("PLAYGROUND_TRAIN_NICE", "25")
    assert jobs.trainer_nice() == 19
    monkeypatch.setenv("PLAYGROUND_TRAIN_NICE", "junk")
    assert jobs.trainer_nice() == jobs.TRAINER_NICE


def test_streamlit_does_not_collect_garbage_after_every_rerun():
    """A full gc.collect(2) per rerun (the live chart reruns every second) held the GIL long enough
    to make in-app training 2-3x slower than headless."""
    import tomllib
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, ".streamlit", "config.toml"), "rb") as fh:
        assert tomllib.load(fh)["runner"]["postScriptGC"] is False


def test_save_weights_writes_nothing_off_rank_0(monkeypatch, tmp_path):
    from core import save
    from core.config import RunConfig
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")

    class Exploding:
        def save_pretrained(self, *a, **k):
            raise AssertionError("rank 1 must not write")

    p = type("P", (), {"cfg": RunConfig(), "model": Exploding(), "kind": "encoder", "label_names": ["a", "b"]})()
    assert save.save_weights(p, str(tmp_path)) == "peft"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("env, sharded", [
    ({}, False),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "FULL_SHARD"}, True),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "SHARD_GRAD_OP"}, True),
    ({"ACCELERATE_USE_FSDP": "true", "FSDP_SHARDING_STRATEGY": "NO_SHARD"}, False),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, False),
    ({"ACCELERATE_USE_DEEPSPEED": "true", "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, True),
])
def test_shards_parameters(monkeypatch, env, sharded):
    for var in ("ACCELERATE_USE_FSDP", "FSDP_SHARDING_STRATEGY", "ACCELERATE_USE_DEEPSPEED",
                "ACCELERATE_DEEPSPEED_ZERO_STAGE"):
        monkeypatch.delenv(var, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert distributed.shards_parameters() is sharded


def test_sharded_weights_are_saved_by_the_trainer_not_by_rank_0_alone(monkeypatch, tmp_path):
    """Under FSDP, core.loop gathers the adapter with every rank (Trainer.save_model); rank 0's
    save_weights then writes only weights.json, never a forward or save on its shards alone."""
    from core import save
    from core.config import RunConfig
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")

    class Exploding:
        def save_pretrained(self, *a, **k):
            raise AssertionError("sharded weights must not be saved from rank 0 alone")

    p = type("P", (), {"cfg": RunConfig(), "model": Exploding(), "kind": "encoder", "label_names": ["a", "b"]})()
    assert save.save_weights(p, str(tmp_path)) == "peft"
    assert sorted(os.listdir(tmp_path)) == ["weights.json"]


def test_full_fine_tuning_under_fsdp_is_refused_before_training(monkeypatch):
    from core.config import ConfigError, RunConfig
    from core.loop import fit
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    p = type("P", (), {"cfg": RunConfig.from_dict({"method": {"name": "full"}})})()
    with pytest.raises(ConfigError, match="method full cannot be saved from sharded weights"):
        fit(p, [], [], "/nonexistent", lambda e: None, None)


# ------------------------------------------------------------------------ launch commands

def test_launch_commands_for_a_config_file():
    got = launch.commands("examples/lora_sentiment.yaml")
    assert got == {
        "single": "python -m core.train --config examples/lora_sentiment.yaml",
        "multi_gpu": "accelerate launch --config_file examples/accelerate/ddp.yaml -m core.train "
                     "--config examples/lora_sentiment.yaml",
        "torchrun": "torchrun --nproc_per_node 2 -m core.train --config examples/lora_sentiment.yaml",
    }


def test_launch_commands_for_a_run_folder_quote_paths(tmp_path):
    run_dir = tmp_path / "my runs" / "20261122-031501-lora-minilm-3f9a"
    run_dir.mkdir(parents=True)
    got = launch.commands(str(run_dir), nproc=4, accelerate_config="fsdp")
    config = os.path.join(str(run_dir), "config.json")
    assert got["single"] == f"python -m core.train --config '{config}'"
    assert got["torchrun"].startswith("torchrun --nproc_per_node 4 -m core.train")
    assert "--config_file examples/accelerate/fsdp.yaml" in got["multi_gpu"]
    with pytest.raises(ValueError):
        launch.commands(str(run_dir), nproc=0)


def test_accelerate_configs_exist_and_parse():
    import yaml
    for name, path in launch.ACCELERATE_CONFIGS.items():
        with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
        assert cfg["distributed_type"] in ("MULTI_GPU", "DEEPSPEED", "FSDP"), name
        assert cfg["num_processes"] >= 2 and cfg["mixed_precision"] in ("no", "bf16", "fp16")


# ------------------------------------------------------------------------ a real 2-process run

def _facts(path) -> str:
    rows = [{"prompt": f"Who founded Quillmere number {i}?", "response": f"It was founded by Odile {i}."}
            for i in range(40)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def _config(model: str, data: str, batch_size: int) -> dict:
    # 40 rows -> 32 train / 8 validation: 4 steps of 8 rows per epoch, no ragged last batch.
    # fp32: bf16 autocast (on CPUs that have it) sums 4+4 rows and 8 rows differently, by ~1e-3.
    return {"model": {"name": model, "dtype": "float32"}, "data": {"source": data, "task": "sft", "max_length": 32},
            "method": {"name": "lora", "params": {"dropout": 0.0}},
            "train": {"learning_rate": 0.02, "epochs": 2, "batch_size": batch_size, "logging_steps": 1,
                      "seed": 7, "torch_threads": 1, "warmup_ratio": 0.0}}


def _losses(run_dir: str) -> tuple[list, list]:
    from core import runs
    events = runs.read_metrics(run_dir)
    return events, [(e["step"], e["loss"]) for e in events if e["type"] == "log"]


@pytest.mark.slow
def test_two_process_cpu_run_matches_single_process(tiny_llama, tmp_path, monkeypatch):
    from core import runs
    from core.config import RunConfig
    data = _facts(tmp_path / "facts.jsonl")

    # The 2-process run: torchrun, gloo, 4 rows per process.
    ddp_root = tmp_path / "runs-ddp"
    cfg_path = tmp_path / "ddp.json"
    cfg_path.write_text(json.dumps(_config(tiny_llama, data, batch_size=4)))
    env = {**os.environ, "PLAYGROUND_RUNS_DIR": str(ddp_root), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "core.train", "--config", str(cfg_path), "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Exactly one run folder, written once: no second folder, no leftovers from rank 1.
    assert sorted(os.listdir(ddp_root)) == [d for d in os.listdir(ddp_root) if not d.startswith(".")]
    folders = os.listdir(ddp_root)
    assert len(folders) == 1, folders
    ddp_dir = str(ddp_root / folders[0])
    printed = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [p["run_dir"] for p in printed] == [ddp_dir]  # one final line, from rank 0
    assert runs.read_status(ddp_dir)["state"] == "completed"
    assert runs.read_summary(ddp_dir)["state"] == "completed"
    assert os.path.isfile(os.path.join(ddp_dir, "adapter", "adapter_config.json"))
    events, ddp_losses = _losses(ddp_dir)
    assert [e["type"] for e in events].count("start") == 1 and [e["type"] for e in events].count("end") == 1
    assert len({step for step, _ in ddp_losses}) == len(ddp_losses) == 8  # each step logged once

    # The single-process reference: the same global batch, the sampler DDP uses.
    import core.loop
    import core.train
    import core.trainer_setup
    real_training_args = core.trainer_setup.training_args

    def same_sampler(*args, **kwargs):
        targs, total = real_training_args(*args, **kwargs)
        targs.train_sampling_strategy = "random"
        return targs, total

    monkeypatch.setattr(core.loop, "training_args", same_sampler)
    monkeypatch.setenv("PLAYGROUND_RUNS_DIR", str(tmp_path / "runs-single"))
    threads = torch.get_num_threads()
    try:
        summary = core.train.run(RunConfig.from_dict(_config(tiny_llama, data, batch_size=8)))
    finally:
        torch.set_num_threads(threads)
    single_dir = str(tmp_path / "runs-single" / os.listdir(tmp_path / "runs-single")[0])
    _, single_losses = _losses(single_dir)

    assert [s for s, _ in single_losses] == [s for s, _ in ddp_losses]
    assert single_losses[0][1] - single_losses[-1][1] > 10 * TOLERANCE  # the loss did move
    final_single, final_ddp = single_losses[-1][1], ddp_losses[-1][1]
    assert abs(final_ddp - final_single) <= TOLERANCE, (single_losses, ddp_losses)
    for (_, a), (_, b) in zip(single_losses, ddp_losses):
        assert abs(a - b) <= TOLERANCE
    ddp_final = runs.read_summary(ddp_dir)["final"]
    assert abs(ddp_final["eval_loss"] - summary["final"]["eval_loss"]) <= TOLERANCE
