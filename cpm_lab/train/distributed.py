"""Distributed training helpers (``torchrun``) and the resumable data order.

When ``torch.distributed`` is initialised (``setup_distributed`` does it from torchrun's
environment: NCCL on GPUs, gloo on CPU) the trainer wraps the model in DistributedDataParallel
and shards the data with ``ResumableSampler``. ``batch_size`` is the GLOBAL batch: each of the W
ranks gets ``batch_size / W`` samples per step, and since each rank averages its loss over its
own samples and DDP averages gradients over ranks, one distributed step equals one
single-process step on the same samples (up to float summation order).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from ..utils import resolve_device


class ResumableSampler(DistributedSampler):
    """A DistributedSampler (shuffled per epoch from ``seed + epoch``) that can start mid-epoch.

    Works without a process group (``num_replicas=1, rank=0``). ``set_position(epoch, skip)``
    makes the next iteration start at the ``skip``-th index of this rank's shard of that epoch.
    """

    def __init__(self, dataset, num_replicas: int = 1, rank: int = 0, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.skip = 0

    def set_position(self, epoch: int, skip: int = 0) -> None:
        self.set_epoch(epoch)
        self.skip = skip

    def __iter__(self):
        indices = list(super().__iter__())[self.skip:]
        return iter(indices)

    def __len__(self) -> int:
        return self.num_samples - self.skip


def setup_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """Initialise ``torch.distributed`` from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK).

    Returns ``(rank, world_size, device)``. Without torchrun (WORLD_SIZE unset or 1) nothing is
    initialised and ``(0, 1, resolve_device(device))`` is returned. NCCL is used when the ranks
    run on CUDA (each on ``cuda:LOCAL_RANK``), gloo otherwise.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return 0, 1, resolve_device(device)
    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), dev


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """``values`` averaged over all ranks (itself without a process group), so that every rank
    logs, and stops on, the same numbers."""
    _, world = dist_info()
    if world == 1:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / world


def broadcast_flag(flag: bool, device: torch.device) -> bool:
    """Rank 0's ``flag`` on every rank (itself without a process group)."""
    if dist_info()[1] == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.broadcast(t, src=0)
    return bool(t.item())
