"""The codec: keypoints <-> belief maps, and the Gaussian centre map.

Coordinate convention
---------------------
Keypoints are in input-image pixels with pixel centres at integer coordinates. A model with
output stride ``s`` produces maps of ``H // s`` x ``W // s`` cells; cell ``i`` covers input
pixels ``s*i .. s*i + s - 1`` and so is centred at input coordinate ``s*i + (s - 1) / 2``.
Encoding samples a Gaussian at those cell centres; decoding inverts the same mapping, so a
round trip is exact up to the sub-pixel refinement. This is the official CPM data layer's
convention (``start = stride / 2 - 0.5``). Note that the receptive field of output cell ``i`` of
the network itself is centred on input pixel ``8i + 7`` (three unpadded 3x3/2 pools); the learned
"same"-padded convolutions absorb the 3.5 px difference, as in the official model.

Joint flags
-----------
The third column of every keypoint array tells three things apart (``MISSING``, ``OCCLUDED``,
``VISIBLE``); this is the one place where each dataset's own flags are mapped to them:

=================  =====================================================================
source             mapping
=================  =====================================================================
LSP (2000 images)  flag 0 (visible) -> VISIBLE; flag 1 (occluded, position labelled) ->
                   OCCLUDED. Every LSP joint is labelled.
LSPet              flag 1 (annotated) -> VISIBLE; flag 0 (no annotation; coordinates
                   meaningless) -> MISSING. LSPet does not say which annotated joints are
                   occluded, so all count as visible.
MPII (JSON)        ``joints_vis`` > 0 (labelled) -> VISIBLE; 0 -> MISSING. The common JSON
                   layout keeps only "labelled", so occlusion is not known.
COCO               v = 2 -> VISIBLE, v = 1 (labelled, not visible) -> OCCLUDED, v = 0 -> MISSING.
synthetic          a joint under an occluder, or outside the image -> OCCLUDED (its position
                   is known); every other joint -> VISIBLE. No synthetic joint is missing.
MPII/COCO -> LSP   a joint combined from several source joints takes the lowest of their flags.
=================  =====================================================================

Labelled joints (OCCLUDED or VISIBLE) get a training target, as in the official data
transformer; a labelled joint that has left the input image gets an empty map (its position is
known: it is not in the picture), and still enters the loss. MISSING joints get weight 0: an
unlabelled joint may be anywhere, so no map is the right answer. Metrics score every labelled
joint by default (the LSP benchmark counts all 14 joints) or the visible ones only.

Everything here is batched and runs on the device of its inputs: no Python loop over samples
or joints.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from . import skeleton

#: Joint flags (the third keypoint column); see "Joint flags" above.
MISSING, OCCLUDED, VISIBLE = 0, 1, 2


@dataclass(frozen=True)
class CodecConfig:
    """Geometry of targets and beliefs; the one home of stride and sigmas.

    Attributes:
        input_size: side of the square network input, in pixels (paper: 368).
        stride: input pixels per belief-map cell (paper: 8).
        sigma: standard deviation of each part's Gaussian, in INPUT pixels (paper: 7).
        center_sigma: standard deviation of the centre-map Gaussian, in input pixels (paper: 21).
        num_parts: number of parts P; belief maps have P + 1 channels (last = background).
    """

    input_size: int = 368
    stride: int = 8
    sigma: float = 7.0
    center_sigma: float = 21.0
    num_parts: int = skeleton.NUM_JOINTS

    def __post_init__(self):
        if self.input_size % self.stride:
            raise ValueError(f"input_size ({self.input_size}) must be a multiple of stride ({self.stride})")
        if self.sigma <= 0 or self.center_sigma <= 0:
            raise ValueError(f"sigma and center_sigma must be positive, got {self.sigma}, {self.center_sigma}")

    @property
    def output_size(self) -> int:
        """Side of the belief maps in cells (368 // 8 = 46 for the paper)."""
        return self.input_size // self.stride

    def replace(self, **changes) -> "CodecConfig":
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_keypoints(keypoints: torch.Tensor, num_parts: int | None = None) -> torch.Tensor:
    if not isinstance(keypoints, torch.Tensor):
        keypoints = torch.as_tensor(keypoints, dtype=torch.float32)
    if keypoints.ndim != 3 or keypoints.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (N, P, 3) = x, y, visibility; got {tuple(keypoints.shape)}")
    if num_parts is not None and keypoints.shape[1] != num_parts:
        raise ValueError(f"keypoints have {keypoints.shape[1]} parts but the codec expects {num_parts}")
    return keypoints


def cell_index(coords, stride: int):
    """Belief cell holding input coordinate(s) ``coords`` (x or y, pixel centres at integers):
    ``floor((coords + 0.5) / stride)``, so cell ``i`` holds pixels ``stride*i .. stride*i + stride - 1``.
    Works elementwise on numbers, numpy arrays (int64 result) and torch tensors (long result);
    no clipping to the grid."""
    if isinstance(coords, torch.Tensor):
        return torch.floor((coords + 0.5) / stride).long()
    out = np.floor((np.asarray(coords, dtype=np.float64) + 0.5) / stride).astype(np.int64)
    return int(out) if out.ndim == 0 else out


def cell_center(index, stride: int):
    """Input-pixel coordinate of the centre of belief cell ``index``: ``stride*index + (stride-1)/2``
    (the inverse of ``cell_index`` at cell centres; numbers, numpy arrays or tensors)."""
    return index * stride + (stride - 1) / 2


def cell_centers(size: int, stride: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``cell_center`` of each of ``size`` cells at ``stride``: shape (size,)."""
    return cell_center(torch.arange(size, device=device, dtype=dtype), stride)


def labelled_mask(keypoints):
    """(..., P) bool: the joint has a known position (flag > 0) and finite coordinates.

    The one "is this joint labelled?" test of the package, for torch tensors or numpy arrays of
    shape (..., P, 3); an array with only x, y columns (..., P, 2) counts every finite joint.
    """
    if isinstance(keypoints, torch.Tensor):
        ok = torch.isfinite(keypoints[..., :2]).all(-1)
        return ok & (keypoints[..., 2] > 0) if keypoints.shape[-1] > 2 else ok
    kp = np.asarray(keypoints, dtype=np.float64)
    ok = np.isfinite(kp[..., :2]).all(-1)
    return ok & (np.nan_to_num(kp[..., 2], nan=0.0) > 0) if kp.shape[-1] > 2 else ok


def visible_mask(keypoints):
    """(..., P) bool: labelled (``labelled_mask``) and not occluded (flag ``VISIBLE``)."""
    if isinstance(keypoints, torch.Tensor):
        return labelled_mask(keypoints) & (keypoints[..., 2] >= VISIBLE)
    kp = np.asarray(keypoints, dtype=np.float64)
    return labelled_mask(kp) & (np.nan_to_num(kp[..., 2], nan=0.0) >= VISIBLE)


def default_centers(n: int, height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """The centre-map default when no person centre is given: the image centre
    ``((width - 1) / 2, (height - 1) / 2)`` for each of ``n`` images, shape (n, 2)."""
    return torch.tensor([[(width - 1) / 2, (height - 1) / 2]], device=device, dtype=dtype).expand(n, 2)


def encode(keypoints: torch.Tensor, config: CodecConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints (N, P, 3) in input pixels -> (targets, weights).

    Returns:
        targets: (N, P + 1, S, S) float with S = ``config.output_size``; channel p < P is a
            Gaussian of std ``config.sigma`` input pixels centred on joint p (peak 1 at the
            joint), all zeros for a joint that is missing or outside the input image
            (``config.input_size`` square); the last channel is the background
            ``max(1 - max_p target_p, 0)``.
        weights: (N, P + 1) float, 1 for channels that enter the loss (labelled joints, inside
            the input or not, and the background), 0 for missing joints.
    """
    keypoints = _check_keypoints(keypoints, config.num_parts)
    n, p, _ = keypoints.shape
    device = keypoints.device
    dtype = keypoints.dtype if keypoints.dtype.is_floating_point else torch.float32
    labelled = labelled_mask(keypoints)
    xy = torch.where(labelled[..., None], keypoints[..., :2].to(dtype), torch.zeros((), device=device, dtype=dtype))
    edge = config.input_size - 0.5
    inside = labelled & ((xy >= -0.5) & (xy < edge)).all(-1)
    g = cell_centers(config.output_size, config.stride, device, dtype)
    inv = -0.5 / config.sigma**2
    gx = torch.exp(inv * (g.view(1, 1, -1) - xy[..., 0:1]) ** 2)  # (N, P, S)
    gy = torch.exp(inv * (g.view(1, 1, -1) - xy[..., 1:2]) ** 2)
    parts = gy.unsqueeze(-1) * gx.unsqueeze(-2) * inside[..., None, None].to(dtype)  # (N, P, S, S)
    background = (1 - parts.amax(dim=1, keepdim=True)).clamp_min(0) if p else torch.ones(
        n, 1, config.output_size, config.output_size, device=device, dtype=dtype)
    targets = torch.cat([parts, background], dim=1)
    weights = torch.cat([labelled.to(dtype), torch.ones(n, 1, device=device, dtype=dtype)], dim=1)
    return targets, weights


def center_map(centers: torch.Tensor, config: CodecConfig, height: int | None = None,
               width: int | None = None) -> torch.Tensor:
    """Gaussian centre maps at INPUT resolution: centers (N, 2) x, y pixels -> (N, 1, H, W).

    ``height`` and ``width`` default to ``config.input_size``; std is ``config.center_sigma``
    pixels, peak 1.
    """
    if not isinstance(centers, torch.Tensor):
        centers = torch.as_tensor(centers, dtype=torch.float32)
    if centers.ndim != 2 or centers.shape[1] != 2:
        raise ValueError(f"centers must have shape (N, 2) = x, y; got {tuple(centers.shape)}")
    height = height or config.input_size
    width = width or config.input_size
    dtype = centers.dtype if centers.dtype.is_floating_point else torch.float32
    inv = -0.5 / config.center_sigma**2
    gx = torch.exp(inv * (torch.arange(width, device=centers.device, dtype=dtype) - centers[:, 0:1]) ** 2)
    gy = torch.exp(inv * (torch.arange(height, device=centers.device, dtype=dtype) - centers[:, 1:2]) ** 2)
    return (gy.unsqueeze(-1) * gx.unsqueeze(-2)).unsqueeze(1)


#: Names accepted by ``decode(..., method=...)``; see ``decode`` for what each one does.
DECODERS = ("argmax", "parabola", "quarter", "dark", "soft_argmax")


def decode(beliefs: torch.Tensor, config: CodecConfig, *, method: str = "parabola") -> torch.Tensor:
    """Belief maps -> keypoints in input pixels.

    Args:
        beliefs: (N, C, h, w) with C = P + 1 (background last, ignored) or C = P.
        config: the codec; ``stride`` maps cells to input pixels (``cell_center``), ``sigma``
            sets the smoothing of ``"dark"``.
        method: how the location is read off each part's map (one of ``DECODERS``). All of them
            work in cell units and convert with ``cell_center``; all but ``"soft_argmax"``
            start from the arg-max cell (the first one on ties):

            - ``"argmax"``: the arg-max cell's centre, no refinement (error up to half a cell,
              i.e. ``stride / 2`` input pixels, per axis).
            - ``"parabola"`` (default): per axis, the vertex of the parabola through the log of
              the three beliefs around the peak (log clamped at 1e-6); exact for a sampled
              Gaussian. The offset is clamped to +-0.5 cell and is 0 on an axis where the peak
              is on the border or the log is not concave.
            - ``"quarter"``: the Hourglass / SimpleBaseline heuristic: a step of 0.25 cell from
              the arg-max towards the higher of its two neighbours along each axis (none on a
              tie or on the border; the reference code also skips the cell next to the border,
              this one does not).
            - ``"dark"``: DARK (Zhang et al., CVPR 2020). Each map is smoothed with a Gaussian
              kernel of std ``config.sigma / config.stride`` cells (the codec's own sigma,
              truncated at 4 std, zero padding outside the map), clamped at 1e-10 and logged;
              then one Newton step ``-H^-1 g`` is taken at the (unsmoothed) arg-max cell with the
              2-D gradient ``g`` and Hessian ``H`` from central differences. The step is 0 where
              ``H`` is not negative definite or the arg-max is on the border, and each axis is
              clamped to +-1 cell (beyond the three-cell stencil the quadratic model is an
              extrapolation). Exact for a Gaussian up to the smoothing's discretisation.
            - ``"soft_argmax"``: integral regression (Sun et al., ECCV 2018): the expected cell
              coordinates under the map clipped at 0 and normalised to sum 1 over the whole map
              (an all-zero map falls back to the arg-max cell). No arg-max: every cell votes, so
              background clutter, second peaks and a peak cut by the border all pull the
              estimate (towards the clutter, and inwards); that bias is what it is compared for.

    Returns:
        (N, P, 3): x, y in input pixels and, for every method, the peak belief value (the
        maximum of the unsmoothed map) as confidence.

    Raises:
        ValueError: on an unknown ``method`` or badly shaped ``beliefs``.
    """
    if method not in DECODERS:
        raise ValueError(f"unknown decode method {method!r}; valid methods: {', '.join(DECODERS)}")
    if beliefs.ndim != 4:
        raise ValueError(f"beliefs must have shape (N, C, h, w); got {tuple(beliefs.shape)}")
    p = config.num_parts
    if beliefs.shape[1] not in (p, p + 1):
        raise ValueError(f"beliefs have {beliefs.shape[1]} channels; expected {p} parts (+1 background)")
    maps = beliefs[:, :p].float()
    n, _, h, w = maps.shape
    flat = maps.reshape(n, p, h * w)
    conf, idx = flat.max(dim=-1)
    iy, ix = idx // w, idx % w

    if method == "argmax":
        fx, fy = ix.float(), iy.float()
    elif method == "parabola":
        fx, fy = _refine_parabola(maps, iy, ix)
    elif method == "quarter":
        fx, fy = _refine_quarter(maps, iy, ix)
    elif method == "dark":
        fx, fy = _refine_dark(maps, iy, ix, config.sigma / config.stride)
    else:  # soft_argmax
        fx, fy = _soft_argmax(maps, iy, ix)
    s = config.stride
    x = fx * s + (s - 1) / 2
    y = fy * s + (s - 1) / 2
    return torch.stack([x, y, conf], dim=-1)


def _at(maps: torch.Tensor, iy: torch.Tensor, ix: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """maps (N, P, h, w) at cells (iy + dy, ix + dx), indices (N, P) clamped to the map -> (N, P)."""
    n, p, h, w = maps.shape
    j = (iy + dy).clamp(0, h - 1) * w + (ix + dx).clamp(0, w - 1)
    return maps.reshape(n, p, h * w).gather(-1, j.unsqueeze(-1)).squeeze(-1)


def _interior(iy: torch.Tensor, ix: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, P) bools: the cell has a neighbour on both sides along y, along x."""
    return (iy > 0) & (iy < h - 1), (ix > 0) & (ix < w - 1)


def _refine_parabola(maps, iy, ix):
    """Arg-max (iy, ix) + per-axis log-parabola vertex, in cells: (fx, fy), each (N, P)."""
    n, p, h, w = maps.shape
    eps = 1e-6
    logm = maps.clamp_min(eps).log()

    def offset(axis_len, i, take):
        # take(k) gathers the log-belief at position i + k along the axis (clamped at borders)
        lm, l0, lp = take(-1), take(0), take(1)
        denom = lm - 2 * l0 + lp
        d = torch.where(denom < -1e-9, 0.5 * (lm - lp) / denom.clamp(max=-1e-9), torch.zeros_like(denom))
        valid = (i > 0) & (i < axis_len - 1)
        return torch.where(valid, d.clamp(-0.5, 0.5), torch.zeros_like(d))

    fx = ix.float() + offset(w, ix, lambda k: _at(logm, iy, ix, 0, k))
    fy = iy.float() + offset(h, iy, lambda k: _at(logm, iy, ix, k, 0))
    return fx, fy


def _refine_quarter(maps, iy, ix):
    """Arg-max (iy, ix) + 0.25 cell towards the higher neighbour per axis, in cells: (fx, fy)."""
    n, p, h, w = maps.shape
    in_y, in_x = _interior(iy, ix, h, w)
    dx = torch.sign(_at(maps, iy, ix, 0, 1) - _at(maps, iy, ix, 0, -1)) * in_x
    dy = torch.sign(_at(maps, iy, ix, 1, 0) - _at(maps, iy, ix, -1, 0)) * in_y
    return ix.float() + 0.25 * dx, iy.float() + 0.25 * dy


def _gaussian_smooth(maps: torch.Tensor, sigma_cells: float) -> torch.Tensor:
    """maps (N, P, h, w) convolved with a normalised Gaussian of std ``sigma_cells`` cells,
    truncated at ``ceil(4 * sigma_cells)`` cells, zero padding (same shape out); separable."""
    n, p, h, w = maps.shape
    r = max(1, int(np.ceil(4 * sigma_cells)))
    t = torch.arange(-r, r + 1, device=maps.device, dtype=maps.dtype)
    k = torch.exp(-0.5 * (t / sigma_cells) ** 2)
    k = k / k.sum()
    x = maps.reshape(n * p, 1, h, w)
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    x = torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))
    return x.reshape(n, p, h, w)


def _refine_dark(maps, iy, ix, sigma_cells: float):
    """DARK: one Newton step on the log of the smoothed map at the arg-max (iy, ix), in cells."""
    n, p, h, w = maps.shape
    logm = _gaussian_smooth(maps, sigma_cells).clamp_min(1e-10).log()

    def at(dy, dx):
        return _at(logm, iy, ix, dy, dx)

    c = at(0, 0)
    gx = 0.5 * (at(0, 1) - at(0, -1))
    gy = 0.5 * (at(1, 0) - at(-1, 0))
    hxx = at(0, 1) - 2 * c + at(0, -1)
    hyy = at(1, 0) - 2 * c + at(-1, 0)
    hxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = hxx * hyy - hxy**2
    in_y, in_x = _interior(iy, ix, h, w)
    ok = (hxx < 0) & (det > 1e-12) & in_x & in_y  # negative definite, full stencil on the map
    safe = torch.where(ok, det, torch.ones_like(det))
    # -H^-1 g with H^-1 = [[hyy, -hxy], [-hxy, hxx]] / det
    dx = torch.where(ok, -(hyy * gx - hxy * gy) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    dy = torch.where(ok, -(hxx * gy - hxy * gx) / safe, torch.zeros_like(det)).clamp(-1.0, 1.0)
    return ix.float() + dx, iy.float() + dy


def _soft_argmax(maps, iy, ix):
    """Expected (x, y) cell coordinates under max(map, 0) normalised over the map: (fx, fy)."""
    n, p, h, w = maps.shape
    m = maps.clamp_min(0)
    mass = m.sum(dim=(-2, -1))
    ok = mass > 0
    safe = torch.where(ok, mass, torch.ones_like(mass))
    xs = torch.arange(w, device=maps.device, dtype=maps.dtype)
    ys = torch.arange(h, device=maps.device, dtype=maps.dtype)
    fx = (m.sum(dim=-2) * xs).sum(-1) / safe
    fy = (m.sum(dim=-1) * ys).sum(-1) / safe
    return torch.where(ok, fx, ix.float()), torch.where(ok, fy, iy.float())


def round_trip(config: CodecConfig, methods=DECODERS, n: int = 1000, seed: int = 0, margin_cells: int = 2):
    """The codec round trip of the decoder comparison: encode -> decode error per method.

    Draws ``n`` keypoints uniformly at random (continuous, i.e. sub-pixel) positions in input
    pixels, at least ``margin_cells`` cells (``margin_cells * config.stride`` pixels) inside the
    input square ``[-0.5, input_size - 0.5]`` on every side, from a ``torch.Generator`` seeded
    with ``seed``; encodes each as the only labelled part of its own sample (the codec's
    geometry with ``num_parts=1``: one Gaussian per map, nothing else on it), decodes with each
    method and measures the Euclidean distance to the drawn position. CPU, float32.

    Returns:
        pandas.DataFrame with one row per method (in the order given) and columns ``method``,
        ``mean_px``, ``median_px``, ``p95_px``, ``max_px``: the quantisation error of
        encode -> decode in input pixels.
    """
    import pandas as pd

    methods = (methods,) if isinstance(methods, str) else tuple(methods)
    bad = [m for m in methods if m not in DECODERS]
    if bad:
        raise ValueError(f"unknown decode method(s) {bad}; valid methods: {', '.join(DECODERS)}")
    lo = margin_cells * config.stride - 0.5
    hi = config.input_size - 0.5 - margin_cells * config.stride
    if n < 1 or hi < lo:
        raise ValueError(f"need n >= 1 and a margin of {margin_cells} cells that leaves room; got n={n}, "
                         f"input_size={config.input_size}, stride={config.stride}")
    g = torch.Generator().manual_seed(seed)
    xy = lo + torch.rand(n, 1, 2, generator=g) * (hi - lo)
    keypoints = torch.cat([xy, torch.full((n, 1, 1), float(VISIBLE))], dim=-1)
    single = config.replace(num_parts=1)
    targets, _ = encode(keypoints, single)
    rows = []
    for m in methods:
        err = (decode(targets, single, method=m)[:, 0, :2] - xy[:, 0]).norm(dim=-1).double()
        rows.append({"method": m, "mean_px": err.mean().item(), "median_px": err.median().item(),
                     "p95_px": torch.quantile(err, 0.95).item(), "max_px": err.max().item()})
    return pd.DataFrame(rows, columns=["method", "mean_px", "median_px", "p95_px", "max_px"])
