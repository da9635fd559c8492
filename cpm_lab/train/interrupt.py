"""Stopping a fit without losing it: signals, data errors, divergence.

SIGINT (Ctrl-C) and SIGTERM become a stop request. ``StopOnSignals(trainer)`` is the one
mechanism: while ``Trainer.fit`` runs (in the main thread),
the first SIGINT or SIGTERM asks the trainer to stop once the current step is complete
(``Trainer.request_stop``), so the checkpoint is written at a completed step and resuming it
matches a straight run bit for bit; ``fit`` then raises ``TrainingInterrupted`` saying what was
kept. A second signal stops at once (``KeyboardInterrupt``) without writing anything; the last
checkpoint on disk is untouched. DataLoader workers ignore SIGINT (``ignore_stop_signals``), so a
Ctrl-C that reaches the whole process group is handled by the trainer alone (SIGTERM still ends
them: the DataLoader uses it to stop a worker that does not exit).

An error while reading data leaves the trainer at a completed step: ``keep_progress`` writes its
checkpoint and notes on the error what was kept. A non-finite loss raises ``TrainingDiverged``,
whose message says what the checkpoint file holds (``on_disk``), never more.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Sequence

from ..utils import add_note

#: The signals that stop a fit cleanly.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingDiverged(RuntimeError):
    """Raised when a loss (or, before a checkpoint is written, a weight) becomes non-finite.

    Attributes: ``step`` (1-based optimiser step), ``stages`` (1-based stages with a non-finite
    loss; empty when weights went bad), ``losses`` (the per-stage values as floats).
    """

    def __init__(self, message: str, step: int, stages: Sequence[int] = (), losses: Sequence[float] = ()):
        super().__init__(message)
        self.step, self.stages, self.losses = step, tuple(stages), tuple(losses)


class TrainingInterrupted(KeyboardInterrupt):
    """``fit`` was stopped by a signal. Attributes: ``signal_name`` ("SIGINT", "SIGTERM"), ``step``
    (the last completed step), ``saved`` (whether a checkpoint of that step was written) and
    ``exit_status`` (128 + the signal number, the shell's convention)."""

    def __init__(self, message: str, signal_name: str, step: int, saved: bool, signum: int):
        super().__init__(message)
        self.signal_name, self.step, self.saved = signal_name, step, saved
        self.exit_status = 128 + int(signum)


class StopOnSignals:
    """Context manager: SIGINT/SIGTERM ask ``trainer`` to stop after its current step (see the module
    docstring). ``received`` is the first signal's number (None when none came). Outside the main
    thread, where Python cannot handle signals, it does nothing."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            raise KeyboardInterrupt(f"{signal.Signals(signum).name} received again")
        self.received = signum
        self.trainer.request_stop(f"{signal.Signals(signum).name} received")
        if self.trainer.is_main:
            print(f"\n{signal.Signals(signum).name}: finishing step {self.trainer.step + 1}, then saving a "
                  f"checkpoint (send it again to stop at once without saving)", file=sys.stderr, flush=True)

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""


def ignore_stop_signals(worker_id: int = 0) -> None:
    """DataLoader ``worker_init_fn``: the worker ignores SIGINT (its trainer decides when to stop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def on_disk(trainer) -> str:
    """What ``trainer``'s checkpoint file holds, for messages after a failure."""
    path = trainer.config.checkpoint
    if not path:
        return "no checkpoint path is set, so nothing was saved"
    if trainer._saved_step is not None:
        return f"the checkpoint {path} (step {trainer._saved_step}) was left untouched"
    if os.path.isfile(path):
        return f"{path}, from before this fit, was left untouched"
    return f"no checkpoint has been written to {path}"


def keep_progress(trainer, exc: BaseException) -> None:
    """After an error while reading data (the trainer is still at its last completed step): write
    the checkpoint of that step and note on ``exc`` what was kept (``trainer.resumable_step``)."""
    c = trainer.config
    if not trainer.is_main or (trainer.step == 0 and trainer._saved_step is None):
        return
    if c.checkpoint and trainer._saved_step != trainer.step:
        try:
            trainer.save_checkpoint()
        except Exception as failed:  # noqa: BLE001 - the data error is the one to report
            add_note(exc, f"saving the progress failed too ({failed}); {on_disk(trainer)}")
            return
    if c.checkpoint:
        trainer.resumable_step = trainer.step
        add_note(exc, f"progress kept: {c.checkpoint} holds step {trainer.step} of {c.steps}")
    else:
        add_note(exc, on_disk(trainer))
