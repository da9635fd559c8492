"""Static matplotlib views of images, skeletons and belief maps.

All functions accept torch tensors or numpy arrays: images 3×H×W (or H×W×3) floats in [0, 1],
keypoints (P, 3) in image pixels, beliefs (P + 1, h, w) or (P, h, w) at the model's stride.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np

from .. import skeleton
from ..targets import labelled_mask
from ..utils import to_numpy


def image_hwc(image) -> np.ndarray:
    """An image 3×H×W or H×W×3 as H×W×3 floats clipped to [0, 1] for imshow."""
    img = to_numpy(image)
    if img.ndim == 3 and img.shape[0] == 3 and img.shape[-1] != 3:
        img = img.transpose(1, 2, 0)
    if img.ndim != 3 or img.shape[-1] != 3:
        raise ValueError(f"image must be 3×H×W or H×W×3, got shape {img.shape}")
    return np.clip(img, 0, 1)


def draw_skeleton(ax, keypoints, *, limbs=skeleton.LIMBS, colors=skeleton.LIMB_COLORS,
                  linestyle="-", linewidth=2.0, markersize=3.5, alpha=1.0, label=None):
    """Draw the limbs whose two joints are both visible, and the visible joints.

    Person's right limbs are red, left limbs blue, centre green (``skeleton.LIMB_COLORS``).
    """
    kp = to_numpy(keypoints)
    vis = labelled_mask(kp)
    for (a, b), colour in zip(limbs, colors):
        if a < len(kp) and b < len(kp) and vis[a] and vis[b]:
            ax.plot(kp[[a, b], 0], kp[[a, b], 1], linestyle, color=colour, lw=linewidth,
                    alpha=alpha, solid_capstyle="round")
    ax.plot(kp[vis, 0], kp[vis, 1], "o", ms=markersize, mfc="white", mec="black", mew=0.6,
            alpha=alpha, label=label)


def show_pose(ax, image, keypoints=None, prediction=None, title: str | None = None):
    """Image with ground truth (solid) and optionally a prediction (dashed) skeleton; the view
    stays on the image (labelled joints outside it are not drawn into view)."""
    img = image_hwc(image)
    ax.imshow(img)
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    if keypoints is not None:
        draw_skeleton(ax, keypoints)
    if prediction is not None:
        pred = to_numpy(prediction).copy()
        pred[:, 2] = 1
        draw_skeleton(ax, pred, linestyle="--", linewidth=1.5, alpha=0.9)
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=9)


def sample_grid(samples: Sequence[dict], ncols: int = 4, titles: Sequence[str] | None = None,
                size: float = 2.4):
    """A grid of dataset samples (dicts with ``image`` and ``keypoints``) with their skeletons."""
    n = len(samples)
    nrows = max(1, -(-n // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            show_pose(ax, samples[k]["image"], samples[k]["keypoints"], title=titles[k] if titles else None)
        else:
            ax.set_axis_off()
    fig.tight_layout()
    return fig


def belief_extent(shape_hw: tuple[int, int], stride: int) -> tuple[float, float, float, float]:
    """imshow extent that puts belief cell i over input pixels s*i .. s*i + s - 1."""
    h, w = shape_hw
    return (-0.5, w * stride - 0.5, h * stride - 0.5, -0.5)


def belief_composite(beliefs, colors: np.ndarray = skeleton.JOINT_COLORS, vmax: float = 1.0) -> np.ndarray:
    """Colour composite of part beliefs (P, h, w) (background channel, if present, dropped by
    the caller): each cell takes the colour of its strongest part, brightness = that belief
    divided by ``vmax`` and clipped to [0, 1]. Returns h×w×4 RGBA with alpha = brightness."""
    b = np.clip(to_numpy(beliefs) / max(vmax, 1e-6), 0, 1)
    p = min(len(b), len(colors))
    strongest = b[:p].argmax(0)
    value = b[:p].max(0)
    rgba = np.zeros((*value.shape, 4), np.float32)
    rgba[..., :3] = colors[strongest]
    rgba[..., 3] = value
    return rgba


def overlay_beliefs(ax, image, beliefs, part: int | str = "all", stride: int = 8, alpha: float = 0.6,
                    cmap: str = "magma", vmax: float | None = 1.0):
    """Draw ``image`` with the beliefs of ``part`` (an index, or "all" for the colour composite)
    on top, aligned cell-by-cell with the input pixels they cover. ``alpha`` (0..1) is the
    overlay's strength; for "all" the image is also dimmed by ``alpha / 2``.

    Colours span beliefs 0..``vmax``; ``vmax=None`` scales to the shown map's peak (useful for
    models whose beliefs are probabilities well below 1, like the classical pose machine).
    """
    img = image_hwc(image)
    b = to_numpy(beliefs)
    extent = belief_extent(b.shape[-2:], stride)
    if part == "all":
        # The image is dimmed and the composite's opacity rises faster than the belief, so that
        # part colours stand out against a busy picture even where beliefs are well below 1;
        # beliefs under 0.1 of the scale stay transparent (no colour wash over the background).
        ax.imshow(img * (1.0 - 0.5 * alpha))
        parts = b[: len(skeleton.JOINT_COLORS)] if b.shape[0] == skeleton.NUM_JOINTS + 1 else b[:-1]
        comp = belief_composite(parts, vmax=float(parts.max()) if vmax is None else vmax)
        comp[..., 3] = np.clip((comp[..., 3] - 0.1) / 0.9, 0, 1) ** 0.6 * min(1.0, 1.5 * alpha)
        ax.imshow(comp, extent=extent, interpolation="bilinear")
    else:
        ax.imshow(img)
        m = b[int(part)]
        top = max(float(m.max()), 1e-6) if vmax is None else vmax
        ax.imshow(np.clip(m, 0, top), cmap=cmap, vmin=0, vmax=top, alpha=alpha, extent=extent,
                  interpolation="bilinear")
    ax.set_xlim(-0.5, img.shape[1] - 0.5)
    ax.set_ylim(img.shape[0] - 0.5, -0.5)
    ax.set_axis_off()


def part_label(part: int | str, names: Sequence[str] = skeleton.JOINT_NAMES) -> str:
    if part == "all":
        return "all parts"
    return names[int(part)].replace("_", " ") if int(part) < len(names) else "background"


def plot_stage_beliefs(image, stage_beliefs: Sequence, part: int | str = "all", stride: int = 8,
                       keypoints=None, predictions: Sequence | None = None, size: float = 2.6,
                       scale_to_peak: bool = False, key: bool = True):
    """One panel per stage: the beliefs of ``part`` over the image (stages numbered from 1).

    ``stage_beliefs`` is a list of (P + 1, h, w) maps for ONE image; ``predictions`` an optional
    list of decoded (P, 3) keypoints per stage, drawn as dashed skeletons (one part: a cyan ×).
    ``scale_to_peak`` colours each panel from 0 to its own peak (printed in its title) instead of
    0..1. With ``part="all"`` and ``key``, the colour key of the parts (``part_key``) sits below.
    """
    t = len(stage_beliefs)
    composite = part == "all"
    img = image_hwc(image)
    panel_h = size * img.shape[0] / img.shape[1]            # panels keep the image's aspect
    fig, axes = plt.subplots(1, t, figsize=(max(size * t, 7.6 if composite and key else 0), panel_h + 0.6
                                            + (0.8 if composite and key else 0)), squeeze=False)
    for k, ax in enumerate(axes[0]):
        maps = to_numpy(stage_beliefs[k])
        overlay_beliefs(ax, image, maps, part=part, stride=stride, vmax=None if scale_to_peak else 1.0)
        if keypoints is not None and composite:
            draw_skeleton(ax, keypoints, alpha=0.35, linewidth=1.0, markersize=2)
        if predictions is not None:
            pred = to_numpy(predictions[k]).copy()
            if not composite:
                ax.plot(pred[int(part), 0], pred[int(part), 1], "x", color="cyan", ms=8, mew=2)
            else:
                pred[:, 2] = 1
                draw_skeleton(ax, pred, linestyle="--", linewidth=1.3)
        peak = float((maps[: skeleton.NUM_JOINTS] if composite else maps[int(part)]).max())
        ax.set_title(f"stage {k + 1}" + (f" (peak {peak:.2f})" if scale_to_peak else ""), fontsize=10)
    fig.suptitle(part_label(part) + (", colours scaled to each peak" if scale_to_peak else ""), fontsize=11)
    if composite and key:
        fig.tight_layout(rect=(0, 0.7 / (panel_h + 1.4), 1, 1))
        part_key(fig, num_parts=len(to_numpy(stage_beliefs[0])) - 1, fontsize=8.5)
    else:
        fig.tight_layout()
    return fig


def side_handles() -> list:
    """Legend handles of ``draw_skeleton``'s colours: the person's right limbs, left limbs, centre line."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=c, lw=2.5, label=f"person's {side}" if side != "centre" else "centre")
            for side, c in skeleton.SIDE_COLORS.items()]


def side_key(ax_or_fig, loc: str = "lower center", **kw):
    """Draw the colour key (``side_handles``) as a legend on an axes or figure."""
    return ax_or_fig.legend(handles=side_handles(), loc=loc, ncol=3, fontsize=8, frameon=False, **kw)


def part_handles(num_parts: int = skeleton.NUM_JOINTS) -> list:
    """Legend handles of the all-parts composite's colours (``skeleton.JOINT_COLORS``), ordered so
    that a 7-column legend shows the person's right parts in the first row, the same parts of the
    left side under them, and the neck and head top in the last column."""
    from matplotlib.patches import Patch

    if num_parts != skeleton.NUM_JOINTS:
        return [Patch(color=skeleton.JOINT_COLORS[p % len(skeleton.JOINT_COLORS)], label=f"part {p}")
                for p in range(num_parts)]
    order = []
    for joint in ("ankle", "knee", "hip", "wrist", "elbow", "shoulder"):
        order += [skeleton.JOINT_INDEX[f"right_{joint}"], skeleton.JOINT_INDEX[f"left_{joint}"]]
    order += [skeleton.JOINT_INDEX["neck"], skeleton.JOINT_INDEX["head_top"]]
    return [Patch(color=skeleton.JOINT_COLORS[p], label=skeleton.JOINT_NAMES[p].replace("right_", "R ")
                  .replace("left_", "L ").replace("_", " ")) for p in order]


def part_key(ax_or_fig, loc: str = "lower center", num_parts: int = skeleton.NUM_JOINTS, fontsize: float = 9, **kw):
    """Draw the colour key of the all-parts belief composite (``part_handles``: R = the person's
    right, warm colours; L = left, cool colours) as a legend on an axes or figure."""
    return ax_or_fig.legend(handles=part_handles(num_parts), loc=loc, ncol=7, fontsize=fontsize, frameon=False,
                            handlelength=1.2, handleheight=1.0, columnspacing=1.0, labelspacing=0.3,
                            title="colour = strongest part (R = person's right, L = left)",
                            title_fontsize=fontsize, **kw)


def plot_photo_prediction(prediction, stages: Sequence[int] | None = None, size: float = 3.0,
                          title: str | None = None):
    """One panel per stage (numbered from 1): the photo with that stage's predicted skeleton and
    each joint's confidence as the marker's opacity, the person box (if one was given) dotted,
    and the colour key below.

    ``prediction`` is an ``inference.PhotoPrediction`` (``predict_image``)."""
    from matplotlib.patches import Rectangle

    stages = list(stages or range(1, prediction.num_stages + 1))
    img = image_hwc(prediction.image)
    h, w = img.shape[:2]
    aspect = h / w
    fig, axes = plt.subplots(1, len(stages), figsize=(size * len(stages), size * aspect + 0.9), squeeze=False)
    for ax, s in zip(axes[0], stages):
        kp = to_numpy(prediction.keypoints[s - 1]).copy()
        kp[:, :2] = to_numpy(prediction.to_image(kp[:, :2]))   # onto the (possibly shrunk) image
        conf = kp[:, 2].copy()
        kp[:, 2] = 1
        show_pose(ax, img, prediction=None)
        draw_skeleton(ax, kp, linewidth=2.0, markersize=0)
        ax.scatter(kp[:, 0], kp[:, 1], s=16, c=[(1, 1, 1, float(np.clip(a, 0.15, 1))) for a in conf],
                   edgecolors="black", linewidths=0.6, zorder=3)
        if prediction.box is not None:
            (bx0, by0), (bx1, by1) = to_numpy(prediction.to_image([prediction.box[:2], prediction.box[2:]]))
            ax.add_patch(Rectangle((bx0, by0), bx1 - bx0, by1 - by0, fill=False, ls=":", lw=1.0, ec="white"))
        ax.set_title(f"stage {s} (mean confidence {conf.mean():.2f})", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    side_key(fig)
    return fig
