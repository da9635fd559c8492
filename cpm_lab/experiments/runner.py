"""Running an ablation: one run (``train_run``) and the sweep (``run_ablation``: plan, execute,
write).

Each run lives in ``runs_dir/<experiment>-<strategy>-s<stages>-seed<k>/`` with ``config.json``
(written first), ``history.csv``, ``pck.csv``, ``gradients.csv``, ``histograms.csv``,
``checkpoint.pt`` and ``result.json`` (written LAST). A run whose ``result.json`` exists is never
trained again; an interrupted one restarts from its last checkpoint (written every
``checkpoint_every`` steps together with the gradient records so far). Every file is written
atomically (``cpm_lab.files``).
"""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import threading
import time
import traceback
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict
from typing import Sequence

import pandas as pd
import torch

from ..callbacks import Callback
from ..data.specs import make_dataset
from ..diagnostics import GradientTracker
from ..files import write_csv, write_json, write_text
from ..models.cpm import CPM, PRESETS
from ..train import TrainConfig, Trainer, TrainingDiverged, read_checkpoint
from ..utils import resolve_device, seed_everything
from .plan import DEFAULT_EXPERIMENTS, DEFAULT_PRESET, NORMALIZE, THRESHOLDS, RunSpec, ablation_plan
from .report import _git_commit, _manifest, render_figures, summary_markdown
from .results import (
    FINISHED,
    GRADIENT_COLUMNS,
    HISTOGRAM_COLUMNS,
    PCK_COLUMNS,
    RESULT_FILE,
    AblationResult,
    _concat,
    collect,
    stored_tables,
)


# ------------------------------------------------------------------------------------------------
# One run
# ------------------------------------------------------------------------------------------------
def _tracker_frames(tracker, spec: RunSpec):
    """The tracker's norms and (non-zero) histogram bins as tidy frames with run columns."""
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
        df.insert(0, "setting", spec.setting)
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
        write_csv(os.path.join(d, "gradients.partial.csv"), norms, float_format="%.7g")
        write_csv(os.path.join(d, "histograms.partial.csv"), hist, float_format=None)
        write_json(os.path.join(d, "partial.json"), {"step": trainer.step})
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
    ckpt = os.path.join(run_dir, "checkpoint.pt")
    meta = os.path.join(run_dir, "partial.json")
    if not (os.path.isfile(ckpt) and os.path.isfile(meta)):
        return None
    try:
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


def _trainer(spec: RunSpec, run_dir: str, train_set, previous, progress: bool):
    """A fresh model (seeded) and its Trainer with the gradient tracker and the run saver."""
    seed_everything(spec.seed)
    model = CPM.from_preset(spec.preset, num_stages=spec.num_stages, **dict(spec.model_overrides))
    overrides = dict(spec.train_overrides)
    if spec.preset == "paper" and "lr_step" not in overrides:
        overrides["lr_step"] = None  # decay x0.333 at each third of every phase, whatever its length
    config = TrainConfig.for_preset(spec.preset, **{
        **dict(steps=spec.steps, batch_size=spec.batch_size, strategy=spec.strategy, seed=spec.seed,
               device=spec.device, checkpoint=os.path.join(run_dir, "checkpoint.pt"), checkpoint_every=0,
               checkpoint_minutes=0,  # _RunSaver writes checkpoints together with the gradient records
               progress=progress, eval_every=0, eval_thresholds=THRESHOLDS, eval_normalize=NORMALIZE),
        **overrides})
    tracker = GradientTracker(every=spec.grad_every, histogram_layers="default")
    saver = _RunSaver(run_dir, spec, tracker, previous)
    return Trainer(model, train_set, config, callbacks=[tracker, saver]), tracker



def _write_diverged(run_dir: str, spec: RunSpec, tracker, previous) -> None:
    """Files of a diverged run: its gradient records so far and an empty metrics table."""
    norms, hist = _tracker_frames(tracker, spec)
    write_csv(os.path.join(run_dir, "gradients.csv"), _concat([previous[0], norms], GRADIENT_COLUMNS))
    write_csv(os.path.join(run_dir, "histograms.csv"), _concat([previous[1], hist], HISTOGRAM_COLUMNS),
              float_format=None)
    write_csv(os.path.join(run_dir, "pck.csv"), pd.DataFrame(columns=PCK_COLUMNS[1:]))
    _drop_partials(run_dir, ("gradients.partial.csv", "histograms.partial.csv"))


def _write_done(run_dir: str, spec: RunSpec, trainer, history, eval_set) -> dict:
    """Evaluate a finished run and write its metrics, history and gradient files; returns the
    result fields (status, eval time, final loss, final-stage PCK per threshold)."""
    t1 = time.perf_counter()
    table = trainer.evaluate(eval_set, batch_size=max(32, spec.batch_size), thresholds=THRESHOLDS,
                             normalize=NORMALIZE)
    eval_s = time.perf_counter() - t1
    table.insert(0, "seed", spec.seed)
    table.insert(0, "num_stages", spec.num_stages)
    table.insert(0, "strategy", spec.strategy)
    table.insert(0, "setting", spec.setting)
    write_csv(os.path.join(run_dir, "pck.csv"), table)
    write_csv(os.path.join(run_dir, "history.csv"), history)
    for name in ("gradients", "histograms"):
        os.replace(os.path.join(run_dir, f"{name}.partial.csv"), os.path.join(run_dir, f"{name}.csv"))
    tail = history["loss"].iloc[-max(1, len(history) // 10):]
    final = table[(table["metric"] == "pck") & (table["part"] == "mean") & (table["stage"] == spec.num_stages)]
    return dict(status="done", error="", eval_s=eval_s, final_loss=float(tail.mean()),
                **{f"pck@{t:g}": float(final[final["threshold"] == t]["value"].iloc[0]) for t in THRESHOLDS})


def _drop_partials(run_dir: str, names: Sequence[str]) -> None:
    for name in names:
        path = os.path.join(run_dir, name)
        if os.path.exists(path):
            os.unlink(path)


def train_run(spec: RunSpec, run_dir: str, resume: bool = True, progress: bool = False) -> dict:
    """Train and evaluate one run into ``run_dir`` and return its ``result.json`` content.

    Writes config.json first and result.json last (see the module docstring). A run that
    diverges (non-finite loss) is recorded with status "diverged" and no metrics. A checkpoint
    that cannot be resumed restarts the run from scratch. Other errors propagate (the caller
    records them as "failed").
    """
    os.makedirs(run_dir, exist_ok=True)
    t_start, c_start = time.perf_counter(), time.process_time()
    state = _resume_state(run_dir, spec) if resume else None
    write_json(os.path.join(run_dir, "config.json"), {"run_id": spec.run_id, "spec": asdict(spec),
                                                       "settings": spec.settings()})
    size = dict(spec.model_overrides).get("input_size", PRESETS[spec.preset].input_size)
    train_set = make_dataset(spec.data, size, split="train", seed=spec.seed)
    eval_set = make_dataset(spec.data, size, split="test", seed=spec.eval_seed, length=spec.eval_size)
    empty = (pd.DataFrame(columns=GRADIENT_COLUMNS), pd.DataFrame(columns=HISTOGRAM_COLUMNS))
    resume_from, previous, resumed = state if state is not None else (None, empty, 0)
    trainer, tracker = _trainer(spec, run_dir, train_set, previous, progress)
    result = {"run_id": spec.run_id, "settings": spec.settings(), "experiments": list(spec.experiments),
              "resumed_from_step": resumed, "device": str(trainer.device), "torch_threads": torch.get_num_threads()}
    t0 = time.perf_counter()
    try:
        try:
            history = trainer.fit(resume=resume_from)
        except ValueError as exc:
            if resume_from is None or "checkpoint" not in str(exc):
                raise
            warnings.warn(f"{spec.run_id}: cannot resume from {resume_from} ({exc}); training from scratch")
            previous, result["resumed_from_step"] = empty, 0
            trainer, tracker = _trainer(spec, run_dir, train_set, previous, progress)
            history = trainer.fit()
    except TrainingDiverged as exc:
        result.update(status="diverged", error=str(exc), train_s=time.perf_counter() - t0, eval_s=0.0,
                      final_loss=float("nan"))
        _write_diverged(run_dir, spec, tracker, previous)
    else:
        result["train_s"] = time.perf_counter() - t0
        result.update(_write_done(run_dir, spec, trainer, history, eval_set))
    result.update(wall_s=time.perf_counter() - t_start, cpu_s=time.process_time() - c_start)
    write_json(os.path.join(run_dir, RESULT_FILE), result)
    _drop_partials(run_dir, ("partial.json",))
    return result


#: Seconds between a worker's checks that the sweep's process is alive, and the time it gives a
#: training run to save its checkpoint (SIGTERM) before it exits anyway.
PARENT_POLL_S, PARENT_GONE_GRACE_S = 1.0, 10.0


def _exit_with_parent(parent: int) -> None:
    """Daemon thread of a worker: once the sweep's process ``parent`` is gone (the worker was
    re-parented, e.g. after a ``kill -9``), SIGTERM this worker, which makes a training run save
    and stop after its current step, and exit for good after a grace period."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(PARENT_GONE_GRACE_S)
    os._exit(1)


def _worker_init(threads: int | None, parent: int | None = None) -> None:
    """Process-pool initialiser: torch threads, and exit when the sweep's process ``parent`` dies."""
    if threads:
        torch.set_num_threads(threads)
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent,), name="exit-with-parent", daemon=True).start()


def _failed(spec: RunSpec, exc: BaseException, t0: float) -> dict:
    return {"run_id": spec.run_id, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(), "wall_s": time.perf_counter() - t0}


def _worker(spec: RunSpec, run_dir: str, resume: bool) -> dict:
    """Process-pool entry point: never raises (errors become a "failed" result)."""
    t0 = time.perf_counter()
    try:
        return train_run(spec, run_dir, resume=resume, progress=False)
    except Exception as exc:  # recorded in runs.csv; the sweep goes on
        return _failed(spec, exc, t0)


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
# The sweep: plan, execute, write
# ------------------------------------------------------------------------------------------------
def run_ablation(out_dir: str | os.PathLike = "runs/ablation", preset: str = DEFAULT_PRESET, data: str = "synthetic",
                 strategies: Sequence[str] | None = None, stages: Sequence[int] | None = None,
                 seeds: Sequence[int] | None = None, steps: int | None = None, *, budget: str = "default",
                 batch_size: int | None = None, strategy_stages: int | None = None,
                 experiments: Sequence[str] = DEFAULT_EXPERIMENTS, eval_size: int | None | str = "auto",
                 eval_seed: int = 0, device: str = "auto", resume: bool = True, jobs: int | str = "auto",
                 threads: int | None = None, runs_dir: str | os.PathLike | None = None,
                 grad_every: int | None = None, checkpoint_every: int | None = None,
                 keep_checkpoints: bool = True, figures: bool = True, progress: bool = True,
                 command: str | None = None, train_overrides: dict | None = None,
                 model_overrides: dict | None = None,
                 normalisation_settings: Sequence[str] | None = None) -> AblationResult:
    """Run (or resume) the ablation sweep and write its tables and figures to ``out_dir``.

    Args:
        out_dir: folder of the aggregate CSVs, figures, summary.md and MANIFEST.json.
        preset: model preset (default "ablation": plain conv + ReLU stages, no normalisation,
            SGD, the paper's mechanism at CPU size; "tiny", "small", "paper"); with ``budget``
            it sets the defaults of the sweep (``ABLATION_BUDGETS``).
        data: dataset spec for ``cpm_lab.data.specs.make_dataset`` ("synthetic",
            "synthetic:easy", "lspet", ...). Training uses split "train" with the run's seed;
            evaluation the "test" split with ``eval_seed``.
        strategies: training strategies of the "strategies" experiment (default all four).
        stages: numbers of stages of the "stages" sweep (default 1..6; quick: 1..3).
        seeds: seeds (default: the budget's; 0..4 for "ablation", 0, 1, 2 for the other presets;
            quick: 0). Each seed sets initial weights and data order.
        steps, batch_size: optimiser steps and batch of EVERY run (default: the budget's;
            quick: 60 x 8).
        budget: "default" (for "ablation": 500 steps a run, 10 min on a 2-core CPU), "full"
            (for "ablation": 3000 steps a run, about 1 h: higher accuracy, and a stage curve
            that rises up to 5 stages) or "quick" (``QUICK``: a smoke test for tests and
            notebooks); see ``budget_settings``. Explicit arguments win.
        strategy_stages: number of stages of the strategies and normalisation experiments
            (default: the preset's, e.g. 6 for "ablation" and "paper", as in the paper's Fig. 6b).
        experiments: which of ``EXPERIMENTS`` to run (default ``DEFAULT_EXPERIMENTS``:
            strategies and stages; "normalisation" adds end-to-end with and without intermediate
            supervision under each of ``NORMALISATION_SETTINGS``: BatchNorm and/or Adam).
        eval_size: held-out images ("auto": the budget's for synthetic data, quick 64,
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
        normalisation_settings: the ``NORMALISATION_SETTINGS`` of the "normalisation" experiment
            besides "preset", its baseline (default: all).

    Returns:
        ``AblationResult`` (tables as pandas DataFrames, figure paths, manifest). Runs that fail
        are listed in ``runs`` with status "failed" and their error; the others still count.
    """

    specs = ablation_plan(preset, data, strategies, stages, seeds, steps, budget=budget, batch_size=batch_size,
                          strategy_stages=strategy_stages, experiments=experiments, eval_size=eval_size,
                          eval_seed=eval_seed, device=device, grad_every=grad_every,
                          checkpoint_every=checkpoint_every, train_overrides=train_overrides,
                          model_overrides=model_overrides, normalisation_settings=normalisation_settings)
    dev = resolve_device(device)
    jobs = _check_jobs(jobs, threads, dev)
    # Probe the data before creating folders, so a bad spec or a missing dataset fails at once.
    size = (model_overrides or {}).get("input_size", PRESETS[preset].input_size)
    make_dataset(data, size, split="test", seed=eval_seed, length=specs[0].eval_size)
    out_dir, runs_dir = _make_dirs(out_dir, runs_dir)
    t_start = time.perf_counter()
    git = _git_commit()  # the code that trains, not whatever is checked out when the runs end
    results = _finished_results(specs, runs_dir) if resume else {}
    todo = [spec for spec in specs if spec.run_id not in results]
    jobs = min(jobs, max(1, len(todo)))
    if threads is None and jobs > 1:
        threads = max(1, (os.cpu_count() or 1) // jobs)
    _execute(todo, len(specs), runs_dir, results, resume=resume, jobs=jobs, threads=threads,
             keep_checkpoints=keep_checkpoints, progress=progress)
    result = collect(specs, runs_dir, results)
    command = command or (f"cpm_lab.experiments.run_ablation({out_dir!r}, preset={preset!r}, data={data!r}, "
                          f"budget={budget!r})")
    result.manifest = _manifest(command, specs, result.runs, time.perf_counter() - t_start, dev, jobs, threads,
                                out_dir, runs_dir, git)
    return _write_results(result, out_dir, figures)


def _check_jobs(jobs: int | str, threads: int | None, dev: torch.device) -> int:
    """The number of parallel runs ("auto": 1 on an accelerator, else the CPU cores, at most 4)."""
    if jobs == "auto":
        jobs = 1 if dev.type != "cpu" else max(1, min(os.cpu_count() or 1, 4))
    if not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer or 'auto', got {jobs!r}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return jobs


def _make_dirs(out_dir, runs_dir) -> tuple[str, str]:
    """Create the output folder and the runs folder (default ``out_dir/runs``)."""
    out_dir = os.fspath(out_dir)
    runs_dir = os.fspath(runs_dir) if runs_dir is not None else os.path.join(out_dir, "runs")
    for folder, name in ((out_dir, "out_dir"), (runs_dir, "runs_dir")):
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise ValueError(f"cannot create {name} {folder!r}: {exc.strerror or exc}") from None
    return out_dir, runs_dir


def _finished_results(specs: Sequence[RunSpec], runs_dir: str) -> dict[str, dict]:
    """The stored results of the runs that already finished, by run id."""
    results: dict[str, dict] = {}
    for spec in specs:
        done = _finished_result(spec, os.path.join(runs_dir, spec.run_id))
        if done is not None:
            results[spec.run_id] = {**done, "trained_now": False}
    return results


def _execute(todo: list[RunSpec], total: int, runs_dir: str, results: dict, *, resume: bool, jobs: int,
             threads: int | None, keep_checkpoints: bool, progress: bool) -> None:
    """Train the runs of ``todo`` (in this process, or ``jobs`` spawned workers) and add their
    results to ``results``; a failed run is recorded, and the sweep goes on."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=total - len(todo), desc="ablation runs", unit="run", disable=not progress,
               dynamic_ncols=True)

    def finish(spec: RunSpec, result: dict) -> None:
        results[spec.run_id] = {**result, "trained_now": True}
        run_dir = os.path.join(runs_dir, spec.run_id)
        if result.get("status") == "failed":
            write_json(os.path.join(run_dir, "error.json"), result)
        elif not keep_checkpoints:
            _drop_partials(run_dir, ("checkpoint.pt",))
        pck = result.get("pck@0.2", float("nan"))
        bar.write(f"{spec.run_id}: {result.get('status')} in {result.get('wall_s', float('nan')):.0f} s"
                  + (f", final-stage PCK@0.2 = {pck:.3f}" if result.get("status") == "done" else
                     f" ({result.get('error', '')})"))
        bar.update(1)

    try:
        if jobs == 1:
            prev_threads = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                for spec in todo:
                    bar.set_postfix_str(spec.run_id)
                    t0 = time.perf_counter()
                    try:
                        res = train_run(spec, os.path.join(runs_dir, spec.run_id), resume=resume,
                                        progress=progress and spec.steps >= 1000)
                    except Exception as exc:
                        res = _failed(spec, exc, t0)
                    finish(spec, res)
            finally:
                torch.set_num_threads(prev_threads)
        elif todo:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads, os.getpid())) as pool:
                futures = {pool.submit(_worker, spec, os.path.join(runs_dir, spec.run_id), resume): spec
                           for spec in todo}
                for fut in as_completed(futures):
                    finish(futures[fut], fut.result())
    finally:
        bar.close()


def _write_results(result: AblationResult, out_dir: str, figures: bool) -> AblationResult:
    """The aggregate tables, figures, summary.md and MANIFEST.json of a sweep, in ``out_dir``."""
    result.out_dir = out_dir
    write_csv(os.path.join(out_dir, "pck.csv"), result.pck)
    write_csv(os.path.join(out_dir, "gradients.csv"), result.gradients, float_format="%.4g")
    write_csv(os.path.join(out_dir, "histograms.csv"), result.histograms, float_format="%.4g")
    write_csv(os.path.join(out_dir, "runs.csv"), result.runs, float_format="%.4g")
    # From here on, the tables as stored: summary.md and the figures then say exactly what
    # load_results(out_dir) will compute from the files (CSV rounds to 4-6 digits).
    for name, table in stored_tables(out_dir).items():
        setattr(result, name, table)
    write_csv(os.path.join(out_dir, "summary.csv"), result.summary, float_format="%.4g")
    if figures:
        result.figures = render_figures(result, out_dir)
    write_text(os.path.join(out_dir, "summary.md"), summary_markdown(result))
    write_json(os.path.join(out_dir, "MANIFEST.json"), result.manifest)
    return result
