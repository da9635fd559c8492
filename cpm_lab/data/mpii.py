"""MPII Human Pose loader for the JSON layout used by most PyTorch pose code bases.

The annotation file is a JSON list of records, one per person::

    {"image": "005808361.jpg", "joints": [[x, y], ... 16], "joints_vis": [0/1, ... 16],
     "center": [x, y], "scale": s}

with the person box side ``s * 200`` pixels around ``center``. Joint order (MPII):
right ankle, right knee, right hip, left hip, left knee, left ankle, pelvis, thorax, upper
neck, head top, right wrist, right elbow, right shoulder, left shoulder, left elbow, left
wrist. Coordinates come from MATLAB and are 1-based; ``one_based=True`` subtracts 1 from
joints and centre. ``parts="lsp"`` maps to LSP-14 with ``skeleton.to_lsp(..., "mpii")`` (LSP
neck = MPII upper neck); ``parts="mpii"`` keeps the native 16 joints.

Cite: M. Andriluka, L. Pishchulin, P. Gehler, B. Schiele, "2D Human Pose Estimation: New
Benchmark and State of the Art Analysis", CVPR 2014.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .. import skeleton
from ..targets import MISSING, VISIBLE
from .annotations import annotation_problem, check_on_error
from .crop import DEFAULT_MARGIN, PersonCrops, PoseDataError
from .synthetic import SCALE_UNIT_PX


def load_json_file(path: str | os.PathLike, what: str):
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} annotation file not found: {path}")
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoseDataError(f"{path}: not valid JSON ({exc})") from exc


def _record_problem(rec) -> str | None:
    """Why an MPII record is unusable, or None."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    missing = [k for k in ("image", "joints", "joints_vis", "center", "scale") if k not in rec]
    if missing:
        return f"missing key(s) {missing}"
    try:
        j = np.asarray(rec["joints"], dtype=np.float64)
        v = np.asarray(rec["joints_vis"], dtype=np.float64)
        c = np.asarray(rec["center"], dtype=np.float64)
        s = float(rec["scale"])
    except (TypeError, ValueError) as exc:
        return f"non-numeric joints/joints_vis/center/scale ({exc})"
    if j.shape != (16, 2) or v.shape != (16,):
        return f"joints must be 16x[x, y] and joints_vis 16 values; got shapes {j.shape} and {v.shape}"
    if c.shape != (2,) or not np.isfinite(c).all():
        return f"center must be 2 finite numbers; got {rec['center']!r}"
    if not (np.isfinite(s) and s > 0):
        return f"scale must be a positive number; got {rec['scale']!r}"
    return None


class MPII(PersonCrops):
    """MPII person-centred crops.

    Args:
        annotation_json: path of the JSON list of records (see module docstring).
        image_dir: folder holding the ``image`` files named in the records.
        image_size: side S of the square crops in pixels.
        parts: "lsp" (14 joints via ``skeleton.to_lsp``) or "mpii" (native 16).
        margin: crop side / person box side (box = scale * 200 px).
        one_based: subtract 1 from MATLAB coordinates (joints and centre).
        on_error, validate_images, cache, metadata: see ``PersonCrops``.
    """

    def __init__(self, annotation_json: str | os.PathLike, image_dir: str | os.PathLike,
                 image_size: int = 368, parts: str = "lsp", *, margin: float = DEFAULT_MARGIN,
                 one_based: bool = True, on_error: str = "raise", validate_images: bool = False,
                 cache: bool = False, metadata: bool = True):
        check_on_error(on_error)
        if parts not in ("lsp", "mpii"):
            raise ValueError(f"parts must be 'lsp' or 'mpii', got {parts!r}")
        self.parts = parts
        records = load_json_file(annotation_json, "MPII")
        if not isinstance(records, list):
            raise PoseDataError(f"{annotation_json}: expected a JSON list of person records, "
                                f"got {type(records).__name__}")
        if not records:
            raise PoseDataError(f"no annotations in {annotation_json} (an empty list of person records)")
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise FileNotFoundError(f"MPII image folder not found: {image_dir}")
        n = len(records)
        kp = np.zeros((n, 16, 3))
        centers, boxes = np.zeros((n, 2)), np.ones(n)
        paths, sources, problems = [], [], {}
        shift = 1.0 if one_based else 0.0
        for i, rec in enumerate(records):
            name = rec.get("image", "?") if isinstance(rec, dict) else "?"
            paths.append(str(image_dir / str(name)))
            sources.append(f"{annotation_json} record {i} ({name})")
            why = _record_problem(rec)
            if why:
                problems[i] = why
                continue
            vis = np.asarray(rec["joints_vis"], dtype=np.float64) > 0
            kp[i, :, :2] = np.where(vis[:, None], np.asarray(rec["joints"], dtype=np.float64) - shift, 0.0)
            kp[i, :, 2] = np.where(vis, VISIBLE, MISSING)
            centers[i] = np.asarray(rec["center"], dtype=np.float64) - shift
            boxes[i] = float(rec["scale"]) * SCALE_UNIT_PX
            why = annotation_problem(kp[i], centers[i], boxes[i], skeleton.MPII_JOINT_NAMES)
            if why:
                problems[i] = why
        kp, self.joint_names, self.flip_index = skeleton.joint_set(kp, "mpii", parts)
        self._setup(name=f"MPII({Path(annotation_json).name})", paths=paths, keypoints=kp,
                    centers=centers, boxes=boxes, sources=sources, problems=problems,
                    image_size=image_size, margin=margin, on_error=on_error,
                    validate_images=validate_images, cache=cache, metadata=metadata)
