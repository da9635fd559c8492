"""Ablations in one command: the paper's experiments (Wei et al., CVPR 2016), reproducible anywhere.

::

    from cpm_lab.experiments import run_ablation
    result = run_ablation("runs/ablation", budget="quick")  # a smoke test, ~1-2 min on a laptop CPU
    result = run_ablation("runs/ablation")                  # 10 min on a 2-core CPU
    result = run_ablation("runs/ablation", budget="full")   # 6x longer runs, ~1 h
    result.summary                                          # final-stage PCK, mean +- std over seeds

or headless: ``cpm-lab ablate --out runs/ablation [--budget quick|default|full]`` (``cpm_lab.cli.ablate``).

Beside the paper's ablations, ``sigma`` sweeps the width of the part Gaussian
(``sigma_sweep``). One concern per module: ``plan`` (budgets, ``RunSpec``, ``plan_runs``), ``runner`` (one run and
the sweep: plan, execute, write), ``results`` (the tidy tables, ``AblationResult``, summaries),
``report`` (Markdown summary, figures, manifest, the paper's claims checked).

Three experiments, every run with the SAME number of optimiser steps and batch size:

* ``"strategies"`` (paper Fig. 6b, and Fig. 5 from its gradients): the four training strategies
  of ``cpm_lab.train`` (end-to-end with intermediate supervision, end-to-end with a loss on the
  final stage only, stage-wise, stage-wise + end-to-end fine-tuning) on a CPM with
  ``strategy_stages`` stages (default: the preset's number of stages; the paper's Fig. 6 caption
  says its comparisons use 3-stage CPMs, ``strategy_stages=3``).
* ``"stages"`` (paper Fig. 6c): end-to-end training with intermediate supervision of CPMs with
  1, 2, ..., 6 stages.
* ``"normalisation"`` (not in the paper; asked for by name): end-to-end training with and
  without intermediate supervision under the preset's recipe and with BatchNorm and/or Adam
  (``NORMALISATION_SETTINGS``): how much modern normalisation and adaptive optimisers shrink
  what intermediate supervision buys (``report.normalisation_table``).

The first two run by default (``DEFAULT_EXPERIMENTS``).

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
from .plan import (
    ABLATION_BUDGETS,
    BUDGETS,
    DEFAULT_EXPERIMENTS,
    DEFAULT_PRESET,
    EXPERIMENTS,
    NORMALISATION_SETTINGS,
    NORMALISATION_STRATEGIES,
    NORMALIZE,
    QUICK,
    THRESHOLDS,
    RunSpec,
    ablation_plan,
    budget_settings,
    plan_runs,
    relative_cost,
)
from .report import (
    check_claims,
    first_layer_ratios,
    normalisation_findings,
    normalisation_table,
    render_figures,
    summary_markdown,
)
from .results import (
    GRADIENT_COLUMNS,
    HISTOGRAM_COLUMNS,
    PCK_COLUMNS,
    RUN_COLUMNS,
    SUMMARY_COLUMNS,
    AblationResult,
    collect,
    gradient_summary,
    load_results,
    of_setting,
    summarize,
)
from .runner import run_ablation, train_run
from .sigma import sigma_sweep
from .stats import PairedDifference, compare_paired

__all__ = ["ABLATION_BUDGETS", "AblationResult", "BUDGETS", "DEFAULT_EXPERIMENTS", "DEFAULT_PRESET", "EXPERIMENTS",
           "NORMALISATION_SETTINGS", "NORMALISATION_STRATEGIES", "normalisation_findings", "normalisation_table",
           "of_setting", "GRADIENT_COLUMNS", "HISTOGRAM_COLUMNS", "NORMALIZE", "PCK_COLUMNS", "QUICK", "RUN_COLUMNS",
           "RunSpec", "SUMMARY_COLUMNS", "THRESHOLDS", "ablation_plan", "budget_settings", "check_claims",
           "compare_paired", "first_layer_ratios", "PairedDifference", "collect", "gradient_summary", "load_results",
           "plan_runs", "relative_cost", "render_figures", "run_ablation", "sigma_sweep", "summarize",
           "summary_markdown", "train_run"]
