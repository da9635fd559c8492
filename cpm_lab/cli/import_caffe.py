"""``cpm-lab import-caffe MODEL.caffemodel [--prototxt P] --out CKPT``: the official CPM release's
Caffe weights (e.g. ``model/_trained_LEEDS_PC/pose_iter_395000.caffemodel``, the LSP 6-stage model)
as a cpm_lab checkpoint of preset ``"paper"`` with the Caffe input convention, which ``cpm-lab
eval --checkpoint``, ``cpm_lab.inference.load_model`` and the explorer read. What is accepted and
refused, the layer mapping and the channel reordering: ``cpm_lab.caffe_import``."""
from __future__ import annotations

import argparse
import os

from . import CLIError, command, ensure_writable_dir


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("caffemodel", metavar="MODEL.caffemodel",
                   help="weights of the official release (shihenw/convolutional-pose-machines-release), e.g. "
                        "pose_iter_395000.caffemodel (LSP, 6 stages); the VGG-based MPII models and the 9-part "
                        "FLIC model are refused")
    p.add_argument("--prototxt", metavar="P",
                   help="optional: the deploy prototxt that came with the weights (pose_deploy_centerMap.prototxt); "
                        "the weights alone define the import, and given, every convolution's name, num_output and "
                        "kernel_size is checked against it")
    p.add_argument("--out", required=True, metavar="CKPT", help="checkpoint file to write (atomically)")


def _import(args: argparse.Namespace) -> int:
    from ..caffe_import import import_caffemodel

    if os.path.isdir(args.out):
        raise CLIError(f"--out {args.out!r} is a directory; give the checkpoint file to write, "
                       f"e.g. {os.path.join(args.out, 'cpm_lsp_caffe.pt')}")
    ensure_writable_dir(os.path.dirname(os.path.abspath(args.out)))
    done = import_caffemodel(args.caffemodel, args.out, prototxt=args.prototxt)
    c = done.config
    print(f"read {done.layers} convolutions of {args.caffemodel} ({done.encoding!r} encoding"
          f"{', checked against ' + args.prototxt if args.prototxt else ''})")
    print(f"preset {c.name!r}: {c.num_stages} stages, {c.num_parts} LSP joints + background (channels reordered "
          f"from the release's head-first order), {done.parameters:,} parameters, input {c.input_convention!r} "
          f"(BGR, x/256 - 0.5)")
    if done.ignored:
        print(f"note: left out {len(done.ignored)} layer(s) with weights the CPM does not have: "
              f"{', '.join(done.ignored[:5])}{', ...' if len(done.ignored) > 5 else ''}")
    print(f"wrote {done.path}")
    return 0


command("import-caffe", "convert the official CPM release's Caffe weights (.caffemodel) into a checkpoint",
        _arguments)(_import)
