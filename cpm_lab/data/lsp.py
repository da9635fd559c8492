"""Leeds Sports Pose (LSP, 2000 images) and LSP-extended (LSPet, 10000 images) loaders.

Both releases ship ``joints.mat`` (one array ``joints``) and ``images/im####.jpg``:

=========  ==============  =====================  ==========================
release    array shape     flag meaning           image names
=========  ==============  =====================  ==========================
LSP        (3, 14, N)      0 = visible            ``im0001.jpg`` (4 digits)
LSPet      (14, 3, N)      1 = annotated          ``im00001.jpg`` (5 digits)
=========  ==============  =====================  ==========================

In LSPet a flag-0 joint is missing and its coordinates are meaningless (e.g. (0, -26)). In the
original LSP every joint has coordinates and flag 1 marks an occluded joint. Both become
cpm_lab's joint flags (``cpm_lab.targets``: LSP 0 -> VISIBLE, 1 -> OCCLUDED; LSPet 1 -> VISIBLE,
0 -> MISSING), so every LSP joint is labelled and LSPet's missing ones are not.
Coordinates are MATLAB 1-based; ``one_based=True`` subtracts 1 so pixel centres sit at
integer, 0-based coordinates as in the rest of cpm_lab.

LSP has no person centre or scale: the person box is the square around the annotated joints'
bounding box, its side ``max(width, height) * box_pad`` (default 1.2: the outermost joints are
head top, ankles and wrists, and feet, hands and hair extend beyond them), centred on the
bounding box's centre. The crop then adds ``margin`` (see ``cpm_lab.data.crop``).

Cite: S. Johnson and M. Everingham, "Clustered Pose and Nonlinear Appearance Models for Human
Pose Estimation", BMVC 2010; "Learning Effective Human Pose Estimation from Inaccurate
Annotation", CVPR 2011.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.io

from .. import skeleton
from ..targets import MISSING, OCCLUDED, VISIBLE
from .annotations import annotation_problem, box_from_keypoints, check_on_error
from .crop import DEFAULT_MARGIN, PersonCrops, PoseDataError

LAYOUTS = ("auto", "lsp", "lspet")


def read_joints(path: str | os.PathLike, layout: str = "auto") -> tuple[np.ndarray, str]:
    """Read an LSP/LSPet ``joints.mat`` as (N, 14, 3) float64 [x, y, joint flag] (flags as in
    ``cpm_lab.targets``: MISSING 0, OCCLUDED 1, VISIBLE 2).

    The axis order is detected from the array shape ((3, 14, N) or (14, 3, N)); the flag
    meaning comes from ``layout``: "lsp" (flag 0 = visible), "lspet" (flag 1 = annotated), or
    "auto" = "lsp" for (3, 14, N) arrays and "lspet" for (14, 3, N). Coordinates are returned
    as stored (1-based). Returns (keypoints, layout used).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"LSP joints file not found: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # noqa: BLE001 - scipy raises several types for bad files
        raise PoseDataError(f"{path}: not a readable MATLAB .mat file ({type(exc).__name__}: {exc})") from exc
    arrays = {k: v for k, v in mat.items() if not k.startswith("__")}
    if "joints" not in arrays:
        raise PoseDataError(f"{path}: expected an array named 'joints', found {sorted(arrays)}")
    j = np.asarray(arrays["joints"])
    if j.ndim != 3 or not np.issubdtype(j.dtype, np.number):
        raise PoseDataError(f"{path}: 'joints' must be a numeric 3-D array (3, 14, N) or (14, 3, N); "
                            f"got {j.dtype} {j.shape}")
    if j.shape[:2] == (3, 14):
        kp, detected = j.transpose(2, 1, 0), "lsp"
    elif j.shape[:2] == (14, 3):
        kp, detected = j.transpose(2, 0, 1), "lspet"
    else:
        raise PoseDataError(f"{path}: 'joints' has shape {j.shape}; expected (3, 14, N) (LSP) "
                            f"or (14, 3, N) (LSP-extended)")
    used = detected if layout == "auto" else layout
    kp = np.array(kp, dtype=np.float64)
    flag = kp[..., 2]
    bad_flags = ~np.isin(flag, (0, 1))
    if bad_flags.any():
        n, p = np.argwhere(bad_flags)[0]
        raise PoseDataError(f"{path}: flags must be 0 or 1; image {n + 1} joint {p} has {flag[n, p]!r}")
    if used == "lsp":
        kp[..., 2] = np.where(flag == 0, VISIBLE, OCCLUDED)
    else:
        kp[..., 2] = np.where(flag == 1, VISIBLE, MISSING)
    return kp, used


class LSP(PersonCrops):
    """LSP / LSPet person-centred crops in LSP-14 joint order.

    Args:
        root: folder with ``joints.mat`` and ``images/``.
        image_size: side S of the square crops in pixels.
        start, end: 1-based inclusive image numbers to use (e.g. LSPet train 1..8000, val
            8001..9000); default all images in the file.
        layout: "auto" (from the array shape), "lsp" (flag 0 = visible) or "lspet"
            (flag 1 = annotated); see ``read_joints``.
        margin: crop side / person box side.
        box_pad: person box side / joints' bounding-box side (LSP has no person box).
        one_based: subtract 1 from the MATLAB coordinates.
        on_error, validate_images, cache, metadata: see ``PersonCrops``.
        joints_file, image_dir: names inside ``root``; image_pattern: e.g. "im{:05d}.jpg",
            default detected (4 digits for LSP, 5 for LSPet).

    Samples with no usable person box (fewer than two distinct annotated joints) and annotations
    that cannot be right (``cpm_lab.data.annotations``) are data errors (raised or skipped per
    ``on_error``).
    """

    joint_names = skeleton.JOINT_NAMES
    flip_index = skeleton.FLIP_INDEX
    _per_sample = PersonCrops._per_sample + ("numbers",)

    def __init__(self, root: str | os.PathLike, image_size: int = 368, start: int | None = None,
                 end: int | None = None, layout: str = "auto", *, margin: float = DEFAULT_MARGIN,
                 box_pad: float = 1.2, one_based: bool = True, on_error: str = "raise",
                 validate_images: bool = False, cache: bool = False, metadata: bool = True,
                 joints_file: str = "joints.mat", image_dir: str = "images",
                 image_pattern: str | None = None):
        check_on_error(on_error)
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"LSP root folder not found: {root}")
        joints_path = root / joints_file
        kp_all, self.layout = read_joints(joints_path, layout)
        total = len(kp_all)
        start = 1 if start is None else int(start)
        end = total if end is None else int(end)
        if not 1 <= start <= end <= total:
            raise ValueError(f"{joints_path} holds {total} images; images {start}-{end} were asked for "
                             f"(need 1 <= start <= end <= {total})")
        numbers = np.arange(start, end + 1)
        kp = kp_all[start - 1:end].copy()
        if one_based:
            kp[..., :2] -= 1
        images = root / image_dir
        if image_pattern is None:
            image_pattern = self._detect_pattern(images, start)

        paths, sources, centers, boxes, problems = [], [], [], [], {}
        for i, num in enumerate(numbers):
            paths.append(str(images / image_pattern.format(num)))
            sources.append(f"{joints_path} image {num}")
            k = kp[i]
            finite = bool((np.isfinite(k[:, :2]).all(-1) | (k[:, 2] == 0)).all())
            res = box_from_keypoints(k, box_pad) if finite else None
            if finite and res is None:
                problems[i] = "fewer than two distinct annotated joints: no person box"
            else:  # a non-finite joint is named here (its box is a placeholder)
                why = annotation_problem(k, res[0] if res else (0.0, 0.0), res[1] if res else 0.0, self.joint_names)
                if why:
                    problems[i] = why
            centers.append(res[0] if res else (0.0, 0.0))
            boxes.append(res[1] if res else 1.0)
        self.numbers = numbers
        self._setup(name=f"LSP({root})", paths=paths, keypoints=kp, centers=np.array(centers),
                    boxes=np.array(boxes), sources=sources, problems=problems, image_size=image_size,
                    margin=margin, on_error=on_error, validate_images=validate_images, cache=cache,
                    metadata=metadata)
        kept = {s for s in self.sources}
        self.numbers = np.array([n for n, s in zip(numbers, sources) if s in kept], dtype=np.int64)

    @staticmethod
    def _detect_pattern(images: Path, first: int) -> str:
        for pattern in ("im{:05d}.jpg", "im{:04d}.jpg"):
            if (images / pattern.format(first)).is_file():
                return pattern
        if not images.is_dir():
            raise FileNotFoundError(f"LSP image folder not found: {images}")
        return "im{:05d}.jpg" if first > 9999 or any(
            len(n) == len("im00001.jpg") for n in os.listdir(images)[:50]) else "im{:04d}.jpg"
