"""Plots of what a classical Pose Machine's classifiers read (``cpm_lab.models.pose_machine_features``).

* :func:`plot_feature_grid`: the stride-8 cell grid the beliefs live on, the HOG orientation
  histogram of every cell, and which pixels one cell's image-feature vector summarises.
* :func:`plot_context_features`: the context features one location of stage t + 1 reads from
  stage t's beliefs: the ring offsets and pooling windows, the peak offsets and the pooled
  (pyramid) maxima drawn on one part's map, and the whole parts x features block as a matrix.

The figures of what the stages then predict (belief maps stage against stage, part confusions,
feature importances) are in :mod:`cpm_lab.viz.pose_machine`; the small helpers both share (the
feature-family colours, part labels) live here.

Coordinates: images are 3xHxW (or HxWx3) floats in [0, 1], keypoints (P, 3) in input pixels,
belief maps (P+1, G, G) or (P, G, G) with G = H / 8; a "cell" is given as (row, column) of that
grid and covers input pixels ``8*row .. 8*row + 7`` by ``8*col .. 8*col + 7``
(``cpm_lab.targets.cell_index``).
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize, to_rgba
from matplotlib.patches import FancyArrowPatch, Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from .. import skeleton
from ..models.pose_machine import PoseMachineConfig
from ..models.pose_machine_features import (
    DIRECTIONS,
    RING_DISTANCE,
    context_block_names,
    context_features,
    image_feature_names,
    image_features,
)
from ..targets import cell_index, labelled_mask
from .pose import draw_skeleton, image_hwc, to_numpy

__all__ = ["cell_orientation_histograms", "plot_context_features", "plot_feature_grid"]

STRIDE = PoseMachineConfig.stride
_FAMILY_COLORS = {"hog": "C0", "hogring": "C9", "rgb": "C3", "pos": "C7", "context": "C2"}
_FAMILY_LABELS = {"hog": "HOG, 3x3-cell window", "hogring": "HOG, 8 ring windows", "rgb": "colour",
                  "pos": "position", "context": "context (previous stage)"}
#: Width (inches) up to which a figure is shown at its own size in a notebook (1000 px at 100 dpi);
#: a wider one is shrunk to fit, so its fonts are scaled up by :func:`_font_scale` to stay readable.
_DISPLAY_WIDTH_IN = 10.0


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


def _font_scale(fig_width_in: float) -> float:
    """Factor for the font sizes of a figure ``fig_width_in`` inches wide: 1 up to
    ``_DISPLAY_WIDTH_IN``, beyond it width / ``_DISPLAY_WIDTH_IN``, so that text keeps its size as
    seen when a notebook shrinks the figure to its output width (the figures' base sizes are
    >= 8 pt)."""
    return max(1.0, float(fig_width_in) / _DISPLAY_WIDTH_IN)


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


def _joint_cell(keypoints, j: int, grid: int) -> tuple[int, int] | None:
    """Grid cell (row, col) holding joint ``j`` of ``keypoints`` (P, 3), clipped to the grid; None when
    no keypoints are given or joint ``j`` is not labelled."""
    if keypoints is None:
        return None
    kp = to_numpy(keypoints)
    if len(kp) <= j or not labelled_mask(kp[j]):
        return None
    row, col = np.clip(cell_index(kp[j, [1, 0]], STRIDE), 0, grid - 1)
    return int(row), int(col)


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
    cell = _joint_cell(keypoints, skeleton.JOINT_INDEX.get(part, 0), grid)
    return cell if cell is not None else (grid // 2, grid // 2)


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

    Four panels, three images in the top row and a bar chart across the bottom: (1) the image
    with the 8x8-pixel cell grid, one cell per belief-map location (the CPM's stride 8); (2) every
    cell's HOG orientation histogram drawn as edge glyphs (line direction = edge direction,
    length = bin strength); (3) the pixels one cell's feature vector summarises: the cell, its
    3x3-cell HOG window and the 8 ring windows 3 cells away; (4) that cell's feature vector,
    coloured by feature family.

    Args:
        image: 3xHxW (or HxWx3) in [0, 1]; H and W multiples of 8, at least 24.
        keypoints: optional (P, 3) ground truth drawn as a skeleton in panel 1.
        cell: (row, column) of the cell to dissect; default the right wrist's cell when
            ``keypoints`` show it, else the centre cell.
        orientations: HOG bins, as the model's ``config.orientations``.
        size: side of each image panel in inches.
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

    width = size * 3
    fk = _font_scale(width)
    fig = plt.figure(figsize=(width, size * 1.6 + 1.3))
    gs = fig.add_gridspec(2, 3, height_ratios=[size, size * 0.6])
    axes = [fig.add_subplot(gs[0, c]) for c in range(3)] + [fig.add_subplot(gs[1, :])]
    ax = axes[0]
    ax.imshow(img)
    for k in range(1, g_cols):
        ax.axvline(k * STRIDE - 0.5, color="white", lw=0.5, alpha=0.55)
    for k in range(1, g_rows):
        ax.axhline(k * STRIDE - 0.5, color="white", lw=0.5, alpha=0.55)
    if keypoints is not None:
        draw_skeleton(ax, keypoints, linewidth=1.2, markersize=2.5, alpha=0.8)
    ax.add_patch(_cell_rect(row, col, ec="yellow", fc="none", lw=1.8))
    ax.set_title(f"{g_rows}x{g_cols} grid of {STRIDE}x{STRIDE}-px cells\n= the belief-map locations", fontsize=9.5 * fk)

    ax = axes[1]
    ax.imshow(grey, cmap="gray", vmin=-0.6, vmax=1.6)  # low contrast, so the glyphs stand out
    _hog_glyphs(ax, hist, color="yellow", linewidth=1.1)
    ax.add_patch(_cell_rect(row, col, ec="cyan", fc="none", lw=1.5))
    ax.set_title(f"HOG per cell ({orientations} orientation bins)\nline = edge direction,\nlength = strength",
                 fontsize=9.5 * fk)

    ax = axes[2]
    ax.imshow(img)
    ax.add_patch(_cell_rect(row, col, ec="yellow", fc="yellow", alpha=0.5, lw=0))
    ax.add_patch(_cell_rect(row, col, 3, ec="yellow", fc="none", lw=1.8))
    d = RING_DISTANCE
    for name, dx, dy in DIRECTIONS:
        ax.add_patch(_cell_rect(row + d * dy, col + d * dx, 3, ec="cyan", fc="none", lw=1.0, ls="--"))
    ax.set_title(f"cell (row {row}, col {col}): yellow = own cell\nand 3x3-cell HOG window,\ncyan = 8 ring windows",
                 fontsize=9.5 * fk)
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
    ax.set_xlabel("feature index", fontsize=10 * fk)
    ax.set_ylabel("value", fontsize=10 * fk)
    ax.tick_params(labelsize=9 * fk)
    ax.legend(handles=handles, fontsize=9 * fk, loc="upper left", ncol=2, frameon=False)
    ax.set_title(f"the {len(names)} image features of that cell", fontsize=10 * fk)
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

    Top: part ``part``'s belief map (over the image, in grid cells) with the cell (white
    square); for every context radius r its 8 sample points r cells away, each with the square
    window the map is max-pooled over there (one colour per radius); arrows to the part's
    belief peaks (the peak offsets; dotted square = the suppression zone around peak 1 before
    peak 2 is sought); dashed lines = the quadrants of the pooled maxima.
    Bottom: the full context vector of the cell as a matrix, one row per part (the row of
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
        size: side of the belief-map panel in inches (the figure is 2.4 x ``size`` wide).
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
        cell = _joint_cell(keypoints, j, grid)
        if cell is not None:
            where = f" = true {_part_short(j, n_parts)}"
        else:
            cell = divmod(int(b[p].argmax()), grid)
            where = " = its peak"
    row, col = _check_cell(cell, grid)
    block = context_block_names(cfg.context_radii, cfg.n_peaks)
    ctx = context_features(b[None], cfg.context_radii, cfg.n_peaks, cfg.peak_suppression)[0, row, col]
    ctx = ctx.reshape(n_parts, len(block))

    width = size * 2.4
    fk = _font_scale(width)
    matrix_h = 0.2 * n_parts + 1.2  # rows, rotated column names, group labels and title
    fig = plt.figure(figsize=(width, size + matrix_h + 1.4))
    outer = fig.add_gridspec(2, 1, height_ratios=[size, matrix_h], hspace=0.3, left=0.08, right=0.91,
                             bottom=0.1, top=0.93)
    top = outer[0].subgridspec(1, 3, width_ratios=[1, 0.045, 1.45], wspace=0.06)
    bottom = outer[1].subgridspec(1, 4, width_ratios=[1, 0.016, 0.075, 0.016], wspace=0.0)
    ax, cax, axm, cax1, cax2 = (fig.add_subplot(g) for g in (top[0], top[1], bottom[0], bottom[1], bottom[3]))
    peaks = [tuple(ctx[p, block.index(f"peak{k}_{s}")] for s in ("dx", "dy", "v")) for k in range(1, cfg.n_peaks + 1)]
    im = _draw_context_map(ax, b[p], image, row, col, cfg, peaks, fk)
    fig.colorbar(im, cax=cax).set_label("belief", fontsize=9.5 * fk)
    cax.tick_params(labelsize=9 * fk)
    ax.set_title(f"stage {stage} belief of {_part_short(p, n_parts)}; context read at\n"
                 f"cell (row {row}, col {col}){where} (white square)", fontsize=10 * fk)
    _draw_context_matrix(fig, axm, (cax1, cax2), ctx, block, p, grid, stage, fk)
    axm.set_title(f"all {ctx.size} context features of cell (row {row}, col {col}) that stage {stage + 1} "
                  f"reads: {n_parts} parts x {len(block)}", fontsize=10 * fk, pad=6 + 24 * fk)
    return fig


def _draw_context_map(ax, belief: np.ndarray, image, row: int, col: int, cfg: PoseMachineConfig,
                      peaks: Sequence[tuple[float, float, float]], k: float = 1.0):
    """Top panel of :func:`plot_context_features`: one part's (G, G) ``belief`` map (over ``image``)
    with the rings, pooling windows and ``peaks`` ((dx, dy, belief) per peak) read at cell (row, col),
    its legend to the right; fonts scaled by ``k``. Returns the belief image for the colour bar."""
    grid = belief.shape[-1]
    extent = (-0.5, grid - 0.5, grid - 0.5, -0.5)
    if image is not None:
        ax.imshow(image_hwc(image).mean(-1), cmap="gray", extent=extent, vmin=0, vmax=1)
    im = ax.imshow(belief, cmap="magma", alpha=0.75 if image is not None else 1.0, extent=extent, vmin=0,
                   vmax=max(float(belief.max()), 1e-6), interpolation="nearest")
    half_r, half_c = (grid + 1) // 2, (grid + 1) // 2
    ax.axvline(half_c - 0.5, color="0.8", ls="--", lw=0.8)
    ax.axhline(half_r - 0.5, color="0.8", ls="--", lw=0.8)
    handles = _draw_rings(ax, row, col, cfg.context_radii)
    for n, (dx, dy, v) in enumerate(peaks, start=1):
        _draw_peak(ax, n, row, col, dx, dy, v, grid, cfg.peak_suppression if n == 1 and len(peaks) > 1 else None,
                   fontsize=8.5 * k)
    ax.add_patch(Rectangle((col - 0.5, row - 0.5), 1, 1, ec="white", fc="none", lw=2))
    handles.append(plt.Line2D([], [], color="cyan", lw=1.6, label="peak k: offset (dx, dy) in cells, belief"))
    handles.append(plt.Line2D([], [], color="cyan", lw=1.0, ls=":", label="zeroed around peak 1 before peak 2"))
    handles.append(plt.Line2D([], [], color="0.8", lw=0.8, ls="--", label="quadrants of the pooled maxima"))
    ax.legend(handles=handles, fontsize=9 * k, loc="upper left", bbox_to_anchor=(1.3, 1.0), frameon=False,
              borderaxespad=0.0)
    ax.set_xlim(-0.5, grid - 0.5)
    ax.set_ylim(grid - 0.5, -0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("column (cells)", fontsize=9.5 * k)
    ax.set_ylabel("row (cells)", fontsize=9.5 * k)
    ax.tick_params(labelsize=9 * k)
    return im


def _draw_rings(ax, row: int, col: int, context_radii: Sequence[int]) -> list:
    """The 8 sample points of every context radius around cell (row, col), with the pooling window
    drawn at E; returns one legend handle per radius."""
    radius_colors = plt.get_cmap("viridis")(np.linspace(0.45, 1.0, len(context_radii)))
    handles = []
    for r, colour in zip(context_radii, radius_colors):
        win = 2 * (r // 2) + 1
        for name, dx, dy in DIRECTIONS:
            x, y = col + r * dx, row + r * dy
            ax.plot(x, y, "o", ms=4, color=colour, mec="black", mew=0.5)
            if name == "E":  # one window per radius is enough to show its size
                ax.add_patch(Rectangle((x - win / 2, y - win / 2), win, win, ec=colour, fc="none", lw=1.3))
        handles.append(plt.Line2D([], [], color=colour, marker="o", ms=4, lw=1.3,
                                  label=f"ring r={r}: 8 points, each the max over {win}x{win} cells (square at E)"))
    return handles


def _draw_peak(ax, k: int, row: int, col: int, dx: float, dy: float, v: float, grid: int,
               suppression: int | None, fontsize: float = 8.5):
    """Arrow from cell (row, col) to belief peak ``k`` at offset (dx, dy) cells, labelled with the
    offset and belief ``v``; with ``suppression``, the dotted square zeroed around it."""
    px, py = col + dx, row + dy
    ax.add_patch(FancyArrowPatch((col, row), (px, py), arrowstyle="-|>", mutation_scale=12, lw=1.6,
                                 color="cyan", shrinkA=0, shrinkB=2))
    right_half = px > grid / 2  # keep the label inside the map
    ax.text(px + (-0.4 if right_half else 0.4), py + (0.9 if py < 2 else -0.4),
            f"peak {k}: ({dx:+.0f}, {dy:+.0f}), {v:.2f}", color="cyan", fontsize=fontsize,
            ha="right" if right_half else "left", va="bottom" if py >= 2 else "top",
            bbox=dict(fc="black", alpha=0.5, lw=0, pad=1))
    if suppression is not None:
        s = suppression
        ax.add_patch(Rectangle((px - s - 0.5, py - s - 0.5), 2 * s + 1, 2 * s + 1, ec="cyan", fc="none",
                               ls=":", lw=1.0))


def _block_groups(block: Sequence[str]) -> list[tuple[str, int, int]]:
    """Consecutive runs of the context block's columns by kind: (label, first column, last column)."""
    groups: list[tuple[str, int, int]] = []
    for k, n in enumerate(block):
        label = ("own cell" if n == "c" else f"ring r={n[1:].split('_')[0]}" if n[0] == "r" and n[1].isdigit()
                 else "peaks\n(dx, dy, v)" if n.startswith("peak") else "max: map,\nquadrants")
        if groups and groups[-1][0] == label:
            groups[-1] = (label, groups[-1][1], k)
        else:
            groups.append((label, k, k))
    return groups


def _draw_context_matrix(fig, axm, caxes, ctx: np.ndarray, block: Sequence[str], p: int, grid: int, stage: int,
                         k: float = 1.0):
    """Bottom panel of :func:`plot_context_features`: the (P, B) context vector ``ctx`` of one cell,
    belief-valued columns on one colour scale (colour bar ``caxes[0]``), peak offsets in cells on a
    diverging one (``caxes[1]``, values printed), the row of part ``p`` outlined; fonts scaled by ``k``."""
    n_parts = ctx.shape[0]
    offset_cols = [k for k, n in enumerate(block) if n.endswith("_dx") or n.endswith("_dy")]
    is_offset = np.zeros(len(block), bool)
    is_offset[offset_cols] = True
    prob = np.ma.masked_where(np.broadcast_to(is_offset, ctx.shape), ctx)
    offs = np.ma.masked_where(np.broadcast_to(~is_offset, ctx.shape), ctx)
    im_p = axm.imshow(prob, cmap="magma", vmin=0, vmax=max(float(prob.max()), 1e-6), aspect="auto",
                      interpolation="nearest")
    im_o = axm.imshow(offs, cmap="coolwarm", norm=Normalize(-grid, grid), aspect="auto", interpolation="nearest")
    for c in offset_cols:
        for q in range(n_parts):
            axm.text(c, q, f"{ctx[q, c]:.0f}", ha="center", va="center", fontsize=8 * k, color="black")
    axm.add_patch(Rectangle((-0.5, p - 0.5), len(block), 1, ec="cyan", fc="none", lw=2))
    axm.set_yticks(range(n_parts))
    axm.set_yticklabels([_part_short(q, n_parts) for q in range(n_parts)], fontsize=8.5 * k)
    short = [n.split("_", 1)[1] if n.startswith("r") and "_" in n and n[1].isdigit() else n for n in block]
    axm.set_xticks(range(len(block)))
    axm.set_xticklabels(short, rotation=90, fontsize=8 * k)
    for label, a, z in _block_groups(block):  # group labels above the columns
        axm.text((a + z) / 2, -0.9, label, ha="center", va="bottom", fontsize=8.5 * k)
        if a > 0:
            axm.axvline(a - 0.5, color="white", lw=1.2)
    axm.set_ylabel("part whose stage-%d belief\nis summarised" % stage, fontsize=9.5 * k)
    for cax, im, label in zip(caxes, (im_p, im_o), ("belief-valued features", "peak offset (cells)")):
        fig.colorbar(im, cax=cax).set_label(label, fontsize=9 * k)
        cax.tick_params(labelsize=8.5 * k)
