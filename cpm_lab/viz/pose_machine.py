"""Plots of what a classical Pose Machine's stages predict (``cpm_lab.models.pose_machine``).

* :func:`plot_stage_comparison`: the same parts' belief maps at two (or more) stages over the
  image, sharing one colour scale per part (left/right confusions at stage 1 and their repair).
* :func:`plot_part_confusion`: over a whole test set, on which TRUE joint each part's belief
  map fires, stage by stage (left/right confusions as a matrix; ``cpm_lab.analysis.part_confusion``).
* :func:`plot_feature_importance`: how much of each stage's forest rests on image features
  versus context, and on which parts' context (``cpm_lab.analysis.feature_importances``).

These only draw: the tables behind them, and the functions that pick an example to show
(``side_swaps``, ``confusion_example``, ``most_improved``), are in :mod:`cpm_lab.analysis`. The
figures of what the classifiers read (cell grid, HOG, context features) are in
:mod:`cpm_lab.viz.pose_machine_features`.

Coordinates: images are 3xHxW (or HxWx3) floats in [0, 1], keypoints (P, 3) in input pixels,
belief maps (P+1, G, G) with G = H / stride (8).
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.patches import Rectangle

from .. import skeleton
from ..analysis import feature_importances, part_confusion
from ..targets import CodecConfig, cell_index, decode, labelled_mask
from .pose import image_hwc, to_numpy
from .pose_machine_features import _FAMILY_COLORS, _FAMILY_LABELS, STRIDE, _font_scale, _part_short

__all__ = ["plot_feature_importance", "plot_part_confusion", "plot_stage_comparison"]

_MARKERS = ("o", "s", "^", "D", "v", "P")  # one marker shape per part in plot_stage_comparison


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
        size: side of each panel in inches (fonts grow when the figure is wider than 10 in, so
            that they stay readable when a notebook shrinks it to its output width).
    Returns:
        the matplotlib Figure.
    """
    codec: CodecConfig = model.codec
    maps, stages = _stage_maps(model, image, beliefs, stages)
    kp = to_numpy(keypoints)
    n_parts = codec.num_parts
    idx = [skeleton.part_index(q, n_parts) for q in parts]
    img = image_hwc(image)
    extent = (-0.5, img.shape[1] - 0.5, img.shape[0] - 0.5, -0.5)
    grid = maps[0].shape[-1]

    width = size * (1 + len(stages)) + 0.6
    k = _font_scale(width)
    fig, axes = plt.subplots(len(idx), 1 + len(stages), figsize=(width, size * len(idx) + 0.3), squeeze=False)
    for r, j in enumerate(idx):
        ax0 = axes[r, 0]
        ax0.imshow(img)
        _mark_joints(ax0, kp, idx, n_parts, legend=True, fontsize=8.5 * k)
        ax0.set_title("image", fontsize=10 * k)
        ax0.set_ylabel(f"belief for {_part_short(j, n_parts).replace('_', ' ')}", fontsize=10.5 * k)
        vmax = max(max(float(maps[s - 1][0, j].max()) for s in stages), 1e-6)
        im = None
        for c, s in enumerate(stages, start=1):
            im = _stage_panel(axes[r, c], img, maps[s - 1], s, j, kp, idx, codec, extent, vmax, k)
        cbar = fig.colorbar(im, ax=list(axes[r, 1:]), fraction=0.03, pad=0.02)
        cbar.set_label("belief", fontsize=9.5 * k)
        cbar.ax.tick_params(labelsize=9 * k)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
    fig.suptitle(f"{grid}x{grid} belief cells (stride {codec.stride}): "
                 + " vs ".join(f"stage {s}" for s in stages), fontsize=11 * k)
    return fig


def _stage_maps(model, image, beliefs: Sequence | None, stages: Sequence[int] | None):
    """Per-stage beliefs of one image as (1, P+1, G, G) tensors (``beliefs``, or ``model`` run on the
    3xHxW ``image``), and the 1-based ``stages`` to show (default first and last), checked."""
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
    return maps, stages


def _mark_joints(ax, kp: np.ndarray, idx: Sequence[int], n_parts: int, legend: bool = False,
                 fontsize: float = 8.5):
    """Hollow markers on the true positions of the labelled joints ``idx`` of ``kp`` (P, 3):
    red = person's right, cyan = left, one marker shape per joint (with ``legend``, a legend
    in ``fontsize``)."""
    labelled = labelled_mask(kp)
    for k, j in enumerate(idx):
        if not labelled[j]:
            continue
        side = skeleton.JOINT_NAMES[j].split("_")[0] if n_parts == skeleton.NUM_JOINTS else ""
        ax.scatter(kp[j, 0], kp[j, 1], s=80, marker=_MARKERS[k % len(_MARKERS)], facecolors="none", linewidths=2,
                   edgecolors="red" if side == "right" else "cyan", label=f"true {_part_short(j, n_parts)}")
    if legend:
        ax.legend(loc="lower left", fontsize=fontsize, framealpha=0.8)


def _stage_panel(ax, img: np.ndarray, m: torch.Tensor, s: int, j: int, kp: np.ndarray, idx: Sequence[int],
                 codec: CodecConfig, extent, vmax: float, k: float = 1.0):
    """One panel of :func:`plot_stage_comparison`: part ``j``'s belief at stage ``s`` (``m``, (1, P+1, G, G))
    over the grey image, the true joints ``idx``, the decoded peak (white cross) and part ``j``'s
    belief near each true joint (max over its 3x3 cells), fonts scaled by ``k``; returns the belief image."""
    n_parts = codec.num_parts
    grid = m.shape[-1]
    ax.imshow(img.mean(-1), cmap="gray", vmin=0, vmax=1)
    im = ax.imshow(m[0, j].numpy(), cmap="magma", alpha=0.7, extent=extent, vmin=0, vmax=vmax,
                   interpolation="nearest")
    _mark_joints(ax, kp, idx, n_parts)
    px, py, conf = decode(m.float(), codec)[0, j].tolist()
    ax.scatter([px], [py], marker="x", s=90, c="white", linewidths=2.5)
    labelled = labelled_mask(kp)
    at = []
    for q in idx:
        if labelled[q]:
            rr, cc = (int(v) for v in np.clip(cell_index(kp[q, [1, 0]], codec.stride), 0, grid - 1))
            near = float(m[0, j, max(rr - 1, 0):rr + 2, max(cc - 1, 0):cc + 2].max())
            at.append(f"near true {_part_short(q, n_parts)}: {near:.2f}")
    if at:
        ax.text(0.02, 0.02, "\n".join(at), transform=ax.transAxes, fontsize=8.5 * k, color="white",
                va="bottom", bbox=dict(fc="black", alpha=0.55, lw=0, pad=1.5))
    ax.set_title(f"stage {s}: P({_part_short(j, n_parts)}) per cell\nx = decoded peak ({conf:.2f})", fontsize=9.5 * k)
    return im


# ---------------------------------------------------------------------------------------------
# Part confusions over a test set
# ---------------------------------------------------------------------------------------------
def plot_part_confusion(stage_beliefs: Sequence, keypoints, stages: Sequence[int] | None = None,
                        stride: int = STRIDE, size: float = 3.6):
    """Which true joint does each part's belief map fire on, stage by stage
    (:func:`cpm_lab.analysis.part_confusion`).

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
        size: side of each matrix in inches (fonts grow when the figure is wider than 10 in).
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
    width = size * len(stages) + 1.0
    k = _font_scale(width)
    fig, axes = plt.subplots(1, len(stages), figsize=(width, size + 0.9), squeeze=False)
    im = None
    for ax, s in zip(axes[0], stages):
        share = shares[s]
        im = ax.imshow(share, cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")
        for c in sided:
            ax.add_patch(Rectangle((mirror[c] - 0.5, c - 0.5), 1, 1, ec="red", fc="none", lw=1.0))
        mirror_share = float(np.nanmean([share[c, mirror[c]] for c in sided])) if sided else float("nan")
        own_share = float(np.nanmean(np.diag(share)))
        ax.set_xticks(range(p))
        ax.set_xticklabels(labels, rotation=90, fontsize=8.5 * k)
        ax.set_yticks(range(p))
        ax.set_yticklabels(labels if ax is axes[0, 0] else [], fontsize=8.5 * k)
        ax.set_xlabel("true location of joint", fontsize=9.5 * k)
        ax.set_title(f"stage {s}: share on own joint {own_share:.2f},\non mirror joint {mirror_share:.2f} "
                     f"(ratio {mirror_share / own_share:.2f})", fontsize=9.5 * k)
    axes[0, 0].set_ylabel("belief map of part", fontsize=9.5 * k)
    cbar = fig.colorbar(im, ax=list(axes[0]), fraction=0.025, pad=0.02)
    cbar.set_label("share of the row's belief at joints", fontsize=9 * k)
    cbar.ax.tick_params(labelsize=8.5 * k)
    return fig



# ---------------------------------------------------------------------------------------------
# What each stage relies on
# ---------------------------------------------------------------------------------------------
def plot_feature_importance(model, size: float = 3.4):
    """Where each stage's forest finds its information (impurity importance of
    :func:`cpm_lab.analysis.feature_importances`).

    Left: per stage, the share of importance of each image-feature family and of the context
    features (stage 1 has none). Middle: the last stage's context importance by the part whose
    beliefs it summarises. Right: the same by context kind (own cell, each ring, peaks, maxima).
    ``size`` is the height of the panels in inches; the figure is 3 x ``size`` wide.
    """
    table = feature_importances(model)
    stages = sorted(table["stage"].unique())
    width = size * 3
    k = _font_scale(width)
    fig, axes = plt.subplots(1, 3, figsize=(width, size + 1.3), gridspec_kw={"width_ratios": [1.1, 1.4, 1]})
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
    ax.set_xlabel("share of the forest's importance", fontsize=9.5 * k)
    ax.tick_params(labelsize=9 * k)
    ax.set_title("image features vs context,\nper stage", fontsize=10 * k)

    last = stages[-1]
    ctx = table[(table["stage"] == last) & (table["family"] == "context")]
    for ax in axes[1:]:
        if ctx.empty:
            ax.text(0.5, 0.5, "one stage only:\nno context features", ha="center", va="center",
                    transform=ax.transAxes, color="0.4", fontsize=10 * k)
            ax.set_axis_off()
    if not ctx.empty:
        ax = axes[1]
        by_part = ctx.groupby("part", sort=False)["importance"].sum()
        n = len(by_part)
        colors = skeleton.JOINT_COLORS[:n] if n == skeleton.NUM_JOINTS else ["C2"] * n
        ax.bar(range(n), by_part.to_numpy(), color=colors)
        ax.set_xticks(range(n))
        ax.set_xticklabels(by_part.index, rotation=60, ha="right", fontsize=9 * k)
        ax.tick_params(axis="y", labelsize=9 * k)
        ax.set_ylabel("importance", fontsize=9.5 * k)
        ax.set_title(f"stage {last}: context importance\nby source part", fontsize=10 * k)
        ax.grid(alpha=0.3, axis="y")
        ax = axes[2]
        by_kind = ctx.groupby("kind", sort=False)["importance"].agg(["sum", "size"])
        per_part = (by_kind["size"] // max(ctx["part"].nunique(), 1)).to_numpy()
        ax.bar(range(len(by_kind)), by_kind["sum"].to_numpy(), color="C2")
        ax.set_xticks(range(len(by_kind)))
        ax.set_xticklabels([f"{kind}\nx{n}" for kind, n in zip(by_kind.index, per_part)], fontsize=9 * k)
        ax.tick_params(axis="y", labelsize=9 * k)
        ax.set_title(f"stage {last}: context importance by kind\n(summed; x n = features per part)",
                     fontsize=10 * k)
        ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0].get_legend_handles_labels()  # the families, under the whole figure
    fig.legend(handles, labels, fontsize=8.5 * k, loc="lower center", ncol=len(labels), frameon=False,
               columnspacing=1.2, handlelength=1.2)
    fig.tight_layout(rect=(0, 0.35 / (size + 1.3), 1, 1))
    return fig
