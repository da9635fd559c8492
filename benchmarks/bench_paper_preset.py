"""Does the ``paper`` preset train with its own defaults? Loss per step and stage, and step time.

    python benchmarks/bench_paper_preset.py                       # 50 steps at batch 2 on the CPU
    python benchmarks/bench_paper_preset.py --steps 3 --threads 2 # a quick estimate of the step time
    python benchmarks/bench_paper_preset.py --out runs/paper50.csv

Trains ``CPM.from_preset("paper")`` (368 px, 6 stages, Gaussian std-0.01 init, stage-1 dropout,
Caffe input) with ``TrainConfig.for_preset("paper", steps=N, batch_size=B, device="cpu")``: SGD
lr 8e-5, momentum 0.9, weight decay 5e-4 (not on biases), stage-1 weights x5 and biases x2 of
their layer's lr, Caffe's EuclideanLoss (sum / 2N) on every stage. The data are the synthetic
training split at 368 px (``cpm_lab.data.specs.make_dataset("synthetic", 368)``).

Each step prints the total loss, the loss of every stage, the L2 norm of the gradient of every
stage's parameters (``CPM.stage_modules``: stage 2 includes the shared trunk) measured after
backward, and the seconds the step took (data included). At the end: the mean loss of the first
10 and of the last 10 steps (fewer when ``--steps`` < 20), per stage, and their ratio.
This is a benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time

# Sleeping (not spinning) OpenMP threads, as the cpm-lab CLI sets. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def summarise(rows: list[dict], stages: range, wall: float) -> None:
    """Print the mean loss of the first and last 10 steps (fewer for short runs) and step times."""
    k = min(10, len(rows) // 2) or 1
    first, last = rows[:k], rows[-k:]
    print(f"\nmean loss, first {k} vs last {k} steps (last / first):")
    for key in ["loss"] + [f"loss_stage{t}" for t in stages]:
        a = sum(r[key] for r in first) / k
        b = sum(r[key] for r in last) / k
        print(f"  {key:12} {a:10.3f} -> {b:10.3f}  ({b / a:6.3f})")
    per_step = sorted(r["seconds"] for r in rows)
    print(f"seconds per step: median {per_step[len(per_step) // 2]:.1f}, mean {sum(per_step) / len(rows):.1f}; "
          f"wall {wall:.0f} s; load average at the end {os.getloadavg()[0]:.2f}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50, help="optimiser steps (default 50)")
    p.add_argument("--batch-size", type=int, default=2, help="batch size (default 2; the paper's is 16)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="seed of the init and the data order")
    p.add_argument("--out", help="also write one row per step to this CSV file")
    args = p.parse_args(argv)

    import torch

    from cpm_lab.callbacks import Callback
    from cpm_lab.data.specs import make_dataset
    from cpm_lab.models import CPM
    from cpm_lab.train import TrainConfig, Trainer
    from cpm_lab.utils import seed_everything

    if args.threads:
        torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    model = CPM.from_preset("paper")
    mc = model.config
    stages = range(1, mc.num_stages + 1)
    config = TrainConfig.for_preset("paper", steps=args.steps, batch_size=args.batch_size, device="cpu",
                                    seed=args.seed, progress=False)
    data = make_dataset("synthetic", mc.input_size, seed=args.seed)

    class StepLog(Callback):
        """Per-stage gradient norms after backward; one printed (and kept) row per step."""

        def __init__(self):
            self.rows: list[dict] = []
            self.norms: dict[int, float] = {}

        def on_after_backward(self, trainer, step):
            for t in stages:
                sq = [q.grad.detach().float().pow(2).sum() for m in trainer.model.stage_modules(t)
                      for q in m.parameters() if q.grad is not None]
                self.norms[t] = torch.stack(sq).sum().sqrt().item() if sq else float("nan")

        def on_step_end(self, trainer, step, record):
            row = dict(step=step, loss=record["loss"], **{f"loss_stage{t}": record[f"loss_stage{t}"] for t in stages},
                       **{f"grad_norm_stage{t}": self.norms.get(t, float("nan")) for t in stages},
                       lr=record["lr"], seconds=config.batch_size / record["images_per_s"])
            self.rows.append(row)
            losses = " ".join(f"{row[f'loss_stage{t}']:9.3f}" for t in stages)
            grads = " ".join(f"{row[f'grad_norm_stage{t}']:8.2e}" for t in stages)
            print(f"{step:5d} {row['loss']:10.3f} | {losses} | {grads} | {row['seconds']:6.1f}", flush=True)

    log = StepLog()
    trainer = Trainer(model, data, config, callbacks=[log])
    print(f"paper preset: {sum(q.numel() for q in model.parameters()):,} parameters, init {mc.init} "
          f"(std {mc.init_std}), dropout {mc.dropout}, input {mc.input_convention}", flush=True)
    print(f"solver: {trainer.opt_name} lr {trainer.base_lr:g} momentum {config.momentum} weight decay "
          f"{trainer.weight_decay:g} (biases: {'yes' if config.bias_decay else 'no'}), stage-1 lr x"
          f"{config.stage1_lr_mult:g}, bias lr x{config.bias_lr_mult:g}, loss {config.loss_scale}, "
          f"batch {config.batch_size}, {config.steps} steps", flush=True)
    print(f"data: {data.split_description}, {len(data)} items at {mc.input_size} px; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(f"{'step':>5} {'loss':>10} | " + " ".join(f"{'stage' + str(t):>9}" for t in stages)
          + " | " + " ".join(f"{'|g|' + str(t):>8}" for t in stages) + " | seconds", flush=True)
    t0 = time.perf_counter()
    trainer.fit()
    wall = time.perf_counter() - t0

    summarise(log.rows, stages, wall)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(log.rows[0]))
            w.writeheader()
            w.writerows(log.rows)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
