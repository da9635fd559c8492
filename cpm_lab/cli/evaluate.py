"""``cpm-lab eval`` (a checkpoint or the mean-pose baseline: per-stage and per-part PCK, tidy
CSV) and ``cpm-lab demo`` (the headless twin of ``make lab``).

``eval`` prints the per-stage PCK table and a per-part table of the last stage, each titled with
the protocol and the joint set scored (``--joints``). Two protocols (``--protocol``):

* ``lsp`` (default for ``--data lsp`` / ``lsp:DIR``): the official LSP test of the CPM release
  on the whole original images (``cpm_lab.inference.protocol``): the person from the image
  centre and height, scales 0.7-1.3 (``--scales`` replaces them), beliefs summed on the image,
  PCK against the original annotations. Needs real data (no synthetic images).
* ``gt-crop`` (default otherwise): the dataset's own person crops, whose boxes come from the
  ground-truth joints: an oracle, not comparable with published numbers; ``--flip`` and
  ``--scales`` are its test-time augmentation.

``eval --mean-pose`` scores the mean training pose (fitted on the ``train`` split of the same
spec) exactly like a model, as one stage numbered 1: ``MeanPoseBaseline`` placed in each person
box for ``gt-crop``, ``ImageMeanPose`` (``(joint - image centre) / image height``) for ``lsp``.
"""
from __future__ import annotations

import argparse
import os
import sys

from .._argtypes import nonneg_int, positive_int
from . import PROG, CLIError, command, ensure_writable_dir, float_list, format_part_table, format_pck_table

#: ``eval --size`` default for synthetic data (real data: the whole split).
EVAL_SYNTHETIC_SIZE = 512
#: ``eval --mean-pose --fit-size`` default for synthetic data (real data: the whole train split).
FIT_SYNTHETIC_SIZE = 2000
#: ``eval --mean-pose --image-size`` default: the tiny preset's input side in pixels.
MEAN_POSE_IMAGE_SIZE = 128
#: ``--protocol`` and ``--joints`` choices: ``inference.PROTOCOLS`` and ``metrics.JOINT_SETS``,
#: spelt out so that building the parser does not import torch.
PROTOCOL_CHOICES = ("lsp", "gt-crop")
JOINT_CHOICES = ("labelled", "visible")


def _eval_arguments(p: argparse.ArgumentParser) -> None:
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", help="a checkpoint.pt written by cpm-lab train")
    what.add_argument("--mean-pose", action="store_true",
                      help="score the mean-pose baseline (fitted on the train split of --data) instead")
    p.add_argument("--data", default="synthetic", help="dataset spec, e.g. synthetic:standard or lspet")
    p.add_argument("--protocol", choices=PROTOCOL_CHOICES,
                   help="lsp: the official LSP test on the whole images (person from the image centre and "
                        "height, 7 scales 0.7-1.3, beliefs summed on the image); gt-crop: crops from the "
                        "ground-truth joints (an oracle). Default: lsp for --data lsp[:DIR], gt-crop otherwise")
    p.add_argument("--joints", choices=JOINT_CHOICES, default="labelled",
                   help="joints scored: every labelled joint (default; the LSP benchmark counts all 14, "
                        "occluded ones included) or the visible ones only")
    p.add_argument("--out", help="write the tidy metrics table to this CSV file")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--size", type=positive_int,
                   help=f"evaluate the first N items (default: {EVAL_SYNTHETIC_SIZE} for synthetic data, "
                        "the whole split for real data)")
    p.add_argument("--fit-size", type=positive_int,
                   help=f"--mean-pose: fit on the first N train items (default: the whole split for real "
                        f"data, {FIT_SYNTHETIC_SIZE} for synthetic data, which must be rendered)")
    p.add_argument("--image-size", type=positive_int,
                   help=f"--mean-pose --protocol gt-crop: crop side in pixels (default {MEAN_POSE_IMAGE_SIZE}, "
                        "the tiny preset's input; a checkpoint brings its own)")
    p.add_argument("--seed", type=nonneg_int,
                   help="synthetic data seed (default: the checkpoint's training seed; 0 with --mean-pose)")
    p.add_argument("--normalize", default="torso", choices=("torso", "torso-other", "bbox", "neck-head", "px"),
                   help="PCK length: torso (official LSP |l_sho - r_hip|), torso-other (|r_sho - l_hip|), bbox, "
                        "neck-head (NOT MPII PCKh: that needs annotated head boxes) or px")
    p.add_argument("--flip", action="store_true",
                   help="--protocol gt-crop: average with the horizontally flipped image")
    p.add_argument("--scales", type=float_list,
                   help="gt-crop: multi-scale testing, e.g. 0.8,0.9,1.0,1.1,1.2; lsp: the multipliers of the "
                        "scale search (default 0.7,0.8,...,1.3)")
    p.add_argument("--batch-size", type=positive_int, default=32,
                   help="network inputs per forward pass (lsp: whole images of one input per scale)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=positive_int, help="CPU threads for torch")
    p.add_argument("--skip-bad", action="store_true",
                   help="real data: open every image first and leave out unreadable images and invalid "
                        "annotations, with a warning that counts them (default: a bad sample is an error)")


def _protocol(args: argparse.Namespace) -> str:
    """The protocol to run (``--protocol`` or the default for ``--data``), after checking that
    the other options fit it and ``--mean-pose``."""
    from ..data.specs import is_real, parse_spec

    protocol = args.protocol or ("lsp" if parse_spec(args.data)[0] == "lsp" else "gt-crop")
    if args.mean_pose:
        bad = [flag for flag, given in (("--flip", args.flip), ("--scales", args.scales)) if given]
        if bad:
            raise CLIError(f"{PROG} eval: {' and '.join(bad)} (test-time augmentation of a model) "
                           f"cannot be used with --mean-pose")
    elif args.fit_size is not None or args.image_size is not None:
        flag = "--fit-size" if args.fit_size is not None else "--image-size"
        raise CLIError(f"{PROG} eval: {flag} applies to --mean-pose only (a checkpoint is scored at its "
                       f"own input size, on --size items)")
    if protocol == "lsp":
        if not is_real(args.data):
            raise CLIError(f"{PROG} eval: --protocol lsp runs on original photographs, and --data {args.data!r} "
                           f"has none (use a real dataset such as lsp, or --protocol gt-crop)")
        if args.flip:
            raise CLIError(f"{PROG} eval: --flip is test-time augmentation of --protocol gt-crop; the official "
                           f"LSP test has none")
        if args.image_size is not None:
            raise CLIError(f"{PROG} eval: --image-size applies to --protocol gt-crop (the LSP protocol works on "
                           f"the whole original images)")
    return protocol


def _eval(args: argparse.Namespace) -> int:
    from ..data.specs import is_real
    from ..inference.protocol import protocol_title

    protocol = _protocol(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    real = is_real(args.data)
    size = args.size if args.size is not None else (None if real else EVAL_SYNTHETIC_SIZE)
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        ensure_writable_dir(folder)
    run = _eval_mean_pose if args.mean_pose else _eval_checkpoint
    table, title = run(args, protocol, real, size)
    heading = f"protocol: {protocol_title(protocol, args.scales if protocol == 'lsp' else None)}; " \
              f"joints: {args.joints}"
    print(format_pck_table(table, title=f"{title}\n{heading}"))
    print()
    print(format_part_table(table, title=heading))
    if args.out:
        from ..files import write_csv

        write_csv(args.out, table, float_format=None)
        print(f"wrote {args.out}")
    return 0


def _eval_mean_pose(args: argparse.Namespace, protocol: str, real: bool, size: int | None):
    """(table, title) of the mean-pose baseline under ``protocol``."""
    from ..data.baseline import ImageMeanPose, MeanPoseBaseline
    from ..data.specs import make_dataset

    image_size = args.image_size or MEAN_POSE_IMAGE_SIZE  # lsp: crops are never decoded
    seed = args.seed or 0
    fit = args.fit_size if args.fit_size is not None else (None if real else FIT_SYNTHETIC_SIZE)
    train_set = make_dataset(args.data, image_size, split="train", seed=seed, length=fit, skip_bad=args.skip_bad)
    dataset = make_dataset(args.data, image_size, split=args.split, seed=seed, length=size, skip_bad=args.skip_bad)
    if protocol == "lsp":
        baseline, frame = ImageMeanPose().fit(train_set), "in the image frame: centre and height"
        where = "original images"
    else:
        baseline, frame = MeanPoseBaseline().fit(train_set), "in the person box"
        where = f"images, {image_size} px crops"
    table = baseline.evaluate(dataset, normalize=args.normalize, joints=args.joints)
    title = (f"mean-pose baseline ({frame}; fitted on {len(train_set)} items of {train_set.split_description}) "
             f"on {dataset.split_description}, {len(dataset)} {where}")
    return table, title


def _eval_checkpoint(args: argparse.Namespace, protocol: str, real: bool, size: int | None):
    """(table, title) of a checkpoint under ``protocol``."""
    from ..data.specs import dataset_parts, make_dataset
    from ..inference import evaluate_protocol, load_model
    from ..train import read_checkpoint
    from ..utils import resolve_device

    device = resolve_device(args.device)
    ckpt = read_checkpoint(args.checkpoint)
    seed = args.seed if args.seed is not None else int((ckpt.get("train_config") or {}).get("seed", 0))
    model = load_model(args.checkpoint, device=device)
    dataset = make_dataset(args.data, model.config.input_size, split=args.split, seed=seed, length=size,
                           skip_bad=args.skip_bad)
    parts = dataset_parts(dataset)
    if parts != model.config.num_parts:
        raise CLIError(f"{args.checkpoint}: the checkpoint predicts {model.config.num_parts} parts, the data "
                       f"({args.data}) has {parts}")
    table = evaluate_protocol(model, dataset, protocol, normalize=args.normalize, joints=args.joints,
                              flip=args.flip, scales=args.scales, batch_size=args.batch_size, device=device,
                              progress=sys.stderr.isatty())
    extras = ", flip" if args.flip else ""
    extras += f", scales {args.scales}" if args.scales and protocol == "gt-crop" else ""
    where = "original images" if protocol == "lsp" else f"images{extras}"
    unchecked = "; no integrity hash: saved by an older cpm_lab" if "weights_sha256" not in ckpt else ""
    title = (f"{args.checkpoint} (preset {model.config.name!r}, step {ckpt.get('step', '?')}{unchecked}) "
             f"on {dataset.split_description}, {len(dataset)} {where}")
    return table, title


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
