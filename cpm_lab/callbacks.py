"""The trainer's hook points. Diagnostics (gradient tracking, live plots) subclass ``Callback``.

The trainer calls, in order, for every optimisation step:
``on_after_backward(trainer, step)`` once gradients of the step exist (before clipping and the
optimiser update; with AMP, gradients are already unscaled), then ``on_step_end(trainer, step,
record)`` with the history row of that step (a dict: step, epoch, loss, loss_stage1.., lr,
images_per_s, ...). ``on_train_start(trainer)`` and ``on_train_end(trainer)`` bracket ``fit``;
``on_eval(trainer, step, table)`` receives each periodic evaluation (a tidy DataFrame).
``step`` counts optimiser steps from 1. ``trainer.model`` is the bare model (unwrapped from DDP).
"""
from __future__ import annotations


class Callback:
    """Base class with no-op hooks; override the ones you need."""

    def on_train_start(self, trainer) -> None:
        pass

    def on_after_backward(self, trainer, step: int) -> None:
        pass

    def on_step_end(self, trainer, step: int, record: dict) -> None:
        pass

    def on_eval(self, trainer, step: int, table) -> None:
        pass

    def on_train_end(self, trainer) -> None:
        pass
