"""Sanity checks of person annotations, shared by every real-data loader.

``annotation_problem`` says why one person's annotation cannot be right, naming the joint:

* a labelled joint (flag > 0) with a non-finite coordinate (NaN, inf);
* a labelled joint farther outside its image than the image's own width (for x) or height (for
  y): 5000 px off a 300 px photograph is a typo, not a limb leaving the frame (``FAR_OUTSIDE``);
* a degenerate person box: a non-finite centre or side, or a side under ``MIN_BOX_PX`` pixels;
* an absurd person box: a side over ``MAX_BOX_RATIO`` times the image's longer side, or a centre
  farther outside the image than its size.

The loaders (``LSP``, ``MPII``, ``COCOKeypoints``) call it on each record in its own joint order.
Checks that need the image's size run where the size is known: when the annotation file records
it (COCO), and whenever the image is opened (``PersonCrops.crop_uint8``, ``validate_images=True``,
``cpm-lab validate``); an annotation error is never reported as an undecodable image.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..targets import labelled_mask

#: A labelled joint more than this many image widths (x) or heights (y) outside the image is an error.
FAR_OUTSIDE = 1.0
#: A person box whose side exceeds this many times the image's longer side is an error.
MAX_BOX_RATIO = 4.0
#: A person box whose side is under this many pixels is degenerate.
MIN_BOX_PX = 2.0


def _joint(j: int, names: Sequence[str]) -> str:
    return f"joint {j} ({names[j]})" if j < len(names) else f"joint {j}"


def _outside(x: np.ndarray, y: np.ndarray, width: float, height: float) -> np.ndarray:
    """Points more than FAR_OUTSIDE image sizes beyond the image's pixel extents."""
    return ((x < -0.5 - FAR_OUTSIDE * width) | (x > width - 0.5 + FAR_OUTSIDE * width)
            | (y < -0.5 - FAR_OUTSIDE * height) | (y > height - 0.5 + FAR_OUTSIDE * height))


def annotation_problem(keypoints, center, box: float, joint_names: Sequence[str] = (),
                       image_size: tuple[int, int] | None = None) -> str | None:
    """Why a person annotation cannot be right, or None.

    Args:
        keypoints: (P, 3) x, y in original image pixels and the joint flag (0 = missing: its
            coordinates are not checked).
        center: (2,) person centre in the same pixels; box: person box side in pixels.
        joint_names: names of the P joints, for the message.
        image_size: (width, height) of the image in pixels; None skips the checks that need it.
    """
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    labelled = kp[:, 2] > 0
    bad = np.flatnonzero(labelled & ~np.isfinite(kp[:, :2]).all(-1))
    if len(bad):
        j = int(bad[0])
        more = f" (and {len(bad) - 1} more joint(s))" if len(bad) > 1 else ""
        return f"NaN/inf coordinates ({kp[j, 0]:g}, {kp[j, 1]:g}) for labelled {_joint(j, joint_names)}{more}"
    c = np.asarray(center, dtype=np.float64).reshape(-1)
    box = float(box)
    if not (np.isfinite(c).all() and np.isfinite(box)) or box < MIN_BOX_PX:
        return f"degenerate person box: side {box:g} px around ({c[0]:g}, {c[1]:g})"
    if image_size is None:
        return None
    w, h = (float(v) for v in image_size)
    far = np.flatnonzero(labelled & _outside(kp[:, 0], kp[:, 1], w, h))
    if len(far):
        j = int(far[0])
        return (f"labelled {_joint(j, joint_names)} at ({kp[j, 0]:g}, {kp[j, 1]:g}) lies far outside the "
                f"{w:g}x{h:g} image (more than the image's size beyond its edge)")
    if box > MAX_BOX_RATIO * max(w, h):
        return f"absurd person box: side {box:.0f} px is {box / max(w, h):.0f}x the {w:g}x{h:g} image"
    if _outside(c[:1], c[1:2], w, h)[0]:
        return f"absurd person box: centre ({c[0]:g}, {c[1]:g}) lies far outside the {w:g}x{h:g} image"
    return None


def check_on_error(on_error: str) -> None:
    """ValueError unless ``on_error`` is a loader's "raise" or "skip"."""
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")


def box_from_keypoints(keypoints: np.ndarray, pad: float) -> tuple[np.ndarray, float] | None:
    """Centre (2,) and square box side of the annotated joints' bounding box, enlarged by
    ``pad``; None when fewer than two distinct annotated joints exist."""
    vis = labelled_mask(keypoints)
    if vis.sum() < 2:
        return None
    xy = keypoints[vis, :2]
    lo, hi = xy.min(0), xy.max(0)
    side = float((hi - lo).max()) * pad
    if not side > 0:
        return None
    return (lo + hi) / 2, side
