"""Model cost: parameters and multiply-accumulates per layer and per stage.

An analytic walk of the same module graph as ``receptive_field.layer_graph`` (no forward pass,
so it is instant even for the 31 M-parameter paper model and works for any input size).

Conventions
-----------
- ``macs`` counts convolution multiply-accumulates only:
  ``C_out * H_out * W_out * (C_in / groups) * k_h * k_w`` per image. Bias additions are counted
  separately in ``bias_adds`` (``C_out * H_out * W_out`` when the conv has a bias); pooling,
  ReLU, BatchNorm (foldable into the conv at inference) and concatenation are not counted.
- Inference FLOPs per image = ``2 * macs`` (one multiply + one add per MAC).
- Training FLOPs per image ~= ``3 *`` inference FLOPs: the backward pass computes the gradient
  with respect to the activations and with respect to the weights, each costing about one
  forward pass (Kaplan et al. 2020 use the same 6 * params * tokens rule for transformers).
- The shared trunk and the centre-map pooling are attributed to stage 2, as in
  ``CPM.stage_modules``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch.nn as nn

from .receptive_field import LayerGraph, _geometry, layer_graph

__all__ = ["ModelCost", "model_cost"]

TRAINING_FLOPS_FACTOR = 3.0


@dataclass
class ModelCost:
    """Per-image cost of a model at one input size.

    Attributes:
        layers: one row per layer with parameters or MACs: stage, layer, kind, in_channels,
            out_channels, out_h, out_w, params, macs, bias_adds.
        stages: one row per stage: stage, params, macs, gmacs, inference_gflops,
            training_gflops, macs_fraction.
        totals: dict with params, macs, gmacs, inference_gflops, training_gflops (per image),
            input_size.
    """

    layers: pd.DataFrame
    stages: pd.DataFrame
    totals: dict

    def max_images_per_s(self, peak_tflops: float, training: bool = True) -> float:
        """Upper bound on images/s for a device of ``peak_tflops`` (dense TFLOP/s at the
        precision used), from the FLOPs per image of training (default) or inference."""
        if peak_tflops <= 0:
            raise ValueError(f"peak_tflops must be positive, got {peak_tflops}")
        gflops = self.totals["training_gflops" if training else "inference_gflops"]
        return peak_tflops * 1e3 / gflops

    def utilization(self, images_per_s: float, peak_tflops: float, training: bool = True) -> float:
        """Fraction of the device's peak that a measured throughput achieves (model FLOPs
        utilisation, MFU)."""
        return images_per_s / self.max_images_per_s(peak_tflops, training)

    def __repr__(self):
        t = self.totals
        return (f"ModelCost(input {t['input_size']}x{t['input_size']}: {t['params']:,} params, "
                f"{t['gmacs']:.3f} GMACs/image, {t['inference_gflops']:.3f} GFLOPs inference, "
                f"{t['training_gflops']:.3f} GFLOPs training)\n{self.stages.to_string(index=False)}")


def _out_len(n: int, k: int, s: int, p: int, d: int, ceil_mode: bool) -> int:
    # PyTorch's rule for conv and pooling output length (pooling may use ceil rounding, but the
    # last window must start inside the input or left padding).
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0:
        raise ValueError(f"input of side {n} is smaller than the kernel's extent {d * (k - 1) + 1}")
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def _walk(graph: LayerGraph, input_size: int, in_channels: int = 3):
    shapes: dict[str, tuple[int, int, int]] = {}
    rows = []
    for n in graph.nodes:
        m = n.module
        if n.kind == "input":
            shapes[n.name] = (in_channels, input_size, input_size)
            continue
        if n.kind == "center_input":
            shapes[n.name] = (1, input_size, input_size)
            continue
        if n.kind == "concat":
            ins = [shapes[i] for i in n.inputs]
            if len({s[1:] for s in ins}) != 1:
                raise ValueError(f"{n.name} concatenates maps of different sizes "
                                 f"{[s[1:] for s in ins]} at input size {input_size}")
            shapes[n.name] = (sum(s[0] for s in ins), *ins[0][1:])
            continue
        c, h, w = shapes[n.inputs[0]]
        params = sum(p.numel() for p in m.parameters(recurse=False)) if m is not None else 0
        macs = bias = 0
        if n.kind in ("conv", "maxpool", "avgpool"):
            k, s, p, d = _geometry(n)
            if isinstance(m.padding, str) and m.padding == "same":
                ho, wo = h, w
            else:
                ceil = bool(getattr(m, "ceil_mode", False))
                ho, wo = _out_len(h, k, s, int(p), d, ceil), _out_len(w, k, s, int(p), d, ceil)
            if n.kind == "conv":
                if m.in_channels != c:
                    raise ValueError(f"{n.name} ({n.path}) expects {m.in_channels} input channels "
                                     f"but receives {c}")
                co = m.out_channels
                macs = co * ho * wo * (c // m.groups) * k * k
                bias = co * ho * wo if m.bias is not None else 0
            else:
                co = c
        else:
            co, ho, wo = c, h, w
        shapes[n.name] = (co, ho, wo)
        if params or macs:
            rows.append(dict(stage=n.stage, layer=n.name, kind=n.kind, in_channels=c, out_channels=co,
                             out_h=ho, out_w=wo, params=params, macs=macs, bias_adds=bias))
    return rows, shapes


def model_cost(model: nn.Module, input_size: int | None = None, in_channels: int = 3) -> ModelCost:
    """Parameters and MACs per layer, per stage and in total, for one square input image.

    Args:
        model: a CPM (or CPM-shaped model) or an ``nn.Sequential`` of Conv2d / pooling /
            point-wise layers.
        input_size: input side in pixels; defaults to the model's ``config.input_size``.
        in_channels: channels of the input image (3 = RGB).

    Returns:
        ``ModelCost`` (see its docstring and the module docstring for the counting conventions).
        Paper preset at 368: 31,219,866 parameters.
    """
    graph = layer_graph(model)
    size = input_size if input_size is not None else graph.input_size
    if size is None:
        raise ValueError("input_size is required for a model without config.input_size")
    if not isinstance(size, int) or size <= 0:
        raise ValueError(f"input_size must be a positive integer number of pixels, got {size!r}")
    rows, _ = _walk(graph, size, in_channels)
    layers = pd.DataFrame(rows, columns=["stage", "layer", "kind", "in_channels", "out_channels",
                                         "out_h", "out_w", "params", "macs", "bias_adds"])
    st = layers.groupby("stage", as_index=False)[["params", "macs"]].sum()
    all_stages = pd.DataFrame({"stage": sorted(graph.outputs)})
    st = all_stages.merge(st, on="stage", how="left").fillna(0)
    st[["params", "macs"]] = st[["params", "macs"]].astype("int64")
    st["gmacs"] = st["macs"] / 1e9
    st["inference_gflops"] = 2 * st["gmacs"]
    st["training_gflops"] = TRAINING_FLOPS_FACTOR * st["inference_gflops"]
    total_macs = int(layers["macs"].sum())
    st["macs_fraction"] = st["macs"] / total_macs if total_macs else float("nan")
    totals = dict(params=int(layers["params"].sum()), macs=total_macs, gmacs=total_macs / 1e9,
                  inference_gflops=2 * total_macs / 1e9,
                  training_gflops=TRAINING_FLOPS_FACTOR * 2 * total_macs / 1e9, input_size=size)
    return ModelCost(layers, st, totals)
