"""Training strategies as phases of one run (paper Fig. 6b), freezing, and the learning rate.

All four strategies spend the SAME total ``steps``:

* ``end_to_end``: all stages, loss on every stage, ``steps`` steps.
* ``no_intermediate``: all stages, loss on the final stage only, ``steps`` steps.
* ``stagewise``: T phases of ``steps // T`` steps (the first ``steps % T`` phases get one extra).
  In phase t the model is stages 1..t; only the modules of stage t (``CPM.stage_modules(t)``; the
  shared trunk belongs to stage 2) are trained, everything of stages < t is frozen
  (``requires_grad=False``, not in the optimiser, BatchNorm in eval mode), stages > t are not run,
  and the loss is on stage t only (the final stage of the model being trained).
* ``stagewise_finetune``: the first ``round(steps * (1 - finetune_fraction))`` steps are spent as
  in ``stagewise`` (split evenly over the stages), the rest end-to-end with loss on every stage.

Each phase gets a fresh optimiser and its own learning-rate schedule over its own steps; the
learning rate is a pure function of the step (``phase_lr``), so restoring the step restores it.
``param_groups`` splits a phase's trainable parameters by learning-rate multiplier and weight
decay (the official release's per-layer ``lr_mult`` / ``decay_mult``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn as nn

STRATEGIES = ("end_to_end", "no_intermediate", "stagewise", "stagewise_finetune")
#: Display names of the strategies, in the order the paper discusses them.
STRATEGY_LABELS = {
    "end_to_end": "end-to-end, loss on every stage",
    "stagewise_finetune": "stage-wise, then end-to-end fine-tune",
    "stagewise": "stage-wise",
    "no_intermediate": "end-to-end, loss on final stage only",
}


@dataclass(frozen=True)
class Phase:
    """A stretch of training with fixed trainable stages, run depth and supervision.

    ``start`` is the number of steps done before the phase; stages are 1-based. The loss is on
    every stage run (``intermediate_supervision``) or on the last one only.
    """

    name: str
    start: int
    steps: int
    run_stages: int
    train_stages: tuple[int, ...]
    intermediate_supervision: bool

    @property
    def end(self) -> int:
        return self.start + self.steps

    @property
    def loss_stages(self) -> tuple[int, ...]:
        """The 1-based stages whose loss enters the objective."""
        return tuple(range(1, self.run_stages + 1)) if self.intermediate_supervision else (self.run_stages,)


def plan_phases(strategy: str, num_stages: int, steps: int, finetune_fraction: float = 0.5,
                intermediate_supervision: bool = True) -> list[Phase]:
    """Split ``steps`` into the phases of ``strategy`` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    t_all = tuple(range(1, num_stages + 1))
    if strategy in ("end_to_end", "no_intermediate"):
        sup = intermediate_supervision and strategy == "end_to_end"
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
        phases.append(Phase(f"stage{t}", start, n, t, (t,), False))
        start += n
    if strategy == "stagewise_finetune":
        phases.append(Phase("finetune", start, steps - start, num_stages, t_all, intermediate_supervision))
    return phases


def freeze_for(model, phase: Phase) -> list[nn.Parameter]:
    """Make ``phase.train_stages`` trainable and freeze every other stage of ``model`` (frozen
    modules go to eval mode so BatchNorm keeps its running statistics; stale gradients are
    dropped). Returns the trainable parameters, each once, in stage order."""
    trainable: list[nn.Parameter] = []
    seen = set()
    for t in range(1, model.config.num_stages + 1):
        train = t in phase.train_stages
        for m in model.stage_modules(t):
            m.train(train)
            for p in m.parameters():
                p.grad = None
                p.requires_grad_(train)
                if train and id(p) not in seen:
                    seen.add(id(p))
                    trainable.append(p)
    return trainable


def param_groups(model, params: list[nn.Parameter], weight_decay: float, *, stage1_lr_mult: float = 1.0,
                 bias_lr_mult: float = 1.0, bias_decay: bool = True) -> list[dict]:
    """Optimiser param groups of ``params`` (a phase's trainable parameters of ``model``).

    A weight of stage 1 (``model.stage_modules(1)``) has lr multiplier ``stage1_lr_mult``, any
    other weight 1; a bias (a parameter named ``bias``) has its layer's multiplier times
    ``bias_lr_mult`` and weight decay 0 unless ``bias_decay``. Returns one dict per distinct
    (multiplier, decay), in order of first appearance, with keys ``params``, ``lr_mult`` and
    ``weight_decay``; the trainer sets each group's lr to the scheduled lr x ``lr_mult``.
    """
    stage1 = {id(p) for m in model.stage_modules(1) for p in m.parameters()}
    biases = {id(p) for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] == "bias"}
    groups: dict[tuple[float, float], dict] = {}
    for p in params:
        bias = id(p) in biases
        mult = (stage1_lr_mult if id(p) in stage1 else 1.0) * (bias_lr_mult if bias else 1.0)
        decay = 0.0 if bias and not bias_decay else weight_decay
        group = groups.setdefault((mult, decay), {"params": [], "lr_mult": mult, "weight_decay": decay})
        group["params"].append(p)
    return list(groups.values())


def set_stage_modes(model, phase: Phase) -> None:
    """Train mode for the stages ``phase`` trains, eval mode for the frozen ones (after an
    evaluation put the whole model in one mode)."""
    model.train()
    for t in range(1, model.config.num_stages + 1):
        for m in model.stage_modules(t):
            m.train(t in phase.train_stages)


def phase_lr(taken: int, steps: int, base_lr: float, schedule: str, *, warmup_steps: int = 0,
             lr_step: int | None = None, lr_gamma: float = 0.333, min_lr_ratio: float = 0.01) -> float:
    """Learning rate after ``taken`` steps of a phase of ``steps`` steps.

    Linear warm-up over ``warmup_steps``, then ``schedule``: "constant"; "step" (x ``lr_gamma``
    every ``lr_step`` steps, default a third of the phase); "cosine" (from ``base_lr`` down to
    ``base_lr * min_lr_ratio`` at the phase's last step).
    """
    if warmup_steps and taken < warmup_steps:
        return base_lr * (taken + 1) / warmup_steps
    s, n = taken - warmup_steps, max(1, steps - warmup_steps)
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        period = lr_step or max(1, steps // 3)
        return base_lr * lr_gamma ** (s // period)
    lo = base_lr * min_lr_ratio
    return lo + 0.5 * (base_lr - lo) * (1 + math.cos(math.pi * s / max(1, n - 1)))
