"""What the classical Pose Machine's classifiers see and are trained on.

The feature half of :mod:`cpm_lab.models.pose_machine` (which holds ``PoseMachineConfig`` and the
``PoseMachine`` itself): per-cell image features (HOG, colour, position), the context features a
stage reads from the previous stage's beliefs, the class label of every cell and the sampling of
training cells. Pure numpy/scikit-image functions of arrays, no fitted state.

Geometry: one location per belief-map cell; with stride 8, cell ``(i, j)`` covers input pixels
``8i .. 8i+7`` (rows) and ``8j .. 8j+7`` (columns) and is centred at ``(8j + 3.5, 8i + 3.5)``,
exactly as :class:`cpm_lab.targets.CodecConfig` (``output_size = image_size // 8``).

Image features (``image_feature_names()``), per cell, in this order:

* ``hog``: Dalal-Triggs HOG of the grey image with 8x8-pixel cells, ``orientations`` bins and
  2x2-cell blocks (L2-Hys). The cell's descriptor is the 4 blocks that contain it (each block
  2x2 cells x bins), i.e. a 3x3-cell (24x24 px) window centred on the cell, zero where a block
  would leave the image: ``4 * 4 * orientations`` values.
* ``hogring``: wider support. The per-cell orientation histogram (mean of its block-normalised
  copies) averaged over 3x3-cell windows, sampled at the 8 compass neighbours 3 cells away
  (E, NE, N, NW, W, SW, S, SE; y points down): ``8 * orientations`` values covering 9x9 cells.
* ``rgb``: mean R, G, B of the cell, of its 3x3-cell window, and of the 8 ring windows above:
  ``3 + 3 + 8 * 3`` values in [0, 1].
* ``pos``: the cell centre's x and y divided by the image size (a person crop is centred, as
  for the CPM's centre map): 2 values.

Context features (``context_feature_names()``), stage t >= 2, per cell, PART-major: for each
part p in order, the same block of ``1 + 8 * len(context_radii) + 3 * n_peaks + 5`` values:

* ``c``: part p's belief at the cell.
* ``r{r}_{dir}`` for each radius r (cells) and direction: part p's belief max-pooled over a
  ``(2 * (r // 2) + 1)``-cell square window, sampled r cells away in that direction (0 outside
  the map). Radius 1 samples the raw map.
* ``peak{k}_dx``, ``peak{k}_dy``, ``peak{k}_v`` for k = 1..n_peaks: offset in cells from the
  cell to part p's k-th belief peak (peak column minus cell column, peak row minus cell row)
  and that peak's belief. Peak k+1 is the arg-max after zeroing a
  ``(2 * peak_suppression + 1)``-cell square around the peaks found so far.
* ``max``, ``max_tl``, ``max_tr``, ``max_bl``, ``max_br``: max of part p's belief over the whole
  map and over its four quadrants (a 2-level spatial pyramid; the same for every cell).

Labels: the cell containing visible joint p (the nearest cell centre) is labelled part p, and so
is every cell whose centre lies within ``label_radius`` cells of the joint (default 0: that cell;
on a clash a joint's own cell wins, then the nearest joint); all other cells are background.
Training keeps every part cell and ``background_ratio`` background cells per part cell, drawn
uniformly at random (seeded) from each image. Background is therefore under-sampled, so the
background probability is lower than the true frequency; the per-part maps are what matter.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from scipy.ndimage import maximum_filter

from .. import skeleton
from ..targets import labelled_mask

#: Compass directions as (dx, dy) in cells, y pointing down: E, NE, N, NW, W, SW, S, SE.
DIRECTIONS: tuple[tuple[str, int, int], ...] = (
    ("E", 1, 0), ("NE", 1, -1), ("N", 0, -1), ("NW", -1, -1),
    ("W", -1, 0), ("SW", -1, 1), ("S", 0, 1), ("SE", 1, 1),
)
#: Cells between a cell and the centres of its 8 "ring" windows (``hogring`` and ``rgb_ring`` features).
RING_DISTANCE = 3


# ---------------------------------------------------------------------------------------------
# Feature names
# ---------------------------------------------------------------------------------------------
def image_feature_names(orientations: int = 9) -> list[str]:
    """Names of the per-cell image features, in column order (see the module docstring)."""
    names = [f"hog_blk{dy}{dx}_cell{cy}{cx}_o{o}"
             for dy in (-1, 0) for dx in (-1, 0) for cy in (0, 1) for cx in (0, 1) for o in range(orientations)]
    names += [f"hogring_{d}_o{o}" for d, _, _ in DIRECTIONS for o in range(orientations)]
    names += [f"rgb_cell_{c}" for c in "RGB"] + [f"rgb_3x3_{c}" for c in "RGB"]
    names += [f"rgb_ring_{d}_{c}" for d, _, _ in DIRECTIONS for c in "RGB"]
    names += ["pos_x", "pos_y"]
    return names


def context_block_names(context_radii: Sequence[int] = (1, 2, 4), n_peaks: int = 2) -> list[str]:
    """Names of the per-part context block (the same for every part), in column order."""
    names = ["c"] + [f"r{r}_{d}" for r in context_radii for d, _, _ in DIRECTIONS]
    names += [f"peak{k}_{s}" for k in range(1, n_peaks + 1) for s in ("dx", "dy", "v")]
    names += ["max", "max_tl", "max_tr", "max_bl", "max_br"]
    return names


def context_feature_names(num_parts: int = skeleton.NUM_JOINTS, context_radii: Sequence[int] = (1, 2, 4),
                          n_peaks: int = 2) -> list[str]:
    """Names of all context features, part-major: ``"{part}:{block name}"``, e.g. ``"r_wrist:peak1_dx"``.

    Part labels are ``skeleton.SHORT_NAMES`` for the 14 LSP parts, ``"p{i}"`` otherwise.
    """
    labels = skeleton.SHORT_NAMES if num_parts == skeleton.NUM_JOINTS else tuple(f"p{i}" for i in range(num_parts))
    block = context_block_names(context_radii, n_peaks)
    return [f"{labels[p]}:{b}" for p in range(num_parts) for b in block]


# ---------------------------------------------------------------------------------------------
# Image features
# ---------------------------------------------------------------------------------------------
def _shift(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[i, j] = a[i + dy, j + dx] over the first two axes, 0 outside."""
    h, w = a.shape[:2]
    out = np.zeros_like(a)
    ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))
    xs, xd = (slice(dx, w), slice(0, w - dx)) if dx >= 0 else (slice(0, w + dx), slice(-dx, w))
    out[yd, xd] = a[ys, xs]
    return out


def _box3(a: np.ndarray) -> np.ndarray:
    """Mean over 3x3-cell windows (zero padded, divided by 9) on the first two axes."""
    return sum(_shift(a, dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9.0


def _image_features_one(img: np.ndarray, orientations: int) -> np.ndarray:
    """One H x W x 3 float image in [0, 1] -> (G, G, F_img) float32 features."""
    from skimage.color import rgb2gray
    from skimage.feature import hog

    h, w, _ = img.shape
    gh, gw = h // 8, w // 8
    blocks = hog(rgb2gray(img), orientations=orientations, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                 block_norm="L2-Hys", feature_vector=False)  # (gh-1, gw-1, 2, 2, O); block b covers cells b, b+1
    blocks = blocks.astype(np.float32)
    # The 4 blocks containing cell (i, j) start at (i + dy, j + dx), dy, dx in {-1, 0}.
    padded = np.zeros((gh + 1, gw + 1) + blocks.shape[2:], np.float32)
    padded[1:gh, 1:gw] = blocks  # padded[i + 1, j + 1] = block starting at (i, j)
    hog_feat = np.stack([padded[1 + dy:1 + dy + gh, 1 + dx:1 + dx + gw] for dy in (-1, 0) for dx in (-1, 0)], 2)
    hog_feat = hog_feat.reshape(gh, gw, -1)
    # Per-cell histogram: mean of the normalised copies of the cell in the blocks that contain it.
    cell_sum = np.zeros((gh, gw, orientations), np.float32)
    cell_cnt = np.zeros((gh, gw, 1), np.float32)
    for cy in (0, 1):
        for cx in (0, 1):
            cell_sum[cy:cy + gh - 1, cx:cx + gw - 1] += blocks[:, :, cy, cx]
            cell_cnt[cy:cy + gh - 1, cx:cx + gw - 1] += 1
    cell_hist = _box3(cell_sum / np.maximum(cell_cnt, 1))
    rgb = img[: gh * 8, : gw * 8].reshape(gh, 8, gw, 8, 3).mean((1, 3)).astype(np.float32)
    rgb3 = _box3(rgb)
    d = RING_DISTANCE
    ring_hog = np.concatenate([_shift(cell_hist, d * dy, d * dx) for _, dx, dy in DIRECTIONS], -1)
    ring_rgb = np.concatenate([_shift(rgb3, d * dy, d * dx) for _, dx, dy in DIRECTIONS], -1)
    yy, xx = np.meshgrid(np.arange(gh), np.arange(gw), indexing="ij")
    pos = np.stack([(xx * 8 + 3.5) / w, (yy * 8 + 3.5) / h], -1).astype(np.float32)
    return np.concatenate([hog_feat, ring_hog, rgb, rgb3, ring_rgb, pos], -1)


def _as_numpy_images(images, image_size: int | None = None, name: str = "images") -> np.ndarray:
    """Torch N x 3 x H x W (or one 3 x H x W) in [0, 1] -> numpy N x H x W x 3 float32."""
    if isinstance(images, torch.Tensor):
        arr = images.detach().float().cpu().numpy()
    else:
        arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W) (RGB in [0, 1]); got {tuple(arr.shape)}")
    if image_size is not None and arr.shape[2:] != (image_size, image_size):
        raise ValueError(f"{name} must be {image_size}x{image_size} (the pose machine's image_size); "
                         f"got {arr.shape[2]}x{arr.shape[3]}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return np.ascontiguousarray(arr.transpose(0, 2, 3, 1))


def image_features(images, orientations: int = 9) -> np.ndarray:
    """Per-cell image features (see ``image_feature_names``).

    Args:
        images: N x 3 x H x W float in [0, 1] (torch or numpy), H and W multiples of 8.
    Returns:
        (N, H/8, W/8, F_img) float32 numpy array.
    """
    arr = _as_numpy_images(images)
    if arr.shape[1] % 8 or arr.shape[2] % 8 or min(arr.shape[1:3]) < 24:
        raise ValueError(f"images must be at least 24 px and a multiple of 8 on each side; got {arr.shape[1:3]}")
    return np.stack([_image_features_one(im, orientations) for im in arr])


# ---------------------------------------------------------------------------------------------
# Context features
# ---------------------------------------------------------------------------------------------
def _shift2(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[..., i, j] = x[..., i + dy, j + dx] over the LAST two axes, 0 outside the map."""
    return np.moveaxis(_shift(np.moveaxis(x, (-2, -1), (0, 1)), dy, dx), (0, 1), (-2, -1))


def context_features(beliefs, context_radii: Sequence[int] = (1, 2, 4), n_peaks: int = 2,
                     peak_suppression: int = 2) -> np.ndarray:
    """Context features from the previous stage's part beliefs (see ``context_feature_names``).

    Args:
        beliefs: (N, P, G, G) part belief maps, torch or numpy, values >= 0 (drop the
            background channel before calling).
    Returns:
        (N, G, G, P * B) float32 numpy array, B = ``len(context_block_names(...))``, part-major.

    Runs in single-threaded numpy on purpose: the result feeds a CPU classifier, and tiny
    multi-threaded torch ops slow down badly on a busy machine.
    """
    if isinstance(beliefs, torch.Tensor):
        beliefs = beliefs.detach().float().cpu().numpy()
    b = np.asarray(beliefs, dtype=np.float32)
    if b.ndim != 4:
        raise ValueError(f"beliefs must have shape (N, P, G, G); got {b.shape}")
    n, p, h, w = b.shape
    n_feat = len(context_block_names(context_radii, n_peaks))
    out = np.empty((n, h, w, p, n_feat), np.float32)
    k = 0

    def put(feature):  # feature broadcastable to (N, P, H, W)
        nonlocal k
        out[..., k] = np.broadcast_to(feature, (n, p, h, w)).transpose(0, 2, 3, 1)
        k += 1

    put(b)
    for r in context_radii:
        size = 2 * (r // 2) + 1
        # beliefs are >= 0, so zero padding (cval=0) gives the same max as -inf padding
        pooled = maximum_filter(b, size=(1, 1, size, size), mode="constant", cval=0.0) if size > 1 else b
        for _, dx, dy in DIRECTIONS:
            put(_shift2(pooled, r * dy, r * dx))
    ys = np.arange(h, dtype=np.float32).reshape(1, 1, h, 1)
    xs = np.arange(w, dtype=np.float32).reshape(1, 1, 1, w)
    work = b.copy()
    for _ in range(n_peaks):
        flat = work.reshape(n, p, h * w)
        idx = flat.argmax(-1)
        val = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
        py = (idx // w).astype(np.float32)[..., None, None]
        px = (idx % w).astype(np.float32)[..., None, None]
        put(px - xs)
        put(py - ys)
        put(val[..., None, None])
        work[(np.abs(ys - py) <= peak_suppression) & (np.abs(xs - px) <= peak_suppression)] = 0.0
    hh, hw = (h + 1) // 2, (w + 1) // 2
    for region in (b, b[..., :hh, :hw], b[..., :hh, w - hw:], b[..., h - hh:, :hw], b[..., h - hh:, w - hw:]):
        put(region.max((-2, -1))[..., None, None])
    assert k == n_feat
    return out.reshape(n, h, w, p * n_feat)


# ---------------------------------------------------------------------------------------------
# Labels and sampling
# ---------------------------------------------------------------------------------------------
def location_labels(keypoints, grid_size: int, stride: int = 8, label_radius: float = 0.0) -> np.ndarray:
    """Class of every cell: part index p, or P (background).

    Args:
        keypoints: (N, P, 3) x, y in input pixels and visibility.
        grid_size: G, cells per side.
        label_radius: in cells; a cell is part p when its centre is within this distance of
            visible joint p. The cell containing the joint (nearest cell centre) is always part
            p, so ``label_radius=0`` labels exactly one cell per joint inside the image.
    Returns:
        (N, G, G) int64. Where several joints claim a cell, a joint's own cell wins, then the
        nearest joint.
    """
    kp = torch.as_tensor(np.asarray(keypoints, dtype=np.float32))
    if kp.ndim != 3 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (N, P, 3); got {tuple(kp.shape)}")
    n, p, _ = kp.shape
    cxy = (torch.nan_to_num(kp[..., :2]) - (stride - 1) / 2) / stride  # joint position in cell units
    vis = labelled_mask(kp)
    vis &= ((cxy > -0.5) & (cxy < grid_size - 0.5)).all(-1)  # joints outside the image label nothing
    g = torch.arange(grid_size, dtype=torch.float32)
    d2 = (g.view(1, 1, 1, -1) - cxy[..., 0, None, None]) ** 2 + (g.view(1, 1, -1, 1) - cxy[..., 1, None, None]) ** 2
    ix = cxy[..., 0].round().clamp(0, grid_size - 1).long()
    iy = cxy[..., 1].round().clamp(0, grid_size - 1).long()
    own = torch.zeros(n, p, grid_size, grid_size, dtype=torch.bool)
    ni, pi = torch.meshgrid(torch.arange(n), torch.arange(p), indexing="ij")
    own[ni, pi, iy, ix] = True
    score = torch.where(own, torch.full_like(d2, -1.0), d2)  # own cell first, then distance
    claim = ((d2 <= label_radius**2) | own) & vis[..., None, None]
    score = torch.where(claim, score, torch.full_like(d2, float("inf")))
    best, arg = score.min(dim=1)
    return torch.where(torch.isfinite(best), arg, torch.full_like(arg, p)).numpy()


def _sample_locations(labels: np.ndarray, num_parts: int, background_ratio: float,
                      rng: np.random.Generator) -> np.ndarray:
    """Flat indices into ``labels.reshape(-1)``: every part cell, plus ``background_ratio`` x as
    many background cells per image (at least 1), drawn without replacement."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1)
    per = flat.shape[1]
    chosen = []
    for i in range(n):  # per IMAGE, not per location
        pos = np.flatnonzero(flat[i] < num_parts)
        bg = np.flatnonzero(flat[i] >= num_parts)
        k = min(len(bg), max(1, int(round(background_ratio * len(pos)))))
        chosen.append(i * per + np.concatenate([pos, rng.choice(bg, size=k, replace=False)]))
    return np.sort(np.concatenate(chosen))

