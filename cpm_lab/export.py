"""A CPM as one ONNX file: ``export_onnx(model, "cpm.onnx")``, checked by ``verify_onnx``.

The graph takes what ``cpm_lab.inference.predict`` takes and returns every stage::

    inputs   image        float32 (N, 3, H, W): RGB in [0, 1]. The model's input convention is
                          part of the graph (for "caffe": BGR, x * 255/256 - 0.5), so a caller
                          never normalises.
             center_map   float32 (N, 1, H, W): which person to look at, a Gaussian of std
                          ``center_sigma`` pixels and peak 1 on the person centre (x, y pixels):
                          exp(-((u - x)^2 + (v - y)^2) / (2 sigma^2)), i.e.
                          ``inference.center_maps``; the usual choice is the image centre
                          ((W - 1) / 2, (H - 1) / 2).
    outputs  stage1 .. stageT  float32 (N, P + 1, ceil(H/8), ceil(W/8)): beliefs, background last.

N, H and W are dynamic (the network is fully convolutional; use multiples of 8, the model's
``input_size`` being what it was trained at). Dropout is off and BatchNorm uses its running
statistics (the exporter folds it into the convolutions). The file's ``metadata_props`` record
the opset, the input normalisation, the shapes and the model's config (JSON).

Exporter: the TorchScript tracer (``torch.onnx.export(..., dynamo=False)``). Torch >= 2.9 defaults
to the torch.export-based exporter, which needs two more packages (``onnxscript``, ``onnx-ir``)
and gives the same beliefs; the traced path needs nothing beyond torch to export, is several
times faster, and was torch.onnx.export's only path before torch 2.5. Its deprecation warning
is silenced here; the parity tests (tests/test_onnx.py) guard the result. ``onnx`` is needed
to write the metadata, ``onnxruntime`` only to run the file: ``pip install "cpm_lab[onnx]"``.
"""
from __future__ import annotations

import copy
import inspect
import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from . import __version__, skeleton
from .files import atomic_write
from .inference import center_maps, model_device, stage_outputs

#: ONNX opset written by default: every op of a CPM (Conv, Relu, MaxPool and AveragePool with
#: ceil_mode, Concat, Slice) is older, and 17 is read by onnxruntime >= 1.13 and most runtimes.
DEFAULT_OPSET = 17
#: Opsets the traced exporter writes for a CPM (Slice with a negative step needs >= 10; the
#: TorchScript exporter stops at 20).
OPSETS = range(11, 21)
INPUT_NAMES = ("image", "center_map")


class _Graph(nn.Module):
    """forward(image, center_map) -> a tuple of stage beliefs: the exporter wants a tuple."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor, center_map: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model(image, center_map))


def require(module: str):
    """Import an optional dependency of this module; ModuleNotFoundError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModuleNotFoundError(f"{module} is not installed; ONNX export and checks need the optional extra: "
                                  f"pip install \"cpm_lab[onnx]\"") from None


def input_normalisation(convention: str) -> str:
    """One sentence: what the exported ``image`` input is and what the graph does to it."""
    taken = "image: float32 RGB in [0, 1] (as cpm_lab.inference.predict takes)"
    if convention == "caffe":
        return f"{taken}; the graph converts it to the official Caffe input: BGR order, x * 255/256 - 0.5"
    return f"{taken}; fed to the first convolution unchanged (input_convention 'rgb')"


def onnx_metadata(model: nn.Module, opset: int) -> dict[str, str]:
    """The ``metadata_props`` ``export_onnx`` writes (strings): opset, normalisation, shapes, config."""
    c = model.config
    names = skeleton.JOINT_NAMES if c.num_parts == skeleton.NUM_JOINTS else [f"part{i}" for i in range(c.num_parts)]
    return {
        "producer": f"cpm_lab {__version__}",
        "opset": str(opset),
        "input_normalisation": input_normalisation(c.input_convention),
        "input_convention": c.input_convention,
        "inputs": f"image (N, 3, H, W); center_map (N, 1, H, W): Gaussian of std {c.center_sigma:g} px, peak 1, "
                  f"on the person centre; H, W multiples of {c.stride} (trained at {c.input_size})",
        "outputs": ", ".join(f"stage{t}" for t in range(1, c.num_stages + 1))
                   + f": (N, {c.num_parts + 1}, H/{c.stride}, W/{c.stride}) beliefs, background last",
        "part_names": ",".join(names),
        "model_config": json.dumps(c.to_dict()),
    }


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (a ``CPM``) as an ONNX file at ``path`` (atomically) and return the path.

    The model is copied to the CPU in float32 eval mode; ``model`` itself is left untouched.
    Raises FileNotFoundError when the folder of ``path`` does not exist, ValueError for an
    opset outside ``OPSETS``, ModuleNotFoundError when ``onnx`` is missing.
    """
    path = Path(path)
    if opset not in OPSETS:
        raise ValueError(f"opset must be in {OPSETS.start}..{OPSETS.stop - 1}, got {opset}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist (for {str(path)!r})")
    onnx = require("onnx")
    c = model.config
    # A copy: the exporter switches modes and restores the wrapper's, which would reach the model.
    graph = _Graph(copy.deepcopy(model).float().cpu()).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, c.input_size, c.input_size, generator=gen)
    cmap = center_maps(c.codec, None, 2, c.input_size, c.input_size)
    outputs = [f"stage{t}" for t in range(1, c.num_stages + 1)]
    axes = {name: {0: "batch", 2: "height", 3: "width"} for name in INPUT_NAMES}
    axes.update({name: {0: "batch", 2: "belief_height", 3: "belief_width"} for name in outputs})
    traced = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}  # torch < 2.5
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # forward's shape checks
        torch.onnx.export(graph, (x, cmap), buffer, opset_version=opset, **traced,
                          input_names=list(INPUT_NAMES), output_names=outputs, dynamic_axes=axes)
    proto = onnx.load_from_string(buffer.getvalue())
    meta = onnx_metadata(model, opset)
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = (f"Convolutional Pose Machine ({c.name} config, {c.num_stages} stages, {c.num_parts} parts) "
                        f"exported by cpm_lab {__version__}, ONNX opset {opset}. {meta['input_normalisation']}. "
                        f"Inputs: {meta['inputs']}. Outputs: {meta['outputs']}.")
    onnx.checker.check_model(proto)
    atomic_write(path, lambda tmp: onnx.save(proto, tmp), what="ONNX model")
    return path


def onnx_session(path: str | os.PathLike, threads: int = 1):
    """An onnxruntime ``InferenceSession`` of an exported file on the CPU with ``threads`` intra-op threads."""
    ort = require("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(path: str | os.PathLike, model: nn.Module, batch: int = 2, size: int | None = None,
                seed: int = 0, session=None) -> float:
    """Largest absolute difference between the exported file (onnxruntime, CPU) and ``model``
    (torch, eval, no grad) over every stage, for ``batch`` random images of ``size`` x ``size``
    pixels (default the model's input size) with centre maps on random points near the image centre."""
    session = session or onnx_session(path)
    size = size or model.config.input_size
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, size, size, generator=gen)
    centers = (size - 1) / 2 + (torch.rand(batch, 2, generator=gen) - 0.5) * size / 4
    cmap = center_maps(model.codec, centers, batch, size, size)
    dev = model_device(model)
    expected = stage_outputs(model, x.to(dev), cmap.to(dev))
    got = session.run(None, {"image": x.numpy(), "center_map": cmap.numpy()})
    if len(got) != len(expected):
        raise ValueError(f"{path}: {len(got)} outputs, but the model has {len(expected)} stages")
    return max(float(np.abs(g - e.float().cpu().numpy()).max()) for g, e in zip(got, expected))
