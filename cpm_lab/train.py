"""Training a CPM: the loss, the four training strategies, the loop, checkpoints, DDP.

Two lines from a notebook::

    trainer = Trainer(model, train_set, TrainConfig(steps=300))
    history = trainer.fit()          # a pandas DataFrame, one row per optimiser step

The loop reads top to bottom in ``Trainer._train_step``: move the batch to the device, optional
on-device augmentation, encode targets ON THE DEVICE (``targets.encode`` / ``targets.center_map``),
forward under autocast, the per-stage loss, backward (scaled for fp16), unscale, callbacks,
clipping, optimiser step.

The loss (paper, Sec. 3.3)
--------------------------
For stage t with beliefs ``b_t`` (N, P+1, h, w) and targets ``b*`` from ``targets.encode``::

    f_t = 1/N * sum_n sum_{p=1..P+1} w_np * sum_{ij} (b_t[n, p, i, j] - b*[n, p, i, j])^2

i.e. the squared error summed over parts + background and all locations, AVERAGED over the batch
(so the gradient scale does not depend on the batch size), with ``w_np = 0`` for invisible joints
(the background channel always counts). The total is ``F = sum_t lambda_t f_t`` with stage weights
``lambda_t`` (all 1 in the paper). Without intermediate supervision only the final stage's term is
kept. Per-stage values are always logged (``loss_stage{t}``), supervised or not.

Strategies (paper Fig. 6b); all four spend the SAME total ``steps``
--------------------------------------------------------------------
* ``end_to_end``: all stages, loss on every stage, ``steps`` steps.
* ``no_intermediate``: all stages, loss on the final stage only, ``steps`` steps.
* ``stagewise``: T phases of ``steps // T`` steps (the first ``steps % T`` phases get one extra).
  In phase t the model is stages 1..t; only the modules of stage t (``CPM.stage_modules(t)``; the
  shared trunk belongs to stage 2) are trained, everything of stages < t is frozen
  (``requires_grad=False``, not in the optimiser, BatchNorm in eval mode), stages > t are not run,
  and the loss is on stage t only (the final stage of the model being trained).
* ``stagewise_finetune``: the first ``round(steps * (1 - finetune_fraction))`` steps are spent as
  in ``stagewise`` (split evenly over the stages), the rest end-to-end with loss on every stage.

Each phase gets a fresh optimiser and its own learning-rate schedule over its own steps.

Learning rate
-------------
``optimizer="auto"`` picks the paper's SGD for the ``paper`` preset (lr 8e-5, momentum 0.9,
weight decay 5e-4, ``schedule="step"``: x ``lr_gamma`` = 0.333 every ``lr_step`` steps) and Adam
(lr 1e-3, or the preset's lr in ``PRESET_DEFAULTS``, e.g. 5e-3 for tiny; no weight decay; cosine
decay to 1 %) for the small presets. The learning rate is a pure
function of the step (``Trainer.lr_at``), so restoring the step restores the schedule.

Distributed runs (``torchrun``)
-------------------------------
When ``torch.distributed`` is initialised (``setup_distributed`` does it from torchrun's
environment: NCCL on GPUs, gloo on CPU) the model is wrapped in DistributedDataParallel and the
data is sharded with a DistributedSampler. ``batch_size`` is the GLOBAL batch: each of the W ranks
gets ``batch_size / W`` samples per step (it must divide evenly), and since each rank averages its
loss over its own samples and DDP averages gradients over ranks, one distributed step equals one
single-process step on the same ``batch_size`` samples (up to float summation order). With BatchNorm
(the ``tiny`` preset) that equality holds for the weights' gradients but not for the batch
statistics: each rank normalises over its own ``batch_size / W`` samples, and DDP broadcasts rank
0's running statistics at every forward (PyTorch's default), so only rank 0's buffers are saved. Logged
losses are averaged over ranks. Only rank 0 shows progress, evaluates, runs callbacks and writes
checkpoints.

Checkpoints
-----------
``save_checkpoint`` writes atomically (temp file in the same folder, then ``os.replace``) a dict
that ``torch.load(weights_only=True)`` can read: model weights, the model config as a dict, the
train config as a dict, optimiser and AMP-scaler state, the step, the data position and the RNG
states (torch CPU/CUDA, numpy, python) as tensors, and the history so far. Resuming restores all
of it; on CPU, N steps straight and N/2 + resume + N/2 give bit-identical weights.
"""
from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler

from .callbacks import Callback
from .models.cpm import CPM, CPMConfig
from .targets import center_map, encode
from .utils import resolve_device, seed_everything

STRATEGIES = ("end_to_end", "no_intermediate", "stagewise", "stagewise_finetune")
OPTIMIZERS = ("auto", "adam", "sgd")
SCHEDULES = ("auto", "constant", "cosine", "step")
CHECKPOINT_FORMAT = "cpm_lab.checkpoint.v1"

#: Optimiser defaults; "sgd" is the paper's recipe (official LSP solver), "adam" is for CPU-sized runs.
OPTIMIZER_DEFAULTS = {
    "sgd": dict(lr=8e-5, weight_decay=5e-4, schedule="step"),
    "adam": dict(lr=1e-3, weight_decay=0.0, schedule="cosine"),
}

#: Default budget per model preset (used by ``TrainConfig.for_preset`` and the CLI). "tiny" was
#: tuned on a 2-core CPU (3000 steps: 4 min 08 s for ``cpm-lab train`` on the idle machine):
#: held-out final-stage PCK@0.2 0.915 on ``synthetic`` (standard), stage 3 about 34 PCK@0.1 points
#: above stage 1 (lr 3e-3 gave 0.89; 2400 steps at 3e-3, 0.88). "small" is an untuned guess.
#: "paper" follows the official solver (batch 16, SGD lr 8e-5, x0.333 decay) at a reduced length.
PRESET_DEFAULTS: dict[str, dict] = {
    "tiny": dict(steps=3000, batch_size=8, lr=5e-3, cpu_channels_last=True),
    "small": dict(steps=3000, batch_size=16),
    "paper": dict(steps=100_000, batch_size=16, optimizer="sgd", lr_step=33_000),
}


class TrainingDiverged(RuntimeError):
    """Raised when a loss (or, before a checkpoint is written, a weight) becomes non-finite.

    Attributes: ``step`` (1-based optimiser step), ``stages`` (1-based stages with a non-finite
    loss; empty when weights went bad), ``losses`` (the per-stage values as floats).
    """

    def __init__(self, message: str, step: int, stages: Sequence[int] = (), losses: Sequence[float] = ()):
        super().__init__(message)
        self.step, self.stages, self.losses = step, tuple(stages), tuple(losses)


@dataclass
class TrainConfig:
    """Everything about a training run (not the model: that is ``CPMConfig``).

    Attributes:
        steps: total optimiser steps, shared by all phases of the strategy (see module docstring).
        batch_size: GLOBAL batch size (split evenly over ranks in distributed runs).
        strategy: one of ``STRATEGIES``.
        intermediate_supervision: loss on every stage (True, paper) or on the final stage only.
            ``strategy="no_intermediate"`` forces False.
        stage_weights: per-stage loss weights lambda_t (length = num stages); None = all 1.
        finetune_fraction: share of ``steps`` given to end-to-end fine-tuning in
            ``stagewise_finetune``.
        optimizer: "auto" (sgd for the paper preset, adam otherwise), "adam" or "sgd".
        lr, weight_decay, schedule: None/"auto" = the optimiser's default (``OPTIMIZER_DEFAULTS``);
            for Adam, a preset's own lr in ``PRESET_DEFAULTS`` (tiny: 5e-3) takes precedence.
        momentum: SGD momentum (paper: 0.9).
        lr_step: decay period in steps of the "step" schedule; None = a third of the phase.
        lr_gamma: decay factor of the "step" schedule (paper: 0.333).
        warmup_steps: linear warm-up at the start of each phase.
        min_lr_ratio: the cosine schedule ends at ``lr * min_lr_ratio``.
        grad_clip: clip the global gradient norm to this value (None = off).
        device: "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1", ...
        amp: mixed precision; None = on for CUDA only. ``amp_dtype`` "auto" = bf16 where supported
            (with CPU autocast too), else fp16 with a GradScaler.
        channels_last: NHWC memory format; None = on for CUDA, and on CPU for presets whose
            ``PRESET_DEFAULTS`` say ``cpu_channels_last`` (tiny: ~1.4x faster on a 2-core CPU; the
            paper preset's 9x9 convolutions were ~2x slower), off otherwise.
        num_workers: DataLoader worker processes.
        seed: seeds python/numpy/torch at the start of ``fit`` and fixes the data order.
        eval_every: evaluate on ``eval_set`` every this many steps and after the last one (0 = never
            during ``fit``; call ``Trainer.evaluate`` yourself).
        eval_thresholds, eval_normalize: PCK thresholds and normalisation for those evaluations.
        checkpoint: path of the checkpoint file (None = no checkpoints).
        checkpoint_every: also write it every this many steps (0 = only at the end of ``fit``).
        progress: show a tqdm progress bar.
    """

    steps: int = 600
    batch_size: int = 16
    strategy: str = "end_to_end"
    intermediate_supervision: bool = True
    stage_weights: tuple[float, ...] | None = None
    finetune_fraction: float = 0.5
    optimizer: str = "auto"
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: str = "auto"
    lr_step: int | None = None
    lr_gamma: float = 0.333
    warmup_steps: int = 0
    min_lr_ratio: float = 0.01
    grad_clip: float | None = None
    device: str = "auto"
    amp: bool | None = None
    amp_dtype: str = "auto"
    channels_last: bool | None = None
    num_workers: int = 0
    seed: int = 0
    eval_every: int = 0
    eval_thresholds: tuple[float, ...] = (0.1, 0.2)
    eval_normalize: str = "torso"
    checkpoint: str | None = None
    checkpoint_every: int = 0
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be a positive integer, got {self.steps!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; choose one of {STRATEGIES}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULES}")
        if self.amp_dtype not in ("auto", "bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be 'auto', 'bfloat16' or 'float16', got {self.amp_dtype!r}")
        if not 0.0 <= self.finetune_fraction < 1.0:
            raise ValueError(f"finetune_fraction must be in [0, 1), got {self.finetune_fraction}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        for name in ("eval_every", "checkpoint_every", "warmup_steps", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.stage_weights is not None:
            self.stage_weights = tuple(float(w) for w in self.stage_weights)
        self.eval_thresholds = tuple(float(t) for t in self.eval_thresholds)

    @classmethod
    def for_preset(cls, preset: str, **overrides) -> "TrainConfig":
        """The default budget of a model preset (``PRESET_DEFAULTS``) with ``overrides`` applied."""
        if preset not in PRESET_DEFAULTS:
            raise ValueError(f"no training defaults for preset {preset!r}; choose one of {sorted(PRESET_DEFAULTS)}")
        known = {f.name for f in fields(cls)}
        defaults = {k: v for k, v in PRESET_DEFAULTS[preset].items() if k in known}
        return cls(**{**defaults, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**d)


# ------------------------------------------------------------------------------------------------
# Loss
# ------------------------------------------------------------------------------------------------
def stage_losses(beliefs: Sequence[torch.Tensor], targets: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per-stage loss f_t (see module docstring), shape (T,), computed in float32.

    Args:
        beliefs: T tensors (N, C, h, w) (any float dtype).
        targets: (N, C, h, w) from ``targets.encode``.
        weights: (N, C), 0 for channels of invisible joints.
    """
    if targets.ndim != 4 or weights.shape != targets.shape[:2]:
        raise ValueError(f"targets must be (N, C, h, w) and weights (N, C); got {tuple(targets.shape)}, "
                         f"{tuple(weights.shape)}")
    n = targets.shape[0]
    w = weights.float()[:, :, None, None]
    out = []
    for t, b in enumerate(beliefs):
        if b.shape != targets.shape:
            raise ValueError(f"stage {t + 1} beliefs have shape {tuple(b.shape)}, targets {tuple(targets.shape)}")
        out.append(((b.float() - targets.float()) ** 2 * w).sum() / n)
    return torch.stack(out)


def cpm_loss(beliefs: Sequence[torch.Tensor], targets: torch.Tensor, weights: torch.Tensor,
             stage_weights: Sequence[float] | None = None,
             intermediate_supervision: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPM objective ``F = sum_t lambda_t f_t``; returns ``(F, per_stage f_t (T,))``.

    With ``intermediate_supervision=False`` only the final stage enters F (the others are still
    returned in ``per_stage`` for monitoring, but no gradient flows from them).
    """
    per_stage = stage_losses(beliefs, targets, weights)
    t = len(beliefs)
    lam = list(stage_weights) if stage_weights is not None else [1.0] * t
    if len(lam) != t:
        raise ValueError(f"stage_weights has {len(lam)} entries for {t} stages")
    used = range(t) if intermediate_supervision else [t - 1]
    total = sum(lam[i] * per_stage[i] for i in used)
    return total, per_stage


# ------------------------------------------------------------------------------------------------
# Strategies: phases of one run
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """A stretch of training with fixed trainable stages, run depth and supervised stages.

    ``start`` is the number of steps done before the phase; stages are 1-based.
    """

    name: str
    start: int
    steps: int
    run_stages: int
    train_stages: tuple[int, ...]
    loss_stages: tuple[int, ...]

    @property
    def end(self) -> int:
        return self.start + self.steps


def plan_phases(strategy: str, num_stages: int, steps: int, finetune_fraction: float = 0.5,
                intermediate_supervision: bool = True) -> list[Phase]:
    """Split ``steps`` into the phases of ``strategy`` (see module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    t_all = tuple(range(1, num_stages + 1))
    if strategy in ("end_to_end", "no_intermediate"):
        sup = t_all if (intermediate_supervision and strategy == "end_to_end") else (num_stages,)
        return [Phase(strategy, 0, steps, num_stages, t_all, sup)]
    stagewise_steps = steps if strategy == "stagewise" else round(steps * (1 - finetune_fraction))
    if stagewise_steps < num_stages or (strategy == "stagewise_finetune" and stagewise_steps == steps):
        raise ValueError(f"strategy {strategy!r} needs at least one step per stage "
                         f"({num_stages} stages{' + fine-tuning' if strategy == 'stagewise_finetune' else ''}); "
                         f"got steps={steps}")
    base, extra = divmod(stagewise_steps, num_stages)
    phases, start = [], 0
    for t in t_all:
        n = base + (1 if t <= extra else 0)
        phases.append(Phase(f"stage{t}", start, n, t, (t,), (t,)))
        start += n
    if strategy == "stagewise_finetune":
        sup = t_all if intermediate_supervision else (num_stages,)
        phases.append(Phase("finetune", start, steps - start, num_stages, t_all, sup))
    return phases


class _FirstStages(nn.Module):
    """Runs stages 1..``run_stages`` of a CPM (the same computation as ``CPM.forward``, stopped
    early so stagewise training does not pay for stages it does not train). Wrapping this view
    (not the bare model) in DDP keeps the gradient hooks on exactly the parameters in use."""

    def __init__(self, model: CPM, run_stages: int):
        super().__init__()
        self.model, self.run_stages = model, run_stages

    def forward(self, images: torch.Tensor, center_maps: torch.Tensor) -> list[torch.Tensor]:
        m = self.model
        if self.run_stages >= m.config.num_stages:
            return m(images, center_maps)
        beliefs = [m.stage1(images)]
        if self.run_stages > 1:
            shared = m.trunk(images)
            pooled = m.center_pool(center_maps)
            for i in range(self.run_stages - 1):
                beliefs.append(m.stages[i](torch.cat([m.features[i](shared), beliefs[-1], pooled], dim=1)))
        return beliefs


# ------------------------------------------------------------------------------------------------
# Data order
# ------------------------------------------------------------------------------------------------
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


# ------------------------------------------------------------------------------------------------
# Distributed helpers
# ------------------------------------------------------------------------------------------------
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


def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ------------------------------------------------------------------------------------------------
# RNG state <-> tensors (so checkpoints load with weights_only=True)
# ------------------------------------------------------------------------------------------------
def _rng_state(device: torch.device) -> dict:
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(mt, dtype=torch.int64), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state(("MT19937", npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                         npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".pt", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file normal permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    """Load a cpm_lab checkpoint dict with ``torch.load(weights_only=True)``; clear errors for a
    missing file or a file that is not a cpm_lab checkpoint."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint file {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle/zip errors: not a (safe) checkpoint
        reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise ValueError(f"{path!r} is not a readable cpm_lab checkpoint ({reason})") from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path!r} is not a cpm_lab checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return ckpt


def check_compatible(ckpt_config: dict, model_config: CPMConfig, path: str = "checkpoint") -> None:
    """Raise ValueError if a checkpoint's model config differs from the model's, naming both."""
    mine = model_config.to_dict()
    if ckpt_config == mine:
        return
    if ckpt_config.get("name") != mine["name"] or ckpt_config.get("num_parts") != mine["num_parts"]:
        raise ValueError(f"{path} is preset {ckpt_config.get('name')!r} with {ckpt_config.get('num_parts')} parts, "
                         f"model is {mine['name']!r} with {mine['num_parts']} parts")
    diff = sorted(k for k in set(mine) | set(ckpt_config) if mine.get(k) != ckpt_config.get(k))
    details = ", ".join(f"{k}: checkpoint {ckpt_config.get(k)!r} vs model {mine.get(k)!r}" for k in diff)
    raise ValueError(f"{path} is preset {mine['name']!r} with different options ({details})")


def export_weights(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> str:
    """Write a small inference-only copy of a checkpoint (weights, model and train config, step;
    no optimiser, RNG or history) that ``load_model`` reads; atomic. Returns ``out_path``."""
    ckpt = read_checkpoint(checkpoint_path)
    keep = {k: ckpt[k] for k in ("format", "model", "model_config", "train_config", "step") if k in ckpt}
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    _atomic_save(keep, os.fspath(out_path))
    return os.fspath(out_path)


def load_model(checkpoint_path: str | os.PathLike, device: str | torch.device | None = "auto") -> CPM:
    """Rebuild the CPM stored in a checkpoint (architecture from its config), on ``device``, in
    eval mode."""
    ckpt = read_checkpoint(checkpoint_path)
    model = CPM(CPMConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(resolve_device(device)).eval()


# ------------------------------------------------------------------------------------------------
# The trainer
# ------------------------------------------------------------------------------------------------
class Trainer:
    """Trains a CPM on a pose dataset; see the module docstring for the loss and strategies.

    Args:
        model: the CPM to train (trained in place; ``trainer.model`` stays the bare model).
        train_set: a map-style dataset whose items are dicts with ``image`` (3, H, W) float in
            [0, 1] at the model's input size, ``keypoints`` (P, 3) in those pixels and, optionally,
            ``center`` (2,) for the centre map (image centre otherwise).
        config: a ``TrainConfig``.
        eval_set: held-out dataset evaluated every ``config.eval_every`` steps and after the last
            step (when ``eval_every > 0``), and the default of ``evaluate()``.
        augment: optional ``augment(batch: dict, generator: torch.Generator) -> dict`` applied to
            the batch ON THE DEVICE before targets are encoded; the generator lives on the device
            and is re-seeded from (seed, step, rank) every step, so runs are reproducible.
        callbacks: ``cpm_lab.callbacks.Callback`` objects (called on rank 0 only).

    After ``fit``: ``history`` (one row per step; eval columns ``pck@{thr}_stage{t}`` on
    evaluation steps) and ``evals`` (all evaluation tables, tidy, with a ``step`` column).
    """

    def __init__(self, model: CPM, train_set, config: TrainConfig | None = None, *, eval_set=None,
                 augment: Callable[[dict, torch.Generator], dict] | None = None,
                 callbacks: Sequence[Callback] = ()):
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise TypeError("model must be a cpm_lab CPM (an nn.Module with a .config)")
        self.model = model
        self.train_set, self.eval_set = train_set, eval_set
        self.config = config or TrainConfig()
        self.augment = augment
        self.callbacks = list(callbacks)
        c, mc = self.config, model.config
        if c.stage_weights is not None and len(c.stage_weights) != mc.num_stages:
            raise ValueError(f"stage_weights has {len(c.stage_weights)} entries but the model has "
                             f"{mc.num_stages} stages")
        self.opt_name = c.optimizer if c.optimizer != "auto" else ("sgd" if mc.name == "paper" else "adam")
        defaults = OPTIMIZER_DEFAULTS[self.opt_name]
        preset_lr = PRESET_DEFAULTS.get(mc.name, {}).get("lr") if self.opt_name == "adam" else None
        self.base_lr = c.lr if c.lr is not None else (preset_lr or defaults["lr"])
        self.weight_decay = c.weight_decay if c.weight_decay is not None else defaults["weight_decay"]
        self.schedule = c.schedule if c.schedule != "auto" else defaults["schedule"]
        supervise_all = c.intermediate_supervision and c.strategy != "no_intermediate"
        self.phases = plan_phases(c.strategy, mc.num_stages, c.steps, c.finetune_fraction, supervise_all)
        self.rank, self.world_size = _dist_info()
        if c.batch_size % self.world_size:
            raise ValueError(f"batch_size {c.batch_size} (global) must be divisible by the number of "
                             f"processes ({self.world_size})")
        self.local_batch = c.batch_size // self.world_size
        #: why ``fit`` stopped before its target step (set by ``request_stop``), else None
        self.stop_reason: str | None = None
        if len(train_set) < c.batch_size:
            raise ValueError(f"the training set has {len(train_set)} samples, fewer than batch_size={c.batch_size}")
        self.steps_per_epoch = len(train_set) // c.batch_size

        self.device = resolve_device(c.device)
        if self.device.type == "cuda" and self.world_size > 1 and self.device.index is None:
            self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.use_amp = c.amp if c.amp is not None else self.device.type == "cuda"
        if c.amp_dtype == "auto":
            bf16_ok = self.device.type != "cuda" or torch.cuda.is_bf16_supported()
            self.amp_dtype = torch.bfloat16 if bf16_ok else torch.float16
        else:
            self.amp_dtype = getattr(torch, c.amp_dtype)
        if c.channels_last is not None:
            self.channels_last = c.channels_last
        else:
            self.channels_last = self.device.type == "cuda" or (
                self.device.type == "cpu" and PRESET_DEFAULTS.get(mc.name, {}).get("cpu_channels_last", False))
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.use_amp and self.amp_dtype == torch.float16)
        self.step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self._phase_index: int | None = None
        self._net: nn.Module | None = None
        self._records: list[dict] = []
        self._evals: list[pd.DataFrame] = []
        self._resume_state: dict | None = None

    # -------------------------------------------------------------------------------- properties
    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def history(self) -> pd.DataFrame:
        return pd.DataFrame(self._records)

    @property
    def evals(self) -> pd.DataFrame:
        return pd.concat(self._evals, ignore_index=True) if self._evals else pd.DataFrame()

    def phase_at(self, step: int) -> int:
        """Index into ``self.phases`` of the phase that optimiser step ``step`` (1-based) is in."""
        for i, ph in enumerate(self.phases):
            if ph.start < step <= ph.end:
                return i
        raise ValueError(f"step {step} is outside 1..{self.config.steps}")

    def lr_at(self, step: int) -> float:
        """Learning rate of optimiser step ``step`` (1-based): the schedule of its phase."""
        c = self.config
        ph = self.phases[self.phase_at(step)]
        s = step - ph.start - 1  # steps already taken in this phase
        if c.warmup_steps and s < c.warmup_steps:
            return self.base_lr * (s + 1) / c.warmup_steps
        s, n = s - c.warmup_steps, max(1, ph.steps - c.warmup_steps)
        if self.schedule == "constant":
            return self.base_lr
        if self.schedule == "step":
            period = c.lr_step or max(1, ph.steps // 3)
            return self.base_lr * c.lr_gamma ** (s // period)
        lo = self.base_lr * c.min_lr_ratio
        return lo + 0.5 * (self.base_lr - lo) * (1 + math.cos(math.pi * s / max(1, n - 1)))

    # -------------------------------------------------------------------------------- phases
    def _enter_phase(self, index: int) -> None:
        """Freeze/unfreeze stages, build the phase's optimiser and (if distributed) DDP view."""
        ph = self.phases[index]
        model = self.model
        trainable: list[nn.Parameter] = []
        seen = set()
        for t in range(1, model.config.num_stages + 1):
            train = t in ph.train_stages
            for m in model.stage_modules(t):
                m.train(train)  # frozen BatchNorm keeps its running statistics
                for p in m.parameters():
                    p.grad = None  # no stale gradients from the previous phase
                    p.requires_grad_(train)
                    if train and id(p) not in seen:
                        seen.add(id(p))
                        trainable.append(p)
        if self.opt_name == "sgd":
            self.optimizer = torch.optim.SGD(trainable, lr=self.base_lr, momentum=self.config.momentum,
                                             weight_decay=self.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(trainable, lr=self.base_lr, weight_decay=self.weight_decay)
        view = _FirstStages(model, ph.run_stages)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            view = nn.parallel.DistributedDataParallel(view, device_ids=ids)
        self._net = view
        self._phase_index = index

    def _unfreeze_all(self) -> None:
        for p in self.model.parameters():
            p.requires_grad_(True)
        self.model.train()

    # -------------------------------------------------------------------------------- data
    def _loader(self) -> DataLoader:
        c = self.config
        self.sampler = ResumableSampler(self.train_set, self.world_size, self.rank, seed=c.seed)
        return DataLoader(self.train_set, batch_size=self.local_batch, sampler=self.sampler, drop_last=True,
                          num_workers=c.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=False, generator=torch.Generator().manual_seed(c.seed))

    def _batches(self, first_step: int):
        """Yield (epoch, batch) for steps first_step, first_step + 1, ...; epochs are exactly
        ``steps_per_epoch`` global batches, shuffled from (seed, epoch)."""
        loader = self._loader()
        epoch, pos = divmod(first_step - 1, self.steps_per_epoch)
        while True:
            self.sampler.set_position(epoch, pos * self.local_batch)
            it = iter(loader)
            for _ in range(self.steps_per_epoch - pos):
                yield epoch, next(it)
            del it
            epoch, pos = epoch + 1, 0

    def _to_device(self, batch: dict) -> dict:
        nb = self.device.type == "cuda"
        out = {}
        for k, v in batch.items():
            if isinstance(v, np.ndarray):
                v = torch.from_numpy(v)
            if isinstance(v, torch.Tensor):
                v = v.to(self.device, non_blocking=nb)
                if v.is_floating_point() and v.dtype != torch.float32:
                    v = v.float()
            out[k] = v
        return out

    # -------------------------------------------------------------------------------- one step
    def _train_step(self, step: int, batch: dict) -> dict:
        c, model = self.config, self.model
        ph = self.phases[self._phase_index]
        codec = model.codec
        batch = self._to_device(batch)
        if self.augment is not None:
            gen = torch.Generator(device=self.device).manual_seed(
                (c.seed * 1_000_003 + step * 7919 + self.rank) % 2**63)
            batch = self.augment(batch, gen)
        images = batch["image"]
        if images.shape[-2:] != (codec.input_size, codec.input_size):
            raise ValueError(f"training images are {images.shape[-2]}x{images.shape[-1]} but preset "
                             f"{model.config.name!r} expects {codec.input_size}x{codec.input_size}")
        targets, weights = encode(batch["keypoints"], codec)
        if "center" in batch:
            cmaps = center_map(batch["center"].reshape(-1, 2), codec, images.shape[-2], images.shape[-1])
        else:
            cmaps = model.default_center_maps(images)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            cmaps = cmaps.contiguous(memory_format=torch.channels_last)

        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            beliefs = self._net(images, cmaps)
        per_stage = stage_losses(beliefs, targets, weights)  # (run_stages,), float32
        lam = c.stage_weights or (1.0,) * model.config.num_stages
        loss = sum(lam[t - 1] * per_stage[t - 1] for t in ph.loss_stages)

        logged = per_stage.detach().clone()
        if self.world_size > 1:  # every rank must see the same values to stop together
            dist.all_reduce(logged)
            logged /= self.world_size
        values = logged.cpu().tolist()
        bad = [t + 1 for t, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"non-finite loss at step {step} in stage(s) {', '.join(map(str, bad))} "
                f"(phase {ph.name!r}; per-stage losses {['%.4g' % v for v in values]}); "
                "the last checkpoint on disk was left untouched", step, bad, values)

        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)
        if self.is_main:
            for cb in self.callbacks:
                cb.on_after_backward(self, step)
        if c.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for g in self.optimizer.param_groups for p in g["params"]],
                                           c.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        record = dict(step=step, epoch=None, phase=ph.name, loss=sum(lam[t - 1] * values[t - 1] for t in ph.loss_stages))
        for t in range(1, model.config.num_stages + 1):
            record[f"loss_stage{t}"] = values[t - 1] if t <= len(values) else float("nan")
        record["lr"] = lr
        return record

    # -------------------------------------------------------------------------------- eval
    def evaluate(self, dataset=None, **kwargs) -> pd.DataFrame:
        """Tidy per-stage metrics of the current model on ``dataset`` (default: ``eval_set``)."""
        from .metrics import evaluate

        dataset = dataset if dataset is not None else self.eval_set
        if dataset is None:
            raise ValueError("no dataset to evaluate: pass one or give the Trainer an eval_set")
        c = self.config
        kw = dict(batch_size=c.batch_size, device=self.device, thresholds=c.eval_thresholds,
                  normalize=c.eval_normalize, amp=self.use_amp)
        kw.update(kwargs)
        return evaluate(self.model, dataset, **kw)

    def _run_eval(self, step: int, record: dict) -> None:
        table = self.evaluate()
        self.model.train()
        if self._phase_index is not None:  # re-apply frozen BatchNorm of the current phase
            ph = self.phases[self._phase_index]
            for t in range(1, self.model.config.num_stages + 1):
                for m in self.model.stage_modules(t):
                    m.train(t in ph.train_stages)
        pck = table[(table["metric"] == "pck") & (table["part"] == "mean")]
        for _, row in pck.iterrows():
            record[f"pck@{row['threshold']:g}_stage{int(row['stage'])}"] = row["value"]
        self._evals.append(table.assign(step=step))
        for cb in self.callbacks:
            cb.on_eval(self, step, table)

    # -------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        """Everything needed to resume (tensors, dicts, lists, numbers, strings only)."""
        epoch, pos = divmod(self.step, self.steps_per_epoch)
        return {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().clone().contiguous() for k, v in self.model.state_dict().items()},
            "model_config": self.model.config.to_dict(),
            "train_config": self.config.to_dict(),
            "step": self.step,
            "phase": self.phases[self._phase_index].name if self._phase_index is not None else None,
            "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "data": {"epoch": epoch, "batch_in_epoch": pos, "seed": self.config.seed,
                     "steps_per_epoch": self.steps_per_epoch, "world_size": self.world_size},
            "rng": _rng_state(self.device),
            "history": [dict(r) for r in self._records],
        }

    def save_checkpoint(self, path: str | os.PathLike | None = None) -> str:
        """Atomically write ``state_dict()`` to ``path`` (default ``config.checkpoint``); rank 0
        only. Refuses (TrainingDiverged) to write weights that are not finite."""
        path = os.fspath(path or self.config.checkpoint or "")
        if not path:
            raise ValueError("no checkpoint path: pass one or set TrainConfig.checkpoint")
        if not self.is_main:
            return path
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"weights became non-finite after step {self.step} ({bad[0]} and "
                                   f"{len(bad) - 1} more); not overwriting the checkpoint {path!r}", self.step)
        _atomic_save(self.state_dict(), path)
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, optimiser, scaler, RNG states, step and history from ``path``."""
        path = os.fspath(path)
        ckpt = read_checkpoint(path, map_location=self.device)
        check_compatible(ckpt["model_config"], self.model.config, f"checkpoint {path!r}")
        saved = ckpt["train_config"]
        for key in ("steps", "strategy", "finetune_fraction", "batch_size", "seed"):
            mine = getattr(self.config, key)
            if saved.get(key) != mine:
                raise ValueError(f"checkpoint {path!r} was trained with {key}={saved.get(key)!r}, this run "
                                 f"has {key}={mine!r}; resuming would not continue the same run")
        self.model.load_state_dict(ckpt["model"])
        self.step = int(ckpt["step"])
        self._records = [dict(r) for r in ckpt.get("history", [])]
        self._resume_state = ckpt

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask ``fit`` to stop after the current step (from a callback, e.g. ``TimeLimit``): it
        writes the checkpoint as at the end of a run and returns the history; ``fit(resume=...)``
        continues later. ``stop_reason`` keeps ``reason``. In a distributed run the request of
        rank 0 (the rank that runs callbacks) stops every rank at the same step."""
        self.stop_reason = str(reason)

    def _stop_now(self) -> bool:
        flag = self.stop_reason is not None
        if self.world_size > 1:
            t = torch.tensor([1.0 if flag else 0.0], device=self.device)
            dist.broadcast(t, src=0)
            flag = bool(t.item())
            if flag and self.stop_reason is None:
                self.stop_reason = "stop requested by rank 0"
        return flag

    # -------------------------------------------------------------------------------- fit
    def fit(self, resume: str | os.PathLike | None = None, until: int | None = None) -> pd.DataFrame:
        """Train until ``config.steps`` (or until step ``until``, e.g. to stop half-way) and
        return the history DataFrame. ``resume``: a checkpoint path to continue from.
        """
        c = self.config
        until = c.steps if until is None else int(until)
        if not 1 <= until <= c.steps:
            raise ValueError(f"until must be in 1..{c.steps}, got {until}")
        if resume is not None:
            self.load_checkpoint(resume)
        elif self.step == 0:
            seed_everything(c.seed)
        self.model.to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.model.train()
        state = self._resume_state
        if state is not None:
            self._resume_state = None
            if self.step < c.steps:
                self._enter_phase(self.phase_at(self.step + 1))
                if state["optimizer"] is not None and state.get("phase") == self.phases[self._phase_index].name:
                    self.optimizer.load_state_dict(state["optimizer"])
            if state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"], self.device)

        from tqdm.auto import tqdm

        self.stop_reason = None
        if self.is_main:
            for cb in self.callbacks:
                cb.on_train_start(self)
        bar = tqdm(total=until, initial=self.step, desc=f"train {self.model.config.name}",
                   disable=not (c.progress and self.is_main), dynamic_ncols=True)
        try:
            if self.step < until:
                batches = self._batches(self.step + 1)
                while self.step < until:
                    step = self.step + 1
                    index = self.phase_at(step)
                    if index != self._phase_index:
                        self._enter_phase(index)
                    t0 = time.perf_counter()
                    epoch, batch = next(batches)
                    record = self._train_step(step, batch)  # its loss .tolist() synchronises the device
                    dt = time.perf_counter() - t0
                    record["epoch"] = epoch
                    # global images per second, data loading included
                    record["images_per_s"] = c.batch_size / dt if dt > 0 else float("nan")
                    self.step = step
                    if self.is_main:
                        do_eval = self.eval_set is not None and c.eval_every > 0 and (
                            step % c.eval_every == 0 or step == c.steps)
                        if do_eval:
                            self._run_eval(step, record)
                    self._records.append(record)  # every rank (losses are rank-averaged)
                    if self.is_main:
                        if c.checkpoint and c.checkpoint_every and step % c.checkpoint_every == 0 and step < until:
                            self.save_checkpoint()
                        for cb in self.callbacks:
                            cb.on_step_end(self, step, record)
                    bar.update(1)
                    bar.set_postfix(loss=f"{record['loss']:.3g}", phase=record["phase"], refresh=False)
                    if self._stop_now():
                        break
            if c.checkpoint and self.is_main:
                self.save_checkpoint()
        finally:
            bar.close()
        if self.step >= c.steps:
            self._unfreeze_all()
        if self.is_main:
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.history


def train(model: CPM, train_set, config: TrainConfig | None = None, *, eval_set=None, augment=None,
          callbacks: Sequence[Callback] = (), **overrides) -> pd.DataFrame:
    """One-call training: ``history = train(model, data, steps=300, lr=1e-3)``.

    ``overrides`` are ``TrainConfig`` fields (applied on top of ``config``). Returns the history.
    """
    base = config.to_dict() if config is not None else {}
    base.update(overrides)
    cfg = TrainConfig.from_dict(base)
    return Trainer(model, train_set, cfg, eval_set=eval_set, augment=augment, callbacks=callbacks).fit()
