"""Receptive fields of a CPM, analytic: the module graph (``layer_graph``) and the field of every layer.

Analytic receptive field
------------------------
For a chain of convolutions and poolings the field of one output unit on the input image follows
the recurrence (Araujo et al., Distill 2019), with ``k_eff = dilation * (kernel - 1) + 1``::

    rf_out    = rf_in + (k_eff - 1) * jump_in        # side of the field, input pixels
    jump_out  = jump_in * stride                     # input pixels between neighbouring units
    start_out = start_in + ((k_eff - 1) / 2 - padding) * jump_in

``start`` is the input coordinate (pixel centres at integers) of the centre of the field of
output unit 0; unit ``i`` is centred at ``start + jump * i``. Point-wise layers (ReLU,
BatchNorm, dropout) change nothing. Where paths meet (stage t >= 2 of a CPM concatenates its
trunk features, the previous stage's beliefs and the pooled centre map) the field is the union
of the paths' fields. For the paper model this gives 167 px for stage 1, 407 px for stage 2 and
+240 px for every further stage (paper, Sec. 3: "160 px" and "about 400 px").

Note the network's own geometry: three 3x3/2 pools without padding put the centre of cell ``i``
at ``8 i + 7`` input pixels, while the codec (``cpm_lab.targets``) places targets at
``8 i + 3.5``; the 3.5 px shift is absorbed by the learned kernels.

The empirical (gradient-based) effective receptive field is in ``diagnostics.effective_rf``.

Everything here walks the real ``nn.Module`` objects (``layer_graph``); nothing is hard-coded
per preset.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch.nn as nn

__all__ = [
    "Node", "LayerGraph", "layer_graph", "unwrap_model",
    "ReceptiveFields", "receptive_fields",
]

_POINTWISE = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Dropout, nn.Dropout2d, nn.Identity,
)
_SHORT = {"conv": "conv", "maxpool": "pool", "avgpool": "pool", "batchnorm": "bn"}


# --------------------------------------------------------------------------------------------
# The module graph
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    """One operation of a model, in execution order.

    Attributes:
        name: readable layer name: ``"stage1.conv3"`` (stage 1, third convolution),
            ``"trunk.pool2"``, ``"stage4.conv2"``, ``"center.pool1"``, ``"stage2.concat"``; for
            a plain ``nn.Sequential`` just ``"conv1"``, ``"pool1"``...
        stage: the 1-based stage that owns it (the shared trunk and centre pooling belong to
            stage 2, as in ``CPM.stage_modules``).
        kind: ``"input"``, ``"center_input"``, ``"conv"``, ``"maxpool"``, ``"avgpool"``,
            ``"concat"``, ``"batchnorm"`` or the lower-cased class name of a point-wise layer.
        inputs: names of the nodes feeding this one.
        module: the ``nn.Module`` (None for input and concat nodes).
        path: qualified name of the module inside the model (``"stages.0.3"``).
    """

    name: str
    stage: int
    kind: str
    inputs: tuple[str, ...] = ()
    module: nn.Module | None = field(default=None, compare=False, repr=False)
    path: str = ""


@dataclass
class LayerGraph:
    """The operations of a model in topological order and the node holding each stage's output."""

    nodes: list[Node]
    outputs: dict[int, str]
    input_size: int | None = None

    def __getitem__(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(f"no layer named {name!r}; layers: {[n.name for n in self.nodes]}")

    @property
    def convs(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == "conv"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel / ``torch.compile`` wrappers."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _kind(m: nn.Module, path: str) -> str:
    if isinstance(m, nn.Conv2d):
        return "conv"
    if isinstance(m, nn.MaxPool2d):
        return "maxpool"
    if isinstance(m, nn.AvgPool2d):
        return "avgpool"
    if isinstance(m, nn.BatchNorm2d):
        return "batchnorm"
    if isinstance(m, _POINTWISE):
        return type(m).__name__.lower()
    raise TypeError(
        f"cannot analyse module {path or '<root>'!r} of type {type(m).__name__}: supported are Conv2d, "
        f"MaxPool2d, AvgPool2d and point-wise layers ({', '.join(t.__name__ for t in _POINTWISE)}), "
        "inside nn.Sequential containers or a CPM-shaped model")


def _leaves(seq: nn.Module, path: str):
    """(qualified name, module) of the leaf modules of nested nn.Sequential containers, in order."""
    if isinstance(seq, nn.Sequential):
        for name, child in seq.named_children():
            yield from _leaves(child, f"{path}.{name}" if path else name)
    elif len(list(seq.children())) == 0:
        yield path, seq
    else:
        raise TypeError(
            f"cannot analyse module {path or '<root>'!r} of type {type(seq).__name__}: its execution "
            "order is unknown; only nn.Sequential containers (or a CPM-shaped model) can be walked")


class _Builder:
    def __init__(self):
        self.nodes: list[Node] = []
        self.counters: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, node: Node) -> str:
        self.nodes.append(node)
        return node.name

    def chain(self, seq: nn.Module, prefix: str, stage: int, src: str, path: str) -> str:
        for qual, m in _leaves(seq, path):
            kind = _kind(m, qual)
            short = _SHORT.get(kind, kind)
            self.counters[prefix][short] += 1
            layer = f"{short}{self.counters[prefix][short]}"
            name = f"{prefix}.{layer}" if prefix else layer
            src = self.add(Node(name, stage, kind, (src,), m, qual))
        return src


def _wired_graph(model: nn.Module) -> LayerGraph:
    """The graph of a model that describes its dataflow with ``wiring()`` (``CPM.wiring``)."""
    b = _Builder()
    paths = {id(m): name for name, m in model.named_modules()}
    inputs = {"image": 1, "center_map": None}  # the input nodes, created when first read
    out: dict[str, str] = {}

    def source(name: str, stage: int) -> str:
        if name in out:
            return out[name]
        if name not in inputs:
            raise TypeError(f"wiring of {type(model).__name__} reads {name!r} before any block makes it")
        kind = "input" if name == "image" else "center_input"
        out[name] = b.add(Node(name, inputs[name] or stage, kind))
        return out[name]

    blocks = model.wiring()
    for blk in blocks:
        srcs = [source(i, blk.stage) for i in blk.inputs]
        src = srcs[0] if len(srcs) == 1 else b.add(Node(f"{blk.group}.concat", blk.stage, "concat", tuple(srcs)))
        out[blk.name] = b.chain(blk.module, blk.group, blk.stage, src, paths.get(id(blk.module), blk.name))
    outputs = {blk.stage: out[blk.name] for blk in blocks if blk.name.startswith("beliefs")}
    return LayerGraph(b.nodes, outputs, getattr(getattr(model, "config", None), "input_size", None))


def layer_graph(model: nn.Module) -> LayerGraph:
    """The operation graph of a model that describes its wiring (a ``CPM``: ``CPM.wiring``) or of
    a (nested) ``nn.Sequential``.

    Layers are named by their block's group and depth within it (``"stage1.conv3"``,
    ``"trunk.pool2"``, ``"center.pool1"``, ``"stage2.concat"``); stage t >= 2 numbers its
    feature conv 1 and its refinement convs from 2.

    Raises TypeError for modules that cannot be analysed (e.g. Linear, upsampling, custom blocks).
    """
    model = unwrap_model(model)
    if callable(getattr(model, "wiring", None)):
        return _wired_graph(model)
    if isinstance(model, nn.Sequential) or len(list(model.children())) == 0:
        b = _Builder()
        image = b.add(Node("image", 1, "input"))
        out = b.chain(model, "", 1, image, "")
        return LayerGraph(b.nodes, {1: out}, None)
    raise TypeError(
        f"cannot analyse a {type(model).__name__}: pass an nn.Sequential of Conv2d/pooling/point-wise "
        "layers or a model with a wiring() description (a CPM)")


def _square(value, what: str, node: Node) -> int:
    if isinstance(value, (tuple, list)):
        if len(set(value)) != 1:
            raise ValueError(f"layer {node.name} ({node.path}) has non-square {what} {tuple(value)}; "
                             "only square kernels, strides, paddings and dilations are supported")
        value = value[0]
    return value


def _geometry(node: Node) -> tuple[int, int, float, int]:
    """(kernel, stride, left padding, dilation) of a conv/pool node."""
    m = node.module
    k = _square(m.kernel_size, "kernel_size", node)
    s = _square(m.stride if m.stride is not None else k, "stride", node)
    d = _square(getattr(m, "dilation", 1), "dilation", node)
    p = m.padding
    if isinstance(p, str):
        # PyTorch's "same" pads (k_eff - 1) // 2 on the left/top and the rest on the right/bottom.
        p = (d * (k - 1)) // 2 if p == "same" else 0
    p = _square(p, "padding", node)
    return int(k), int(s), p, int(d)


# --------------------------------------------------------------------------------------------
# Analytic receptive fields
# --------------------------------------------------------------------------------------------
@dataclass
class ReceptiveFields:
    """Analytic receptive fields.

    Attributes:
        layers: one row per conv, pooling and concat node: stage, layer, kind, kernel, stride,
            padding, dilation, rf (side in input pixels of one unit's field after this layer),
            jump (input pixels between neighbouring units), start (input x/y of the centre of
            unit 0's field).
        stages: one row per stage: stage, rf_px, jump_px, start_px, rf_fraction_of_input
            (rf_px / input side; > 1 means the field is larger than the image).
        input_size: the input side used for the fractions (None -> fractions are NaN).
    """

    layers: pd.DataFrame
    stages: pd.DataFrame
    input_size: int | None

    def _repr_html_(self):  # pragma: no cover - notebook display
        return self.stages._repr_html_()

    def __repr__(self):
        return f"ReceptiveFields(input_size={self.input_size})\n{self.stages.to_string(index=False)}"


def _num(x: float):
    return int(x) if float(x).is_integer() else float(x)


def _propagate(graph: LayerGraph) -> dict[str, tuple[float, float, float]]:
    """(rf, jump, start) after every node."""
    out: dict[str, tuple[float, float, float]] = {}
    for n in graph.nodes:
        if n.kind in ("input", "center_input"):
            out[n.name] = (1, 1, 0.0)
        elif n.kind in ("conv", "maxpool", "avgpool"):
            rf, j, st = out[n.inputs[0]]
            k, s, p, d = _geometry(n)
            k_eff = d * (k - 1) + 1
            out[n.name] = (rf + (k_eff - 1) * j, j * s, st + ((k_eff - 1) / 2 - p) * j)
        elif n.kind == "concat":
            fields_ = [out[i] for i in n.inputs]
            jumps = {f[1] for f in fields_}
            if len(jumps) != 1:
                raise ValueError(f"{n.name} concatenates maps of different jumps {sorted(jumps)} "
                                 f"(inputs {n.inputs}); their grids do not align")
            lo = min(st - (rf - 1) / 2 for rf, _, st in fields_)
            hi = max(st + (rf - 1) / 2 for rf, _, st in fields_)
            out[n.name] = (hi - lo + 1, jumps.pop(), (lo + hi) / 2)
        else:
            out[n.name] = out[n.inputs[0]]
    return out


def receptive_fields(model: nn.Module, input_size: int | None = None) -> ReceptiveFields:
    """Analytic receptive field of every layer and of every stage's output, on the input image.

    Args:
        model: a CPM (or CPM-shaped model) or an ``nn.Sequential`` of convolutions, poolings and
            point-wise layers (nested Sequentials are fine).
        input_size: input side in pixels for ``rf_fraction_of_input``; defaults to the model's
            ``config.input_size`` when it has one.

    Returns:
        ``ReceptiveFields`` with ``.layers`` and ``.stages`` DataFrames (see its docstring).
        Paper preset: stage rf_px 167, 407, 647, 887, 1127, 1367, jump 8.
    """
    graph = layer_graph(model)
    size = input_size if input_size is not None else graph.input_size
    if size is not None and (not isinstance(size, (int, np.integer)) or size <= 0):
        raise ValueError(f"input_size must be a positive integer number of pixels, got {size!r}")
    prop = _propagate(graph)
    rows = []
    for n in graph.nodes:
        if n.kind not in ("conv", "maxpool", "avgpool", "concat"):
            continue
        rf, j, st = prop[n.name]
        geo = _geometry(n) if n.module is not None else (None, None, None, None)
        rows.append(dict(stage=n.stage, layer=n.name, kind=n.kind, kernel=geo[0], stride=geo[1],
                         padding=geo[2], dilation=geo[3], rf=_num(rf), jump=_num(j), start=_num(st)))
    layers = pd.DataFrame(rows, columns=["stage", "layer", "kind", "kernel", "stride", "padding",
                                         "dilation", "rf", "jump", "start"])
    for c in ("kernel", "stride", "padding", "dilation"):
        layers[c] = layers[c].astype("Int64")
    stages = pd.DataFrame(
        [dict(stage=t, rf_px=_num(prop[name][0]), jump_px=_num(prop[name][1]),
              start_px=_num(prop[name][2]),
              rf_fraction_of_input=prop[name][0] / size if size else float("nan"))
         for t, name in sorted(graph.outputs.items())],
        columns=["stage", "rf_px", "jump_px", "start_px", "rf_fraction_of_input"])
    return ReceptiveFields(layers, stages, size)
