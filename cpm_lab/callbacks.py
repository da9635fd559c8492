"""The trainer's hook points. Diagnostics (gradient tracking, live plots) subclass ``Callback``.

The trainer calls, in order, for every optimisation step:
``on_after_backward(trainer, step)`` once gradients of the step exist (before clipping and the
optimiser update; with AMP, gradients are already unscaled), then ``on_step_end(trainer, step,
record)`` with the history row of that step (a dict: step, epoch, loss, loss_stage1.., lr,
images_per_s, ...). ``on_train_start(trainer)`` and ``on_train_end(trainer)`` bracket ``fit``;
``on_eval(trainer, step, table)`` receives each periodic evaluation (a tidy DataFrame).
``step`` counts optimiser steps from 1. ``trainer.model`` is the bare model (unwrapped from DDP).
A callback may call ``trainer.request_stop(reason)`` to end ``fit`` after the current step.
"""
from __future__ import annotations

import time


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


class TimeLimit(Callback):
    """Stop training once ``seconds`` of wall-clock time have passed since ``fit`` started (the
    step that crosses the limit finishes; the checkpoint is written as at the end of a run, so
    ``fit(resume=...)`` can continue). For budgets such as "whatever fits in a minute" in a
    notebook; the learning-rate schedule is still the one planned for ``config.steps``, so a run
    cut short has not finished its decay."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"seconds must be > 0, got {seconds!r}")
        self.seconds = float(seconds)
        self.stopped_at: int | None = None

    def on_train_start(self, trainer) -> None:
        self._end = time.perf_counter() + self.seconds
        self.stopped_at = None

    def on_step_end(self, trainer, step: int, record: dict) -> None:
        if time.perf_counter() >= self._end and step < trainer.config.steps:
            self.stopped_at = step
            trainer.request_stop(f"time limit of {self.seconds:g} s reached at step {step}")
