"""The empirical effective receptive field (Luo, Li, Urtasun, Zemel, NIPS 2016, arXiv:1701.04128).

The gradient of one output unit with respect to the input, ``|d y / d x|``, averaged over
images. Its mass concentrates in a much smaller, roughly Gaussian region than the analytic
square of ``receptive_field.receptive_fields``, and training widens it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..targets import cell_center
from .receptive_field import receptive_fields, unwrap_model

__all__ = ["EffectiveRF", "effective_receptive_field"]


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
        summary: DataFrame stage, center_x, center_y (the unit's centre), radius_px (Chebyshev
            radius around ``center`` holding
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
    if isinstance(part, str):
        from .. import skeleton
        part = skeleton.part_index(part)
    was_training = bare.training
    bare.eval()
    try:
        grads = _input_gradients(model, x_all, getattr(config, "num_parts", None), part, location, stages,
                                 batch_size, device)
    finally:
        bare.train(was_training)
    maps = (grads.total / len(x_all)).double().cpu().numpy()
    centers, analytic = _unit_centers(bare, x_all.shape[-1], grads)
    summary, cum_rows = [], []
    for k, s in enumerate(grads.stages):
        radii, cum = _cumulative(maps[k], *centers[s])
        hit = np.nonzero(cum >= mass - 1e-12)[0]
        r = float(radii[hit[0]]) if len(hit) else float("nan")
        summary.append(dict(stage=s, center_x=centers[s][0], center_y=centers[s][1], radius_px=r, side_px=2 * r + 1,
                            analytic_rf_px=analytic[s], side_fraction_of_rf=(2 * r + 1) / analytic[s],
                            total_gradient=maps[k].sum()))
        cum_rows.append(pd.DataFrame(dict(stage=s, radius_px=radii, mass_fraction=cum)))
    return EffectiveRF(maps, grads.stages, grads.cell, centers[grads.stages[0]], mass, pd.DataFrame(summary),
                       pd.concat(cum_rows, ignore_index=True), len(x_all))


@dataclass
class _InputGradients:
    total: torch.Tensor          # (S, H, W): sum over images and colours of |d unit / d pixel|
    stages: list[int]            # the 1-based stage of each map
    cell: tuple[int, int]        # (row, col) of the output unit
    grid: tuple[int, int]        # (h, w) of the output grid


def _input_gradients(model, x_all: torch.Tensor, num_parts, part, location, stages, batch_size: int,
                     device) -> _InputGradients:
    """Accumulate ``|d unit / d input|`` over ``x_all`` in batches, one backward per stage."""
    acc = None
    for i0 in range(0, len(x_all), batch_size):
        x = x_all[i0:i0 + batch_size].to(device=device, dtype=torch.float32).requires_grad_(True)
        with torch.enable_grad():
            out = model(x)
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            if acc is None:
                sel, cell = _check_unit(outs, location, stages, part)
                acc = _InputGradients(torch.zeros(len(sel), *x.shape[-2:], device=device), sel, cell,
                                      tuple(outs[0].shape[-2:]))
            if part is None:
                c = outs[0].shape[1]
                chans = slice(0, num_parts) if num_parts is not None and c == num_parts + 1 else slice(None)
            else:
                chans = slice(part, part + 1)
            for k, s in enumerate(acc.stages):
                unit = outs[s - 1][:, chans, acc.cell[0], acc.cell[1]].sum()
                (g,) = torch.autograd.grad(unit, x, retain_graph=k < len(acc.stages) - 1)
                acc.total[k] += g.abs().sum(dim=(0, 1))
    return acc


def _check_unit(outs, location, stages, part) -> tuple[list[int], tuple[int, int]]:
    """The analysed stages and output cell, checked against the model's outputs."""
    sel = list(range(1, len(outs) + 1)) if stages is None else [int(s) for s in stages]
    bad = [s for s in sel if not 1 <= s <= len(outs)]
    if bad:
        raise ValueError(f"stages {bad} out of range: the model has {len(outs)} stage(s)")
    h, w = outs[0].shape[-2:]
    cell = (h // 2, w // 2) if location is None else tuple(int(v) for v in location)
    if not (0 <= cell[0] < h and 0 <= cell[1] < w):
        raise ValueError(f"location {location} outside the {h}x{w} output grid")
    c = outs[0].shape[1]
    if part is not None and not 0 <= part < c:
        raise ValueError(f"part {part} out of range for {c} output channels")
    return sel, cell


def _unit_centers(model, input_side: int, grads: _InputGradients):
    """Per stage, the input (x, y) centre of the unit's field and its analytic side: from the
    analytic receptive field where the model can be analysed, else the codec cell centre."""
    try:
        rf = receptive_fields(model, input_size=input_side)
    except (TypeError, ValueError):
        rf = None
    row, col = grads.cell
    if rf is not None:
        j = rf.stages.set_index("stage")
        centers = {s: (float(j.loc[s, "start_px"] + j.loc[s, "jump_px"] * col),
                       float(j.loc[s, "start_px"] + j.loc[s, "jump_px"] * row)) for s in grads.stages}
        return centers, {s: float(j.loc[s, "rf_px"]) for s in grads.stages}
    stride = input_side // grads.grid[1]
    cxy = (float(cell_center(col, stride)), float(cell_center(row, stride)))
    return {s: cxy for s in grads.stages}, {s: float("nan") for s in grads.stages}
