"""``cpm-lab export --onnx OUT.onnx --checkpoint CKPT [--opset N] [--no-check]``: a checkpoint (or
a shipped model such as ``tiny-synthetic``) as one ONNX file (``cpm_lab.export``): inputs
``image`` (N, 3, H, W) RGB in [0, 1] and ``center_map`` (N, 1, H, W), outputs ``stage1`` ..
``stageT``, batch and size dynamic, the model's input normalisation inside the graph.

The folder of OUT is created if needed. After writing, the file is run with onnxruntime on two random
images and compared with torch (skipped with ``--no-check`` or when onnxruntime is missing).
"""
from __future__ import annotations

import argparse
import os

from .._argtypes import positive_int
from . import CLIError, command, ensure_writable_dir

#: ``cpm_lab.export.DEFAULT_OPSET``, spelt out so that building the parser does not import torch.
DEFAULT_OPSET = 17


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, metavar="OUT.onnx",
                   help="the ONNX file to write (atomically; its folder is created)")
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint.pt written by cpm-lab train, or a shipped model name (e.g. tiny-synthetic)")
    p.add_argument("--opset", type=positive_int, default=DEFAULT_OPSET,
                   help=f"ONNX opset to write, 11-20 (default: {DEFAULT_OPSET})")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the file with onnxruntime and compare every stage with torch (default: on)")


def _export(args: argparse.Namespace) -> int:
    out = args.onnx
    ensure_writable_dir(os.path.dirname(os.path.abspath(out)))
    from ..export import export_onnx, onnx_metadata, require, verify_onnx
    from ..inference import load_model

    try:
        require("onnx")
    except ModuleNotFoundError as exc:
        raise CLIError(f"cpm-lab export: {exc}") from None

    model = load_model(args.checkpoint, device="cpu")
    path = export_onnx(model, out, opset=args.opset)
    c = model.config
    meta = onnx_metadata(model, args.opset)
    print(f"wrote {path} ({os.path.getsize(path) / 1e6:.1f} MB): {args.checkpoint} ({c.name} config, "
          f"{c.num_stages} stages, {c.num_parts} parts, input {c.input_size}), ONNX opset {args.opset}")
    print(f"  input normalisation: {meta['input_normalisation']}")
    print(f"  inputs: {meta['inputs']}")
    print(f"  outputs: {meta['outputs']}; batch, height and width dynamic")
    if not args.check:
        return 0
    try:
        require("onnxruntime")
    except ModuleNotFoundError:
        print("  check: skipped (onnxruntime is not installed)")
        return 0
    diff = verify_onnx(path, model, batch=2)
    print(f"  check: onnxruntime vs torch on 2 random {c.input_size}x{c.input_size} images, "
          f"max |difference| over all stages = {diff:.2e}")
    if diff > 1e-3:  # not the user's doing: exit 1, "please report it"
        raise RuntimeError(f"{path}: onnxruntime's beliefs differ from torch's by up to {diff:.3g} (expected < 1e-3)")
    return 0


command("export", "write a model as an ONNX file (all stages as outputs, input normalisation inside)",
        _arguments)(_export)
