"""Receptive fields of a CPM: analytic (from the module graph) and empirical (from gradients).

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

Empirical effective receptive field
-----------------------------------
Luo, Li, Urtasun, Zemel (NIPS 2016, arXiv:1701.04128): the gradient of one output unit with
respect to the input, ``|d y / d x|``, averaged over images. Its mass concentrates in a much
smaller, roughly Gaussian region than the analytic square, and training widens it.

Everything here walks the real ``nn.Module`` objects (``layer_graph``); nothing is hard-coded
per preset.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

__all__ = [
    "Node", "LayerGraph", "layer_graph", "unwrap_model",
    "ReceptiveFields", "receptive_fields", "effective_receptive_field", "EffectiveRF",
    "output_cell_center",
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
            name = f"{prefix}.{short}{self.counters[prefix][short]}" if prefix else f"{short}{self.counters[prefix][short]}"
            src = self.add(Node(name, stage, kind, (src,), m, qual))
        return src


def _is_cpm_shaped(model: nn.Module) -> bool:
    return all(hasattr(model, a) for a in ("stage1", "features", "stages"))


def layer_graph(model: nn.Module) -> LayerGraph:
    """The operation graph of a CPM-shaped model or of a (nested) ``nn.Sequential``.

    A CPM-shaped model has ``stage1`` (Sequential: image -> beliefs), ``trunk`` (Sequential or
    None), ``features`` and ``stages`` (ModuleLists of Sequentials) and ``center_pool``, wired
    as in ``cpm_lab.models.CPM.forward``. Layers are named by stage and depth within the stage:
    stage t >= 2 numbers its feature conv 1 and its refinement convs from 2.

    Raises TypeError for modules that cannot be analysed (e.g. Linear, upsampling, custom blocks).
    """
    model = unwrap_model(model)
    b = _Builder()
    if _is_cpm_shaped(model):
        image = b.add(Node("image", 1, "input"))
        outputs = {1: b.chain(model.stage1, "stage1", 1, image, "stage1")}
        trunk = getattr(model, "trunk", None)
        if len(model.features) != len(model.stages):
            raise TypeError(f"CPM-shaped model has {len(model.features)} feature layers but "
                            f"{len(model.stages)} refinement stages; expected one per stage >= 2")
        if len(model.stages):
            if trunk is None:
                raise TypeError("CPM-shaped model with stages >= 2 needs a `trunk`")
            shared = b.chain(trunk, "trunk", 2, image, "trunk")
            center = b.add(Node("center_map", 2, "center_input"))
            pooled = b.chain(model.center_pool, "center", 2, center, "center_pool")
            for i, (feat, stage) in enumerate(zip(model.features, model.stages)):
                t = i + 2
                f = b.chain(feat, f"stage{t}", t, shared, f"features.{i}")
                cat = b.add(Node(f"stage{t}.concat", t, "concat", (f, outputs[t - 1], pooled)))
                outputs[t] = b.chain(stage, f"stage{t}", t, cat, f"stages.{i}")
        size = getattr(getattr(model, "config", None), "input_size", None)
        return LayerGraph(b.nodes, outputs, size)
    if isinstance(model, nn.Sequential) or len(list(model.children())) == 0:
        image = b.add(Node("image", 1, "input"))
        out = b.chain(model, "", 1, image, "")
        return LayerGraph(b.nodes, {1: out}, None)
    raise TypeError(
        f"cannot analyse a {type(model).__name__}: pass an nn.Sequential of Conv2d/pooling/point-wise "
        "layers or a CPM-shaped model (attributes stage1, trunk, features, stages, center_pool)")


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


def output_cell_center(cell: int, stride: int) -> float:
    """Input-pixel centre of output cell ``cell`` under the codec convention ``s*i + (s-1)/2``."""
    return stride * cell + (stride - 1) / 2


# --------------------------------------------------------------------------------------------
# Empirical effective receptive field
# --------------------------------------------------------------------------------------------
@dataclass
class EffectiveRF:
    """Empirical effective receptive field (Luo et al. 2016) of one output unit per stage.

    Attributes:
        maps: (S, H, W) float64 array: mean over images of sum over colour channels of
            ``|d unit / d pixel|`` for each of the S analysed stages.
        stages: the 1-based stage of each map.
        location: (row, col) of the output cell analysed.
        center: (x, y) input-pixel centre of that unit (the analytic field centre when the
            model can be analysed, else the codec cell centre).
        mass: the gradient-mass fraction used for ``summary.radius_px``.
        summary: DataFrame stage, center_x, center_y (the unit's centre), radius_px (Chebyshev radius around ``center`` holding
            ``mass`` of the gradient), side_px (= 2 radius + 1, comparable to the analytic rf),
            analytic_rf_px, side_fraction_of_rf, total_gradient.
        cumulative: DataFrame stage, radius_px, mass_fraction (cumulative gradient mass within
            a Chebyshev radius; reaches 1 at the image border).
        n_images: number of images averaged.
    """

    maps: np.ndarray
    stages: list[int]
    location: tuple[int, int]
    center: tuple[float, float]
    mass: float
    summary: pd.DataFrame
    cumulative: pd.DataFrame
    n_images: int

    def __repr__(self):
        return (f"EffectiveRF(location={self.location}, center={self.center}, n_images={self.n_images})\n"
                f"{self.summary.to_string(index=False)}")


def _images_from(images, n_images: int, image_size: int | None, seed: int) -> torch.Tensor:
    if images is None:
        if image_size is None:
            raise ValueError("image_size is required when images is None and the model has no config.input_size")
        g = torch.Generator().manual_seed(seed)
        return torch.rand(n_images, 3, image_size, image_size, generator=g)
    if isinstance(images, torch.Tensor):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (N, 3, H, W); got {tuple(images.shape)}")
        return images
    if hasattr(images, "__getitem__") and hasattr(images, "__len__"):
        n = min(n_images, len(images))
        items = [images[i] for i in range(n)]
        items = [it["image"] if isinstance(it, dict) else it for it in items]
        return torch.stack([torch.as_tensor(it) for it in items])
    raise TypeError(f"images must be None, an (N, 3, H, W) tensor or a dataset of dicts with 'image'; "
                    f"got {type(images).__name__}")


def _cumulative(m: np.ndarray, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    h, w = m.shape
    r = np.maximum(np.abs(np.arange(w)[None, :] - cx), np.abs(np.arange(h)[:, None] - cy))
    radii, inv = np.unique(r.ravel(), return_inverse=True)
    mass = np.bincount(inv, weights=m.ravel(), minlength=len(radii))
    total = mass.sum()
    cum = np.cumsum(mass) / total if total > 0 else np.full(len(radii), np.nan)
    return radii, cum


def effective_receptive_field(model: nn.Module, images=None, *, n_images: int = 16,
                              image_size: int | None = None, part: int | str | None = None,
                              location: tuple[int, int] | None = None, stages=None,
                              batch_size: int = 8, mass: float = 0.95, seed: int = 0,
                              device=None) -> EffectiveRF:
    """Empirical effective receptive field: mean ``|d unit / d input|`` per stage.

    The unit is the belief at output cell ``location`` of channel ``part`` (an index or a joint
    name from ``cpm_lab.skeleton``), or the sum over all part channels (background excluded for a
    CPM) when ``part`` is None. Runs in eval mode on the model's device in batches of
    ``batch_size``, one backward per stage; parameter ``.grad`` is not touched.

    Args:
        model: CPM (list of beliefs per stage) or any module returning an (N, C, h, w) tensor.
        images: (N, 3, H, W) tensor, a dataset whose items are dicts with ``"image"``, or None
            for ``n_images`` uniform-noise images of side ``image_size`` (default: the model's
            ``config.input_size``) drawn with ``seed``.
        location: (row, col) of the output cell; default the centre cell (h // 2, w // 2).
        stages: 1-based stages to analyse (default all).
        mass: gradient-mass fraction defining ``summary.radius_px`` (0 < mass <= 1).
        device: where to run; default the model's parameters' device.
    """
    if not 0 < mass <= 1:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    bare = unwrap_model(model)
    config = getattr(bare, "config", None)
    if image_size is None and config is not None:
        image_size = getattr(config, "input_size", None)
    x_all = _images_from(images, n_images, image_size, seed)
    if device is None:
        p = next(bare.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    num_parts = getattr(config, "num_parts", None)
    if isinstance(part, str):
        from .. import skeleton
        part = skeleton.part_index(part)

    try:
        rf = receptive_fields(bare, input_size=x_all.shape[-1])
    except (TypeError, ValueError):
        rf = None

    was_training = bare.training
    bare.eval()
    acc = None
    sel_stages: list[int] = []
    cell = location
    try:
        for i0 in range(0, len(x_all), batch_size):
            x = x_all[i0:i0 + batch_size].to(device=device, dtype=torch.float32).requires_grad_(True)
            with torch.enable_grad():
                out = model(x)
                outs = list(out) if isinstance(out, (list, tuple)) else [out]
                if acc is None:
                    sel_stages = list(range(1, len(outs) + 1)) if stages is None else [int(s) for s in stages]
                    bad = [s for s in sel_stages if not 1 <= s <= len(outs)]
                    if bad:
                        raise ValueError(f"stages {bad} out of range: the model has {len(outs)} stage(s)")
                    h, w = outs[0].shape[-2:]
                    cell = (h // 2, w // 2) if location is None else tuple(int(v) for v in location)
                    if not (0 <= cell[0] < h and 0 <= cell[1] < w):
                        raise ValueError(f"location {location} outside the {h}x{w} output grid")
                    c = outs[0].shape[1]
                    if part is not None and not 0 <= part < c:
                        raise ValueError(f"part {part} out of range for {c} output channels")
                    acc = torch.zeros(len(sel_stages), *x.shape[-2:], device=device)
                if part is None:
                    chans = slice(0, num_parts) if num_parts is not None and outs[0].shape[1] == num_parts + 1 else slice(None)
                else:
                    chans = slice(part, part + 1)
                for k, s in enumerate(sel_stages):
                    unit = outs[s - 1][:, chans, cell[0], cell[1]].sum()
                    (g,) = torch.autograd.grad(unit, x, retain_graph=k < len(sel_stages) - 1)
                    acc[k] += g.abs().sum(dim=(0, 1))
    finally:
        bare.train(was_training)

    maps = (acc / len(x_all)).double().cpu().numpy()
    if rf is not None:
        j = rf.stages.set_index("stage")
        centers = {s: (float(j.loc[s, "start_px"] + j.loc[s, "jump_px"] * cell[1]),
                       float(j.loc[s, "start_px"] + j.loc[s, "jump_px"] * cell[0])) for s in sel_stages}
        analytic = {s: float(j.loc[s, "rf_px"]) for s in sel_stages}
    else:
        stride = x_all.shape[-1] // outs[0].shape[-1]
        cxy = (output_cell_center(cell[1], stride), output_cell_center(cell[0], stride))
        centers = {s: cxy for s in sel_stages}
        analytic = {s: float("nan") for s in sel_stages}

    summary, cum_rows = [], []
    for k, s in enumerate(sel_stages):
        radii, cum = _cumulative(maps[k], *centers[s])
        hit = np.nonzero(cum >= mass - 1e-12)[0]
        r = float(radii[hit[0]]) if len(hit) else float("nan")
        summary.append(dict(stage=s, center_x=centers[s][0], center_y=centers[s][1], radius_px=r, side_px=2 * r + 1, analytic_rf_px=analytic[s],
                            side_fraction_of_rf=(2 * r + 1) / analytic[s], total_gradient=maps[k].sum()))
        cum_rows.append(pd.DataFrame(dict(stage=s, radius_px=radii, mass_fraction=cum)))
    center = centers[sel_stages[0]]
    return EffectiveRF(maps, sel_stages, tuple(cell), center, mass, pd.DataFrame(summary),
                       pd.concat(cum_rows, ignore_index=True), len(x_all))
