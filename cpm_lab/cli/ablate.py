"""``cpm-lab ablate``: the paper's ablations (training strategies, number of stages, gradient
flow), run by ``cpm_lab.experiments.run_ablation``.

``--out`` (and ``--runs-dir`` when it lies elsewhere) is locked while the sweep runs
(``files.output_lock``): a second sweep into the same folder is refused, naming the first one's
PID. The runs' worker processes (``--jobs`` > 1) exit when this process dies."""
from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import sys

from .._argtypes import positive_float, positive_int
from . import command

CLI_HELP = "run the paper's ablations: training strategies, number of stages, gradient flow"


def _int_list(text: str) -> list[int]:
    """``"0,1,2"`` or ranges ``"1-6"`` / ``"1-3,5"`` -> list of non-negative ints."""
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


def _name_list(text: str, choices, what: str) -> list[str]:
    """``"a,b"`` -> ["a", "b"], each one of ``choices`` (else one argparse error line)."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if s not in choices]
    if not names or bad:
        raise argparse.ArgumentTypeError(f"unknown {what} {bad[0] if bad else text!r}; choose from "
                                         f"{', '.join(choices)} (comma-separated)")
    return names


def _strategy_list(text: str) -> list[str]:
    from ..train.phases import STRATEGIES

    return _name_list(text, STRATEGIES, "strategy")


def _setting_list(text: str) -> list[str]:
    from ..experiments import NORMALISATION_SETTINGS

    return _name_list(text, tuple(NORMALISATION_SETTINGS), "setting")


def _jobs(text: str):
    return "auto" if text == "auto" else positive_int(text)


def _arguments(p) -> None:
    """Arguments of ``cpm-lab ablate`` (an argparse parser)."""
    from ..experiments import BUDGETS, DEFAULT_EXPERIMENTS, DEFAULT_PRESET
    from ..models.cpm import PRESETS

    p.add_argument("--out", default="runs/ablation", help="folder of the tables, figures and manifest "
                   "(default: runs/ablation)")
    p.add_argument("--runs-dir", help="folder of the per-run directories with checkpoints (default: OUT/runs)")
    p.add_argument("--budget", choices=BUDGETS, default="default",
                   help="default: 10 min on a 2-core CPU (ablation preset: 500 steps a run, 5 seeds); full: 3000 "
                        "steps a run, about 1 h: higher accuracy and the stage curve of Fig. 6c rising to 5 stages; "
                        "quick: a smoke test (~1 min)")
    p.add_argument("--quick", dest="budget", action="store_const", const="quick", help="the same as --budget quick")
    p.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help=f"model preset (default: {DEFAULT_PRESET}: plain conv + ReLU, no normalisation, SGD)")
    p.add_argument("--data", default="synthetic", help="dataset spec, e.g. synthetic, synthetic:easy, lspet")
    p.add_argument("--seeds", type=_int_list, help="seeds, e.g. 0,1,2 or 0-4 (default: the budget's; ablation 0-4)")
    p.add_argument("--stages", type=_int_list, help="numbers of stages of the stage sweep, e.g. 1-6 (default)")
    p.add_argument("--strategies", type=_strategy_list, help="comma-separated training strategies (default: all)")
    p.add_argument("--strategy-stages", type=positive_int,
                   help="stages of the strategies and normalisation experiments (default: the preset's)")
    p.add_argument("--experiments", type=lambda t: [e.strip() for e in t.split(",") if e.strip()],
                   default=list(DEFAULT_EXPERIMENTS),
                   help="comma-separated subset of strategies,stages,normalisation (default: strategies,stages; "
                        "normalisation adds BatchNorm and/or Adam runs with and without intermediate supervision)")
    p.add_argument("--settings", type=_setting_list,
                   help="settings of the normalisation experiment besides the preset's own, comma-separated "
                        "(default: all: batchnorm,adam,batchnorm+adam)")
    p.add_argument("--steps", type=positive_int,
                   help="optimiser steps of every run (default: the budget's; ablation 500, full 3000; quick 60)")
    p.add_argument("--batch-size", type=positive_int, help="batch size of every run (default: the budget's; 8)")
    p.add_argument("--optimizer", choices=("auto", "adam", "sgd"), help="optimiser of every run (default: the "
                   "preset's; ablation and paper: SGD, tiny: Adam)")
    p.add_argument("--lr", type=positive_float, help="learning rate of every run (default: the preset's; "
                   "ablation 1e-3)")
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


def _ablate(args) -> int:
    """Handler of ``cpm-lab ablate``: run the sweep, print the headline table; 1 if a run failed."""
    from ..experiments import EXPERIMENTS, summary_markdown
    from ..files import output_lock

    bad = [e for e in args.experiments if e not in EXPERIMENTS]
    if bad or not args.experiments:
        raise ValueError(f"--experiments: expected a comma-separated subset of {','.join(EXPERIMENTS)}, "
                         f"got {','.join(args.experiments) or 'nothing'}")
    if sys.argv[1:2] == ["ablate"]:  # the real command line
        command = "cpm-lab " + shlex.join(sys.argv[1:])
    else:  # called as main([...]) from Python
        command = "cpm-lab ablate " + " ".join(f"--{k.replace('_', '-')}={v}" for k, v in sorted(vars(args).items())
                                               if not k.startswith("_") and k != "command" and v not in (None, False))
    with contextlib.ExitStack() as locks:
        for folder in _folders(args):
            locks.enter_context(output_lock(folder, command=command))
        result = _run(args, command)
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


def _run(args, command: str):
    """``run_ablation`` with the command line's settings."""
    from ..experiments import run_ablation

    return run_ablation(args.out, preset=args.preset, data=args.data, strategies=args.strategies,
                        stages=args.stages, seeds=args.seeds, steps=args.steps, budget=args.budget,
                        batch_size=args.batch_size, strategy_stages=args.strategy_stages,
                        experiments=args.experiments,
                        eval_size=args.eval_size if args.eval_size is not None else "auto", device=args.device,
                        resume=not args.no_resume, jobs=args.jobs, threads=args.threads, runs_dir=args.runs_dir,
                        keep_checkpoints=not args.no_checkpoints, figures=not args.no_figures,
                        progress=not args.no_progress, command=command,
                        train_overrides={k: v for k, v in (("optimizer", args.optimizer), ("lr", args.lr))
                                         if v is not None}, normalisation_settings=args.settings)


def _folders(args) -> list[str]:
    """The folders a sweep writes: ``--out``, and ``--runs-dir`` unless it lies inside ``--out``."""
    out = os.path.abspath(args.out)
    runs = os.path.abspath(args.runs_dir) if args.runs_dir else None
    return [out] + ([runs] if runs and os.path.commonpath([out, runs]) != out else [])


command("ablate", CLI_HELP, _arguments)(_ablate)
