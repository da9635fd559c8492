"""``cpm-lab eval`` (a checkpoint or the mean-pose baseline: per-stage and per-part PCK, tidy
CSV) and ``cpm-lab demo`` (the headless twin of ``make lab``).

``eval`` prints the per-stage PCK table and a per-part table of the last stage. ``eval
--mean-pose`` scores ``MeanPoseBaseline`` (the mean training pose placed in each person box;
fitted on the ``train`` split of the same spec) exactly like a model, as one stage numbered 1.
"""
from __future__ import annotations

import argparse
import os

from .._argtypes import nonneg_int, positive_int
from . import PROG, CLIError, command, ensure_writable_dir, float_list, format_part_table, format_pck_table

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
    p.add_argument("--scales", type=float_list, help="multi-scale testing, e.g. 0.8,0.9,1.0,1.1,1.2")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch")


def _eval(args: argparse.Namespace) -> int:
    from ..data.specs import is_real, make_dataset

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
        from ..data.baseline import MeanPoseBaseline

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
        from ..inference import evaluate, load_model
        from ..train import read_checkpoint
        from ..utils import resolve_device

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
    from ..demo import run_demo

    run_demo(ensure_writable_dir(args.out), device=args.device, samples=args.samples, seed=args.seed)
    return 0


command("demo", "headless demo: sample, belief and receptive-field figures plus tables", _demo_arguments)(_demo)
