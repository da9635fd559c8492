"""DistributedDataParallel on CPU (gloo): 2 processes vs one process with the same GLOBAL batch."""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from cpm_lab.callbacks import Callback
from cpm_lab.data import SyntheticPoses
from cpm_lab.models.cpm import CPM
from cpm_lab.train import TrainConfig, Trainer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(input_size=32, sigma=2.0, center_sigma=4.0, trunk_channels=6, feature_channels=4,
             stage1_channels=8, stage_channels=6, stage_kernel=3,
             batch_norm=False)  # BatchNorm statistics are per rank under DDP (see cpm_lab.train)
RUNS = {"end_to_end": 3, "stagewise": 3}  # strategy -> steps (stagewise re-wraps DDP per phase)
GLOBAL_BATCH = 4


def _run(strategy: str):
    torch.manual_seed(0)
    model = CPM.from_preset("tiny", **SMALL)
    data = SyntheticPoses(12, 32, "easy", seed=1)
    cfg = TrainConfig(steps=RUNS[strategy], batch_size=GLOBAL_BATCH, strategy=strategy, lr=1e-3, progress=False,
                      device="cpu")
    trainer = Trainer(model, data, cfg)
    history = trainer.fit()
    return trainer, model, history


def _worker(rank: int, world: int, folder: str):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world)
    try:
        for strategy in RUNS:
            trainer, model, history = _run(strategy)
            assert trainer.world_size == world and trainer.local_batch == GLOBAL_BATCH // world
            torch.save({"model": model.state_dict(), "loss": history["loss"].tolist()},
                       os.path.join(folder, f"{strategy}-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    torch.set_num_threads(1)
    for strategy in RUNS:
        r0 = torch.load(tmp_path / f"{strategy}-rank0.pt", weights_only=True)
        r1 = torch.load(tmp_path / f"{strategy}-rank1.pt", weights_only=True)
        # (a) the ranks end with identical weights
        assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])
        # (b) --batch-size is global: 2 ranks x 2 samples == 1 process x 4 samples (same samples per step)
        _, single, history = _run(strategy)
        for k, v in single.state_dict().items():
            assert torch.allclose(r0["model"][k], v, rtol=1e-4, atol=1e-6), (strategy, k)
        assert r0["loss"] == pytest.approx(history["loss"].tolist(), rel=1e-5)
        assert r0["loss"] == r1["loss"]  # logged losses are averaged over ranks


class _StopAfter(Callback):
    """Requests a stop at ``step``; callbacks run on rank 0 only."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, step: int, record: dict) -> None:
        if step == self.step:
            trainer.request_stop(f"test stop at {step}")


def _stop_worker(rank: int, world: int, folder: str):
    torch.set_num_threads(1)
    # A rank that misses the stop waits in a collective: fail after a minute instead of hanging.
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        model = CPM.from_preset("tiny", **SMALL)
        cfg = TrainConfig(steps=5, batch_size=GLOBAL_BATCH, lr=1e-3, progress=False, device="cpu",
                          checkpoint=os.path.join(folder, "checkpoint.pt"))
        trainer = Trainer(model, SyntheticPoses(20, 32, "easy", seed=1), cfg, callbacks=[_StopAfter(2)])
        history = trainer.fit()
        torch.save({"model": model.state_dict(), "step": trainer.step, "reason": trainer.stop_reason,
                    "history_steps": history["step"].tolist()}, os.path.join(folder, f"stop-rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_a_stop_requested_on_rank0_stops_every_rank_at_the_same_step(tmp_path):
    mp.spawn(_stop_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "stop-rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "stop-rank1.pt", weights_only=True)
    assert r0["step"] == r1["step"] == 2 and r0["history_steps"] == r1["history_steps"] == [1, 2]
    assert r0["reason"] == "test stop at 2" and r1["reason"] == "stop requested by rank 0"
    assert all(torch.equal(r0["model"][k], r1["model"][k]) for k in r0["model"])
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)   # written as at the end of a run
    assert ckpt["step"] == 2 and all(torch.equal(ckpt["model"][k], r0["model"][k]) for k in r0["model"])

def test_torchrun_cli_writes_outputs_on_rank0_only(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "cpm_lab.cli", "train", "--preset", "tiny", "--data", "synthetic:easy", "--steps", "2",
           "--batch-size", "4", "--eval-size", "4", "--threads", "1", "--no-progress", "--device", "cpu",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = json.loads((out / "config.json").read_text())
    assert config["world_size"] == 2 and config["per_rank_batch_size"] == 2
    assert proc.stdout.count("PCK@0.2") == 1  # only rank 0 reports
    assert {"history.csv", "checkpoint.pt", "eval.csv"} <= set(os.listdir(out))
