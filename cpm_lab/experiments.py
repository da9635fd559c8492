"""Ablations in one command: the paper's experiments (Wei et al., CVPR 2016), reproducible anywhere.

::

    from cpm_lab.experiments import run_ablation
    result = run_ablation("runs/ablation", quick=True)     # ~1-2 min on a laptop CPU
    result.summary                                           # final-stage PCK, mean +- std over seeds

or headless: ``cpm-lab ablate --out runs/ablation [--quick]``.

Two experiments, every run with the SAME number of optimiser steps and batch size:

* ``"strategies"`` (paper Fig. 6b, and Fig. 5 from its gradients): the four training strategies
  of ``cpm_lab.train`` (end-to-end with intermediate supervision, end-to-end with a loss on the
  final stage only, stage-wise, stage-wise + end-to-end fine-tuning) on a CPM with
  ``strategy_stages`` stages (default 3: the paper compares the strategies on 3-stage CPMs).
* ``"stages"`` (paper Fig. 6c): end-to-end training with intermediate supervision of CPMs with
  1, 2, ..., 6 stages.

Each is repeated for several seeds (the seed sets the initial weights and the training data).
The end-to-end run with ``strategy_stages`` stages belongs to both experiments; it is trained
once (its directory is named after the "strategies" experiment) and its rows appear under both
experiment names in ``pck.csv``.

What is measured
----------------
* After training, every stage of the final model is evaluated on a held-out split
  (``make_dataset(data, split="test", seed=eval_seed)``: for synthetic data a different
  generator seed from every training split) at PCK thresholds ``THRESHOLDS`` (torso
  normalised), plus AUC and EPE, per part and pooled (``part == "mean"``).
* During training a ``cpm_lab.diagnostics.GradientTracker`` records the gradient L2 norm of every
  conv layer and of every stage, and histograms of per-weight gradient magnitudes at three layers
  of different depth (first conv of stage 1, a conv of the middle stage, last conv of the last
  stage), at step 1 and every ``grad_every`` steps.

Files
-----
``out_dir/pck.csv``, ``gradients.csv``, ``histograms.csv``, ``runs.csv``, ``summary.csv``
(tidy; columns in ``AblationResult``), ``summary.md`` (the tables as text), ``MANIFEST.json``
(command, date, versions, git commit, machine, wall time), and the figures ``fig6b_strategies.png``,
``fig6c_stages.png``, ``fig5_gradient_histograms.png``, ``gradient_norms.png``.

Each run lives in ``runs_dir/<experiment>-<strategy>-s<stages>-seed<k>/`` (default
``runs_dir = out_dir/runs``) with ``config.json``, ``history.csv``, ``pck.csv``,
``gradients.csv``, ``histograms.csv``, ``checkpoint.pt`` and, written LAST, ``result.json``.

Resume: a run whose ``result.json`` exists is never trained again (its files are read back; if it
was made with different settings, ``run_ablation`` stops with an error naming the setting rather
than mixing results). A run that was interrupted restarts from its last checkpoint (written every
``checkpoint_every`` steps together with the gradient records so far); if that checkpoint is
missing, inconsistent or from other settings, the run restarts from scratch. Every file is written
atomically (temporary file in the same folder, then ``os.replace``). The device is not part of a
run's identity: a finished run is reused whichever device is asked for now.

Parallel runs: ``jobs > 1`` trains that many runs at once in separate processes (each with
``threads`` torch threads). On a CPU, small CPMs use two cores better as two single-threaded
runs than as one two-threaded run. Results do not depend on ``jobs``, except for floating-point
summation order.
"""
from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Sequence

from ._argtypes import positive_float, positive_int
from .callbacks import Callback

if TYPE_CHECKING:  # pandas is imported lazily so that ``cpm-lab --help`` stays fast
    import pandas as pd

EXPERIMENTS = ("strategies", "stages")
#: PCK thresholds (fractions of the torso diagonal) evaluated for every stage of every run.
THRESHOLDS = (0.05, 0.1, 0.15, 0.2)
NORMALIZE = "torso"

#: Default budget per model preset: optimiser steps and batch size of EVERY run, held-out images.
#: "tiny" is sized so that the default sweep (4 strategies + 1..6 stages, 3 seeds = 27 runs) fits
#: in 15 minutes on a 2-core CPU: it measured 1159 CPU-seconds in all (~10 min on 2 idle cores;
#: 22 min wall on a 2-core machine shared with other jobs). "paper" is for a GPU and real data.
ABLATION_BUDGETS: dict[str, dict] = {
    "tiny": dict(steps=250, batch_size=8, eval_size=256),
    "small": dict(steps=2000, batch_size=16, eval_size=512),
    "paper": dict(steps=100_000, batch_size=16, eval_size=None),
}
#: ``quick=True``: one seed, stages 1..3, a few dozen steps (about 1-2 minutes on a CPU).
QUICK = dict(seeds=(0,), stages=(1, 2, 3), steps=60, batch_size=8, eval_size=64)

RESULT_FILE = "result.json"
FINISHED = ("done", "diverged")  # a run in one of these states is never trained again

PCK_COLUMNS = ["experiment", "strategy", "num_stages", "seed", "stage", "part", "metric", "normalize",
               "threshold", "value", "count"]
GRADIENT_COLUMNS = ["strategy", "num_stages", "seed", "step", "stage", "layer", "depth", "main_path", "norm"]
HISTOGRAM_COLUMNS = ["strategy", "num_stages", "seed", "step", "layer", "depth", "bin_left", "bin_right", "count"]
RUN_COLUMNS = ["run_id", "experiments", "strategy", "num_stages", "seed", "steps", "batch_size", "preset", "data",
               "device", "status", "wall_s", "cpu_s", "train_s", "eval_s", "resumed_from_step", "trained_now",
               "final_loss", "pck@0.1", "pck@0.2", "error", "path"]
SUMMARY_COLUMNS = ["experiment", "strategy", "num_stages", "stage", "threshold", "mean", "std", "n"]


# ------------------------------------------------------------------------------------------------
# Run specification
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunSpec:
    """One training run of the ablation: everything that determines its result.

    ``experiments`` lists the experiments the run belongs to (the first names its directory).
    ``train_overrides`` / ``model_overrides`` are extra ``TrainConfig`` / ``CPMConfig`` fields
    as sorted (name, value) pairs.
    """

    experiments: tuple[str, ...]
    strategy: str
    num_stages: int
    seed: int
    preset: str
    data: str
    steps: int
    batch_size: int
    eval_size: int | None
    eval_seed: int
    device: str
    grad_every: int
    checkpoint_every: int
    train_overrides: tuple = ()
    model_overrides: tuple = ()

    @property
    def run_id(self) -> str:
        return f"{self.experiments[0]}-{self.strategy}-s{self.num_stages}-seed{self.seed}"

    def settings(self) -> dict:
        """The settings a finished run must share with a request to be reused (JSON-able)."""
        d = asdict(self)
        for k in ("experiments", "device", "checkpoint_every"):  # do not change the result
            d.pop(k)
        d["train_overrides"] = [list(kv) for kv in self.train_overrides]
        d["model_overrides"] = [list(kv) for kv in self.model_overrides]
        return d


@dataclass
class AblationResult:
    """What ``run_ablation`` returns (and ``load_results`` reads back from ``out_dir``).

    Attributes:
        pck: experiment, strategy, num_stages, seed, stage, part, metric ("pck", "auc", "epe"),
            normalize, threshold, value, count: the held-out metrics of every stage of every
            finished run (a run shared by both experiments appears under each).
        gradients: strategy, num_stages, seed, step, stage, layer, depth, main_path, norm: L2
            gradient norms per conv layer and per stage (``layer == "stage{t}"``, depth <NA>).
        histograms: strategy, num_stages, seed, step, layer, depth, bin_left, bin_right, count:
            per-weight gradient-magnitude histograms (zero-count bins left out; bin [0, 1e-10)
            holds exact zeros) of the runs of the "strategies" experiment (the material of
            Fig. 5; of all runs when that experiment was not run). Every run directory has its own.
        runs: one row per run (``RUN_COLUMNS``): status ("done", "diverged", "failed"), wall
            time and CPU time of the run's process (s), whether it was trained by this call,
            final-stage PCK@0.1/0.2, error.
        summary: experiment, strategy, num_stages, stage, threshold, mean, std, n: PCK (part
            "mean") of every stage, mean and sample std over seeds (``summarize``).
        out_dir: where the files are; figures: name -> PNG path; manifest: MANIFEST.json content.
    """

    pck: pd.DataFrame
    gradients: pd.DataFrame
    histograms: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame
    out_dir: str
    figures: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def final_stage(self, threshold: float = 0.2):
        """Final-stage PCK rows of ``summary`` at ``threshold`` (one row per experiment/model)."""
        s = self.summary
        return s[(s["stage"] == s["num_stages"]) & (s["threshold"] == float(threshold))].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------
# Planning
# ------------------------------------------------------------------------------------------------
def _as_int_tuple(values, name: str, minimum: int) -> tuple[int, ...]:
    if isinstance(values, (int, float)) and not isinstance(values, bool):
        values = (values,)
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}") from None
    if not out:
        raise ValueError(f"{name} must not be empty")
    if any(v < minimum for v in out) or any(float(v) != float(w) for v, w in zip(out, values)):
        raise ValueError(f"{name} must be integers >= {minimum}, got {tuple(values)!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"{name} has duplicates: {out}")
    return out


def plan_runs(preset: str = "tiny", data: str = "synthetic", strategies: Sequence[str] | None = None,
              stages: Sequence[int] = (1, 2, 3, 4, 5, 6), seeds: Sequence[int] = (0, 1, 2),
              steps: int = 150, batch_size: int = 16, strategy_stages: int = 3,
              experiments: Sequence[str] = EXPERIMENTS, eval_size: int | None = 256, eval_seed: int = 0,
              device: str = "auto", grad_every: int | None = None, checkpoint_every: int | None = None,
              finetune_fraction: float = 0.5, train_overrides: dict | None = None,
              model_overrides: dict | None = None) -> list[RunSpec]:
    """The list of runs of an ablation (no training); see ``run_ablation`` for the arguments.

    Runs are ordered seed by seed (so an interrupted sweep has complete seeds first) and, within
    a seed, longest first (``relative_cost``). Raises ValueError for bad arguments.
    """
    from .models.cpm import PRESETS
    from .train import STRATEGIES

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    experiments = tuple(experiments)
    bad = [e for e in experiments if e not in EXPERIMENTS]
    if bad or not experiments:
        raise ValueError(f"experiments must be a non-empty subset of {EXPERIMENTS}, got {experiments!r}")
    strategies = tuple(STRATEGIES if strategies is None else
                       ((strategies,) if isinstance(strategies, str) else strategies))
    bad = [s for s in strategies if s not in STRATEGIES]
    if bad or not strategies:
        raise ValueError(f"unknown strategy {bad[0] if bad else ''!r}: strategies must be a non-empty "
                         f"subset of {STRATEGIES}")
    if len(set(strategies)) != len(strategies):
        raise ValueError(f"strategies has duplicates: {strategies}")
    stages = _as_int_tuple(stages, "stages", 1)
    seeds = _as_int_tuple(seeds, "seeds", 0)
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(strategy_stages, int) or strategy_stages < 1:
        raise ValueError(f"strategy_stages must be a positive integer, got {strategy_stages!r}")
    if eval_size is not None and (not isinstance(eval_size, int) or eval_size < 1):
        raise ValueError(f"eval_size must be a positive integer or None, got {eval_size!r}")
    if "strategies" in experiments:
        from .train import plan_phases

        for s in strategies:
            try:
                plan_phases(s, strategy_stages, steps, finetune_fraction)
            except ValueError as exc:
                raise ValueError(f"steps={steps} is too few for the strategies experiment: {exc}") from None
    grad_every = grad_every or max(1, steps // 10)
    checkpoint_every = checkpoint_every if checkpoint_every is not None else max(1, steps // 4)
    if grad_every < 1 or checkpoint_every < 0:
        raise ValueError(f"grad_every must be >= 1 and checkpoint_every >= 0, got {grad_every}, {checkpoint_every}")
    to = dict(train_overrides or {})
    if finetune_fraction != 0.5:
        to["finetune_fraction"] = finetune_fraction
    mo = dict(model_overrides or {})
    if "num_stages" in mo:
        raise ValueError("model_overrides may not set num_stages: use stages / strategy_stages")
    common = dict(preset=preset, data=data, steps=steps, batch_size=batch_size, eval_size=eval_size,
                  eval_seed=int(eval_seed), device=device, grad_every=int(grad_every),
                  checkpoint_every=int(checkpoint_every), train_overrides=tuple(sorted(to.items())),
                  model_overrides=tuple(sorted(mo.items())))
    runs: list[RunSpec] = []
    for seed in seeds:
        wanted: dict[tuple[str, int], list[str]] = {}
        if "strategies" in experiments:
            for s in strategies:
                wanted.setdefault((s, strategy_stages), []).append("strategies")
        if "stages" in experiments:
            for t in stages:
                wanted.setdefault(("end_to_end", t), []).append("stages")
        seed_runs = [RunSpec(experiments=tuple(exps), strategy=strategy, num_stages=t, seed=seed, **common)
                     for (strategy, t), exps in wanted.items()]
        runs += sorted(seed_runs, key=relative_cost, reverse=True)
    return runs


#: Compute of a strategy relative to end-to-end training of the same model (stage-wise phases
#: run and back-propagate through fewer stages; measured on the tiny preset).
_STRATEGY_COST = {"end_to_end": 1.0, "no_intermediate": 1.0, "stagewise": 0.55, "stagewise_finetune": 0.78}


def relative_cost(spec: RunSpec) -> float:
    """Rough training cost of a run in units of one stage (for scheduling: within a seed the
    longest runs start first, so parallel workers finish together)."""
    return (1.0 + spec.num_stages) * _STRATEGY_COST.get(spec.strategy, 1.0)


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------
def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_write(path: str, write) -> None:
    """Call ``write(tmp_path)`` then move the temporary file onto ``path`` (same folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    suffix = os.path.splitext(path)[1]
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; results are for everyone
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_text(path: str, text: str) -> None:
    def w(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    _atomic_write(path, w)


def _write_json(path: str, obj) -> None:
    _write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def _write_csv(path: str, df, float_format: str | None = "%.6g") -> None:
    _atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, float_format=float_format))


def _read_csv(path: str, columns: list[str]):
    import pandas as pd

    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return pd.DataFrame(columns=columns)
    df = pd.read_csv(path)
    return df if len(df.columns) else pd.DataFrame(columns=columns)


def _save_figure(fig, path: str) -> str:
    import matplotlib.pyplot as plt

    _atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------------
def _concat(frames, columns: list[str]):
    """Concatenate the non-empty frames (reindexed to ``columns``); an empty frame if none."""
    import pandas as pd

    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)


def _tracker_frames(tracker, spec: RunSpec):
    """The tracker's norms and (non-zero) histogram bins as tidy frames with run columns."""
    import pandas as pd

    norms = tracker.norms.copy()
    main = {lay.name: lay.main_path for lay in tracker.layers}
    depth_of = {lay.name: lay.depth for lay in tracker.layers}
    norms["main_path"] = norms["layer"].map(main)
    hist = tracker.histograms
    hist = hist[hist["count"] > 0].copy()
    hist["depth"] = hist["layer"].map(depth_of)
    for df in (norms, hist):
        df.insert(0, "seed", spec.seed)
        df.insert(0, "num_stages", spec.num_stages)
        df.insert(0, "strategy", spec.strategy)
    return (norms.reindex(columns=GRADIENT_COLUMNS),
            hist.reindex(columns=HISTOGRAM_COLUMNS) if len(hist) else pd.DataFrame(columns=HISTOGRAM_COLUMNS))


class _RunSaver(Callback):
    """Trainer callback: every ``every`` steps (and at the end) write the gradient records so far,
    then the trainer checkpoint, so an interrupted run can continue where it stopped."""

    def __init__(self, run_dir: str, spec: RunSpec, tracker, previous):
        self.run_dir, self.spec, self.tracker, self.previous = run_dir, spec, tracker, previous

    def _save(self, trainer, with_checkpoint: bool) -> None:
        norms, hist = _tracker_frames(self.tracker, self.spec)
        norms = _concat([self.previous[0], norms], GRADIENT_COLUMNS)
        hist = _concat([self.previous[1], hist], HISTOGRAM_COLUMNS)
        d = self.run_dir
        _write_csv(os.path.join(d, "gradients.partial.csv"), norms, float_format="%.7g")
        _write_csv(os.path.join(d, "histograms.partial.csv"), hist, float_format=None)
        _write_json(os.path.join(d, "partial.json"), {"step": trainer.step})
        if with_checkpoint:
            trainer.save_checkpoint(os.path.join(d, "checkpoint.pt"))

    def on_step_end(self, trainer, step, record):
        every = self.spec.checkpoint_every
        if every and step % every == 0 and step < self.spec.steps:
            self._save(trainer, with_checkpoint=True)

    def on_train_end(self, trainer):
        # fit() has just written the final checkpoint; record the matching gradient state.
        self._save(trainer, with_checkpoint=False)


def _resume_state(run_dir: str, spec: RunSpec):
    """(checkpoint path, previous gradient frames) to continue an interrupted run, or None."""
    import pandas as pd

    ckpt = os.path.join(run_dir, "checkpoint.pt")
    meta = os.path.join(run_dir, "partial.json")
    if not (os.path.isfile(ckpt) and os.path.isfile(meta)):
        return None
    try:
        from .train import read_checkpoint

        with open(os.path.join(run_dir, "config.json")) as f:
            if json.load(f).get("settings") != json.loads(json.dumps(spec.settings())):
                return None
        with open(meta) as f:
            partial_step = int(json.load(f)["step"])
        step = int(read_checkpoint(ckpt)["step"])
        if partial_step != step:  # interrupted between the two writes: start again
            return None
        norms = pd.read_csv(os.path.join(run_dir, "gradients.partial.csv"))
        hist = pd.read_csv(os.path.join(run_dir, "histograms.partial.csv"))
    except (OSError, ValueError, KeyError, json.JSONDecodeError, pd.errors.ParserError):
        return None
    if len(norms.columns) == 0:
        norms = pd.DataFrame(columns=GRADIENT_COLUMNS)
    if len(hist.columns) == 0:
        hist = pd.DataFrame(columns=HISTOGRAM_COLUMNS)
    return ckpt, (norms[norms["step"] <= step], hist[hist["step"] <= step]), step


def train_run(spec: RunSpec, run_dir: str, resume: bool = True, progress: bool = False) -> dict:
    """Train and evaluate one run into ``run_dir`` and return its ``result.json`` content.

    Writes config.json first and result.json last (see the module docstring). A run that
    diverges (non-finite loss) is recorded with status "diverged" and no metrics. Other errors
    propagate (the caller records them as "failed").
    """
    import pandas as pd
    import torch

    from .data.specs import make_dataset
    from .diagnostics import GradientTracker
    from .models.cpm import CPM
    from .train import TrainConfig, Trainer, TrainingDiverged
    from .utils import seed_everything

    os.makedirs(run_dir, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    state = _resume_state(run_dir, spec) if resume else None
    _write_json(os.path.join(run_dir, "config.json"), {"run_id": spec.run_id, "spec": asdict(spec),
                                                        "settings": spec.settings()})
    seed_everything(spec.seed)
    model = CPM.from_preset(spec.preset, num_stages=spec.num_stages, **dict(spec.model_overrides))
    size = model.config.input_size
    train_set = make_dataset(spec.data, size, split="train", seed=spec.seed)
    eval_set = make_dataset(spec.data, size, split="test", seed=spec.eval_seed, length=spec.eval_size)
    overrides = dict(spec.train_overrides)
    if spec.preset == "paper" and "lr_step" not in overrides:
        overrides["lr_step"] = None  # decay x0.333 at each third of every phase, whatever its length
    config = TrainConfig.for_preset(spec.preset, **{
        **dict(steps=spec.steps, batch_size=spec.batch_size, strategy=spec.strategy, seed=spec.seed,
               device=spec.device, checkpoint=os.path.join(run_dir, "checkpoint.pt"), checkpoint_every=0,
               progress=progress, eval_every=0, eval_thresholds=THRESHOLDS, eval_normalize=NORMALIZE),
        **overrides})
    tracker = GradientTracker(every=spec.grad_every, histogram_layers="default")
    previous = (pd.DataFrame(columns=GRADIENT_COLUMNS), pd.DataFrame(columns=HISTOGRAM_COLUMNS))
    resume_from, resumed_step = None, 0
    if state is not None:
        resume_from, previous, resumed_step = state
    saver = _RunSaver(run_dir, spec, tracker, previous)
    trainer = Trainer(model, train_set, config, callbacks=[tracker, saver])
    result = {"run_id": spec.run_id, "settings": spec.settings(), "experiments": list(spec.experiments),
              "resumed_from_step": resumed_step, "device": str(trainer.device),
              "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    try:
        try:
            history = trainer.fit(resume=resume_from)
        except ValueError as exc:
            if resume_from is None or "checkpoint" not in str(exc):
                raise
            warnings.warn(f"{spec.run_id}: cannot resume from {resume_from} ({exc}); training from scratch")
            seed_everything(spec.seed)
            model = CPM.from_preset(spec.preset, num_stages=spec.num_stages, **dict(spec.model_overrides))
            tracker = GradientTracker(every=spec.grad_every, histogram_layers="default")
            saver = _RunSaver(run_dir, spec, tracker, (previous[0].iloc[:0], previous[1].iloc[:0]))
            trainer = Trainer(model, train_set, config, callbacks=[tracker, saver])
            result["resumed_from_step"] = 0
            history = trainer.fit()
    except TrainingDiverged as exc:
        result.update(status="diverged", error=str(exc), train_s=time.perf_counter() - t0, eval_s=0.0,
                      final_loss=float("nan"))
        norms, hist = _tracker_frames(tracker, spec)
        _write_csv(os.path.join(run_dir, "gradients.csv"), _concat([previous[0], norms], GRADIENT_COLUMNS))
        _write_csv(os.path.join(run_dir, "histograms.csv"), _concat([previous[1], hist], HISTOGRAM_COLUMNS),
                   float_format=None)
        _write_csv(os.path.join(run_dir, "pck.csv"), pd.DataFrame(columns=PCK_COLUMNS[1:]))
        for name in ("partial.json", "gradients.partial.csv", "histograms.partial.csv"):
            if os.path.exists(os.path.join(run_dir, name)):
                os.unlink(os.path.join(run_dir, name))
        result.update(wall_s=time.perf_counter() - t_start, cpu_s=time.process_time() - c_start)
        _write_json(os.path.join(run_dir, RESULT_FILE), result)
        return result
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    table = trainer.evaluate(eval_set, batch_size=max(32, spec.batch_size), thresholds=THRESHOLDS,
                             normalize=NORMALIZE)
    eval_s = time.perf_counter() - t1
    table.insert(0, "seed", spec.seed)
    table.insert(0, "num_stages", spec.num_stages)
    table.insert(0, "strategy", spec.strategy)
    _write_csv(os.path.join(run_dir, "pck.csv"), table)
    _write_csv(os.path.join(run_dir, "history.csv"), history)
    for name in ("gradients", "histograms"):
        src = os.path.join(run_dir, f"{name}.partial.csv")
        os.replace(src, os.path.join(run_dir, f"{name}.csv"))
    tail = history["loss"].iloc[-max(1, len(history) // 10):]
    final = table[(table["metric"] == "pck") & (table["part"] == "mean") & (table["stage"] == spec.num_stages)]
    result.update(status="done", error="", train_s=train_s, eval_s=eval_s, final_loss=float(tail.mean()),
                  **{f"pck@{t:g}": float(final[final["threshold"] == t]["value"].iloc[0]) for t in THRESHOLDS})
    result.update(wall_s=time.perf_counter() - t_start, cpu_s=time.process_time() - c_start)
    _write_json(os.path.join(run_dir, RESULT_FILE), result)
    for name in ("partial.json",):
        p = os.path.join(run_dir, name)
        if os.path.exists(p):
            os.unlink(p)
    return result


def _worker_init(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _worker(spec: RunSpec, run_dir: str, resume: bool) -> dict:
    """Process-pool entry point: never raises (errors become a "failed" result)."""
    t0 = time.perf_counter()
    try:
        return train_run(spec, run_dir, resume=resume, progress=False)
    except Exception as exc:  # recorded in runs.csv; the sweep goes on
        return {"run_id": spec.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc(), "wall_s": time.perf_counter() - t0}


def _finished_result(spec: RunSpec, run_dir: str) -> dict | None:
    """The stored result of a finished run, or None; ValueError if it used other settings."""
    path = os.path.join(run_dir, RESULT_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None  # unreadable: train it again
    if result.get("status") not in FINISHED:
        return None
    stored, wanted = result.get("settings"), json.loads(json.dumps(spec.settings()))
    if stored != wanted:
        diff = sorted(k for k in set(wanted) | set(stored or {}) if (stored or {}).get(k) != wanted.get(k))
        details = ", ".join(f"{k}={(stored or {}).get(k)!r} (now {wanted.get(k)!r})" for k in diff)
        raise ValueError(f"run {run_dir!r} already finished with different settings: {details}; use another "
                         "output directory (or delete that run) to train with the new settings")
    return result


# ------------------------------------------------------------------------------------------------
# The sweep
# ------------------------------------------------------------------------------------------------
def run_ablation(out_dir: str | os.PathLike = "runs/ablation", preset: str = "tiny", data: str = "synthetic",
                 strategies: Sequence[str] | None = None, stages: Sequence[int] | None = None,
                 seeds: Sequence[int] | None = None, steps: int | None = None, *, quick: bool = False,
                 batch_size: int | None = None, strategy_stages: int = 3,
                 experiments: Sequence[str] = EXPERIMENTS, eval_size: int | None | str = "auto",
                 eval_seed: int = 0, device: str = "auto", resume: bool = True, jobs: int | str = "auto",
                 threads: int | None = None, runs_dir: str | os.PathLike | None = None,
                 grad_every: int | None = None, checkpoint_every: int | None = None,
                 keep_checkpoints: bool = True, figures: bool = True, progress: bool = True,
                 command: str | None = None, train_overrides: dict | None = None,
                 model_overrides: dict | None = None) -> AblationResult:
    """Run (or resume) the ablation sweep and write its tables and figures to ``out_dir``.

    Args:
        out_dir: folder of the aggregate CSVs, figures, summary.md and MANIFEST.json.
        preset: model preset ("tiny", "small", "paper"); sets the default budget
            (``ABLATION_BUDGETS``).
        data: dataset spec for ``cpm_lab.data.specs.make_dataset`` ("synthetic",
            "synthetic:easy", "lspet", ...). Training uses split "train" with the run's seed;
            evaluation the "test" split with ``eval_seed``.
        strategies: training strategies of the "strategies" experiment (default all four).
        stages: numbers of stages of the "stages" sweep (default 1..6; quick: 1..3).
        seeds: seeds (default 0, 1, 2; quick: 0). Each seed sets initial weights and data order.
        steps, batch_size: optimiser steps and batch of EVERY run (default: the preset's budget;
            quick: 60 x 8).
        quick: small defaults for tests and notebooks (``QUICK``); explicit arguments win.
        strategy_stages: number of stages of the strategies experiment (default 3, as the paper).
        experiments: which of ``EXPERIMENTS`` to run.
        eval_size: held-out images ("auto": the preset's budget for synthetic data, quick 64,
            the whole test split for real data; None: whole split).
        eval_seed: seed of the held-out split (the same images for every run).
        device: "auto" (cuda > mps > cpu), "cpu", "cuda", ...
        resume: reuse finished runs and continue interrupted ones (False: train everything again).
        jobs: runs trained in parallel processes; "auto" = 1 on an accelerator, else the number
            of CPU cores (at most 4). threads: torch threads per process (default: cores / jobs
            when jobs > 1, torch's choice otherwise).
        runs_dir: where run directories go (default ``out_dir/runs``).
        grad_every: gradient record period (default steps // 10). checkpoint_every: checkpoint
            period (default steps // 4; 0 = only at the end of each run).
        keep_checkpoints: keep each finished run's checkpoint.pt (else deleted after the run).
        figures: render the PNG figures. progress: a progress bar over runs (plus each run's own
            bar for long runs, >= 1000 steps, when jobs == 1).
        command: the command line recorded in MANIFEST.json (default: a Python call).
        train_overrides, model_overrides: extra ``TrainConfig`` / ``CPMConfig`` fields for
            every run, e.g. ``{"optimizer": "sgd", "lr": 4e-4}``: the paper's optimiser, under
            which the effect of intermediate supervision on accuracy shows (Adam, the tiny
            preset's default, rescales small early-layer gradients; see data/results/README.md).

    Returns:
        ``AblationResult`` (tables as pandas DataFrames, figure paths, manifest). Runs that fail
        are listed in ``runs`` with status "failed" and their error; the others still count.
    """
    from .models.cpm import PRESETS
    from .utils import resolve_device

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    budget = dict(ABLATION_BUDGETS.get(preset, ABLATION_BUDGETS["small"]))
    if quick:
        budget.update(QUICK)
    seeds = budget.get("seeds", (0, 1, 2)) if seeds is None else seeds
    stages = budget.get("stages", (1, 2, 3, 4, 5, 6)) if stages is None else stages
    steps = budget["steps"] if steps is None else steps
    batch_size = budget["batch_size"] if batch_size is None else batch_size
    from .data.specs import parse_spec

    kind, _ = parse_spec(data)
    if eval_size == "auto":
        eval_size = budget["eval_size"] if kind == "synthetic" or quick else None
    if eval_size == "auto" or (eval_size is not None and not isinstance(eval_size, int)):
        raise ValueError(f"eval_size must be 'auto', None or a positive integer, got {eval_size!r}")
    dev = resolve_device(device)
    specs = plan_runs(preset, data, strategies, stages, seeds, steps, batch_size, strategy_stages, experiments,
                      eval_size, eval_seed, str(dev) if device != "auto" else "auto", grad_every, checkpoint_every,
                      (train_overrides or {}).get("finetune_fraction", 0.5),
                      {k: v for k, v in (train_overrides or {}).items() if k != "finetune_fraction"},
                      model_overrides)
    if jobs == "auto":
        jobs = 1 if dev.type != "cpu" else max(1, min(os.cpu_count() or 1, 4))
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer or 'auto', got {jobs!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    # Probe the data before creating folders, so a bad spec or a missing dataset fails at once.
    from .data.specs import make_dataset

    size = (model_overrides or {}).get("input_size", PRESETS[preset].input_size)
    make_dataset(data, size, split="test", seed=eval_seed, length=eval_size)
    out_dir = os.fspath(out_dir)
    runs_dir = os.fspath(runs_dir) if runs_dir is not None else os.path.join(out_dir, "runs")
    for folder, name in ((out_dir, "out_dir"), (runs_dir, "runs_dir")):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create {name} {folder!r}: {exc.strerror or exc}") from None

    t_start = time.perf_counter()
    git = _git_commit()  # the code that trains, not whatever is checked out when the runs end
    results: dict[str, dict] = {}
    todo: list[RunSpec] = []
    for spec in specs:
        run_dir = os.path.join(runs_dir, spec.run_id)
        done = _finished_result(spec, run_dir) if resume else None
        if done is not None:
            results[spec.run_id] = {**done, "trained_now": False}
        else:
            todo.append(spec)
    jobs = min(jobs, max(1, len(todo)))
    if threads is None and jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="ablation runs", unit="run",
               disable=not progress, dynamic_ncols=True)

    def finish(spec: RunSpec, result: dict) -> None:
        results[spec.run_id] = {**result, "trained_now": True}
        run_dir = os.path.join(runs_dir, spec.run_id)
        if result.get("status") == "failed":
            _write_json(os.path.join(run_dir, "error.json"), result)
        elif not keep_checkpoints:
            ckpt = os.path.join(run_dir, "checkpoint.pt")
            if os.path.exists(ckpt):
                os.unlink(ckpt)
        pck = result.get("pck@0.2", float("nan"))
        bar.write(f"{spec.run_id}: {result.get('status')} in {result.get('wall_s', float('nan')):.0f} s"
                  + (f", final-stage PCK@0.2 = {pck:.3f}" if result.get("status") == "done" else
                     f" ({result.get('error', '')})"))
        bar.update(1)

    try:
        if jobs == 1:
            prev_threads = None
            if threads:
                import torch

                prev_threads = torch.get_num_threads()
                torch.set_num_threads(threads)
            try:
                for spec in todo:
                    bar.set_postfix_str(spec.run_id)
                    t0 = time.perf_counter()
                    try:
                        res = train_run(spec, os.path.join(runs_dir, spec.run_id), resume=resume,
                                        progress=progress and spec.steps >= 1000)
                    except (KeyboardInterrupt, SystemExit):
                        raise
                    except Exception as exc:
                        res = {"run_id": spec.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                               "traceback": traceback.format_exc(), "wall_s": time.perf_counter() - t0}
                    finish(spec, res)
            finally:
                if prev_threads:
                    import torch

                    torch.set_num_threads(prev_threads)
        elif todo:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads,)) as pool:
                futures = {pool.submit(_worker, spec, os.path.join(runs_dir, spec.run_id), resume): spec
                           for spec in todo}
                for fut in as_completed(futures):
                    finish(futures[fut], fut.result())
    finally:
        bar.close()
    wall = time.perf_counter() - t_start

    result = collect(specs, runs_dir, results)
    manifest = _manifest(command or _python_call(out_dir, preset, data, quick, specs), specs, result.runs, wall,
                         dev, jobs, threads, out_dir, runs_dir, git)
    result.out_dir = out_dir
    result.manifest = manifest
    _write_csv(os.path.join(out_dir, "pck.csv"), result.pck)
    _write_csv(os.path.join(out_dir, "gradients.csv"), result.gradients, float_format="%.4g")
    _write_csv(os.path.join(out_dir, "histograms.csv"), result.histograms, float_format="%.4g")
    _write_csv(os.path.join(out_dir, "runs.csv"), result.runs, float_format="%.4g")
    _write_csv(os.path.join(out_dir, "summary.csv"), result.summary, float_format="%.4g")
    if figures:
        result.figures = render_figures(result, out_dir)
    _write_text(os.path.join(out_dir, "summary.md"), summary_markdown(result))
    _write_json(os.path.join(out_dir, "MANIFEST.json"), manifest)
    return result


def collect(specs: Sequence[RunSpec], runs_dir: str, results: dict | None = None) -> AblationResult:
    """Read the files of ``specs``' run directories into one ``AblationResult`` (no figures)."""
    import pandas as pd

    results = results or {}
    pcks, grads, hists, rows = [], [], [], []
    for spec in specs:
        run_dir = os.path.join(runs_dir, spec.run_id)
        res = results.get(spec.run_id)
        if res is None:
            try:
                with open(os.path.join(run_dir, RESULT_FILE)) as f:
                    res = {**json.load(f), "trained_now": False}
            except (OSError, json.JSONDecodeError):
                res = {"status": "missing"}
        status = res.get("status", "missing")
        rows.append({"run_id": spec.run_id, "experiments": ";".join(spec.experiments), "strategy": spec.strategy,
                     "num_stages": spec.num_stages, "seed": spec.seed, "steps": spec.steps,
                     "batch_size": spec.batch_size, "preset": spec.preset, "data": spec.data,
                     "device": res.get("device", spec.device), "status": status, "wall_s": res.get("wall_s"),
                     "cpu_s": res.get("cpu_s"),
                     "train_s": res.get("train_s"), "eval_s": res.get("eval_s"),
                     "resumed_from_step": res.get("resumed_from_step", 0), "trained_now": res.get("trained_now", False),
                     "final_loss": res.get("final_loss"), "pck@0.1": res.get("pck@0.1"), "pck@0.2": res.get("pck@0.2"),
                     "error": res.get("error", ""), "path": run_dir})
        if status not in FINISHED:
            continue
        table = _read_csv(os.path.join(run_dir, "pck.csv"), PCK_COLUMNS[1:])
        if len(table):
            for exp in spec.experiments:
                pcks.append(table.assign(experiment=exp))
        grads.append(_read_csv(os.path.join(run_dir, "gradients.csv"), GRADIENT_COLUMNS))
        if "strategies" in spec.experiments or not any("strategies" in s.experiments for s in specs):
            hists.append(_read_csv(os.path.join(run_dir, "histograms.csv"), HISTOGRAM_COLUMNS))

    pck = _concat(pcks, PCK_COLUMNS)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return AblationResult(pck=pck, gradients=_concat(grads, GRADIENT_COLUMNS),
                          histograms=_concat(hists, HISTOGRAM_COLUMNS),
                          runs=runs, summary=summarize(pck), out_dir=runs_dir)


def load_results(out_dir: str | os.PathLike = "data/results") -> AblationResult:
    """Read the aggregate files an ablation wrote to ``out_dir`` (e.g. the shipped data/results)."""
    out_dir = os.fspath(out_dir)
    path = os.path.join(out_dir, "pck.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ablation results in {out_dir!r} (expected {path}); run cpm-lab ablate first")
    manifest = {}
    if os.path.isfile(os.path.join(out_dir, "MANIFEST.json")):
        with open(os.path.join(out_dir, "MANIFEST.json")) as f:
            manifest = json.load(f)
    pck = _read_csv(path, PCK_COLUMNS)
    figures = {os.path.splitext(n)[0]: os.path.join(out_dir, n) for n in sorted(os.listdir(out_dir))
               if n.endswith(".png")}
    return AblationResult(pck=pck, gradients=_read_csv(os.path.join(out_dir, "gradients.csv"), GRADIENT_COLUMNS),
                          histograms=_read_csv(os.path.join(out_dir, "histograms.csv"), HISTOGRAM_COLUMNS),
                          runs=_read_csv(os.path.join(out_dir, "runs.csv"), RUN_COLUMNS), summary=summarize(pck),
                          out_dir=out_dir, figures=figures, manifest=manifest)


# ------------------------------------------------------------------------------------------------
# Summaries
# ------------------------------------------------------------------------------------------------
def summarize(pck, part: str = "mean", metric: str = "pck"):
    """Mean and sample std over seeds of ``metric`` (part ``part``) for every experiment,
    strategy, number of stages, stage and threshold; columns ``SUMMARY_COLUMNS`` (std is NaN
    for a single seed)."""
    import pandas as pd

    if len(pck) == 0:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    sub = pck[(pck["metric"] == metric) & (pck["part"] == part)]
    if metric != "pck":
        sub = sub.assign(threshold=sub["threshold"].fillna(-1))
    g = sub.groupby(["experiment", "strategy", "num_stages", "stage", "threshold"], sort=True)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    return out.reindex(columns=SUMMARY_COLUMNS)


def _geomean(x):
    import numpy as np

    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.log(x).mean())) if len(x) else float("nan")


def gradient_summary(gradients, strategies: Sequence[str] = ("end_to_end", "no_intermediate"),
                     num_stages: int | None = None, skip_first: bool = True):
    """Typical gradient norm per layer and per stage for each strategy, and their ratio.

    For every (strategy, seed, layer) the geometric mean of the norm over the recorded steps
    (without step 1 when ``skip_first``: the freshly initialised network); then the geometric
    mean over seeds. Returns a DataFrame: layer, stage, depth, main_path, one column per
    strategy, and ``ratio`` = first strategy / second strategy (e.g. with / without
    intermediate supervision). Rows: per-stage totals first (layer "stage{t}"), then conv layers
    by depth. ``num_stages`` defaults to the most common number of stages of these strategies.
    """
    import pandas as pd

    g = gradients[gradients["strategy"].isin(strategies)]
    if len(g) == 0:
        return pd.DataFrame(columns=["layer", "stage", "depth", "main_path", *strategies, "ratio"])
    if num_stages is None:
        num_stages = int(g.groupby("num_stages")["strategy"].nunique().idxmax())
    g = g[g["num_stages"] == num_stages]
    if skip_first:
        g = g[g["step"] > 1]
    per_seed = g.groupby(["strategy", "seed", "layer"], sort=False)["norm"].apply(_geomean).reset_index()
    typical = per_seed.groupby(["strategy", "layer"])["norm"].apply(_geomean).unstack("strategy")
    meta = g.drop_duplicates("layer").set_index("layer")[["stage", "depth", "main_path"]]
    out = meta.join(typical, how="left").reset_index()
    for s in strategies:
        if s not in out.columns:
            out[s] = float("nan")
    if len(strategies) >= 2:
        out["ratio"] = out[strategies[0]] / out[strategies[1]]
    out["is_stage"] = out["layer"].str.fullmatch(r"stage\d+")
    out["_d"] = pd.to_numeric(out["depth"], errors="coerce")
    out = out.sort_values(["is_stage", "stage", "_d"], ascending=[False, True, True])
    return out.drop(columns=["is_stage", "_d"]).reset_index(drop=True)


def _fmt(mean, std) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None and math.isfinite(std) else "")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(result: AblationResult, thresholds: Sequence[float] = (0.1, 0.2)) -> str:
    """The headline tables of a result as Markdown (written to ``out_dir/summary.md``)."""
    s = result.summary
    parts = [f"# Ablation summary (generated by cpm_lab.experiments)\n"]
    m = result.manifest
    if m:
        parts.append(f"Command: `{m.get('command')}`  \nDate: {m.get('date')}  \nWall time: "
                     f"{m.get('wall_s', float('nan')):.0f} s ({m.get('runs_trained_now')} runs trained now, "
                     f"{m.get('runs_total')} in total)  \nSettings: preset `{m['settings'].get('preset')}`, data "
                     f"`{m['settings'].get('data')}`, {m['settings'].get('steps')} steps x batch "
                     f"{m['settings'].get('batch_size')} per run, seeds {m['settings'].get('seeds')}\n")
    names = {"end_to_end": "end-to-end, intermediate supervision", "no_intermediate": "end-to-end, final loss only",
             "stagewise": "stage-wise", "stagewise_finetune": "stage-wise + fine-tune"}
    st = s[s["experiment"] == "strategies"] if len(s) else s
    if len(st):
        parts.append("## Training strategies (Fig. 6b): PCK per stage, mean ± std over seeds\n")
        stages = sorted(st["stage"].unique())
        header = ["strategy", "threshold"] + [f"stage {int(t)}" for t in stages]
        rows = []
        for strat in [k for k in names if k in set(st["strategy"])]:
            for thr in thresholds:
                sub = st[(st["strategy"] == strat) & (st["threshold"] == thr)].set_index("stage")
                rows.append([names[strat], f"PCK@{thr:g}"] + [
                    _fmt(sub.loc[t, "mean"], sub.loc[t, "std"]) if t in sub.index else "" for t in stages])
        parts.append(_md_table(header, rows) + "\n")
    sw = s[(s["experiment"] == "stages")] if len(s) else s
    if len(sw):
        parts.append("## Number of stages (Fig. 6c): final-stage PCK, mean ± std over seeds\n")
        fin = sw[sw["stage"] == sw["num_stages"]]
        header = ["stages"] + [f"PCK@{t:g}" for t in THRESHOLDS]
        rows = []
        for t, g in fin.groupby("num_stages"):
            g = g.set_index("threshold")
            rows.append([str(int(t))] + [_fmt(g.loc[thr, "mean"], g.loc[thr, "std"]) if thr in g.index else ""
                                         for thr in THRESHOLDS])
        parts.append(_md_table(header, rows) + "\n")
    gs = gradient_summary(result.gradients) if len(result.gradients) else None
    if gs is not None and len(gs) and "ratio" in gs:
        parts.append("## Gradient norms (Fig. 5): with / without intermediate supervision\n")
        parts.append("Geometric mean over recorded steps (after step 1) and seeds of the gradient L2 norm.\n")
        keep = gs[gs["layer"].str.fullmatch(r"stage\d+") | gs["layer"].isin(set(result.histograms["layer"]))]
        rows = [[r["layer"], "" if str(r["depth"]) in ("nan", "<NA>") else str(int(float(r["depth"]))),
                 f"{r['end_to_end']:.3g}", f"{r['no_intermediate']:.3g}", f"{r['ratio']:.2f}"]
                for _, r in keep.iterrows()]
        parts.append(_md_table(["layer", "depth", "with", "without", "ratio"], rows) + "\n")
    runs = result.runs
    if len(runs):
        bad = runs[~runs["status"].isin(["done"])]
        parts.append(f"Runs: {len(runs)} ({(runs['status'] == 'done').sum()} done"
                     + (f"; not done: {', '.join(bad['run_id'] + ' (' + bad['status'] + ')')}" if len(bad) else "")
                     + ").\n")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# Figures and manifest
# ------------------------------------------------------------------------------------------------
def render_figures(result: AblationResult, out_dir: str) -> dict[str, str]:
    """Draw the ablation figures (``cpm_lab.viz.ablation``) to PNG files in ``out_dir``."""
    from .viz import ablation as vz

    figs: dict[str, str] = {}
    m = result.manifest.get("settings", {}) if result.manifest else {}
    subtitle = (f"{m.get('preset', '')} CPM, {m.get('data', '')}, {m.get('steps', '')} steps x batch "
                f"{m.get('batch_size', '')} per run" if m else None)
    s = result.summary
    if len(s) and (s["experiment"] == "strategies").any():
        figs["fig6b_strategies"] = _save_figure(vz.plot_strategy_pck(result.pck, subtitle=subtitle),
                                                os.path.join(out_dir, "fig6b_strategies.png"))
    if len(s) and (s["experiment"] == "stages").any():
        figs["fig6c_stages"] = _save_figure(vz.plot_stages_pck(result.pck, subtitle=subtitle),
                                            os.path.join(out_dir, "fig6c_stages.png"))
    h = result.histograms
    if len(h) and {"end_to_end", "no_intermediate"} <= set(h["strategy"]):
        figs["fig5_gradient_histograms"] = _save_figure(
            vz.plot_supervision_histograms(h), os.path.join(out_dir, "fig5_gradient_histograms.png"))
    g = result.gradients
    if len(g) and {"end_to_end", "no_intermediate"} <= set(g["strategy"]):
        figs["gradient_norms"] = _save_figure(vz.plot_supervision_gradients(g),
                                              os.path.join(out_dir, "gradient_norms.png"))
    return figs


def _git_commit() -> dict:
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", here, "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(status.strip()) if commit else None}


def _machine(dev) -> dict:
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(dev)}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    try:
        load = os.getloadavg()
        info["load_average_at_end"] = [round(v, 2) for v in load]
    except (OSError, AttributeError):
        pass
    return info


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _python_call(out_dir, preset, data, quick, specs) -> str:
    return f"cpm_lab.experiments.run_ablation({out_dir!r}, preset={preset!r}, data={data!r}, quick={quick})"


def _manifest(command: str, specs: Sequence[RunSpec], runs, wall: float, dev, jobs: int, threads, out_dir: str,
              runs_dir: str, git: dict) -> dict:
    import numpy as np
    import pandas as pd
    import torch

    from . import __version__

    first = specs[0]
    return {
        "command": command,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": round(wall, 1),
        "runs_total": len(specs),
        "runs_trained_now": int(runs["trained_now"].fillna(False).astype(bool).sum()),
        "run_wall_s_sum": round(float(pd.to_numeric(runs["wall_s"], errors="coerce").sum()), 1),
        "run_cpu_s_sum": round(float(pd.to_numeric(runs["cpu_s"], errors="coerce").sum()), 1),
        "status_counts": {k: int(v) for k, v in runs["status"].value_counts().items()},
        "settings": {"preset": first.preset, "data": first.data, "steps": first.steps, "batch_size": first.batch_size,
                     "seeds": sorted({s.seed for s in specs}),
                     "strategies": list(dict.fromkeys(s.strategy for s in specs if "strategies" in s.experiments)),
                     "strategy_stages": sorted({s.num_stages for s in specs if "strategies" in s.experiments}),
                     "stages": sorted({s.num_stages for s in specs if "stages" in s.experiments}),
                     "eval_size": first.eval_size, "eval_seed": first.eval_seed, "thresholds": list(THRESHOLDS),
                     "normalize": NORMALIZE, "grad_every": first.grad_every, "jobs": jobs,
                     "threads_per_job": threads or _torch_threads(), "train_overrides": dict(first.train_overrides),
                     "model_overrides": dict(first.model_overrides)},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "cpm_lab": __version__, "git": git},
        "machine": _machine(dev),
        "out_dir": out_dir,
        "runs_dir": runs_dir,
    }


# ------------------------------------------------------------------------------------------------
# Command line: cpm-lab ablate
# ------------------------------------------------------------------------------------------------
CLI_HELP = "run the paper's ablations: training strategies, number of stages, gradient flow"


def _int_list(text: str) -> list[int]:
    """``"0,1,2"`` or ranges ``"1-6"`` / ``"1-3,5"`` -> list of non-negative ints."""
    import argparse

    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                out += list(range(lo, hi + 1))
            else:
                out.append(int(part))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 0,1,2 or a range like 1-6, got {text!r}") from None
    if not out or any(v < 0 for v in out):
        raise argparse.ArgumentTypeError(f"expected non-negative integers like 0,1,2 or 1-6, got {text!r}")
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"duplicate values in {text!r}")
    return out


def _strategy_list(text: str) -> list[str]:
    import argparse

    from .train import STRATEGIES

    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in STRATEGIES]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown strategy {bad[0] if bad else text!r}; choose from "
                                         f"{', '.join(STRATEGIES)} (comma-separated)")
    return names


def _jobs(text: str):
    return "auto" if text == "auto" else positive_int(text)


def add_arguments(p) -> None:
    """Arguments of ``cpm-lab ablate`` (an argparse parser)."""
    from .models.cpm import PRESETS

    p.add_argument("--out", default="runs/ablation", help="folder of the tables, figures and manifest "
                   "(default: runs/ablation)")
    p.add_argument("--runs-dir", help="folder of the per-run directories with checkpoints (default: OUT/runs)")
    p.add_argument("--quick", action="store_true", help="small budget for a smoke test (~1-2 min on a CPU)")
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    p.add_argument("--data", default="synthetic", help="dataset spec, e.g. synthetic, synthetic:easy, lspet")
    p.add_argument("--seeds", type=_int_list, help="seeds, e.g. 0,1,2 (default) or 0-4")
    p.add_argument("--stages", type=_int_list, help="numbers of stages of the stage sweep, e.g. 1-6 (default)")
    p.add_argument("--strategies", type=_strategy_list, help="comma-separated training strategies (default: all)")
    p.add_argument("--strategy-stages", type=positive_int, default=3, help="stages of the strategies experiment (3)")
    p.add_argument("--experiments", type=lambda t: [e.strip() for e in t.split(",") if e.strip()],
                   default=list(EXPERIMENTS), help="strategies,stages (default: both)")
    p.add_argument("--steps", type=positive_int,
                   help="optimiser steps of every run (default: the preset's ablation budget, tiny 250; quick 60)")
    p.add_argument("--batch-size", type=positive_int, help="batch size of every run (tiny: 8)")
    p.add_argument("--optimizer", choices=("auto", "adam", "sgd"), help="optimiser of every run (default: the "
                   "preset's; tiny: Adam)")
    p.add_argument("--lr", type=positive_float, help="learning rate of every run (default: the preset's; tiny 5e-3)")
    p.add_argument("--eval-size", type=positive_int, help="held-out images per evaluation (synthetic: 256, quick 64; "
                   "real data: the whole test split)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--jobs", type=_jobs, default="auto",
                   help="runs trained at once in separate processes (auto: CPU cores up to 4 on a CPU, 1 on a GPU)")
    p.add_argument("--threads", type=positive_int, help="torch threads per process")
    p.add_argument("--no-resume", action="store_true", help="train every run again (default: reuse finished runs)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-checkpoints", action="store_true", help="delete each run's checkpoint when it finishes")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args) -> int:
    """Handler of ``cpm-lab ablate``: run the sweep, print the headline table; 1 if a run failed."""
    bad = [e for e in args.experiments if e not in EXPERIMENTS]
    if bad or not args.experiments:
        raise ValueError(f"--experiments: expected a comma-separated subset of {','.join(EXPERIMENTS)}, "
                         f"got {','.join(args.experiments) or 'nothing'}")
    import shlex

    if sys.argv[1:2] == ["ablate"]:  # the real command line
        command = "cpm-lab " + shlex.join(sys.argv[1:])
    else:  # called as main([...]) from Python
        command = "cpm-lab ablate " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in sorted(vars(args).items())
                                               if not k.startswith("_") and k != "command" and v not in (None, False))
    result = run_ablation(args.out, preset=args.preset, data=args.data, strategies=args.strategies,
                          stages=args.stages, seeds=args.seeds, steps=args.steps, quick=args.quick,
                          batch_size=args.batch_size, strategy_stages=args.strategy_stages,
                          experiments=args.experiments,
                          eval_size=args.eval_size if args.eval_size is not None else "auto", device=args.device,
                          resume=not args.no_resume, jobs=args.jobs, threads=args.threads, runs_dir=args.runs_dir,
                          keep_checkpoints=not args.no_checkpoints, figures=not args.no_figures,
                          progress=not args.no_progress, command=command,
                          train_overrides={k: v for k, v in (("optimizer", args.optimizer), ("lr", args.lr))
                                           if v is not None})
    print(summary_markdown(result))
    print(f"wrote {result.out_dir}/pck.csv, gradients.csv, histograms.csv, runs.csv, summary.csv, summary.md, "
          f"MANIFEST.json" + (", " + ", ".join(os.path.basename(p) for p in result.figures.values())
                               if result.figures else ""))
    failed = result.runs[result.runs["status"] == "failed"]
    if len(failed):
        details = "; ".join(f"{r.run_id}: {r.error}" for r in failed.itertuples())
        print(f"cpm-lab: {len(failed)} run(s) failed: {details}", file=sys.stderr)
        return 1
    return 0


def register_cli(command) -> None:
    """Register ``cpm-lab ablate`` with ``cpm_lab.cli.command`` (called once from cli.py)."""
    command("ablate", CLI_HELP, add_arguments)(run_cli)


__all__ = ["ABLATION_BUDGETS", "AblationResult", "EXPERIMENTS", "QUICK", "RunSpec", "THRESHOLDS", "collect",
           "gradient_summary", "load_results", "plan_runs", "register_cli", "render_figures", "run_ablation",
           "summarize", "summary_markdown", "train_run"]
