"""``TrainConfig``: everything about a training run that is not the model (``CPMConfig``), and
the default budgets of each model preset and optimiser.

``optimizer="auto"`` picks the paper's SGD for the ``paper`` preset (lr 8e-5, momentum 0.9,
weight decay 5e-4, ``schedule="step"``: x ``lr_gamma`` = 0.333 every ``lr_step`` steps) and Adam
(lr 1e-3, or the preset's lr in ``PRESET_DEFAULTS``, e.g. 5e-3 for tiny; no weight decay; cosine
decay to 1 %) for the small presets.

The ``paper`` preset also follows the official release's per-layer solver settings (Caffe
``lr_mult`` / ``decay_mult``): stage 1's weights learn at 5x the base lr, every bias at 2x its
layer's weight lr without weight decay, and the loss is Caffe's EuclideanLoss (sum / 2N).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..utils import check_fields
from .loss import LOSS_SCALES
from .phases import STRATEGIES

OPTIMIZERS = ("auto", "adam", "sgd")
SCHEDULES = ("auto", "constant", "cosine", "step")

#: Optimiser defaults; "sgd" is the paper's recipe (official LSP solver), "adam" is for CPU-sized runs.
OPTIMIZER_DEFAULTS = {
    "sgd": dict(lr=8e-5, weight_decay=5e-4, schedule="step"),
    "adam": dict(lr=1e-3, weight_decay=0.0, schedule="cosine"),
}

#: Default budget per model preset (used by ``TrainConfig.for_preset`` and the CLI). "tiny" was
#: tuned on a 2-core CPU (3000 steps: 4 min 08 s for ``cpm-lab train`` on the idle machine):
#: held-out final-stage PCK@0.2 0.915 on ``synthetic`` (standard, visible joints, 2026-11-25;
#: 0.887 over all labelled joints with the three-state flags of 2026-12-03), stage 3 about 34 PCK@0.1
#: points above stage 1 (lr 3e-3 gave 0.89; 2400 steps at 3e-3, 0.88). "small" is an untuned guess.
#: "paper" follows the official solver (batch 16, SGD lr 8e-5, x0.333 decay) at a reduced length,
#: with its loss (Caffe EuclideanLoss) and lr multipliers (stage-1 weights x5, biases x2, no decay).
#: "ablation" (plain CPM, no normalisation; channels_last on a CPU: 1.4x faster): SGD momentum 0.9
#: at lr 1e-3 after a 200-step warm-up, cosine decay, Caffe loss, no weight decay. In exploratory
#: runs with these settings (2026-12-03, synthetic, 3000 steps x 8, 5 seeds, ~5 min a run on one
#: core) stage-6 PCK@0.2 was 0.71-0.72 with intermediate supervision and 0.55-0.58 without;
#: lr 2e-3 with a 60-step warm-up left intermediate stages dead (PCK 0) in 2 of 5 seeds.
PRESET_DEFAULTS: dict[str, dict] = {
    "tiny": dict(steps=3000, batch_size=8, lr=5e-3, cpu_channels_last=True),
    "small": dict(steps=3000, batch_size=16),
    "paper": dict(steps=100_000, batch_size=16, optimizer="sgd", lr_step=33_000, loss_scale="caffe",
                  stage1_lr_mult=5.0, bias_lr_mult=2.0, bias_decay=False),
    "ablation": dict(steps=3000, batch_size=8, optimizer="sgd", lr=1e-3, weight_decay=0.0, schedule="cosine",
                     warmup_steps=200, loss_scale="caffe", cpu_channels_last=True),
}


def default_optimizer(preset: str) -> str:
    """The optimiser ``optimizer="auto"`` means for a model of this preset: the preset's own
    (``PRESET_DEFAULTS``; "sgd" for "paper" and "ablation"), else "adam"."""
    return PRESET_DEFAULTS.get(preset, {}).get("optimizer", "adam")


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
        loss_scale: normalisation of each stage's summed squared error (``loss.stage_losses``):
            "mean" = / N (N = batch size), "caffe" = / 2N (the official Caffe EuclideanLoss).
        finetune_fraction: share of ``steps`` given to end-to-end fine-tuning in
            ``stagewise_finetune``.
        optimizer: "auto" (sgd for the paper preset, adam otherwise), "adam" or "sgd".
        lr, weight_decay, schedule: None/"auto" = the optimiser's default (``OPTIMIZER_DEFAULTS``);
            for Adam, a preset's own lr in ``PRESET_DEFAULTS`` (tiny: 5e-3) takes precedence.
        momentum: SGD momentum (paper: 0.9).
        stage1_lr_mult: learning-rate multiplier of the weights of stage 1's modules
            (``CPM.stage_modules(1)``); other weights learn at the scheduled lr (paper: 5).
        bias_lr_mult: a bias's lr is its layer's weight lr times this (paper: 2, so stage-1
            biases learn at 10x). "Bias" means every parameter named ``bias`` (BatchNorm's too).
        bias_decay: apply ``weight_decay`` to biases too (paper: False).
            The multipliers become optimiser param groups, each with an ``lr_mult``; with all
            multipliers 1 and ``bias_decay=True`` there is one group, as without them.
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
        checkpoint: path of the checkpoint file (None = no checkpoints). It is written at the end of
            ``fit`` and whenever a fit stops early (a signal, a data error; see ``Trainer.fit``).
        checkpoint_every: also write it every this many steps (0 = not by steps).
        checkpoint_minutes: also write it when this many minutes of wall-clock time have passed
            since the last one (0 = not by time); on by default so an interrupted long run keeps
            its work.
        progress: show a tqdm progress bar.
    """

    steps: int = 600
    batch_size: int = 16
    strategy: str = "end_to_end"
    intermediate_supervision: bool = True
    stage_weights: tuple[float, ...] | None = None
    loss_scale: str = "mean"
    finetune_fraction: float = 0.5
    optimizer: str = "auto"
    lr: float | None = None
    momentum: float = 0.9
    stage1_lr_mult: float = 1.0
    bias_lr_mult: float = 1.0
    bias_decay: bool = True
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
    checkpoint_minutes: float = 10.0
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
        if self.loss_scale not in LOSS_SCALES:
            raise ValueError(f"unknown loss_scale {self.loss_scale!r}; choose one of {LOSS_SCALES}")
        for name in ("stage1_lr_mult", "bias_lr_mult"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.amp_dtype not in ("auto", "bfloat16", "float16"):
            raise ValueError(f"amp_dtype must be 'auto', 'bfloat16' or 'float16', got {self.amp_dtype!r}")
        if not 0.0 <= self.finetune_fraction < 1.0:
            raise ValueError(f"finetune_fraction must be in [0, 1), got {self.finetune_fraction}")
        if self.lr is not None and self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or None, got {self.grad_clip}")
        for name in ("eval_every", "checkpoint_every", "checkpoint_minutes", "warmup_steps", "num_workers"):
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
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in check_fields(cls, d).items()}
        return cls(**d)
