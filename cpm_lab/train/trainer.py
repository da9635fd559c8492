"""The training loop.

``Trainer._train_step`` reads top to bottom: move the batch to the device, optional on-device
augmentation, encode targets ON THE DEVICE (``targets.encode`` / ``targets.center_map``), forward
the stages of the current phase under autocast, the CPM objective (``loss.cpm_loss``), backward
(scaled for fp16), unscale, callbacks, clipping, optimiser step. The phases of the strategy, the
freezing and the learning rate come from ``phases``; checkpoints from ``checkpoint``; the data
order and DDP from ``distributed``; stopping without losing progress from ``interrupt``.
"""
from __future__ import annotations

import math
import os
import time
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from ..callbacks import Callback
from ..models.cpm import CPM
from ..targets import encode
from ..utils import resolve_device, seed_everything
from .checkpoint import (
    CHECKPOINT_FORMAT,
    check_resumable,
    read_checkpoint,
    resume_diff,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import OPTIMIZER_DEFAULTS, PRESET_DEFAULTS, TrainConfig, default_optimizer
from .distributed import ResumableSampler, broadcast_flag, dist_info, mean_over_ranks
from .interrupt import StopOnSignals, TrainingDiverged, TrainingInterrupted, ignore_stop_signals, keep_progress, on_disk
from .loss import cpm_loss
from .phases import freeze_for, param_groups, phase_lr, plan_phases, set_stage_modes


class Trainer:
    """Trains a CPM on a pose dataset; see ``cpm_lab.train`` for the loss and strategies.

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
        self.opt_name = c.optimizer if c.optimizer != "auto" else default_optimizer(mc.name)
        defaults = OPTIMIZER_DEFAULTS[self.opt_name]
        preset_lr = PRESET_DEFAULTS.get(mc.name, {}).get("lr") if self.opt_name == "adam" else None
        self.base_lr = c.lr if c.lr is not None else (preset_lr or defaults["lr"])
        self.weight_decay = c.weight_decay if c.weight_decay is not None else defaults["weight_decay"]
        self.schedule = c.schedule if c.schedule != "auto" else defaults["schedule"]
        supervise_all = c.intermediate_supervision and c.strategy != "no_intermediate"
        self.phases = plan_phases(c.strategy, mc.num_stages, c.steps, c.finetune_fraction, supervise_all)
        self.rank, self.world_size = dist_info()
        if c.batch_size % self.world_size:
            raise ValueError(f"batch_size {c.batch_size} (global) must be divisible by the number of "
                             f"processes ({self.world_size})")
        self.local_batch = c.batch_size // self.world_size
        #: why ``fit`` stopped before its target step (set by ``request_stop``), else None
        self.stop_reason: str | None = None
        if len(train_set) < c.batch_size:
            raise ValueError(f"the training set has {len(train_set)} samples, fewer than batch_size={c.batch_size}")
        self.steps_per_epoch = len(train_set) // c.batch_size
        if c.checkpoint and os.path.isdir(c.checkpoint):
            raise IsADirectoryError(f"checkpoint path {c.checkpoint!r} is a directory; give a file path")
        self._setup_device()
        self.step = 0
        #: settings a resume changed, {field: (old, new)} (``checkpoint.resume_diff``)
        self.resume_changes: dict[str, tuple] = {}
        #: after ``fit`` stopped early: the step its checkpoint holds, to resume from (else None)
        self.resumable_step: int | None = None
        self._saved_step: int | None = None  # the step the checkpoint file holds, when this trainer knows it
        self._last_save = time.monotonic()
        self.optimizer: torch.optim.Optimizer | None = None
        self._phase_index: int | None = None
        self._net: nn.Module | None = None
        self._records: list[dict] = []
        self._evals: list[pd.DataFrame] = []
        self._resume_state: dict | None = None

    def _setup_device(self) -> None:
        """Device, mixed precision and memory format (see ``TrainConfig``)."""
        c, mc = self.config, self.model.config
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
        return phase_lr(step - ph.start - 1, ph.steps, self.base_lr, self.schedule, warmup_steps=c.warmup_steps,
                        lr_step=c.lr_step, lr_gamma=c.lr_gamma, min_lr_ratio=c.min_lr_ratio)

    # -------------------------------------------------------------------------------- phases
    def _enter_phase(self, index: int) -> None:
        """Freeze/unfreeze stages, build the phase's optimiser and (if distributed) DDP wrapper.

        The optimiser's param groups (``phases.param_groups``) hold only the phase's trainable
        parameters, split by the config's lr multipliers and bias decay; each group's lr is the
        scheduled lr x its ``lr_mult``. DDP is built per phase, after freezing, so its gradient
        hooks sit on exactly the parameters the phase trains."""
        c = self.config
        trainable = freeze_for(self.model, self.phases[index])
        groups = param_groups(self.model, trainable, self.weight_decay, stage1_lr_mult=c.stage1_lr_mult,
                              bias_lr_mult=c.bias_lr_mult, bias_decay=c.bias_decay)
        if self.opt_name == "sgd":
            self.optimizer = torch.optim.SGD(groups, lr=self.base_lr, momentum=c.momentum,
                                             weight_decay=self.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(groups, lr=self.base_lr, weight_decay=self.weight_decay)
        net: nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            net = nn.parallel.DistributedDataParallel(net, device_ids=ids)
        self._net = net
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
                          persistent_workers=False, generator=torch.Generator().manual_seed(c.seed),
                          worker_init_fn=ignore_stop_signals if c.num_workers else None)

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
    def _inputs(self, step: int, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images, centre maps, targets, target weights) of one batch, on the device."""
        from ..inference import center_maps

        c, codec = self.config, self.model.codec
        batch = self._to_device(batch)
        if self.augment is not None:
            gen = torch.Generator(device=self.device).manual_seed(
                (c.seed * 1_000_003 + step * 7919 + self.rank) % 2**63)
            batch = self.augment(batch, gen)
        images = batch["image"]
        n, _, h, w = images.shape
        if (h, w) != (codec.input_size, codec.input_size):
            raise ValueError(f"training images are {h}x{w} but preset {self.model.config.name!r} expects "
                             f"{codec.input_size}x{codec.input_size}")
        targets, weights = encode(batch["keypoints"], codec)
        cmaps = center_maps(codec, batch.get("center"), n, h, w, device=images.device)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
            cmaps = cmaps.contiguous(memory_format=torch.channels_last)
        return images, cmaps, targets, weights

    def _train_step(self, step: int, batch: dict) -> dict:
        c, mc = self.config, self.model.config
        ph = self.phases[self._phase_index]
        images, cmaps, targets, weights = self._inputs(step, batch)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            beliefs = self._net(images, cmaps, num_stages=ph.run_stages)
        lam = c.stage_weights or (1.0,) * mc.num_stages
        loss, per_stage = cpm_loss(beliefs, targets, weights, lam[:ph.run_stages], ph.intermediate_supervision,
                                   scale=c.loss_scale)

        # every rank must see the same values to stop together
        logged = mean_over_ranks(torch.cat([loss.detach().reshape(1), per_stage.detach()])).cpu().tolist()
        values = logged[1:]
        bad = [t + 1 for t, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise TrainingDiverged(
                f"non-finite loss at step {step} in stage(s) {', '.join(map(str, bad))} "
                f"(phase {ph.name!r}; per-stage losses {['%.4g' % v for v in values]}); {on_disk(self)}",
                step, bad, values)

        lr = self.lr_at(step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr * g["lr_mult"]
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
        record = dict(step=step, epoch=None, phase=ph.name, loss=logged[0])
        for t in range(1, mc.num_stages + 1):
            record[f"loss_stage{t}"] = values[t - 1] if t <= len(values) else float("nan")
        record["lr"] = lr
        return record

    # -------------------------------------------------------------------------------- eval
    def evaluate(self, dataset=None, **kwargs) -> pd.DataFrame:
        """Tidy per-stage metrics of the current model on ``dataset`` (default: ``eval_set``),
        through ``inference.evaluate``."""
        from ..inference import evaluate

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
        if self._phase_index is not None:  # re-apply the frozen stages of the current phase
            set_stage_modes(self.model, self.phases[self._phase_index])
        else:
            self.model.train()
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
            "rng": rng_state(self.device),
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
                                   f"{len(bad) - 1} more); not overwriting the checkpoint: {on_disk(self)}",
                                   self.step)
        save_checkpoint(self.state_dict(), path)
        if os.path.abspath(path) == os.path.abspath(self.config.checkpoint or ""):
            self._saved_step, self._last_save = self.step, time.monotonic()
        return path

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore model, optimiser, scaler, RNG states, step and history from ``path``."""
        path = os.fspath(path)
        ckpt = read_checkpoint(path, map_location=self.device)
        check_resumable(ckpt, path)
        changes, refused = resume_diff(ckpt["model_config"], ckpt["train_config"], self.model.config, self.config)
        if refused:
            raise ValueError(f"checkpoint {path!r} comes from a different run: {'; '.join(refused)}; resuming "
                             f"would not continue the same run")
        self.resume_changes = changes
        self.model.load_state_dict(ckpt["model"])
        self.step = int(ckpt["step"])
        if os.path.abspath(path) == os.path.abspath(self.config.checkpoint or ""):
            self._saved_step = self.step
        self._records = [dict(r) for r in ckpt.get("history", [])]
        self._resume_state = ckpt

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask ``fit`` to stop after the current step (from a callback, e.g. ``TimeLimit``): it
        writes the checkpoint as at the end of a run and returns the history; ``fit(resume=...)``
        continues later. ``stop_reason`` keeps ``reason``. In a distributed run the request of
        rank 0 (the rank that runs callbacks) stops every rank at the same step."""
        self.stop_reason = str(reason)

    def _stop_now(self) -> bool:
        flag = broadcast_flag(self.stop_reason is not None, self.device)
        if flag and self.stop_reason is None:
            self.stop_reason = "stop requested by rank 0"
        return flag

    # -------------------------------------------------------------------------------- fit
    def fit(self, resume: str | os.PathLike | None = None, until: int | None = None) -> pd.DataFrame:
        """Train until ``config.steps`` (or until step ``until``, e.g. to stop half-way) and
        return the history DataFrame. ``resume``: a checkpoint path to continue from.

        With ``config.checkpoint`` set, the checkpoint is written at the end, every
        ``checkpoint_every`` steps, every ``checkpoint_minutes`` minutes and whenever the fit stops
        early: SIGINT/SIGTERM end it after the current step (then ``TrainingInterrupted`` says
        what was kept), and an error while reading data keeps the last completed step (the error
        is re-raised with a note saying so). ``resumable_step`` is then the step to resume from.
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
        self._restore_state()

        from tqdm.auto import tqdm

        self.stop_reason, self.resumable_step, self._last_save = None, None, time.monotonic()
        if self.is_main:
            for cb in self.callbacks:
                cb.on_train_start(self)
        bar = tqdm(total=until, initial=self.step, desc=f"train {self.model.config.name}",
                   disable=not (c.progress and self.is_main), dynamic_ncols=True)
        with StopOnSignals(self) as signals:
            try:
                if self.step < until:
                    self._loop(until, bar)
                if c.checkpoint and self.is_main:
                    self.save_checkpoint()
            except KeyboardInterrupt as exc:
                if isinstance(exc, TrainingInterrupted):
                    raise
                name = signals.name or "KeyboardInterrupt"
                raise TrainingInterrupted(f"{name} received again: stopped at once during step {self.step + 1}, "
                                          f"saving nothing; {on_disk(self)}", name, self.step, False,
                                          signals.received or 2) from None
            finally:
                bar.close()
        if self.step >= c.steps:
            self._unfreeze_all()
        if self.is_main:
            for cb in self.callbacks:
                cb.on_train_end(self)
        if signals.received is not None:
            saved = bool(c.checkpoint) and self._saved_step == self.step
            self.resumable_step = self.step if saved else None
            kept = f"saved the checkpoint {c.checkpoint} at step {self.step}" if saved else on_disk(self)
            raise TrainingInterrupted(f"{signals.name} received: stopped after step {self.step} of {c.steps}; {kept}",
                                      signals.name, self.step, saved, signals.received)
        return self.history

    def _restore_state(self) -> None:
        """After ``load_checkpoint``: the phase, optimiser, scaler and RNG states of the checkpoint."""
        state = self._resume_state
        if state is None:
            return
        self._resume_state = None
        if self.step < self.config.steps:
            self._enter_phase(self.phase_at(self.step + 1))
            if state["optimizer"] is not None and state.get("phase") == self.phases[self._phase_index].name:
                mults = [g["lr_mult"] for g in self.optimizer.param_groups]
                self.optimizer.load_state_dict(state["optimizer"])
                for g, mult in zip(self.optimizer.param_groups, mults):  # the config's, also for old checkpoints
                    g["lr_mult"] = mult
        if state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"], self.device)

    def _loop(self, until: int, bar) -> None:
        """Optimiser steps ``self.step + 1 .. until``, with evaluations, checkpoints and callbacks."""
        c = self.config
        batches = self._batches(self.step + 1)
        while self.step < until:
            step = self.step + 1
            index = self.phase_at(step)
            if index != self._phase_index:
                self._enter_phase(index)
            t0 = time.perf_counter()
            try:
                epoch, batch = next(batches)
            except Exception as exc:
                if self.stop_reason is not None:  # e.g. a SIGTERM sent to the workers too: stop as asked
                    break
                keep_progress(self, exc)
                raise
            record = self._train_step(step, batch)  # its loss .tolist() synchronises the device
            dt = time.perf_counter() - t0
            record["epoch"] = epoch
            # global images per second, data loading included
            record["images_per_s"] = c.batch_size / dt if dt > 0 else float("nan")
            self.step = step
            if self.is_main and self.eval_set is not None and c.eval_every > 0 and (
                    step % c.eval_every == 0 or step == c.steps):
                self._run_eval(step, record)
            self._records.append(record)  # every rank (losses are rank-averaged)
            if self.is_main:
                due = (c.checkpoint_every and step % c.checkpoint_every == 0) or (
                    c.checkpoint_minutes and time.monotonic() - self._last_save >= 60 * c.checkpoint_minutes)
                if c.checkpoint and due and step < until:
                    self.save_checkpoint()
                for cb in self.callbacks:
                    cb.on_step_end(self, step, record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3g}", phase=record["phase"], refresh=False)
            if self._stop_now():
                break
