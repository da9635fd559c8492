"""Keypoint metrics per stage and per part: PCK (torso / bbox / head normalised), AUC, EPE.

All metric functions are pure: they take predicted and ground-truth keypoints (tensors or
arrays of shape (N, P, 3) = x, y, visibility/confidence, in pixels of the same image) and return
a tidy :class:`pandas.DataFrame` with one row per (stage, part, metric, threshold)::

    stage  part        metric  normalize  threshold  value   count
    1      r_ankle     pck     torso      0.2        0.93    250
    1      mean        pck     torso      0.2        0.95    3480
    ...

Definitions
-----------
* A ground-truth joint takes part only when its visibility is > 0 and its coordinates are finite.
  A prediction that is NaN counts as a miss (infinite distance).
* ``d`` is the Euclidean distance in pixels between prediction and ground truth. PCK@alpha is the
  fraction of joints with ``d <= alpha * L`` where ``L`` is the sample's normalising length:

  - ``"torso"`` (LSP person-centric PCK): ``L = |right_shoulder - left_hip|``, the torso diagonal;
    if either joint is missing the other diagonal ``|left_shoulder - right_hip|`` is used; if both
    are missing the sample is left out of normalised metrics.
  - ``"bbox"``: ``L`` = the longest side of the bounding box of the sample's visible
    ground-truth joints.
  - ``"head"`` (PCKh): MPII uses 0.6 x the diagonal of an annotated head box, which is close to
    the upper-neck--head-top segment. LSP-14 has no head box, so here ``L = |neck - head_top|``
    (needs both joints visible). PCKh@0.5 from this module is therefore PCKh in spirit, not a
    number to compare digit-for-digit with the MPII benchmark.
  - ``"px"``: ``L = 1``, i.e. thresholds are in pixels.

  Samples whose ``L`` is missing or zero are left out of normalised metrics.
* AUC is the area under the PCK-vs-alpha curve for alpha in ``[0, auc_max]`` divided by
  ``auc_max`` (so it lies in [0, 1]). For the step-shaped empirical curve this integral is exact:
  ``AUC = mean(1 - min(d / L, auc_max) / auc_max)``; no threshold grid is involved.
* EPE is the mean end-point error ``d`` in pixels (normalisation does not apply; only missing
  ground-truth joints are left out).
* Part ``"mean"`` pools ALL included joints of all parts (a joint-weighted average), not the mean
  of the per-part values; ``count`` says how many joints each row averages.

``evaluate`` runs a model over a dataset (optionally with test-time flip and multi-scale
averaging) and returns the same tidy table with a ``stage`` per CPM stage; ``predict`` returns the
decoded per-stage keypoints; ``pck_table`` pivots the tidy table into the stages x thresholds
view people read.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import skeleton
from .targets import center_map, decode
from .utils import resolve_device

NORMALIZATIONS = ("torso", "bbox", "head", "px")
#: The two torso diagonals used by ``normalize="torso"``, in order of preference.
TORSO_JOINTS: tuple[tuple[int, int], ...] = (
    (skeleton.JOINT_INDEX["right_shoulder"], skeleton.JOINT_INDEX["left_hip"]),
    (skeleton.JOINT_INDEX["left_shoulder"], skeleton.JOINT_INDEX["right_hip"]),
)
#: The segment used by ``normalize="head"``.
HEAD_JOINTS: tuple[int, int] = (skeleton.JOINT_INDEX["neck"], skeleton.JOINT_INDEX["head_top"])
METRIC_COLUMNS = ["stage", "part", "metric", "normalize", "threshold", "value", "count"]


# ------------------------------------------------------------------------------------------------
# Pure metric functions
# ------------------------------------------------------------------------------------------------
def _as_array(x, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 3 or arr.shape[-1] < 2:
        raise ValueError(f"{name} must have shape (N, P, 3) = x, y, visibility; got {arr.shape}")
    return arr


def _visible(gt: np.ndarray) -> np.ndarray:
    vis = np.isfinite(gt[..., :2]).all(-1)
    if gt.shape[-1] > 2:
        vis &= np.nan_to_num(gt[..., 2], nan=0.0) > 0
    return vis


def normalizer(gt, normalize: str = "torso") -> np.ndarray:
    """Per-sample normalising length ``L`` in pixels, shape (N,); NaN where it is undefined.

    See the module docstring for the definition of each ``normalize`` option.
    """
    gt = _as_array(gt, "gt")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {NORMALIZATIONS}")
    n = gt.shape[0]
    vis = _visible(gt)
    if normalize == "px":
        return np.ones(n)
    if normalize == "bbox":
        xy = np.where(vis[..., None], gt[..., :2], np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (no visible joint)
            side = np.nanmax(xy, axis=1) - np.nanmin(xy, axis=1)  # (N, 2); NaN if no visible joint
        length = side.max(axis=1)
    else:
        if gt.shape[1] != skeleton.NUM_JOINTS:
            raise ValueError(f"normalize={normalize!r} needs the LSP-14 skeleton; got {gt.shape[1]} parts "
                             "(use 'bbox' or 'px' for other joint sets)")
        pairs = TORSO_JOINTS if normalize == "torso" else (HEAD_JOINTS,)
        length = np.full(n, np.nan)
        for a, b in reversed(pairs):  # the first pair wins where it is available
            ok = vis[:, a] & vis[:, b]
            d = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)
            length = np.where(ok, d, length)
    return np.where(length > 0, length, np.nan)


def keypoint_distances(pred, gt) -> np.ndarray:
    """(N, P) pixel distances between predictions and ground truth; NaN where the ground-truth
    joint is missing, +inf where the prediction is NaN."""
    pred, gt = _as_array(pred, "pred"), _as_array(gt, "gt")
    if pred.shape[:2] != gt.shape[:2]:
        raise ValueError(f"pred has {pred.shape[:2]} (N, P) but gt has {gt.shape[:2]}")
    d = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)
    d = np.where(np.isfinite(d), d, np.inf)
    return np.where(_visible(gt), d, np.nan)


def _part_names(p: int) -> list[str]:
    return list(skeleton.SHORT_NAMES) if p == skeleton.NUM_JOINTS else [f"part{i}" for i in range(p)]


def _rows(stage, names, values_fn, metric, normalize, threshold, mask) -> list[dict]:
    """One row per part and one pooled "mean" row; ``values_fn(m)`` averages over mask m."""
    rows = []
    for j, name in enumerate(names):
        m = np.zeros_like(mask)
        m[:, j] = mask[:, j]
        rows.append(dict(stage=stage, part=name, metric=metric, normalize=normalize, threshold=threshold,
                         value=values_fn(m), count=int(m.sum())))
    rows.append(dict(stage=stage, part="mean", metric=metric, normalize=normalize, threshold=threshold,
                     value=values_fn(mask), count=int(mask.sum())))
    return rows


def keypoint_metrics(preds, gt, thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso",
                     auc_max: float | None = 0.5, epe: bool = True,
                     stages: Sequence[int] | None = None) -> pd.DataFrame:
    """PCK at each threshold, AUC and EPE, per stage and per part, as a tidy DataFrame.

    Args:
        preds: predictions for ONE stage, shape (N, P, 3), or a sequence of them (one per
            stage), or an array (T, N, P, 3).
        gt: ground truth (N, P, 3) with visibility in the last column.
        thresholds: PCK thresholds alpha (fractions of the normalising length).
        normalize: "torso", "bbox", "head" or "px" (see module docstring).
        auc_max: upper end of the AUC range in normalised units; None skips AUC.
        epe: add the mean end-point error in pixels (metric "epe", threshold NaN).
        stages: stage labels (default 1..T).
    Returns:
        DataFrame with columns ``stage, part, metric, normalize, threshold, value, count``.
    """
    if isinstance(preds, (list, tuple)):
        stack = [_as_array(p, "pred") for p in preds]
    else:
        arr = preds.detach().float().cpu().numpy() if isinstance(preds, torch.Tensor) else np.asarray(preds)
        stack = [arr[t] for t in range(arr.shape[0])] if arr.ndim == 4 else [_as_array(arr, "pred")]
    gt = _as_array(gt, "gt")
    stages = list(stages) if stages is not None else list(range(1, len(stack) + 1))
    if len(stages) != len(stack):
        raise ValueError(f"got {len(stack)} stage predictions but {len(stages)} stage labels")
    thresholds = [float(t) for t in thresholds]
    if any(t < 0 for t in thresholds):
        raise ValueError(f"thresholds must be >= 0, got {thresholds}")
    norm = normalizer(gt, normalize)  # (N,)
    names = _part_names(gt.shape[1])
    rows: list[dict] = []
    for stage, pred in zip(stages, stack):
        d = keypoint_distances(pred, gt)
        gt_ok = ~np.isnan(d)
        with np.errstate(invalid="ignore", divide="ignore"):
            nd = d / norm[:, None]
        ok = gt_ok & np.isfinite(norm)[:, None]

        def mean_of(values, m):
            return float(values[m].mean()) if m.any() else float("nan")

        for t in thresholds:
            hit = (nd <= t).astype(np.float64)
            rows += _rows(stage, names, lambda m: mean_of(hit, m), "pck", normalize, t, ok)
        if auc_max is not None:
            if auc_max <= 0:
                raise ValueError(f"auc_max must be > 0, got {auc_max}")
            area = 1.0 - np.minimum(np.nan_to_num(nd, nan=np.inf), auc_max) / auc_max
            rows += _rows(stage, names, lambda m: mean_of(area, m), "auc", normalize, float(auc_max), ok)
        if epe:
            rows += _rows(stage, names, lambda m: mean_of(d, m), "epe", "px", float("nan"), gt_ok)
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def pck(pred, gt, thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso") -> pd.DataFrame:
    """PCK rows only (see ``keypoint_metrics``) for one stage's predictions (N, P, 3)."""
    return keypoint_metrics(pred, gt, thresholds, normalize, auc_max=None, epe=False)


def auc(pred, gt, normalize: str = "torso", auc_max: float = 0.5) -> pd.DataFrame:
    """AUC rows only: normalised area under PCK(alpha) for alpha in [0, auc_max]."""
    return keypoint_metrics(pred, gt, (), normalize, auc_max=auc_max, epe=False)


def epe(pred, gt) -> pd.DataFrame:
    """Mean end-point error rows only (pixels)."""
    return keypoint_metrics(pred, gt, (), "px", auc_max=None, epe=True)


def pck_table(table: pd.DataFrame, thresholds: Sequence[float] | None = None, part: str = "mean",
              metric: str = "pck") -> pd.DataFrame:
    """Pivot a tidy metrics table into stages (rows) x thresholds (columns) for one part.

    Column labels read e.g. ``"PCK@0.1 (torso)"``; the index is named ``stage``.
    """
    sub = table[(table["metric"] == metric) & (table["part"] == part)]
    if thresholds is not None:
        sub = sub[sub["threshold"].isin([float(t) for t in thresholds])]
    if sub.empty:
        raise ValueError(f"no {metric!r} rows for part {part!r} in the table")
    wide = sub.pivot_table(index="stage", columns=["normalize", "threshold"], values="value", aggfunc="first")
    wide.columns = [f"{metric.upper()}@{thr:g} ({norm})" for norm, thr in wide.columns]
    return wide


# ------------------------------------------------------------------------------------------------
# Running a model
# ------------------------------------------------------------------------------------------------
def _flip_channels(num_parts: int, channels: int) -> list[int]:
    perm = list(skeleton.FLIP_INDEX) if num_parts == skeleton.NUM_JOINTS else list(range(num_parts))
    return perm + list(range(num_parts, channels))  # background (and anything after) stays put


@torch.no_grad()
def predict_beliefs(model, images: torch.Tensor, centers: torch.Tensor | None = None, flip: bool = False,
                    scales: Sequence[float] | None = None, amp: bool = False) -> list[torch.Tensor]:
    """Per-stage belief maps (N, P + 1, S, S) with optional test-time flip / multi-scale averaging.

    Args:
        model: a CPM (any module returning a list of per-stage beliefs, with ``.codec``).
        images: (N, 3, H, W) on the model's device.
        centers: (N, 2) person centres in pixels for the centre map; None = image centre.
        flip: also run the mirrored image, mirror its beliefs back, swap left/right part channels
            (``skeleton.FLIP_INDEX``; background unchanged) and average with the plain pass.
        scales: e.g. ``(0.8, 0.9, 1.0, 1.1, 1.2)`` as in the official testing code: the input is
            resized by each factor (rounded to a multiple of the stride), run, and each stage's
            beliefs are resized back to the base output size (bilinear) and averaged. None = (1,).
        amp: run under autocast (bf16) on CUDA.
    """
    codec = model.codec
    n, _, h, w = images.shape
    s = codec.stride
    out_h, out_w = h // s, w // s
    if centers is None:
        centers = torch.tensor([[(w - 1) / 2, (h - 1) / 2]], device=images.device).expand(n, 2)
    centers = centers.to(images.device, torch.float32)
    scales = list(scales) if scales else [1.0]
    if any(sc <= 0 for sc in scales):
        raise ValueError(f"scales must be positive, got {scales}")
    use_amp = amp and images.device.type == "cuda"
    total: list[torch.Tensor] | None = None
    count = 0
    for sc in scales:
        sh, sw = max(s, round(h * sc / s) * s), max(s, round(w * sc / s) * s)
        img = images if (sh, sw) == (h, w) else F.interpolate(images, size=(sh, sw), mode="bilinear",
                                                               align_corners=False)
        # pixel-centre convention: x' = (x + 0.5) * sw / w - 0.5
        c = torch.stack([(centers[:, 0] + 0.5) * sw / w - 0.5, (centers[:, 1] + 0.5) * sh / h - 0.5], -1)
        passes = [(img, c, False)]
        if flip:
            passes.append((img.flip(-1), torch.stack([sw - 1 - c[:, 0], c[:, 1]], -1), True))
        for x, cc, flipped in passes:
            cmaps = center_map(cc, codec, sh, sw).to(x.dtype)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                beliefs = model(x, cmaps)
            outs = []
            for b in beliefs:
                b = b.float()
                if flipped:
                    b = b.flip(-1)[:, _flip_channels(codec.num_parts, b.shape[1])]
                if b.shape[-2:] != (out_h, out_w):
                    b = F.interpolate(b, size=(out_h, out_w), mode="bilinear", align_corners=False)
                outs.append(b)
            total = outs if total is None else [a + b for a, b in zip(total, outs)]
            count += 1
    return [t / count for t in total]


def predict(model, images: torch.Tensor, centers: torch.Tensor | None = None, flip: bool = False,
            scales: Sequence[float] | None = None, device: str | torch.device | None = None,
            amp: bool = False) -> list[torch.Tensor]:
    """Per-stage keypoints: a list (one per stage) of (N, P, 3) tensors = x, y in input pixels and
    the peak belief as confidence, decoded with ``targets.decode``.

    ``images`` is (N, 3, H, W) or a single (3, H, W) image; ``device`` defaults to the model's.
    See ``predict_beliefs`` for ``centers``, ``flip``, ``scales``.
    """
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W) or (3, H, W); got {tuple(images.shape)}")
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        images = images.to(dev, torch.float32)
        if centers is not None:
            centers = torch.as_tensor(centers, dtype=torch.float32, device=dev).reshape(-1, 2)
        beliefs = predict_beliefs(model, images, centers, flip=flip, scales=scales, amp=amp)
        return [decode(b, model.codec) for b in beliefs]
    finally:
        model.train(was_training)


def evaluate(model, dataset, batch_size: int = 32, device: str | torch.device | None = "auto",
             flip: bool = False, scales: Sequence[float] | None = None,
             thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso", auc_max: float | None = 0.5,
             num_workers: int = 0, amp: bool = False, progress: bool = False) -> pd.DataFrame:
    """Run ``model`` over ``dataset`` and return the tidy metrics table for every stage.

    ``dataset[i]`` is a dict with ``image`` (3, H, W) at the model's input size, ``keypoints``
    (P, 3) in the same pixels and optionally ``center`` (2,) (used for the centre map; the image
    centre otherwise). The model is moved to ``device`` ("auto" picks cuda > mps > cpu; None keeps
    the model where it is) and restored to its previous train/eval mode afterwards.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(dataset) == 0:
        raise ValueError("cannot evaluate on an empty dataset")
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    model.to(dev)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         num_workers=num_workers, pin_memory=dev.type == "cuda")
    per_stage: list[list[torch.Tensor]] | None = None
    gts = []
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="eval", disable=not progress, leave=False):
            images = batch["image"].to(dev, torch.float32, non_blocking=True)
            if images.shape[-1] != model.codec.input_size or images.shape[-2] != model.codec.input_size:
                raise ValueError(f"dataset images are {images.shape[-2]}x{images.shape[-1]} but the model "
                                 f"expects {model.codec.input_size}x{model.codec.input_size}")
            centers = batch.get("center")
            centers = centers.to(dev, torch.float32) if centers is not None else None
            beliefs = predict_beliefs(model, images, centers, flip=flip, scales=scales, amp=amp)
            preds = [decode(b, model.codec).cpu() for b in beliefs]
            per_stage = [[p] for p in preds] if per_stage is None else [a + [p] for a, p in zip(per_stage, preds)]
            gts.append(torch.as_tensor(batch["keypoints"]).float())
    finally:
        model.train(was_training)
    preds = [torch.cat(p) for p in per_stage]
    return keypoint_metrics(preds, torch.cat(gts), thresholds, normalize, auc_max=auc_max)
