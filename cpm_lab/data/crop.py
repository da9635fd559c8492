"""Person-centred square crops: one affine geometry for every dataset and for augmentation.

Geometry
--------
All coordinates are pixels with pixel CENTRES at integer coordinates (pixel ``i`` covers
``[i - 0.5, i + 0.5)``), as everywhere in cpm_lab. A person is described by a ``center`` (x, y)
and a square person box of side ``box`` pixels (``box = scale * 200``). The crop is the square
of side ``box * margin`` around the centre, resized to ``out_size`` pixels, so the person box
fills ``1 / margin`` of the crop side (default margin 1.5: two thirds, leaving room for the
scale and rotation augmentation). In matrix form (3 x 3, acting on column vectors [x, y, 1])::

    crop_xy = s * (orig_xy - center) + (out_size - 1) / 2,   s = out_size / (box * margin)

``crop_matrix`` builds that matrix; ``warp_images`` / ``warp_keypoints`` / ``warp_batch`` apply
ANY such matrix to image tensors (batched ``affine_grid`` + ``grid_sample`` on the tensors'
device) and to keypoints, so cropping and augmentation share one implementation. Joints that
land outside the output image become invisible (their coordinates are kept, for debugging).

Loaders decode one image at a time, so they use ``crop_pil``: the same matrix realised with
Pillow's area-aware resize (anti-aliased when shrinking large MPII/COCO photos) plus JPEG
draft decoding at reduced resolution when the crop shrinks the image by 2x or more.

``PersonCrops`` is the base dataset of the LSP, MPII and COCO loaders: it holds per-sample
(image path, keypoints, centre, box) records, validates them (``cpm_lab.data.annotations``; the
checks that need the image's size run each time an image is opened), and returns samples in the
same dict layout as ``SyntheticPoses``.
"""
from __future__ import annotations

import math
import os
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..targets import OCCLUDED
from .annotations import annotation_problem
from .synthetic import SCALE_UNIT_PX

#: Default crop side as a multiple of the person box side.
DEFAULT_MARGIN = 1.5


class PoseDataError(ValueError):
    """A dataset file is unusable: wrong shape, NaN coordinate, undecodable image, ..."""


#: What every message about a bad sample suggests.
SKIP_HINT = ("`cpm-lab validate --data SPEC` lists every bad sample; --skip-bad (on_error='skip' with "
             "validate_images=True in Python) leaves them out")


# ------------------------------------------------------------------------------------------
# Matrices
# ------------------------------------------------------------------------------------------
def crop_matrix(center, box, out_size: int, margin: float = DEFAULT_MARGIN) -> torch.Tensor:
    """Crop-from-original affine matrices.

    Args:
        center: (..., 2) person centres (x, y) in original pixels.
        box: (...,) person box sides in original pixels (``scale * 200``); must be > 0.
        out_size: side of the square crop in pixels.
        margin: crop side / box side.
    Returns:
        (..., 3, 3) float64 tensor mapping original pixel coordinates to crop pixel coordinates.
    """
    center = torch.as_tensor(center, dtype=torch.float64)
    box = torch.as_tensor(box, dtype=torch.float64)
    if center.shape[-1:] != (2,) or center.shape[:-1] != box.shape:
        raise ValueError(f"center must be (..., 2) and box (...,) with matching batch shape; "
                         f"got {tuple(center.shape)} and {tuple(box.shape)}")
    if not bool(torch.all(box > 0)) or not bool(torch.all(torch.isfinite(box))):
        raise ValueError("box sizes must be positive and finite")
    s = out_size / (box * margin)
    m = torch.zeros(*box.shape, 3, 3, dtype=torch.float64)
    m[..., 0, 0] = s
    m[..., 1, 1] = s
    m[..., :2, 2] = -s[..., None] * center + (out_size - 1) / 2
    m[..., 2, 2] = 1
    return m


def _pixel_to_normalised(width: int, height: int, dtype=torch.float64) -> torch.Tensor:
    """3x3 matrix from pixel coords (centres at integers) to grid_sample's normalised coords
    with ``align_corners=False``: u = (2x + 1) / W - 1."""
    return torch.tensor([[2.0 / width, 0.0, 1.0 / width - 1.0],
                         [0.0, 2.0 / height, 1.0 / height - 1.0],
                         [0.0, 0.0, 1.0]], dtype=dtype)


def linear_scale(matrix: torch.Tensor) -> torch.Tensor:
    """Isotropic scale factor sqrt(|det A|) of the linear part of (..., 3, 3) affines."""
    a = matrix[..., :2, :2]
    return (a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]).abs().sqrt()


# ------------------------------------------------------------------------------------------
# Applying a matrix: images, keypoints, whole batches (torch, batched, on the tensors' device)
# ------------------------------------------------------------------------------------------
def _size2(out_size) -> tuple[int, int]:
    if isinstance(out_size, int):
        return out_size, out_size
    h, w = out_size
    return int(h), int(w)


#: The value outside a photograph, in [0, 1] images: mid-grey, as the official CPM pads (128).
GREY = 0.5


def warp_images(images: torch.Tensor, matrix: torch.Tensor, out_size, *,
                mode: str = "bilinear", padding_mode: str = "grey") -> torch.Tensor:
    """Resample images with per-sample affines, on the images' device.

    Args:
        images: (N, C, H, W) float tensor.
        matrix: (N, 3, 3) (or (3, 3), broadcast) output-from-input pixel affine.
        out_size: int side or (height, width) of the output.
        mode: passed to ``torch.nn.functional.grid_sample``.
        padding_mode: "grey" (default: outside the input is ``GREY``, the official padding)
            or one of ``grid_sample``'s ("zeros" = black, "border", "reflection").
    Returns:
        (N, C, h, w) tensor of the images' dtype (float32 for integer images). Bilinear
        resampling does not low-pass filter, so shrinking by much more than 2x aliases; loaders
        use ``crop_pil`` for that case.
    """
    if images.ndim != 4:
        raise ValueError(f"images must have shape (N, C, H, W); got {tuple(images.shape)}")
    n, _, h_in, w_in = images.shape
    h_out, w_out = _size2(out_size)
    m = torch.as_tensor(matrix, dtype=torch.float64).cpu()
    if m.ndim == 2:
        m = m.expand(n, 3, 3)
    if m.shape != (n, 3, 3):
        raise ValueError(f"matrix must have shape ({n}, 3, 3); got {tuple(m.shape)}")
    src_from_dst = torch.linalg.inv(m)
    theta = _pixel_to_normalised(w_in, h_in) @ src_from_dst @ torch.linalg.inv(_pixel_to_normalised(w_out, h_out))
    if not images.is_floating_point():
        images = images.float()
    theta = theta[:, :2].to(device=images.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [n, images.shape[1], h_out, w_out], align_corners=False)
    if padding_mode == "grey":
        return F.grid_sample(images - GREY, grid.to(images.dtype), mode=mode, padding_mode="zeros",
                             align_corners=False) + GREY
    return F.grid_sample(images, grid.to(images.dtype), mode=mode, padding_mode=padding_mode,
                         align_corners=False)


def warp_points(xy: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply (N, 3, 3) affines to points (N, ..., 2); returns float32 on ``xy``'s device."""
    m = torch.as_tensor(matrix).to(device=xy.device, dtype=torch.float64)
    if m.ndim == 2:
        m = m.expand(xy.shape[0], 3, 3)
    flat = xy.reshape(xy.shape[0], -1, 2).to(torch.float64)
    out = flat @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]
    return out.reshape(xy.shape).to(torch.float32)


def inside(xy: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(...,) bool: point lies on the image, i.e. within the pixel extents [-0.5, W - 0.5)."""
    x, y = xy[..., 0], xy[..., 1]
    return (x >= -0.5) & (x < width - 0.5) & (y >= -0.5) & (y < height - 0.5)


def warp_keypoints(keypoints: torch.Tensor, matrix: torch.Tensor, out_size) -> torch.Tensor:
    """Keypoints (N, P, 3) through (N, 3, 3) affines into an output of ``out_size``.

    Coordinates are transformed for every joint. A labelled joint keeps its flag (its position
    is known even where it leaves the output image, which ``targets.encode`` turns into an
    empty map), except that a VISIBLE joint leaving the output becomes OCCLUDED; a joint whose
    transformed coordinates are not finite becomes MISSING.
    """
    h, w = _size2(out_size)
    xy = warp_points(keypoints[..., :2], matrix)
    flag = torch.where(torch.isfinite(xy).all(-1), keypoints[..., 2], torch.zeros_like(keypoints[..., 2]))
    flag = torch.where(inside(xy, h, w), flag, flag.clamp(max=OCCLUDED))
    return torch.cat([xy, flag[..., None].to(torch.float32)], dim=-1)


def flip_labels(keypoints: torch.Tensor, flipped: torch.Tensor, flip_index: Sequence[int]) -> torch.Tensor:
    """Swap left/right joint labels of the samples where ``flipped`` (N,) is True."""
    if len(flip_index) != keypoints.shape[1]:
        raise ValueError(f"flip_index has {len(flip_index)} entries but keypoints have "
                         f"{keypoints.shape[1]} parts")
    perm = torch.as_tensor(list(flip_index), device=keypoints.device, dtype=torch.long)
    return torch.where(flipped.to(keypoints.device)[:, None, None], keypoints[:, perm], keypoints)


def warp_batch(batch: dict, matrix: torch.Tensor, out_size=None, *, flipped: torch.Tensor | None = None,
               flip_index: Sequence[int] | None = None, padding_mode: str = "grey") -> dict:
    """Apply (N, 3, 3) output-from-input affines to a batch dict, on its device.

    Transforms ``image`` (N, 3, H, W), ``keypoints`` (N, P, 3) (flags as in
    ``warp_keypoints``), ``center`` (N, 2) and ``scale`` (N,) (multiplied by the affine's scale
    factor). When ``flipped`` (N,) bool is given, those samples' matrices must contain a
    mirror and their joint labels are permuted with ``flip_index``. Other keys are copied
    unchanged. Returns a new dict; the input is not modified.
    """
    images = batch["image"]
    n, _, h, w = images.shape
    out_size = (h, w) if out_size is None else _size2(out_size)
    m = torch.as_tensor(matrix, dtype=torch.float64).cpu()
    if m.ndim == 2:
        m = m.expand(n, 3, 3)
    out = dict(batch)
    out["image"] = warp_images(images, m, out_size, padding_mode=padding_mode)
    if "keypoints" in batch:
        kp = warp_keypoints(torch.as_tensor(batch["keypoints"]).to(images.device), m, out_size)
        if flipped is not None and bool(torch.as_tensor(flipped).any()):
            if flip_index is None:
                raise ValueError("flip_index is required when some samples are flipped")
            kp = flip_labels(kp, flipped, flip_index)
        out["keypoints"] = kp
    if "center" in batch:
        c = torch.as_tensor(batch["center"]).to(images.device)
        out["center"] = warp_points(c[:, None, :], m)[:, 0]
    if "scale" in batch:
        sc = torch.as_tensor(batch["scale"]).to(images.device)
        out["scale"] = (sc.to(torch.float64) * linear_scale(m).to(images.device)).to(torch.float32)
    return out


def crop_batch(batch: dict, out_size: int, margin: float = DEFAULT_MARGIN) -> dict:
    """Person-centred crops of a batch dict (``image`` N×3×H×W, ``keypoints``, ``center`` (N, 2),
    ``scale`` (N,), box side = scale * 200 px), on the batch's device: each output is the square
    of side ``scale * 200 * margin`` around ``center`` resized to ``out_size``."""
    center = torch.as_tensor(batch["center"]).detach().cpu()
    box = torch.as_tensor(batch["scale"]).detach().cpu().to(torch.float64).reshape(-1) * SCALE_UNIT_PX
    return warp_batch(batch, crop_matrix(center, box, out_size, margin), out_size)


# ------------------------------------------------------------------------------------------
# Single-image path for loaders (Pillow)
# ------------------------------------------------------------------------------------------
def open_image(path: str | os.PathLike | Image.Image, shrink: float = 1.0) -> tuple[Image.Image, float]:
    """Open (or finish opening: ``path`` may be a lazily opened ``PIL.Image``) an image as RGB,
    letting JPEG decode at 1/2, 1/4 or 1/8 resolution when the caller will shrink it by ``shrink``
    >= 2 anyway. Returns (image, k) where original pixel-edge coordinates are k times the
    returned image's (k = 1 when decoded at full size)."""
    img = path if isinstance(path, Image.Image) else Image.open(path)
    k = 1.0
    if shrink >= 2 and img.format in ("JPEG", "MPO"):
        w, h = img.size
        res = img.draft("RGB", (math.ceil(w / shrink), math.ceil(h / shrink)))
        if res is not None:
            box = res[1]
            k = w / box[2]
    img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img, k


def crop_pil(path: str | os.PathLike | Image.Image, center, box: float, out_size: int,
             margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Decode ``path`` (a file, or a lazily opened ``PIL.Image``) and return the person-centred
    crop as uint8 (out_size, out_size, 3).

    Geometry is exactly ``crop_matrix(center, box, out_size, margin)``; outside the image is
    mid-grey (``GREY``, the official CPM padding). Raises whatever Pillow raises for a missing or
    undecodable file.
    """
    side = box * margin
    shrink = side / out_size
    img, k = open_image(path, shrink)
    # Crop square in Pillow's edge coordinates (pixel i spans [i, i + 1)), in the decoded image.
    cx, cy = float(center[0]) + 0.5, float(center[1]) + 0.5
    x0, y0, x1, y1 = ((cx - side / 2) / k, (cy - side / 2) / k, (cx + side / 2) / k, (cy + side / 2) / k)
    ix0, iy0, ix1, iy1 = math.floor(x0), math.floor(y0), math.ceil(x1), math.ceil(y1)
    patch = Image.new("RGB", (ix1 - ix0, iy1 - iy0), (round(255 * GREY),) * 3)
    inner = (max(ix0, 0), max(iy0, 0), min(ix1, img.width), min(iy1, img.height))
    if inner[2] > inner[0] and inner[3] > inner[1]:
        patch.paste(img.crop(inner), (inner[0] - ix0, inner[1] - iy0))
    out = patch.resize((out_size, out_size), Image.Resampling.BILINEAR,
                       box=(x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0))
    return np.array(out, dtype=np.uint8)


def _inspect(path: str, keypoints, center, box: float, joint_names) -> str | None:
    """Why a sample's image cannot be used: its annotation does not fit the image
    (``annotation_problem`` with the image's size) or the image does not decode; None if fine."""
    try:
        with Image.open(path) as img:
            why = annotation_problem(keypoints, center, box, joint_names, img.size)
            if why is None:
                open_image(img, shrink=8.0)  # decodes every byte, at 1/8 size for a JPEG
            return f"image {path}: {why}" if why else None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad image
        return f"cannot decode image {path}: {type(exc).__name__}: {exc}"


# ------------------------------------------------------------------------------------------
# The shared dataset base
# ------------------------------------------------------------------------------------------
class PersonCrops(torch.utils.data.Dataset):
    """Person-centred crops from (image path, keypoints, centre, box) records.

    Subclasses (``LSP``, ``MPII``, ``COCOKeypoints``) parse their annotation format and call
    ``_setup``. Each item is a dict like ``SyntheticPoses``'s:

    - ``image``: float32 (3, S, S) in [0, 1], S = ``image_size``;
    - ``keypoints``: float32 (P, 3), x, y in crop pixels and the joint flag (``cpm_lab.targets``;
      a visible joint outside the crop is OCCLUDED);
    - ``center``: float32 (2,), the person centre in crop pixels (the crop's middle);
    - ``scale``: float32 scalar tensor, person box side in crop pixels / 200;
    - ``index``: int, position in this dataset;

    plus, when ``metadata=True``: ``path`` (str), ``keypoints_orig`` (P, 3, original image
    pixels) and ``crop_affine`` (3, 3, crop pixels from original pixels; invert it to map
    predictions back to the original image).

    Error policy: annotation problems (wrong shapes, non-finite coordinates of labelled joints,
    no usable joints, degenerate boxes: ``cpm_lab.data.annotations``) and missing image files are
    found at construction. With ``on_error="raise"`` (default) they raise ``PoseDataError`` /
    ``FileNotFoundError`` naming the file and sample; with ``on_error="skip"`` those samples are
    dropped, a warning says how many, and ``self.skipped`` / ``self.skipped_reasons`` record them
    (a dataset with no usable sample left is an error). Images are opened lazily; an undecodable
    image, or an annotation that does not fit its image (a joint far outside it, a box many times
    its size), raises ``PoseDataError`` naming file, sample and joint from ``__getitem__`` (never
    a substitute sample). Pass ``validate_images=True`` to open and decode every image at
    construction so those are raised or skipped up front.

    Cache: ``cache=True`` keeps each decoded crop as uint8 in a shared-memory tensor
    (``len * S * S * 3`` bytes, allocated lazily by the OS), filled on first access by the
    main process or any DataLoader worker, so later epochs skip JPEG decoding.
    """

    joint_names: tuple[str, ...] = ()
    flip_index: tuple[int, ...] = ()

    def _setup(self, *, name: str, paths: Sequence[str], keypoints: np.ndarray, centers: np.ndarray,
               boxes: np.ndarray, sources: Sequence[str], problems: dict[int, str], image_size: int,
               margin: float, on_error: str, validate_images: bool, cache: bool, metadata: bool):
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if int(image_size) != image_size or image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {image_size!r}")
        if not margin > 0:
            raise ValueError(f"margin must be positive, got {margin!r}")
        self.name, self.image_size, self.margin = name, int(image_size), float(margin)
        self.on_error, self.metadata = on_error, metadata
        problems = dict(problems)
        for i, p in enumerate(paths):
            if i not in problems and not os.path.isfile(p):
                problems[i] = f"image file not found: {p}"
        if validate_images:
            from tqdm.auto import tqdm
            for i in tqdm(range(len(paths)), desc=f"{name}: checking images", leave=False, disable=None):
                if i in problems:
                    continue
                why = _inspect(paths[i], keypoints[i], centers[i], boxes[i], self.joint_names)
                if why:
                    problems[i] = why
        bad = sorted(problems)
        self.skipped = 0
        self.skipped_reasons: list[str] = []
        if bad:
            reasons = [f"{sources[i]}: {problems[i]}" for i in bad]
            if on_error == "raise":
                missing = all(problems[i].startswith("image file not found") for i in bad)
                more = ", the first 5" if len(bad) > 5 else ""
                msg = (f"{name}: {len(bad)} unusable sample(s){more}:\n  " + "\n  ".join(reasons[:5])
                       + f"\n{SKIP_HINT}")
                raise (FileNotFoundError if missing else PoseDataError)(msg)
            if len(bad) == len(paths):
                error = PoseDataError(f"{name}: every one of its {len(bad)} samples is unusable; first: {reasons[0]}")
                error.reasons = reasons
                raise error
            self.skipped, self.skipped_reasons = len(bad), reasons
            warnings.warn(f"{name}: skipped {len(bad)} unusable sample(s); first: {reasons[0]} "
                          f"(see .skipped_reasons)", stacklevel=3)
        keep = np.array([i for i in range(len(paths)) if i not in problems], dtype=np.int64)
        self.paths = [str(paths[i]) for i in keep]
        self.sources = [sources[i] for i in keep]
        self.keypoints_orig = np.asarray(keypoints, dtype=np.float32).reshape(len(paths), -1, 3)[keep]
        # unannotated joints: coordinates are meaningless in the files (even NaN); store zeros
        self.keypoints_orig[..., :2] = np.where(self.keypoints_orig[..., 2:3] > 0, self.keypoints_orig[..., :2], 0.0)
        self.centers_orig = np.asarray(centers, dtype=np.float64).reshape(len(paths), 2)[keep]
        self.boxes_orig = np.asarray(boxes, dtype=np.float64).reshape(len(paths))[keep]
        if len(keep):
            self.matrices = crop_matrix(torch.from_numpy(self.centers_orig), torch.from_numpy(self.boxes_orig),
                                        self.image_size, self.margin)
        else:
            self.matrices = torch.zeros(0, 3, 3, dtype=torch.float64)
        self._cache = None
        if cache:
            from .cache import CropCache
            self._cache = CropCache(len(self), self.image_size)

    # -- sizes and annotations -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_parts(self) -> int:
        return self.keypoints_orig.shape[1]

    def annotations(self) -> dict[str, torch.Tensor]:
        """All samples' targets in crop pixels without decoding images:
        ``keypoints`` (N, P, 3), ``center`` (N, 2), ``scale`` (N,)."""
        kp = warp_keypoints(torch.from_numpy(self.keypoints_orig), self.matrices, self.image_size)
        c = torch.full((len(self), 2), (self.image_size - 1) / 2, dtype=torch.float32)
        scale = torch.full((len(self),), self.image_size / (self.margin * SCALE_UNIT_PX), dtype=torch.float32)
        return {"keypoints": kp, "center": c, "scale": scale}

    #: Attributes holding one entry per sample (sliced together by ``select``).
    _per_sample: tuple[str, ...] = ("paths", "sources", "keypoints_orig", "centers_orig", "boxes_orig", "matrices")

    def select(self, indices) -> "PersonCrops":
        """A new dataset of the same type holding only samples ``indices`` (in that order),
        e.g. ``ds.select(range(512))``; it gets its own (empty) cache if this one has one."""
        import copy
        idx = np.asarray(list(indices), dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"select: indices must lie in [0, {len(self)}) for {self.name}")
        idx %= max(len(self), 1)
        new = copy.copy(self)
        for name in self._per_sample:
            value = getattr(self, name)
            if isinstance(value, list):
                setattr(new, name, [value[i] for i in idx])
            elif isinstance(value, torch.Tensor):
                setattr(new, name, value[torch.from_numpy(idx)])
            else:
                setattr(new, name, value[idx])
        if self._cache is not None:
            from .cache import CropCache
            new._cache = CropCache(len(idx), self.image_size)
        return new

    def source(self, index: int) -> str:
        """Where sample ``index`` comes from (annotation file and entry), for messages."""
        return self.sources[index]

    # -- items -----------------------------------------------------------------------------
    def crop_uint8(self, index: int) -> np.ndarray:
        """The person-centred crop of sample ``index`` as uint8 (S, S, 3), via the cache."""
        if self._cache is not None:
            hit = self._cache.get(index)
            if hit is not None:
                return hit
        path, where = self.paths[index], f"sample {index}, {self.sources[index]}"
        try:
            img = Image.open(path)
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"{self.name}: image file not found: {path} ({where})") from exc
        except Exception as exc:  # noqa: BLE001 - name the file whatever the decoder raised
            raise PoseDataError(f"{self.name}: cannot decode image {path} ({where}): {type(exc).__name__}: "
                                f"{exc}. {SKIP_HINT}") from None
        why = annotation_problem(self.keypoints_orig[index], self.centers_orig[index], self.boxes_orig[index],
                                 self.joint_names, img.size)
        if why:
            img.close()
            raise PoseDataError(f"{self.name}: {path} ({where}): {why}. {SKIP_HINT}")
        try:
            crop = crop_pil(img, self.centers_orig[index], self.boxes_orig[index], self.image_size, self.margin)
        except Exception as exc:  # noqa: BLE001 - name the file whatever the decoder raised
            raise PoseDataError(f"{self.name}: cannot decode image {path} ({where}): {type(exc).__name__}: "
                                f"{exc}. {SKIP_HINT}") from None
        if self._cache is not None:
            self._cache.put(index, crop)
        return crop

    def __getitem__(self, index: int) -> dict:
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {self.name} with {n} samples")
        index = int(index) % n
        crop = self.crop_uint8(index)
        # numpy conversion: single-threaded, so it does not fight DataLoader workers for cores
        image = torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)).astype(np.float32) * np.float32(1 / 255))
        m = self.matrices[index]
        kp_orig = torch.from_numpy(self.keypoints_orig[index])
        kp = warp_keypoints(kp_orig[None], m[None], self.image_size)[0]
        s = self.image_size
        item = {
            "image": image,
            "keypoints": kp,
            "center": torch.tensor([(s - 1) / 2, (s - 1) / 2], dtype=torch.float32),
            "scale": torch.tensor(s / (self.margin * SCALE_UNIT_PX), dtype=torch.float32),
            "index": index,
        }
        if self.metadata:
            item.update(path=self.paths[index], keypoints_orig=kp_orig.clone(), crop_affine=m.to(torch.float32))
        return item

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, n={len(self)}, parts={self.num_parts}, "
                f"image_size={self.image_size}, margin={self.margin}, skipped={self.skipped})")
