"""Plots specific to the classical Pose Machine (``cpm_lab.models.pose_machine``).

* :func:`plot_feature_grid`: the stride-8 cell grid the beliefs live on, the HOG orientation
  histogram of every cell, and which pixels one cell's image-feature vector summarises.
* :func:`plot_context_features`: the context features one location of stage t + 1 reads from
  stage t's beliefs: the ring offsets and pooling windows, the peak offsets and the pooled
  (pyramid) maxima drawn on one part's map, and the whole parts x features block as a matrix.
* :func:`plot_stage_comparison`: the same parts' belief maps at two (or more) stages over the
  image, sharing one colour scale per part (left/right confusions at stage 1 and their repair).
* :func:`plot_feature_importance`: how much of each stage's forest rests on image features
  versus context, and on which parts' context.
* :func:`plot_part_confusion`: over a whole test set, on which TRUE joint each part's belief
  map fires, stage by stage (left/right confusions as a matrix; :func:`part_confusion`), and
  :func:`side_swaps`, how often a left/right part is predicted on the wrong side.
* :func:`confusion_example` and :func:`most_improved`: pick a sample for the figures above (a
  map firing on both sides that later stages repair; the largest error drop between stages).

Coordinates: images are 3xHxW (or HxWx3) floats in [0, 1], keypoints (P, 3) in input pixels,
belief maps (P+1, G, G) or (P, G, G) with G = H / 8; a "cell" is given as (row, column) of that
grid and covers input pixels ``8*row .. 8*row + 7`` by ``8*col .. 8*col + 7``.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from .. import skeleton
from ..models.pose_machine import (DIRECTIONS, PoseMachineConfig, context_block_names, context_features,
                                   image_feature_names, image_features)
from ..targets import CodecConfig, decode
from .pose import draw_skeleton, image_hwc, to_numpy

__all__ = ["cell_orientation_histograms", "confusion_example", "feature_importances", "most_improved", "part_confusion",
           "plot_context_features", "plot_feature_grid", "plot_feature_importance", "plot_part_confusion",
           "plot_stage_comparison", "side_swaps"]

STRIDE = PoseMachineConfig.stride
_RING_DISTANCE = 3  # cells from a cell to its 8 image-feature ring windows (see pose_machine docs)
_FAMILY_COLORS = {"hog": "C0", "hogring": "C9", "rgb": "C3", "pos": "C7", "context": "C2"}
_FAMILY_LABELS = {"hog": "HOG, 3x3-cell window", "hogring": "HOG, 8 ring windows", "rgb": "colour",
                  "pos": "position", "context": "context (previous stage)"}


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------
def _config_of(model_or_config) -> PoseMachineConfig:
    if model_or_config is None:
        return PoseMachineConfig()
    cfg = getattr(model_or_config, "config", model_or_config)
    if not isinstance(cfg, PoseMachineConfig):
        raise TypeError("expected a PoseMachine or PoseMachineConfig, got "
                        f"{type(model_or_config).__name__}")
    return cfg


def _part_short(p: int, num_parts: int) -> str:
    return skeleton.SHORT_NAMES[p] if num_parts == skeleton.NUM_JOINTS else f"p{p}"


def _check_cell(cell, grid: int, name: str = "cell") -> tuple[int, int]:
    try:
        row, col = (int(v) for v in cell)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (row, column) pair of grid indices, got {cell!r}") from None
    if not (0 <= row < grid and 0 <= col < grid):
        raise ValueError(f"{name} must lie in the {grid}x{grid} grid (0..{grid - 1}), got {(row, col)}")
    return row, col


def _cell_of(x: float, y: float, grid: int) -> tuple[int, int]:
    """Grid cell (row, col) containing input pixel (x, y)."""
    return (int(np.clip(np.floor((y + 0.5) / STRIDE), 0, grid - 1)),
            int(np.clip(np.floor((x + 0.5) / STRIDE), 0, grid - 1)))


def _cell_rect(row: float, col: float, cells: float = 1, **kw) -> Rectangle:
    """Rectangle in input pixels covering ``cells`` x ``cells`` cells centred on cell (row, col)."""
    half = (cells - 1) / 2
    return Rectangle(((col - half) * STRIDE - 0.5, (row - half) * STRIDE - 0.5), cells * STRIDE, cells * STRIDE,
                     **kw)


def _families(names: Sequence[str]) -> list[tuple[str, int, int]]:
    """Consecutive runs of feature families (name prefix before the first "_"): (family, start, stop)."""
    runs: list[tuple[str, int, int]] = []
    for k, name in enumerate(names):
        fam = name.split("_", 1)[0]
        if runs and runs[-1][0] == fam:
            runs[-1] = (fam, runs[-1][1], k + 1)
        else:
            runs.append((fam, k, k + 1))
    return runs


def _pick_cell(keypoints, grid: int, part: str = "right_wrist") -> tuple[int, int]:
    if keypoints is not None:
        kp = to_numpy(keypoints)
        j = skeleton.JOINT_INDEX.get(part, 0)
        if len(kp) > j and kp[j, 2] > 0 and np.isfinite(kp[j, :2]).all():
            return _cell_of(kp[j, 0], kp[j, 1], grid)
    return grid // 2, grid // 2


# ---------------------------------------------------------------------------------------------
# Image features
# ---------------------------------------------------------------------------------------------
def cell_orientation_histograms(features: np.ndarray, orientations: int = 9) -> np.ndarray:
    """Each cell's own HOG orientation histogram, read back from the pose machine's image features.

    Args:
        features: (G, G, F) or (N, G, G, F) from ``pose_machine.image_features``.
    Returns:
        (..., G, G, orientations): the mean of the cell's block-normalised histograms over the
        (up to 4) 2x2-cell blocks that contain it. Bin o covers unsigned gradient angles
        ``[o, o + 1) * 180 / orientations`` degrees.
    """
    f = np.asarray(features, dtype=np.float32)
    names = image_feature_names(orientations)
    if f.ndim not in (3, 4) or f.shape[-1] != len(names):
        raise ValueError(f"features must be (G, G, {len(names)}) or (N, G, G, {len(names)}) image features "
                         f"for orientations={orientations}; got shape {f.shape}")
    index = {n: k for k, n in enumerate(names)}
    g_rows, g_cols = f.shape[-3], f.shape[-2]
    total = np.zeros(f.shape[:-1] + (orientations,), np.float32)
    count = np.zeros((g_rows, g_cols, 1), np.float32)
    for dy in (-1, 0):
        for dx in (-1, 0):
            # The block starting at (row + dy, col + dx) holds this cell at position (-dy, -dx).
            cols = [index[f"hog_blk{dy}{dx}_cell{-dy}{-dx}_o{o}"] for o in range(orientations)]
            rows_ok = (np.arange(g_rows) + dy >= 0) & (np.arange(g_rows) + dy <= g_rows - 2)
            cols_ok = (np.arange(g_cols) + dx >= 0) & (np.arange(g_cols) + dx <= g_cols - 2)
            valid = (rows_ok[:, None] & cols_ok[None, :])[..., None].astype(np.float32)
            total += f[..., cols] * valid
            count += valid
    return total / np.maximum(count, 1)


def _hog_glyphs(ax, hist: np.ndarray, color: str = "yellow", linewidth: float = 1.3):
    """Draw one line per orientation bin through every cell centre, along the EDGE direction
    (perpendicular to the gradient), length and opacity proportional to the bin value."""
    g_rows, g_cols, n_bins = hist.shape
    scale = float(hist.max()) or 1.0
    theta = np.pi * (np.arange(n_bins) + 0.5) / n_bins  # gradient angle; y points down
    ex, ey = -np.sin(theta), np.cos(theta)  # edge direction, in pixels
    segs, alphas = [], []
    for r in range(g_rows):
        for c in range(g_cols):
            cx, cy = c * STRIDE + (STRIDE - 1) / 2, r * STRIDE + (STRIDE - 1) / 2
            for o in range(n_bins):
                v = hist[r, c, o] / scale
                if v < 0.2:  # faint bins only clutter the picture
                    continue
                half = 0.5 * STRIDE * v
                segs.append([(cx - half * ex[o], cy - half * ey[o]), (cx + half * ex[o], cy + half * ey[o])])
                alphas.append(min(1.0, 0.25 + v))
    rgba = np.array([to_rgba(color, a) for a in alphas]) if alphas else None
    ax.add_collection(LineCollection(segs, colors=rgba, linewidths=linewidth))


def plot_feature_grid(image, keypoints=None, cell: tuple[int, int] | None = None, orientations: int = 9,
                      size: float = 3.4):
    """What a pose machine's classifier sees at one location, and where the locations are.

    Four panels: (1) the image with the 8x8-pixel cell grid, one cell per belief-map location
    (the CPM's stride 8); (2) every cell's HOG orientation histogram drawn as edge glyphs
    (line direction = edge direction, length = bin strength); (3) the pixels one cell's feature
    vector summarises: the cell, its 3x3-cell HOG window and the 8 ring windows 3 cells away;
    (4) that cell's feature vector, coloured by feature family.

    Args:
        image: 3xHxW (or HxWx3) in [0, 1]; H and W multiples of 8, at least 24.
        keypoints: optional (P, 3) ground truth drawn as a skeleton in panel 1.
        cell: (row, column) of the cell to dissect; default the right wrist's cell when
            ``keypoints`` show it, else the centre cell.
        orientations: HOG bins, as the model's ``config.orientations``.
    Returns:
        the matplotlib Figure.
    """
    img = image_hwc(image)
    feats = image_features(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))), orientations)[0]
    g_rows, g_cols = feats.shape[:2]
    row, col = _check_cell(cell, min(g_rows, g_cols)) if cell is not None else _pick_cell(keypoints, g_rows)
    hist = cell_orientation_histograms(feats, orientations)
    h, w = img.shape[:2]
    grey = img.mean(-1)

    fig, axes = plt.subplots(1, 4, figsize=(size * 4 + 1.2, size + 0.6),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.35]})
    ax = axes[0]
    ax.imshow(img)
    for k in range(1, g_cols):
        ax.axvline(k * STRIDE - 0.5, color="white", lw=0.5, alpha=0.55)
    for k in range(1, g_rows):
        ax.axhline(k * STRIDE - 0.5, color="white", lw=0.5, alpha=0.55)
    if keypoints is not None:
        draw_skeleton(ax, keypoints, linewidth=1.2, markersize=2.5, alpha=0.8)
    ax.add_patch(_cell_rect(row, col, ec="yellow", fc="none", lw=1.8))
    ax.set_title(f"{g_rows}x{g_cols} grid of {STRIDE}x{STRIDE}-px cells\n= the belief-map locations", fontsize=9)

    ax = axes[1]
    ax.imshow(grey, cmap="gray", vmin=-0.6, vmax=1.6)  # low contrast, so the glyphs stand out
    _hog_glyphs(ax, hist, color="yellow", linewidth=1.1)
    ax.add_patch(_cell_rect(row, col, ec="cyan", fc="none", lw=1.5))
    ax.set_title(f"HOG per cell ({orientations} orientation bins)\nline = edge direction, length = strength",
                 fontsize=9)

    ax = axes[2]
    ax.imshow(img)
    ax.add_patch(_cell_rect(row, col, ec="yellow", fc="yellow", alpha=0.5, lw=0))
    ax.add_patch(_cell_rect(row, col, 3, ec="yellow", fc="none", lw=1.8))
    d = _RING_DISTANCE
    for name, dx, dy in DIRECTIONS:
        ax.add_patch(_cell_rect(row + d * dy, col + d * dx, 3, ec="cyan", fc="none", lw=1.0, ls="--"))
    ax.set_title(f"cell (row {row}, col {col}): yellow = own cell and\n3x3-cell HOG window, cyan = 8 ring windows",
                 fontsize=9)
    for ax in axes[:3]:
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_xticks([])
        ax.set_yticks([])

    ax = axes[3]
    vec = feats[row, col]
    names = image_feature_names(orientations)
    handles = []
    for fam, a, b in _families(names):
        colour = _FAMILY_COLORS.get(fam, "C4")
        ax.bar(np.arange(a, b), vec[a:b], width=1.0, color=colour)
        handles.append(Patch(color=colour, label=f"{_FAMILY_LABELS.get(fam, fam)} ({b - a})"))
    ax.set_xlim(-1, len(names))
    ax.set_xlabel("feature index")
    ax.set_ylabel("value")
    ax.legend(handles=handles, fontsize=7, loc="upper left", frameon=False)
    ax.set_title(f"the {len(names)} image features of that cell", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# Context features
# ---------------------------------------------------------------------------------------------
def plot_context_features(beliefs, part: int | str, cell: tuple[int, int] | None = None, config=None,
                          image=None, keypoints=None, at: int | str | None = None, stage: int = 1,
                          size: float = 4.2):
    """The context features that location ``cell`` of stage ``stage + 1`` reads from stage ``stage``.

    Left: part ``part``'s belief map (over the image, in grid cells) with the cell (white
    square); for every context radius r its 8 sample points r cells away, each with the square
    window the map is max-pooled over there (one colour per radius); arrows to the part's
    belief peaks (the peak offsets; dotted square = the suppression zone around peak 1 before
    peak 2 is sought); dashed lines = the quadrants of the pooled maxima.
    Right: the full context vector of the cell as a matrix, one row per part (the row of
    ``part`` outlined), one column per feature of the per-part block. Belief-valued columns use
    one colour scale; the peak offset columns (in cells) a diverging one, with their values.

    Args:
        beliefs: (P+1, G, G) or (P, G, G) beliefs of ONE image at stage ``stage`` (torch or
            numpy); a trailing background channel (P + 1 channels) is dropped.
        part: index or name (``"right_wrist"`` or ``"r_wrist"``) of the part drawn on the left.
        cell: (row, column) of the location whose features are shown; default the cell of the
            true position of joint ``at`` (default ``part``) when ``keypoints`` show it, else the
            peak of ``part``'s belief map.
        config: the ``PoseMachine`` or ``PoseMachineConfig`` whose context layout to use
            (``context_radii``, ``n_peaks``, ``peak_suppression``); default ``PoseMachineConfig()``.
        image: optional 3xHxW image drawn under the belief map.
        keypoints: optional (P, 3) ground truth, only used to choose the default ``cell``.
        at: joint (index or name) whose true cell is the default ``cell``, e.g. ``part="r_wrist",
            at="l_wrist"`` shows what stage 2 is told at the LEFT wrist about the right wrist.
        stage: stage number (1-based) of ``beliefs``, for the titles.
    Returns:
        the matplotlib Figure.
    """
    cfg = _config_of(config)
    b = to_numpy(beliefs)
    if b.ndim != 3 or b.shape[-1] != b.shape[-2]:
        raise ValueError(f"beliefs must be (P+1, G, G) or (P, G, G) for one image; got shape {b.shape}")
    n_parts = cfg.num_parts if b.shape[0] in (cfg.num_parts, cfg.num_parts + 1) else b.shape[0]
    b = b[:n_parts]
    grid = b.shape[-1]
    p = skeleton.part_index(part, n_parts)
    j = p if at is None else skeleton.part_index(at, n_parts)
    where = ""
    if cell is None:
        kp = to_numpy(keypoints) if keypoints is not None else None
        if kp is not None and kp.shape[0] > j and kp[j, 2] > 0 and np.isfinite(kp[j, :2]).all():
            cell = _cell_of(kp[j, 0], kp[j, 1], grid)
            where = f" = true {_part_short(j, n_parts)}"
        else:
            cell = divmod(int(b[p].argmax()), grid)
            where = " = its peak"
    row, col = _check_cell(cell, grid)
    block = context_block_names(cfg.context_radii, cfg.n_peaks)
    ctx = context_features(b[None], cfg.context_radii, cfg.n_peaks, cfg.peak_suppression)[0, row, col]
    ctx = ctx.reshape(n_parts, len(block))
    col_of = {n: k for k, n in enumerate(block)}

    fig = plt.figure(figsize=(size * 3.4, size + 1.2))
    gs = fig.add_gridspec(1, 7, width_ratios=[1, 0.045, 0.5, 2.3, 0.035, 0.16, 0.035], wspace=0.08,
                          left=0.05, right=0.94, bottom=0.27, top=0.86)
    ax, cax, axm, cax1, cax2 = (fig.add_subplot(gs[k]) for k in (0, 1, 3, 4, 6))
    extent = (-0.5, grid - 0.5, grid - 0.5, -0.5)
    vmax = max(float(b[p].max()), 1e-6)
    if image is not None:
        ax.imshow(image_hwc(image).mean(-1), cmap="gray", extent=extent, vmin=0, vmax=1)
    im = ax.imshow(b[p], cmap="magma", alpha=0.75 if image is not None else 1.0, extent=extent, vmin=0,
                   vmax=vmax, interpolation="nearest")
    half_r, half_c = (grid + 1) // 2, (grid + 1) // 2
    ax.axvline(half_c - 0.5, color="0.8", ls="--", lw=0.8)
    ax.axhline(half_r - 0.5, color="0.8", ls="--", lw=0.8)
    radius_colors = plt.get_cmap("viridis")(np.linspace(0.45, 1.0, len(cfg.context_radii)))
    handles = []
    for r, colour in zip(cfg.context_radii, radius_colors):
        win = 2 * (r // 2) + 1
        for name, dx, dy in DIRECTIONS:
            x, y = col + r * dx, row + r * dy
            ax.plot(x, y, "o", ms=4, color=colour, mec="black", mew=0.5)
            if name == "E":  # one window per radius is enough to show its size
                ax.add_patch(Rectangle((x - win / 2, y - win / 2), win, win, ec=colour, fc="none", lw=1.3))
        handles.append(plt.Line2D([], [], color=colour, marker="o", ms=4, lw=1.3,
                                  label=f"ring r={r}: 8 points, each the max over {win}x{win} cells (square at E)"))
    for k in range(1, cfg.n_peaks + 1):
        dx, dy, v = (ctx[p, col_of[f"peak{k}_{s}"]] for s in ("dx", "dy", "v"))
        px, py = col + dx, row + dy
        ax.add_patch(FancyArrowPatch((col, row), (px, py), arrowstyle="-|>", mutation_scale=12, lw=1.6,
                                     color="cyan", shrinkA=0, shrinkB=2))
        right_half = px > grid / 2  # keep the label inside the map
        ax.text(px + (-0.4 if right_half else 0.4), py + (0.9 if py < 2 else -0.4),
                f"peak {k}: ({dx:+.0f}, {dy:+.0f}), {v:.2f}", color="cyan", fontsize=7,
                ha="right" if right_half else "left", va="bottom" if py >= 2 else "top",
                bbox=dict(fc="black", alpha=0.5, lw=0, pad=1))
        if k == 1 and cfg.n_peaks > 1:
            s = cfg.peak_suppression
            ax.add_patch(Rectangle((px - s - 0.5, py - s - 0.5), 2 * s + 1, 2 * s + 1, ec="cyan", fc="none",
                                   ls=":", lw=1.0))
    ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, ec="white", fc="none", lw=2))
    handles.append(plt.Line2D([], [], color="cyan", lw=1.6, label="peak k: offset (dx, dy) in cells, belief"))
    handles.append(plt.Line2D([], [], color="cyan", lw=1.0, ls=":", label="zeroed around peak 1 before peak 2"))
    handles.append(plt.Line2D([], [], color="0.8", lw=0.8, ls="--", label="quadrants of the pooled maxima"))
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(-0.1, -0.13), frameon=False)
    ax.set_xlim(-0.5, grid - 0.5)
    ax.set_ylim(grid - 0.5, -0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("column (cells)", fontsize=8)
    ax.set_ylabel("row (cells)", fontsize=8)
    fig.colorbar(im, cax=cax, label="belief")
    ax.set_title(f"stage {stage} belief of {_part_short(p, n_parts)}; context read at\n"
                 f"cell (row {row}, col {col}){where} (white square)", fontsize=9)

    offset_cols = [k for k, n in enumerate(block) if n.endswith("_dx") or n.endswith("_dy")]
    is_offset = np.zeros(len(block), bool)
    is_offset[offset_cols] = True
    prob = np.ma.masked_where(np.broadcast_to(is_offset, ctx.shape), ctx)
    offs = np.ma.masked_where(np.broadcast_to(~is_offset, ctx.shape), ctx)
    im_p = axm.imshow(prob, cmap="magma", vmin=0, vmax=max(float(prob.max()), 1e-6), aspect="auto",
                      interpolation="nearest")
    im_o = axm.imshow(offs, cmap="coolwarm", norm=Normalize(-grid, grid), aspect="auto", interpolation="nearest")
    for k in offset_cols:
        for q in range(n_parts):
            axm.text(k, q, f"{ctx[q, k]:.0f}", ha="center", va="center", fontsize=5.5, color="black")
    axm.add_patch(Rectangle((-0.5, p - 0.5), len(block), 1, ec="cyan", fc="none", lw=2))
    axm.set_yticks(range(n_parts))
    axm.set_yticklabels([_part_short(q, n_parts) for q in range(n_parts)], fontsize=7)
    short = [n.split("_", 1)[1] if n.startswith("r") and "_" in n and n[1].isdigit() else n for n in block]
    axm.set_xticks(range(len(block)))
    axm.set_xticklabels(short, rotation=90, fontsize=6.5)
    # group labels above the columns
    groups: list[tuple[str, int, int]] = []
    for k, n in enumerate(block):
        label = ("own cell" if n == "c" else f"ring r={n[1:].split('_')[0]}" if n[0] == "r" and n[1].isdigit()
                 else "peaks (dx, dy, v)" if n.startswith("peak") else "max: map, quadrants")
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1], k)
        else:
            groups.append((label, k, k))
    for label, a, z in groups:
        axm.text((a + z) / 2, -0.9, label, ha="center", va="bottom", fontsize=7)
        if a > 0:
            axm.axvline(a - 0.5, color="white", lw=1.2)
    axm.set_ylabel("part whose stage-%d belief is summarised" % stage, fontsize=8)
    cb1 = fig.colorbar(im_p, cax=cax1)
    cb1.set_label("belief-valued features", fontsize=8)
    cb2 = fig.colorbar(im_o, cax=cax2)
    cb2.set_label("peak offset (cells)", fontsize=8)
    cax1.tick_params(labelsize=7)
    cax2.tick_params(labelsize=7)
    axm.set_title(f"all {ctx.size} context features of cell (row {row}, col {col}) that stage {stage + 1} "
                  f"reads: {n_parts} parts x {len(block)}", fontsize=9, pad=20)
    return fig


# ---------------------------------------------------------------------------------------------
# Beliefs, stage against stage
# ---------------------------------------------------------------------------------------------
def plot_stage_comparison(model, image, keypoints, parts: Sequence[int | str] = ("right_wrist", "left_wrist"),
                          stages: Sequence[int] | None = None, beliefs: Sequence | None = None,
                          size: float = 3.3):
    """The belief maps of ``parts`` at a few stages over one image, one row per part.

    Each row shares one colour scale across stages, so confidence can be compared; the true
    positions of ALL ``parts`` are marked in every panel (red = person's right, cyan = left,
    one marker shape per part) and the decoded peak of the row's part is a white cross. Each
    panel also prints the row part's belief near each true joint (the maximum over the 3x3
    cells around it, so a peak one cell off still counts), so a right-wrist map that fires on
    the left wrist shows up as a number, not only as a blob.

    Args:
        model: a fitted ``PoseMachine`` (or any model with ``codec`` returning per-stage beliefs).
        image: 3xHxW in [0, 1] at the model's input size.
        keypoints: (P, 3) ground truth in input pixels.
        parts: joint names or indices, one row each.
        stages: 1-based stages to show; default first and last.
        beliefs: precomputed per-stage beliefs for this image, each (P+1, G, G) or (1, P+1, G, G);
            default: run ``model`` on ``image``.
    Returns:
        the matplotlib Figure.
    """
    codec: CodecConfig = model.codec
    img_t = torch.as_tensor(to_numpy(image))
    if img_t.ndim != 3 or img_t.shape[0] != 3:
        raise ValueError(f"image must be 3xHxW, got shape {tuple(img_t.shape)}")
    if beliefs is None:
        beliefs = model(img_t[None])
    maps = [torch.as_tensor(to_numpy(b)) for b in beliefs]
    maps = [m[None] if m.ndim == 3 else m[:1] for m in maps]
    n_stages = len(maps)
    stages = [1, n_stages] if stages is None else [int(s) for s in stages]
    stages = list(dict.fromkeys(stages))
    if any(not 1 <= s <= n_stages for s in stages):
        raise ValueError(f"stages must be in 1..{n_stages}, got {stages}")
    kp = to_numpy(keypoints)
    n_parts = codec.num_parts
    idx = [skeleton.part_index(q, n_parts) for q in parts]
    img = image_hwc(image)
    size_px = img.shape[0]
    extent = (-0.5, img.shape[1] - 0.5, size_px - 0.5, -0.5)
    shapes = ("o", "s", "^", "D", "v", "P")
    grid = maps[0].shape[-1]

    fig, axes = plt.subplots(len(idx), 1 + len(stages), figsize=(size * (1 + len(stages)) + 0.6, size * len(idx)),
                             squeeze=False)

    def mark(ax, legend=False):
        for k, j in enumerate(idx):
            if kp[j, 2] <= 0:
                continue
            side = skeleton.JOINT_NAMES[j].split("_")[0] if n_parts == skeleton.NUM_JOINTS else ""
            ax.scatter(kp[j, 0], kp[j, 1], s=80, marker=shapes[k % len(shapes)], facecolors="none", linewidths=2,
                       edgecolors="red" if side == "right" else "cyan", label=f"true {_part_short(j, n_parts)}")
        if legend:
            ax.legend(loc="lower left", fontsize=7, framealpha=0.8)

    for r, j in enumerate(idx):
        ax0 = axes[r, 0]
        ax0.imshow(img)
        mark(ax0, legend=True)
        ax0.set_title("image", fontsize=10)
        ax0.set_ylabel(f"belief for {_part_short(j, n_parts).replace('_', ' ')}", fontsize=11)
        vmax = max(max(float(maps[s - 1][0, j].max()) for s in stages), 1e-6)
        im = None
        for c, s in enumerate(stages, start=1):
            ax = axes[r, c]
            m = maps[s - 1]
            ax.imshow(img.mean(-1), cmap="gray", vmin=0, vmax=1)
            im = ax.imshow(m[0, j].numpy(), cmap="magma", alpha=0.7, extent=extent, vmin=0, vmax=vmax,
                           interpolation="nearest")
            mark(ax)
            px, py, conf = decode(m.float(), codec)[0, j].tolist()
            ax.scatter([px], [py], marker="x", s=90, c="white", linewidths=2.5)
            at = []
            for q in idx:
                if kp[q, 2] > 0:
                    rr, cc = _cell_of(kp[q, 0], kp[q, 1], grid)
                    near = float(m[0, j, max(rr - 1, 0):rr + 2, max(cc - 1, 0):cc + 2].max())
                    at.append(f"near true {_part_short(q, n_parts)}: {near:.2f}")
            if at:
                ax.text(0.02, 0.02, "\n".join(at), transform=ax.transAxes, fontsize=7.5, color="white",
                        va="bottom", bbox=dict(fc="black", alpha=0.55, lw=0, pad=1.5))
            ax.set_title(f"stage {s}: P({_part_short(j, n_parts)}) per cell\nx = decoded peak ({conf:.2f})",
                         fontsize=10)
        fig.colorbar(im, ax=list(axes[r, 1:]), fraction=0.03, pad=0.02, label="belief")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
    fig.suptitle(f"{grid}x{grid} belief cells (stride {codec.stride}): "
                 + " vs ".join(f"stage {s}" for s in stages), fontsize=11)
    return fig


def side_swaps(stage_preds: Sequence, keypoints) -> pd.DataFrame:
    """How often a left/right part is predicted nearer to its MIRROR joint than to itself.

    Args:
        stage_preds: per-stage decoded keypoints, each (N, P, 3) (``cpm_lab.metrics.predict``).
        keypoints: (N, P, 3) ground truth in the same pixels; LSP-14 order (``skeleton.FLIP_INDEX``).
    Returns:
        tidy DataFrame with columns ``stage`` (1-based), ``part`` (short name, plus ``"all L/R"``
        pooling every left/right part), ``swapped`` (fraction of samples where both the part
        and its mirror are visible and the prediction lies strictly nearer the mirror's true
        position) and ``n`` (such samples). A prediction that lands anywhere at random is
        "swapped" about half the time, so values near 0.5 mean the sides are not told apart.
    """
    gt = to_numpy(keypoints)
    if gt.ndim != 3 or gt.shape[1] != skeleton.NUM_JOINTS:
        raise ValueError(f"keypoints must be (N, {skeleton.NUM_JOINTS}, 3) in LSP order; got {gt.shape}")
    mirror = list(skeleton.FLIP_INDEX)
    sided = [c for c in range(gt.shape[1]) if mirror[c] != c]
    vis = (gt[..., 2] > 0) & np.isfinite(gt[..., :2]).all(-1)
    both = vis & vis[:, mirror]
    rows = []
    for t, pred in enumerate(stage_preds, start=1):
        pr = to_numpy(pred)
        if pr.shape[:2] != gt.shape[:2]:
            raise ValueError(f"stage {t} predictions {pr.shape} do not match keypoints {gt.shape}")
        d_own = np.linalg.norm(pr[..., :2] - gt[..., :2], axis=-1)
        d_mir = np.linalg.norm(pr[..., :2] - gt[:, mirror, :2], axis=-1)
        swapped = (d_mir < d_own) & both
        for c in sided:
            n = int(both[:, c].sum())
            rows.append((t, skeleton.SHORT_NAMES[c], swapped[:, c].sum() / n if n else np.nan, n))
        n = int(both[:, sided].sum())
        rows.append((t, "all L/R", swapped[:, sided].sum() / n if n else np.nan, n))
    return pd.DataFrame(rows, columns=["stage", "part", "swapped", "n"])


def confusion_example(stage_beliefs: Sequence, keypoints, part: int | str = "right_wrist", first: int = 1,
                      last: int | None = None, min_separation: float = 3.0) -> int:
    """Index of a sample where ``part``'s map fires on BOTH sides at stage ``first`` and on its own side
    at stage ``last``: a clean picture of a left/right confusion being repaired.

    Beliefs are read as the maximum over the 3x3 cells around each true joint, divided by the
    map's maximum. Score = min(own, mirror) at ``first`` (both sides lit) + (own - mirror) at
    ``last`` (the mirror faded). Samples where the part or its mirror joint is invisible, or the
    two lie closer than ``min_separation`` cells, are skipped.

    Args:
        stage_beliefs: per-stage beliefs over the same N images, each (N, P+1, G, G).
        keypoints: (N, P, 3) ground truth, LSP-14 order (``skeleton.FLIP_INDEX`` gives the mirror).
        part: a left/right joint, index or name.
        first, last: 1-based stages (``last`` defaults to the final stage).
    Returns:
        the sample index (int). Raises ValueError when no sample qualifies.
    """
    from scipy.ndimage import maximum_filter

    maps = [to_numpy(b) for b in stage_beliefs]
    kp = to_numpy(keypoints)
    last = len(maps) if last is None else int(last)
    if not (1 <= first <= len(maps) and 1 <= last <= len(maps)):
        raise ValueError(f"first and last must be in 1..{len(maps)}, got {first}, {last}")
    if kp.ndim != 3 or kp.shape[1] != skeleton.NUM_JOINTS or kp.shape[0] != maps[0].shape[0]:
        raise ValueError(f"keypoints must be (N, {skeleton.NUM_JOINTS}, 3) for the N={maps[0].shape[0]} images "
                         f"of the beliefs; got {kp.shape}")
    p = skeleton.part_index(part, skeleton.NUM_JOINTS)
    q = skeleton.FLIP_INDEX[p]
    if q == p:
        raise ValueError(f"part {part!r} has no left/right mirror")
    g = maps[0].shape[-1]
    cells = np.floor((np.nan_to_num(kp[:, [p, q], :2]) + 0.5) / STRIDE).astype(int).clip(0, g - 1)  # (N, 2, xy)
    ok = (kp[:, [p, q], 2] > 0).all(-1) & np.isfinite(kp[:, [p, q], :2]).all((-1, -2))
    ok &= np.linalg.norm(cells[:, 0] - cells[:, 1], axis=-1) >= min_separation
    if not ok.any():
        raise ValueError(f"no sample shows {skeleton.JOINT_NAMES[p]} and {skeleton.JOINT_NAMES[q]} "
                         f"at least {min_separation} cells apart")

    def own_and_mirror(stage):
        b = maps[stage - 1][:, p]
        pooled = maximum_filter(b, size=(1, 3, 3), mode="constant") / np.maximum(b.max((1, 2)), 1e-12)[:, None, None]
        n = np.arange(len(b))
        return pooled[n, cells[:, 0, 1], cells[:, 0, 0]], pooled[n, cells[:, 1, 1], cells[:, 1, 0]]

    own_f, mir_f = own_and_mirror(first)
    own_l, mir_l = own_and_mirror(last)
    score = np.minimum(own_f, mir_f) + own_l - mir_l
    return int(np.where(ok, score, -np.inf).argmax())


def most_improved(stage_preds: Sequence, keypoints, parts: Sequence[int | str] = ("right_wrist", "left_wrist"),
                  first: int = 1, last: int | None = None) -> int:
    """Index of the sample whose ``parts`` improve most from stage ``first`` to stage ``last``.

    Args:
        stage_preds: per-stage decoded keypoints, each (N, P, 3) (``cpm_lab.metrics.predict``).
        keypoints: (N, P, 3) ground truth.
        parts: joints whose summed pixel error counts; samples where any is invisible are skipped.
        first, last: 1-based stages (``last`` defaults to the final stage).
    Returns:
        the sample index (int). Raises ValueError when no sample shows all ``parts``.
    """
    preds = [to_numpy(p) for p in stage_preds]
    gt = to_numpy(keypoints)
    last = len(preds) if last is None else int(last)
    if not (1 <= first <= len(preds) and 1 <= last <= len(preds)):
        raise ValueError(f"first and last must be in 1..{len(preds)}, got {first}, {last}")
    if gt.ndim != 3 or preds[0].shape[:2] != gt.shape[:2]:
        raise ValueError(f"keypoints {gt.shape} do not match the predictions {preds[0].shape}")
    idx = [skeleton.part_index(q, gt.shape[1]) for q in parts]
    err = [np.linalg.norm(preds[s - 1][:, idx, :2] - gt[:, idx, :2], axis=-1).sum(-1) for s in (first, last)]
    ok = (gt[:, idx, 2] > 0).all(-1)
    if not ok.any():
        raise ValueError(f"no sample has all of {list(parts)} visible")
    return int(np.where(ok, err[0] - err[1], -np.inf).argmax())


def part_confusion(beliefs, keypoints, stride: int = STRIDE) -> np.ndarray:
    """Mean belief of every part channel in the cell of every TRUE joint.

    Args:
        beliefs: (N, P+1, G, G) or (N, P, G, G) beliefs of one stage (torch or numpy).
        keypoints: (N, P, 3) ground truth in input pixels; invisible joints, and joints outside
            the image, are skipped.
        stride: input pixels per belief cell.
    Returns:
        (P, P) array M: ``M[c, j]`` = mean over images of part c's belief at the cell holding
        joint j (NaN where joint j is never visible). A detector that knows left from right has
        most of row c on the diagonal; one that confuses the sides also lights up ``M[c, mirror(c)]``.
    """
    b = to_numpy(beliefs)
    kp = to_numpy(keypoints)
    if b.ndim != 4 or kp.ndim != 3 or kp.shape[0] != b.shape[0] or kp.shape[-1] != 3:
        raise ValueError(f"beliefs must be (N, C, G, G) and keypoints (N, P, 3) for the same N; got "
                         f"{b.shape} and {kp.shape}")
    n, p = kp.shape[:2]
    if b.shape[1] < p:
        raise ValueError(f"beliefs have {b.shape[1]} channels for {p} keypoints")
    gh, gw = b.shape[-2:]
    cols = np.floor((np.nan_to_num(kp[..., 0]) + 0.5) / stride).astype(int)
    rows = np.floor((np.nan_to_num(kp[..., 1]) + 0.5) / stride).astype(int)
    ok = (kp[..., 2] > 0) & np.isfinite(kp[..., :2]).all(-1) & (rows >= 0) & (rows < gh) & (cols >= 0) & (cols < gw)
    at = b[np.arange(n)[:, None], :p, np.clip(rows, 0, gh - 1), np.clip(cols, 0, gw - 1)]  # (N, P_joint, P_channel)
    at = np.where(ok[..., None], at, 0.0)
    count = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (at.sum(0) / count[:, None]).T  # (channel, joint)


def plot_part_confusion(stage_beliefs: Sequence, keypoints, stages: Sequence[int] | None = None,
                        stride: int = STRIDE, size: float = 3.6):
    """Which true joint does each part's belief map fire on, stage by stage (:func:`part_confusion`).

    One matrix per stage: row c = part c's belief map, column j = the true location of joint j;
    each row is scaled to sum to 1 over the joints, so a row reads "of the belief part c puts on
    the joints, this share lands on joint j". The mirror joint of each left/right part is
    outlined in red. The title gives the mean share on the part's own joint (the diagonal), on
    its MIRROR joint (left/right parts only) and their ratio (1 = the map cannot tell the sides
    apart, 0 = never fires on the other side).

    Args:
        stage_beliefs: per-stage beliefs over a set of images, each (N, P+1, G, G).
        keypoints: (N, P, 3) ground truth.
        stages: 1-based stages to show (default all).
    Returns:
        the matplotlib Figure.
    """
    maps = list(stage_beliefs)
    stages = list(range(1, len(maps) + 1)) if stages is None else [int(s) for s in stages]
    if any(not 1 <= s <= len(maps) for s in stages):
        raise ValueError(f"stages must be in 1..{len(maps)}, got {stages}")
    p = to_numpy(keypoints).shape[1]
    mirror = list(skeleton.FLIP_INDEX) if p == skeleton.NUM_JOINTS else list(range(p))
    sided = [c for c in range(p) if mirror[c] != c]
    labels = [_part_short(c, p) for c in range(p)]
    shares = {}
    for s in stages:
        m = part_confusion(maps[s - 1], keypoints, stride)
        with np.errstate(invalid="ignore", divide="ignore"):
            shares[s] = m / np.nansum(m, axis=1, keepdims=True)
    vmax = max(float(np.nanmax(v)) if np.isfinite(v).any() else 0.0 for v in shares.values()) or 1.0
    fig, axes = plt.subplots(1, len(stages), figsize=(size * len(stages) + 0.8, size + 0.4), squeeze=False)
    im = None
    for ax, s in zip(axes[0], stages):
        share = shares[s]
        im = ax.imshow(share, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        for c in sided:
            ax.add_patch(Rectangle((mirror[c] - 0.5, c - 0.5), 1, 1, ec="red", fc="none", lw=1.0))
        mirror_share = float(np.nanmean([share[c, mirror[c]] for c in sided])) if sided else float("nan")
        own_share = float(np.nanmean(np.diag(share)))
        ax.set_xticks(range(p))
        ax.set_xticklabels(labels, rotation=90, fontsize=6.5)
        ax.set_yticks(range(p))
        ax.set_yticklabels(labels if ax is axes[0, 0] else [], fontsize=6.5)
        ax.set_xlabel("true location of joint", fontsize=8)
        ax.set_title(f"stage {s}: share on own joint {own_share:.2f},\non mirror joint {mirror_share:.2f} "
                     f"(ratio {mirror_share / own_share:.2f})", fontsize=9)
    axes[0, 0].set_ylabel("belief map of part", fontsize=8)
    fig.colorbar(im, ax=list(axes[0]), fraction=0.025, pad=0.02, label="share of the row's belief at joints")
    return fig


# ---------------------------------------------------------------------------------------------
# What each stage relies on
# ---------------------------------------------------------------------------------------------
def feature_importances(model) -> pd.DataFrame:
    """Impurity-based feature importances of every stage's forest, as a tidy table.

    Columns: ``stage`` (1-based), ``feature`` (name), ``family`` (``hog``, ``hogring``, ``rgb``,
    ``pos`` or ``context``), ``part`` (short name of the part whose beliefs a context feature
    summarises; empty for image features), ``kind`` (context block family: ``own``,
    ``ring{r}``, ``peak``, ``max``; empty otherwise) and ``importance`` (sums to 1 per stage).
    Needs a forest estimator (``extra_trees`` or ``random_forest``).
    """
    models = getattr(model, "models_", None)
    if not models:
        raise ValueError("model must be a fitted PoseMachine (call fit(...) or PoseMachine.load first)")
    rows = []
    for t, est in enumerate(models, start=1):
        if not hasattr(est, "feature_importances_"):
            raise ValueError(f"stage {t}'s {type(est).__name__} has no feature_importances_; use "
                             "estimator='extra_trees' or 'random_forest'")
        names = model.feature_names(t)
        imp = np.asarray(est.feature_importances_, dtype=np.float64)
        if len(imp) != len(names):
            raise ValueError(f"stage {t}: {len(imp)} importances for {len(names)} feature names")
        for name, value in zip(names, imp):
            if ":" in name:
                part, blk = name.split(":", 1)
                kind = ("own" if blk == "c" else "peak" if blk.startswith("peak") else
                        "max" if blk.startswith("max") else blk.split("_")[0].replace("r", "ring"))
                rows.append((t, name, "context", part, kind, value))
            else:
                rows.append((t, name, name.split("_", 1)[0], "", "", value))
    return pd.DataFrame(rows, columns=["stage", "feature", "family", "part", "kind", "importance"])


def plot_feature_importance(model, size: float = 3.4):
    """Where each stage's forest finds its information (impurity importance of :func:`feature_importances`).

    Left: per stage, the share of importance of each image-feature family and of the context
    features (stage 1 has none). Middle: the last stage's context importance by the part whose
    beliefs it summarises. Right: the same by context kind (own cell, each ring, peaks, maxima).
    """
    table = feature_importances(model)
    stages = sorted(table["stage"].unique())
    fig, axes = plt.subplots(1, 3, figsize=(size * 3.6, size + 0.4), gridspec_kw={"width_ratios": [1.1, 1.4, 1]})
    ax = axes[0]
    fams = list(dict.fromkeys(table["family"]))
    share = table.groupby(["stage", "family"])["importance"].sum().unstack(fill_value=0.0).reindex(columns=fams)
    left = np.zeros(len(stages))
    for fam in fams:
        vals = share.loc[stages, fam].to_numpy()
        ax.barh([f"stage {s}" for s in stages], vals, left=left, color=_FAMILY_COLORS.get(fam, "C4"),
                label=_FAMILY_LABELS.get(fam, fam))
        left += vals
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the forest's importance")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    ax.set_title("image features vs context, per stage", fontsize=10)

    last = stages[-1]
    ctx = table[(table["stage"] == last) & (table["family"] == "context")]
    for ax in axes[1:]:
        if ctx.empty:
            ax.text(0.5, 0.5, "one stage only:\nno context features", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
            ax.set_axis_off()
    if not ctx.empty:
        ax = axes[1]
        by_part = ctx.groupby("part", sort=False)["importance"].sum()
        n = len(by_part)
        colors = skeleton.JOINT_COLORS[:n] if n == skeleton.NUM_JOINTS else ["C2"] * n
        ax.bar(range(n), by_part.to_numpy(), color=colors)
        ax.set_xticks(range(n))
        ax.set_xticklabels(by_part.index, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("importance")
        ax.set_title(f"stage {last}: context importance by source part", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax = axes[2]
        by_kind = ctx.groupby("kind", sort=False)["importance"].agg(["sum", "size"])
        per_part = (by_kind["size"] // max(ctx["part"].nunique(), 1)).to_numpy()
        ax.bar(range(len(by_kind)), by_kind["sum"].to_numpy(), color="C2")
        ax.set_xticks(range(len(by_kind)))
        ax.set_xticklabels([f"{k}\nx{n}" for k, n in zip(by_kind.index, per_part)], fontsize=8)
        ax.set_title(f"stage {last}: context importance by kind\n(summed; x n = features per part)", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return fig
