"""Training a CPM: the loss, the four training strategies, the loop, checkpoints, DDP.

Two lines from a notebook::

    trainer = Trainer(model, train_set, TrainConfig(steps=300))
    history = trainer.fit()          # a pandas DataFrame, one row per optimiser step

One concern per module:

* ``config``: ``TrainConfig`` and the default budgets per preset and optimiser;
* ``loss``: the CPM objective ``cpm_loss`` (paper Sec. 3.3), the function training calls;
* ``phases``: the strategies of Fig. 6b as phases of one run, freezing, the learning rate;
* ``checkpoint``: atomic checkpoints that load with ``weights_only=True``, their content hash, RNG
  state, and what a resumed run may change (``resume_diff``);
* ``interrupt``: stopping a fit without losing it (signals, data errors, divergence);
* ``distributed``: torchrun setup, the resumable data order, rank averaging;
* ``trainer``: the ``Trainer`` that ties them together.

``load_model`` lives in ``cpm_lab.inference`` (the door from checkpoints and images to beliefs)
and is re-exported here.
"""
from ..inference import load_model
from .checkpoint import (
    CHECKPOINT_FORMAT,
    RESUME_FREE,
    check_compatible,
    check_resumable,
    export_weights,
    read_checkpoint,
    resume_diff,
    weights_digest,
)
from .config import OPTIMIZER_DEFAULTS, OPTIMIZERS, PRESET_DEFAULTS, SCHEDULES, TrainConfig
from .distributed import ResumableSampler, setup_distributed
from .interrupt import TrainingDiverged, TrainingInterrupted
from .loss import cpm_loss, stage_losses
from .phases import STRATEGIES, STRATEGY_LABELS, Phase, plan_phases
from .trainer import Trainer

__all__ = ["CHECKPOINT_FORMAT", "OPTIMIZERS", "OPTIMIZER_DEFAULTS", "PRESET_DEFAULTS", "Phase", "RESUME_FREE",
           "ResumableSampler", "SCHEDULES", "STRATEGIES", "STRATEGY_LABELS", "TrainConfig", "Trainer",
           "TrainingDiverged", "TrainingInterrupted", "check_compatible", "check_resumable", "cpm_loss",
           "export_weights", "load_model", "plan_phases", "read_checkpoint", "resume_diff", "setup_distributed",
           "stage_losses", "weights_digest"]
