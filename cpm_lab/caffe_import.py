"""The official CPM release's Caffe weights as a cpm_lab checkpoint (``cpm-lab import-caffe``).

Accepted: caffemodels of the release's own CPM architecture (shihenw/convolutional-pose-machines-release,
layer names as in ``model/_trained_FLIC/pose_deploy.prototxt`` and ``training/genProto.py``), with
the LSP joint set: above all the LSP (person-centric) 6-stage model
``model/_trained_LEEDS_PC/pose_iter_395000.caffemodel`` (deploy file
``pose_deploy_centerMap.prototxt``), 14 parts + background. The stage count T is read from the layer
names; everything else must have the ``"paper"`` preset's shapes.

Refused, with one line saying why: the release's VGG-based network (layers ``conv1_1 ..
conv4_7_CPM`` and 7x7 ``Mconv1-7`` as in ``model/_trained_MPI/pose_deploy_resize.prototxt``; the
``_trained_MPI`` MPII and MPII+LSP caffemodels are run with that folder's deploy files), another
architecture than cpm_lab's CPM; and the FLIC upper-body model (``_trained_FLIC/pose_iter_40000``:
9 parts, so 10 belief channels), whose joint set is not cpm_lab's LSP-14. Any other network is
refused by the first official layer it lacks.

Layer mapping (official name -> cpm_lab module, in ``CPM.wiring`` order)::

    conv1..conv7_stage1            stage1 (conv1-3 each followed by the 3x3/2 max-pool)
    conv1..conv3_stage2            trunk (the shared x' of stages >= 2)
    conv4_stage2, conv1_stage<t>   features[t - 2] (each stage's 5x5 conv on the trunk; t >= 3)
    Mconv1..Mconv5_stage<t>        stages[t - 2] (three 11x11, then two 1x1)

Caffe's convolution weights (num_output, channels, kh, kw) are torch's (out, in, kh, kw), and both
compute the same cross-correlation, so they are copied as they are; biases are (out,) (a legacy
1x1x1xN bias is accepted). ``pool_center_lower`` (9x9/8 average pooling of the centre map) has no
weights: it is ``CPM.center_pool``.

Channel order: the release's models output (head, neck, Rsho, Relb, Rwri, Lsho, Lelb, Lwri, Rhip,
Rkne, Rank, Lhip, Lkne, Lank, bkg) (``testing/config.m``; ``testing/src/run_benchmark.m`` reorders
predictions with ``order_to_lsp``); cpm_lab speaks LSP order. The import permutes the output
channels of every stage's belief conv (``conv7_stage1``, ``Mconv5_stage<t>``) and the matching input
channels of every ``Mconv1_stage<t>`` (the previous beliefs in its concat [features, beliefs, centre
map]), so the model computes the official beliefs with the channels in LSP order, background last.

Written (``train.checkpoint.save_checkpoint``: atomic, with the content hash ``read_checkpoint``
checks): ``format``, ``model`` (the state dict), ``model_config`` = ``preset_config("paper",
num_stages=T)`` with ``input_convention="caffe"`` (the official input: BGR, pixel v as v/256 - 0.5,
``run_benchmark.m``'s ``preprocess``), and ``source`` (file name, its SHA-256, encoding, channel
order). ``cpm_lab.inference.load_model`` reads it like any checkpoint; it holds no training state.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn

from .caffe import CaffeLayer, read_caffemodel
from .models.cpm import CPM, CPMConfig, preset_config

#: The release's output channels, in its order (background last).
OFFICIAL_PARTS = ("head_top", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
                  "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee",
                  "left_ankle", "background")
#: cpm_lab belief channel i is the release's channel ``TO_LSP[i]`` (the inverse of
#: ``run_benchmark.m``'s 1-based ``order_to_lsp = [14 13 9 8 7 10 11 12 3 2 1 4 5 6]``).
TO_LSP = (10, 9, 8, 11, 12, 13, 4, 3, 2, 5, 6, 7, 1, 0, 14)
_STAGE = re.compile(r"^(?:M?conv\d+)_stage(\d+)$")


@dataclass
class CaffeImport:
    """What ``import_caffemodel`` wrote: the checkpoint ``path``, its ``config``, how many conv
    layers and parameters it took from the caffemodel, the file's ``encoding`` and the names of
    weighted layers it left out (``ignored``)."""

    path: str
    config: CPMConfig
    layers: int
    parameters: int
    encoding: str
    ignored: list[str]


def layer_map(model: CPM) -> list[tuple[str, str]]:
    """(official layer name, cpm_lab state-dict prefix) of every convolution of ``model`` (e.g.
    ``("Mconv1_stage2", "stages.0.0")``), in ``CPM.wiring`` order."""
    config = model.config
    names = {id(m): n for n, m in model.named_modules()}

    def convs(module: nn.Module) -> list[str]:
        return [names[id(m)] for m in module.modules() if isinstance(m, nn.Conv2d)]

    pairs = list(zip([f"conv{i}_stage1" for i in range(1, 8)], convs(model.stage1), strict=True))
    if config.num_stages > 1:
        pairs += zip([f"conv{i}_stage2" for i in range(1, 4)], convs(model.trunk), strict=True)
    for t in range(2, config.num_stages + 1):
        pairs += zip(["conv4_stage2" if t == 2 else f"conv1_stage{t}"], convs(model.features[t - 2]), strict=True)
        pairs += zip([f"Mconv{i}_stage{t}" for i in range(1, 6)], convs(model.stages[t - 2]), strict=True)
    return pairs


def _refuse_other_networks(layers: dict[str, CaffeLayer], path: str) -> int:
    """The stage count T of a caffemodel of the release's CPM architecture; ValueError otherwise."""
    if "conv1_1" in layers or "conv4_7_CPM" in layers:
        raise ValueError(
            f"{path!r} holds the release's VGG-based CPM (layers conv1_1 .. conv4_7_CPM and 7x7 Mconv1-7, as in "
            f"model/_trained_MPI/pose_deploy_resize.prototxt), another architecture than cpm_lab's CPM (9x9 stage 1 "
            f"and trunk, 11x11 stages): it cannot be imported; the LSP model "
            f"model/_trained_LEEDS_PC/pose_iter_395000.caffemodel can")
    stages = [int(m.group(1)) for m in map(_STAGE.match, layers) if m]
    if "conv1_stage1" not in layers or not stages:
        some = ", ".join(repr(n) for n in list(layers)[:5]) + (", ..." if len(layers) > 5 else "")
        raise ValueError(f"{path!r} is not a caffemodel of the official CPM: it has no layer 'conv1_stage1' "
                         f"(its {len(layers)} layers with weights: {some})")
    return max(stages)


def _blobs(layer: CaffeLayer, weight: tuple, bias: tuple, path: str) -> tuple[np.ndarray, np.ndarray]:
    """A conv layer's (weights, bias), checked against the expected torch shapes."""
    if len(layer.blobs) != 2:
        raise ValueError(f"{path!r}: layer {layer.name!r} has {len(layer.blobs)} blobs; a convolution of the "
                         f"official CPM has 2 (weights, bias)")
    w, b = layer.blobs
    if b.ndim > 1 and b.size == b.shape[-1]:
        b = b.reshape(-1)  # legacy 4-D bias, 1x1x1xN
    for what, found, expected in (("weights", w, weight), ("bias", b, bias)):
        if tuple(found.shape) != expected:
            hint = ""
            if what == "weights" and found.ndim == 4 and found.shape[0] != expected[0] and (
                    layer.name == "conv7_stage1" or layer.name.startswith("Mconv5_")):
                hint = (f": {found.shape[0] - 1} parts + background, but cpm_lab's joint set is LSP's 14 "
                        f"({expected[0]} channels)" + (" (like the release's FLIC upper-body model)"
                                                       if found.shape[0] == 10 else ""))
            raise ValueError(f"{path!r}: layer {layer.name!r} {what} have shape {tuple(found.shape)}, the paper "
                             f"CPM expects {expected}{hint}")
        if not np.isfinite(found).all():
            raise ValueError(f"{path!r}: layer {layer.name!r} {what} hold NaN or infinite values")
    return w, b


def caffe_state_dict(layers: dict[str, CaffeLayer], config: CPMConfig,
                     path: str = "caffemodel") -> tuple[dict, list[tuple[str, str]]]:
    """The state dict of a CPM with ``config`` from a caffemodel's layers (by name), beliefs
    reordered to LSP order (``TO_LSP``), and the ``layer_map`` used. ValueError naming the layer
    for a missing layer or a shape other than ``config`` implies."""
    if config.num_parts + 1 != len(TO_LSP) or config.batch_norm:
        raise ValueError(f"the release's models have {len(TO_LSP) - 1} parts and no batch norm; config has "
                         f"{config.num_parts} parts, batch_norm={config.batch_norm}")
    model = CPM(config)  # on the CPU: building it on the meta device is slower (seconds) than this
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    pairs = layer_map(model)
    perm = np.array(TO_LSP)
    f = config.feature_channels
    concat = np.concatenate([np.arange(f), f + perm, [f + len(perm)]])  # [features, beliefs, centre]
    state: dict[str, torch.Tensor] = {}
    for official, prefix in pairs:
        if official not in layers:
            raise ValueError(f"{path!r} is not a complete {config.num_stages}-stage CPM of the official release: "
                             f"it has no layer {official!r}")
        w, b = _blobs(layers[official], shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"], path)
        if official == "conv7_stage1" or official.startswith("Mconv5_"):
            w, b = w[perm], b[perm]
        if official.startswith("Mconv1_"):
            w = w[:, concat]
        state[f"{prefix}.weight"] = torch.from_numpy(np.array(w, dtype=np.float32))
        state[f"{prefix}.bias"] = torch.from_numpy(np.array(b, dtype=np.float32))
    state = {k: state[k] for k in shapes}
    model.load_state_dict(state)  # every key, every shape
    return state, pairs


def prototxt_convolutions(text: str) -> dict[str, tuple[int, int]]:
    """``{name: (num_output, kernel_size)}`` of the convolution layers of a prototxt, by a light text
    scan of each ``layer {`` / ``layers {`` block (``name:``, ``type:``, ``num_output:``, ``kernel_size:``)."""
    text = re.sub(r"#[^\n]*", "", text)
    found = {}
    for block in re.split(r"(?m)^\s*layers?\s*\{", text)[1:]:
        name = re.search(r'\bname\s*:\s*"([^"]*)"', block)
        kind = re.search(r'\btype\s*:\s*"?(\w+)', block)
        out = re.search(r"\bnum_output\s*:\s*(\d+)", block)
        kernel = re.search(r"\bkernel_?size\s*:\s*(\d+)", block)
        if name and kind and kind.group(1).lower() == "convolution" and out and kernel:
            found[name.group(1)] = (int(out.group(1)), int(kernel.group(1)))
    return found


def check_prototxt(prototxt: str | os.PathLike, state: dict, pairs: list[tuple[str, str]]) -> None:
    """ValueError unless the prototxt's convolutions are exactly the imported ones, with the same
    ``num_output`` and ``kernel_size`` (caffemodel and prototxt describe the same network)."""
    prototxt = os.fspath(prototxt)
    if not os.path.isfile(prototxt):
        raise FileNotFoundError(f"prototxt file {prototxt!r} does not exist")
    with open(prototxt, encoding="utf-8", errors="replace") as fh:
        convs = prototxt_convolutions(fh.read())
    if not convs:
        raise ValueError(f"{prototxt!r} describes no convolution layers: it is not a network prototxt")
    mine = {official: tuple(state[f"{prefix}.weight"].shape) for official, prefix in pairs}
    for name, shape in mine.items():
        if name not in convs:
            raise ValueError(f"{prototxt!r} has no convolution {name!r}, which the caffemodel holds: they describe "
                             f"different networks")
        if convs[name] != (shape[0], shape[2]):
            raise ValueError(f"{prototxt!r}: convolution {name!r} has num_output {convs[name][0]} and kernel_size "
                             f"{convs[name][1]}; the caffemodel's weights have {shape[0]} and {shape[2]}")
    extra = sorted(set(convs) - set(mine))
    if extra:
        raise ValueError(f"{prototxt!r} has convolution {extra[0]!r}, which the CPM in the caffemodel does not: "
                         f"they describe different networks")


def import_caffemodel(caffemodel: str | os.PathLike, out: str | os.PathLike,
                      prototxt: str | os.PathLike | None = None, config: CPMConfig | None = None) -> CaffeImport:
    """Convert an official CPM caffemodel (see the module docstring) into a cpm_lab checkpoint at
    ``out``, written atomically. ``prototxt``: the deploy file that came with it, whose convolutions
    are cross-checked (``check_prototxt``). ``config`` (default: preset ``"paper"``) is the
    architecture expected; its ``num_stages`` is replaced by the file's and ``input_convention``
    set to ``"caffe"``."""
    from .train.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    path = os.fspath(caffemodel)
    net = read_caffemodel(path)
    layers = {layer.name: layer for layer in net.layers if layer.blobs}
    stages = _refuse_other_networks(layers, path)
    config = replace(config or preset_config("paper"), num_stages=stages, input_convention="caffe")
    state, pairs = caffe_state_dict(layers, config, path)
    if prototxt is not None:
        check_prototxt(prototxt, state, pairs)
    used = {official for official, _ in pairs}
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    source = {"caffemodel": os.path.basename(path), "sha256": digest.hexdigest(), "encoding": net.encoding,
              "official_part_order": list(OFFICIAL_PARTS), "to_lsp": list(TO_LSP)}
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": state, "model_config": config.to_dict(),
                     "source": source}, out)
    return CaffeImport(path=os.fspath(out), config=config, layers=len(used),
                       parameters=sum(t.numel() for t in state.values()), encoding=net.encoding,
                       ignored=[n for n in layers if n not in used])
