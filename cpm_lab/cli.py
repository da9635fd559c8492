"""``cpm-lab``: headless entry points (also ``python -m cpm_lab.cli``).

Commands::

    cpm-lab train --preset tiny --data synthetic --out runs/tiny [--steps N] [--strategy S] ...
                  [--augment/--no-augment] [--cache/--no-cache]
    cpm-lab eval  --checkpoint runs/tiny/checkpoint.pt --data synthetic [--split S] [--out eval.csv]
    cpm-lab eval  --mean-pose --data lspet --split val [--out baseline.csv]
    cpm-lab ablate [--quick] [--out data/results] ...   (cpm_lab.experiments)
    cpm-lab demo  [--out runs/demo]                      (cpm_lab.demo)

``train`` writes ``OUT/config.json``, ``OUT/history.csv`` (one row per step), ``OUT/checkpoint.pt``
and ``OUT/eval.csv`` (tidy per-stage/per-part metrics of the final model on the held-out ``test``
split of ``--data``, which uses a different seed from the training split).

Real data (``--data lspet``, ``lsp``, ``mpii``, ``coco``; see ``cpm_lab.data.specs``) is trained
with the paper's person-centred augmentation (``cpm_lab.data.Augment``: zoom 0.7-1.3, rotation
+-40 deg, horizontal flip with left/right relabelling, on the training device) and with decoded
crops cached in memory as uint8; synthetic data with neither (its generator already varies pose,
scale and rotation, and renders each item anew). ``--augment/--no-augment`` and
``--cache/--no-cache`` override either; ``config.json`` records both.

``eval`` prints the per-stage PCK table and a per-part table of the last stage. ``eval
--mean-pose`` scores ``MeanPoseBaseline`` (the mean training pose placed in each person box; fitted
on the ``train`` split of the same spec) exactly like a model, as one stage numbered 1.

Distributed: ``torchrun --nproc_per_node=N -m cpm_lab.cli train ...`` trains with DDP (NCCL on
GPUs, gloo on CPU); ``--batch-size`` is the GLOBAL batch, split evenly over the N processes; only
rank 0 writes files and prints.

Adding a command: write ``add_arguments(parser)`` and ``run(args) -> int`` and decorate ``run``
with ``@command("name", "one-line help", add_arguments)``. Errors a user can cause should raise
``CLIError`` / ``ValueError`` / ``FileNotFoundError``: ``main`` prints them as ONE line on stderr
and exits with status 2 (never a traceback; set ``CPM_LAB_DEBUG=1`` to see one).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

from ._argtypes import nonneg_int, positive_float, positive_int

# Idle OpenMP threads sleep instead of spinning. On a CPU shared with other busy processes,
# spinning threads make every parallel op wait for a descheduled peer (measured: a tiny-preset
# step 5-10x slower with 2 threads than with 1); sleeping costs microseconds when the CPU is idle.
# Takes effect only if torch is not imported yet; set OMP_WAIT_POLICY yourself to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROG = "cpm-lab"


class CLIError(Exception):
    """A user error on the command line; printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block and exit
        raise CLIError(f"{self.prog}: {message}")


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: The registry of subcommands, in the order they appear in ``--help``.
COMMANDS: dict[str, Command] = {}


def command(name: str, help: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    """Decorator registering ``run(args) -> int`` as ``cpm-lab NAME``."""
    def register(run: Callable[[argparse.Namespace], int]):
        if name in COMMANDS:
            raise ValueError(f"cpm-lab command {name!r} is already registered")
        COMMANDS[name] = Command(name, help, add_arguments, run)
        return run
    return register


# ------------------------------------------------------------------------------------------------
# Argument helpers
# ------------------------------------------------------------------------------------------------
def _float_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like 0.8,1.0,1.2; got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive comma-separated numbers, got {text!r}")
    return values


def ensure_writable_dir(path: str) -> str:
    """Create ``path`` if needed and check a file can be written there; CLIError otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise CLIError(f"cannot write to output directory {path!r}: {exc.strerror or exc}") from None
    return path


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def format_pck_table(table, thresholds: Sequence[float] = (0.1, 0.2), title: str = "") -> str:
    """Stages as rows, PCK@thresholds as columns (mean over all visible joints), as text."""
    from .metrics import pck_table

    wide = pck_table(table, thresholds)
    norm = table.loc[table["metric"] == "pck", "normalize"].iloc[0]
    count = int(table[(table["metric"] == "pck") & (table["part"] == "mean")]["count"].iloc[0])
    head = f"PCK ({norm}-normalised; mean over {count} visible joints)"
    lines = ([title] if title else []) + [head]
    cols = list(wide.columns)
    lines.append("stage  " + "  ".join(f"{c:>18}" for c in cols))
    for stage, row in wide.iterrows():
        lines.append(f"{int(stage):>5}  " + "  ".join(f"{row[c]:>18.3f}" for c in cols))
    return "\n".join(lines)


def format_part_table(table, thresholds: Sequence[float] = (0.1, 0.2), stage: int | None = None,
                      title: str = "") -> str:
    """Parts as rows (the pooled "mean" last), PCK@thresholds of one stage (default: the last) as
    columns, plus ``n``, the number of visible joints each row averages; as text."""
    pck = table[table["metric"] == "pck"]
    stage = int(pck["stage"].max()) if stage is None else int(stage)
    sub = pck[(pck["stage"] == stage) & pck["threshold"].isin([float(t) for t in thresholds])]
    if sub.empty:
        raise ValueError(f"no PCK rows for stage {stage} at thresholds {list(thresholds)} in the table")
    wide = sub.pivot_table(index="part", columns="threshold", values="value", aggfunc="first", sort=False)
    counts = sub.groupby("part", sort=False)["count"].first()
    norm = sub["normalize"].iloc[0]
    parts = [p for p in sub["part"].drop_duplicates() if p != "mean"] + ["mean"]
    cols = sorted(wide.columns)
    lines = ([title] if title else []) + [f"per part, stage {stage} (PCK, {norm}-normalised)"]
    lines.append(f"{'part':<10}" + "".join(f"{'PCK@%g' % t:>10}" for t in cols) + f"{'n':>8}")
    for part in parts:
        lines.append(f"{part:<10}" + "".join(f"{wide.loc[part, t]:>10.3f}" for t in cols)
                     + f"{int(counts[part]):>8}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# cpm-lab train
# ------------------------------------------------------------------------------------------------
def _train_arguments(p: argparse.ArgumentParser) -> None:
    from .models.cpm import PRESETS
    from .train import STRATEGIES

    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model preset (default: tiny)")
    p.add_argument("--data", default="synthetic", help="dataset spec, e.g. synthetic or synthetic:hard")
    p.add_argument("--out", required=True, help="output directory (created if needed)")
    p.add_argument("--steps", type=positive_int, help="optimiser steps (default: the preset's budget)")
    p.add_argument("--strategy", default="end_to_end", choices=STRATEGIES, help="training strategy")
    p.add_argument("--batch-size", type=positive_int, help="GLOBAL batch size (default: the preset's)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default: the optimiser's)")
    p.add_argument("--optimizer", choices=("auto", "adam", "sgd"), default="auto")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the model init, data order and split")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA only)")
    p.add_argument("--eval-every", type=nonneg_int, default=0, help="evaluate every N steps (0 = only at the end)")
    p.add_argument("--eval-size", type=positive_int, default=512, help="held-out items for evaluation")
    p.add_argument("--checkpoint-every", type=nonneg_int, default=0, help="also checkpoint every N steps")
    p.add_argument("--workers", type=nonneg_int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=positive_int,
                   help="CPU threads for torch (default: torch's choice; 1 is often fastest on a busy CPU)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (same settings)")
    p.add_argument("--stop-at", type=positive_int, help="stop after this step (resume later with --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="the paper's augmentation: zoom 0.7-1.3, rotation +-40 deg, flip with left/right "
                        "swap, on the device (default: on for real data, off for synthetic)")
    p.add_argument("--cache", action=argparse.BooleanOptionalAction, default=None,
                   help="keep decoded real-data crops in memory as uint8, N x S x S x 3 bytes "
                        "(default: on for real data; synthetic data is never cached)")


def augment_settings(augment) -> dict:
    """What ``config.json`` records about augmentation: ``enabled`` plus, when on, the
    ``Augment`` parameters (zoom range, maximum rotation in degrees, flip, ...)."""
    if augment is None:
        return {"enabled": False}
    return {"enabled": True, "scale": list(augment.scale), "rotation_deg": augment.rotation,
            "flip": augment.flip, "flip_prob": augment.flip_prob, "translate": augment.translate,
            "padding_mode": augment.padding_mode}


def _train(args: argparse.Namespace) -> int:
    import torch.distributed as dist

    from .data.augment import Augment
    from .data.specs import is_real, make_dataset
    from .models.cpm import CPM
    from .train import Trainer, TrainConfig, setup_distributed
    from .utils import seed_everything

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    main_process = _is_main_process()
    out = ensure_writable_dir(args.out) if main_process else args.out
    ckpt_path = os.path.join(out, "checkpoint.pt")
    if args.resume and not os.path.isfile(ckpt_path):
        raise CLIError(f"--resume: no checkpoint at {ckpt_path!r}")
    real = is_real(args.data)
    augment = Augment() if (real if args.augment is None else args.augment) else None
    cache = real if args.cache is None else args.cache
    if cache and not real:
        raise CLIError(f"--cache: {args.data!r} is not a real dataset (synthetic items are generated on the "
                       f"fly); only real data is cached")
    if args.resume:
        _check_resume_augment(os.path.join(out, "config.json"), augment_settings(augment))
    overrides = {k: v for k, v in dict(steps=args.steps, batch_size=args.batch_size, lr=args.lr, amp=args.amp).items()
                 if v is not None}
    config = TrainConfig.for_preset(args.preset, strategy=args.strategy, optimizer=args.optimizer, seed=args.seed,
                                    device=args.device, eval_every=args.eval_every, checkpoint=ckpt_path,
                                    checkpoint_every=args.checkpoint_every, num_workers=args.workers,
                                    progress=not args.no_progress, **overrides)
    if args.stop_at is not None and args.stop_at > config.steps:
        raise CLIError(f"--stop-at {args.stop_at} is beyond --steps {config.steps}")
    seed_everything(args.seed)
    model = CPM.from_preset(args.preset)
    size = model.config.input_size
    train_set = make_dataset(args.data, size, split="train", seed=args.seed, cache=cache)
    eval_set = make_dataset(args.data, size, split="test", seed=args.seed, length=args.eval_size,
                            cache=cache and args.eval_every > 0)  # evaluated once: nothing to reuse

    rank, world, device = setup_distributed(args.device)
    config.device = str(device)
    try:
        trainer = Trainer(model, train_set, config, eval_set=eval_set, augment=augment)
        if rank == 0:
            with open(os.path.join(out, "config.json"), "w") as f:
                json.dump({"preset": args.preset, "data": args.data, "model": model.config.to_dict(),
                           "train": config.to_dict(), "world_size": world,
                           "per_rank_batch_size": config.batch_size // world,
                           "train_items": len(train_set), "eval_items": len(eval_set),
                           "augment": augment_settings(augment), "cache": cache}, f, indent=2)
            print(f"training {args.preset} ({sum(p.numel() for p in model.parameters()):,} parameters) on "
                  f"{args.data}, {config.steps} steps x batch {config.batch_size}, strategy {config.strategy}, "
                  f"augment {'on' if augment else 'off'}, crop cache {'on' if cache else 'off'}, "
                  f"device {device}" + (f", {world} processes" if world > 1 else ""), flush=True)
        t0 = time.perf_counter()
        history = trainer.fit(resume=ckpt_path if args.resume else None, until=args.stop_at)
        elapsed = time.perf_counter() - t0
        if rank == 0:
            history.to_csv(os.path.join(out, "history.csv"), index=False)
            if trainer.step < config.steps:
                print(f"stopped at step {trainer.step} of {config.steps} after {elapsed:.1f} s; "
                      f"continue with --resume. Checkpoint: {ckpt_path}")
                return 0
            evals = trainer.evals
            final = (evals[evals["step"] == config.steps].drop(columns="step") if len(evals)
                     and (evals["step"] == config.steps).any() else trainer.evaluate(eval_set))
            final.to_csv(os.path.join(out, "eval.csv"), index=False)
            print(format_pck_table(final, title=f"held-out {eval_set.split_description}, {len(eval_set)} images, "
                                                f"after {config.steps} steps, {elapsed:.1f} s of training"))
            print(f"wrote {out}/config.json, history.csv, checkpoint.pt, eval.csv")
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


command("train", "train a CPM and evaluate it on a held-out split", _train_arguments)(_train)


def _check_resume_augment(config_path: str, wanted: dict) -> None:
    """CLIError when the run being resumed was trained with augmentation on and now off (or
    the reverse); the checkpoint itself does not record it."""
    try:
        with open(config_path) as f:
            before = json.load(f).get("augment")
    except (OSError, ValueError):
        return  # no readable config.json: nothing to compare with
    if isinstance(before, dict) and bool(before.get("enabled")) != wanted["enabled"]:
        was = "on" if before.get("enabled") else "off"
        raise CLIError(f"--resume: {config_path} says the run was trained with augmentation {was}; "
                       f"resume with {'--augment' if was == 'on' else '--no-augment'}")


# ------------------------------------------------------------------------------------------------
# cpm-lab eval
# ------------------------------------------------------------------------------------------------
#: ``eval --size`` default for synthetic data (real data: the whole split).
EVAL_SYNTHETIC_SIZE = 512
#: ``eval --mean-pose --fit-size`` default for synthetic data (real data: the whole train split).
FIT_SYNTHETIC_SIZE = 2000
#: ``eval --mean-pose --image-size`` default: the tiny preset's input side in pixels.
MEAN_POSE_IMAGE_SIZE = 128


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a checkpoint.pt written by cpm-lab train")
    what.add_argument("--mean-pose", action="store_true",
                      help="score the mean-pose baseline (fitted on the train split of --data) instead")
    p.add_argument("--data", default="synthetic", help="dataset spec, e.g. synthetic:standard or lspet")
    p.add_argument("--out", help="write the tidy metrics table to this CSV file")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--size", type=positive_int,
                   help=f"evaluate the first N items (default: {EVAL_SYNTHETIC_SIZE} for synthetic data, "
                        "the whole split for real data)")
    p.add_argument("--fit-size", type=positive_int,
                   help=f"--mean-pose: fit on the first N train items (default: the whole split for real "
                        f"data, {FIT_SYNTHETIC_SIZE} for synthetic data, which must be rendered)")
    p.add_argument("--image-size", type=positive_int,
                   help=f"--mean-pose: crop side in pixels (default {MEAN_POSE_IMAGE_SIZE}, the tiny "
                        "preset's input; a checkpoint brings its own)")
    p.add_argument("--seed", type=nonneg_int,
                   help="synthetic data seed (default: the checkpoint's training seed; 0 with --mean-pose)")
    p.add_argument("--normalize", default="torso", choices=("torso", "bbox", "head", "px"))
    p.add_argument("--flip", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--scales", type=_float_list, help="multi-scale testing, e.g. 0.8,0.9,1.0,1.1,1.2")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch")


def _eval(args: argparse.Namespace) -> int:
    from .data.specs import is_real, make_dataset

    if args.mean_pose:
        bad = [flag for flag, given in (("--flip", args.flip), ("--scales", args.scales)) if given]
        if bad:
            raise CLIError(f"{PROG} eval: {' and '.join(bad)} (test-time augmentation of a model) "
                           f"cannot be used with --mean-pose")
    else:
        if args.fit_size is not None or args.image_size is not None:
            flag = "--fit-size" if args.fit_size is not None else "--image-size"
            raise CLIError(f"{PROG} eval: {flag} applies to --mean-pose only (a checkpoint is scored at its "
                           f"own input size, on --size items)")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    real = is_real(args.data)
    size = args.size if args.size is not None else (None if real else EVAL_SYNTHETIC_SIZE)
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        ensure_writable_dir(folder)
    if args.mean_pose:
        from .data.baseline import MeanPoseBaseline

        image_size = args.image_size or MEAN_POSE_IMAGE_SIZE
        seed = args.seed or 0
        fit = args.fit_size if args.fit_size is not None else (None if real else FIT_SYNTHETIC_SIZE)
        train_set = make_dataset(args.data, image_size, split="train", seed=seed, length=fit)
        dataset = make_dataset(args.data, image_size, split=args.split, seed=seed, length=size)
        baseline = MeanPoseBaseline().fit(train_set)
        table = baseline.evaluate(dataset, normalize=args.normalize)
        title = (f"mean-pose baseline (fitted on {len(train_set)} items of {train_set.split_description}) on "
                 f"{dataset.split_description}, {len(dataset)} images, {image_size} px crops")
    else:
        from .metrics import evaluate
        from .train import load_model, read_checkpoint
        from .utils import resolve_device

        device = resolve_device(args.device)
        ckpt = read_checkpoint(args.checkpoint)
        seed = args.seed if args.seed is not None else int(ckpt["train_config"].get("seed", 0))
        model = load_model(args.checkpoint, device=device)
        dataset = make_dataset(args.data, model.config.input_size, split=args.split, seed=seed, length=size)
        table = evaluate(model, dataset, batch_size=args.batch_size, device=device, flip=args.flip,
                         scales=args.scales, normalize=args.normalize)
        extras = ", flip" if args.flip else ""
        extras += f", scales {args.scales}" if args.scales else ""
        title = (f"{args.checkpoint} (preset {model.config.name!r}, step {ckpt['step']}) "
                 f"on {dataset.split_description}, {len(dataset)} images{extras}")
    print(format_pck_table(table, title=title))
    print()
    print(format_part_table(table))
    if args.out:
        table.to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


command("eval", "evaluate a checkpoint or the mean-pose baseline: per-stage and per-part PCK, tidy CSV",
        _eval_arguments)(_eval)


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--samples", type=positive_int, default=128, help="held-out images to evaluate")
    p.add_argument("--seed", type=nonneg_int, default=0)


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(ensure_writable_dir(args.out), device=args.device, samples=args.samples, seed=args.seed)
    return 0


command("demo", "headless demo: sample, belief and receptive-field figures plus tables", _demo_arguments)(_demo)

from .experiments import register_cli  # noqa: E402  (the ablate command lives with its runner)

register_cli(command)


# ------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Convolutional Pose Machines: train, evaluate, explore.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cpm-lab``; returns the exit status (0 ok, 2 user error, 1 unexpected error, 130 ^C)."""
    parser = build_parser()
    debug = bool(os.environ.get("CPM_LAB_DEBUG"))
    if not debug:  # warnings as one line each, like errors, not file:line plus a source line
        warnings.formatwarning = lambda message, category, *_, **__: f"{PROG}: warning: {message}\n"
    try:
        args = parser.parse_args(argv)
        if getattr(args, "_run", None) is None:
            raise CLIError(f"{PROG}: choose a command: {', '.join(COMMANDS)} (see {PROG} --help)")
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as exc:
        if debug:
            raise
        msg = _one_line(exc)
        print(msg if msg.startswith(PROG) else f"{PROG}: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # unexpected: still one line unless debugging
        if debug:
            raise
        print(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)} (set CPM_LAB_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
