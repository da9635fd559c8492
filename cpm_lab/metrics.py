"""Keypoint metrics per stage and per part: PCK (torso / bbox / head / crop normalised), AUC, EPE,
and one set of predictions scored under every common convention side by side (``convention_table``).

All metric functions are pure: they take predicted and ground-truth keypoints (tensors or
arrays of shape (N, P, 3) = x, y, joint flag/confidence, in pixels of the same image) and return
a tidy :class:`pandas.DataFrame` with one row per (stage, part, metric, threshold)::

    stage  part        metric  normalize  joints    threshold  value   count
    1      r_ankle     pck     torso      labelled  0.2        0.93    250
    1      mean        pck     torso      labelled  0.2        0.95    3480
    ...

Definitions
-----------
* Which ground-truth joints are scored is ``joints``: ``"labelled"`` (default: every joint with
  a known position, flag > 0 in ``cpm_lab.targets``, occluded ones included, as the LSP
  benchmark counts all 14 joints) or ``"visible"`` (flag VISIBLE only). The ``joints`` column
  names the choice in every row. Joints with non-finite coordinates never count. A prediction
  that is NaN counts as a miss (infinite distance).
* ``d`` is the Euclidean distance in pixels between prediction and ground truth. PCK@alpha is the
  fraction of joints with ``d <= alpha * L`` where ``L`` is the sample's normalising length,
  computed from the labelled ground truth whatever ``joints`` is:

  - ``"torso"`` (LSP person-centric PCK, "following evalLSP_official" in the official CPM test
    code): ``L = |left_shoulder - right_hip|``; if either joint is unlabelled the other diagonal
    ``|right_shoulder - left_hip|`` is used; if both are, the sample is left out.
  - ``"torso-other"``: the other diagonal first, ``L = |right_shoulder - left_hip|``, falling
    back to the official ``|left_shoulder - right_hip|`` where it is unlabelled: what a code base
    that reads the diagonal the other way round reports; on a turned torso the two differ.
  - ``"bbox"``: ``L`` = the longest side of the bounding box of the labelled joints.
  - ``"head"`` (MPII PCKh): ``L = 0.6 x`` the diagonal of the annotated head box, which must be
    given (``head_boxes``, (N, 4) x0, y0, x1, y1); PCKh@0.5 is MPII's benchmark metric.
  - ``"neck-head"``: ``L = |neck - head_top|`` (both labelled), a stand-in for the head size
    when no head box exists (LSP-14). It is NOT MPII PCKh, and tables say so.
  - ``"crop/10"``: ``L = crop side / 10``, the side of the square person crop in pixels of the
    same image as the keypoints (given as ``crop_sizes``, (N,) or one number for all). This is
    the microsoft / HRNet SimpleBaseline ``accuracy()`` convention, which normalises heatmap
    coordinates by heatmap size / 10 (the same in relative terms, the heatmap covering the crop)
    and thresholds at 0.5, i.e. ``d <= 0.05 x`` the crop side. Unlike here, that code also pools
    per joint first (the mean of per-joint accuracies), counts ``d < thr`` strictly and skips
    joints whose target x or y is at most 1 heatmap pixel (it marks missing ones as (0, 0)).
    Its numbers depend on how big the crop is around the person (e.g. 1.25 x the person box in
    those code bases).
  - ``"px"``: ``L = 1``, i.e. thresholds are in pixels.

  Samples whose ``L`` is missing or zero are left out of normalised metrics.
* AUC is the area under the PCK-vs-alpha curve for alpha in ``[0, auc_max]`` divided by
  ``auc_max`` (so it lies in [0, 1]). For the step-shaped empirical curve this integral is exact:
  ``AUC = mean(1 - min(d / L, auc_max) / auc_max)``; no threshold grid is involved.
* EPE is the mean end-point error ``d`` in pixels (normalisation does not apply; only missing
  ground-truth joints are left out).
* Part ``"mean"`` pools ALL included joints of all parts (a joint-weighted average), not the mean
  of the per-part values; ``count`` says how many joints each row averages.
* Left and right: LSP-14 labels are person-centric (PC): "right" is the person's own right, on
  the image's left for someone facing the camera; the CPM paper evaluates LSP with PC labels.
  Observer-centric (OC) scoring relabels each left/right pair of both predictions and ground
  truth by image side (``observer_centric``), which forgives a prediction that swaps a person's
  left and right; some earlier LSP results were reported with OC labels, which score higher and
  are not comparable with PC ones (see the CPM release's issue #49 on PC and OC labels).

Conventions side by side
------------------------
Published PCK numbers on the "same" benchmark differ by the normalising length, the joints
counted, the threshold and PC vs OC labels. ``convention_table(pred, gt)`` scores one set of
predictions under each (one row per convention and threshold: the pooled mean PCK and the
number of joints counted); its first row, the official torso diagonal over all labelled joints
with PC labels at 0.2, is the LSP benchmark number.

``pck_table`` pivots the tidy table into the stages x thresholds view people read, and
``part_table`` into the parts x thresholds view of one stage. Running a model over a dataset to
get such a table is ``cpm_lab.inference.evaluate``.
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from . import skeleton
from .targets import labelled_mask, visible_mask

NORMALIZATIONS = ("torso", "torso-other", "bbox", "head", "neck-head", "crop/10", "px")
#: How tables name each normalisation (``normalize`` column values are the keys).
NORMALIZATION_LABELS = {"torso": "torso", "torso-other": "torso (other diagonal)", "bbox": "bbox",
                        "head": "head (MPII PCKh)", "neck-head": "neck-head (not MPII PCKh)",
                        "crop/10": "crop/10 (HRNet accuracy())", "px": "pixels"}
JOINT_SETS = ("labelled", "visible")
#: The two torso diagonals used by ``normalize="torso"``, in order of preference: the official
#: LSP evaluation uses left shoulder - right hip.
TORSO_JOINTS: tuple[tuple[int, int], ...] = (
    (skeleton.JOINT_INDEX["left_shoulder"], skeleton.JOINT_INDEX["right_hip"]),
    (skeleton.JOINT_INDEX["right_shoulder"], skeleton.JOINT_INDEX["left_hip"]),
)
#: The segment used by ``normalize="neck-head"``.
NECK_HEAD_JOINTS: tuple[int, int] = (skeleton.JOINT_INDEX["neck"], skeleton.JOINT_INDEX["head_top"])
#: MPII's head size is this fraction of the head box diagonal.
MPII_HEAD_FACTOR = 0.6
#: ``normalize="crop/10"``: the normalising length is the crop side divided by this.
CROP_DIVISOR = 10.0
#: The threshold the HRNet / SimpleBaseline ``accuracy()`` uses with ``"crop/10"``.
HRNET_THRESHOLD = 0.5
LABEL_CONVENTIONS = ("person-centric", "observer-centric")
CONVENTION_COLUMNS = ["convention", "normalize", "joints", "labels", "threshold", "value", "count"]
METRIC_COLUMNS = ["stage", "part", "metric", "normalize", "joints", "threshold", "value", "count"]


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


def normalizer(gt, normalize: str = "torso", head_boxes=None, crop_sizes=None) -> np.ndarray:
    """Per-sample normalising length ``L`` in pixels, shape (N,); NaN where it is undefined.

    See the module docstring for the definition of each ``normalize`` option; ``head_boxes``
    (N, 4) = x0, y0, x1, y1 in pixels is required by (and only used for) ``"head"``, and
    ``crop_sizes`` (N,) (or one number for all samples) = the side of each person's square crop
    in pixels by (and only for) ``"crop/10"``.
    """
    gt = _as_array(gt, "gt")
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"unknown normalize {normalize!r}; choose one of {NORMALIZATIONS}")
    n = gt.shape[0]
    vis = labelled_mask(gt)
    if normalize == "px":
        return np.ones(n)
    if normalize == "head":
        if head_boxes is None:
            raise ValueError("normalize='head' (MPII PCKh) needs the annotated head boxes (head_boxes); "
                             "'neck-head' uses the neck-head top segment instead, which is not MPII PCKh")
        boxes = np.asarray(head_boxes, dtype=np.float64)
        if boxes.shape != (n, 4):
            raise ValueError(f"head_boxes must have shape ({n}, 4) = x0, y0, x1, y1; got {boxes.shape}")
        length = MPII_HEAD_FACTOR * np.linalg.norm(boxes[:, 2:] - boxes[:, :2], axis=-1)
        return np.where(length > 0, length, np.nan)
    if normalize == "crop/10":
        if crop_sizes is None:
            raise ValueError("normalize='crop/10' needs the side of each person crop in pixels "
                             "(crop_sizes, shape (N,)); it is not derived from the keypoints")
        sides = np.asarray(crop_sizes, dtype=np.float64)
        if sides.ndim == 0:
            sides = np.full(n, float(sides))
        if sides.shape != (n,):
            raise ValueError(f"crop_sizes must have shape ({n},) (crop sides in pixels); got {sides.shape}")
        length = sides / CROP_DIVISOR
        return np.where(length > 0, length, np.nan)
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
        pairs = {"torso": TORSO_JOINTS, "torso-other": TORSO_JOINTS[::-1]}.get(normalize, (NECK_HEAD_JOINTS,))
        length = np.full(n, np.nan)
        for a, b in reversed(pairs):  # the first pair wins where it is available
            ok = vis[:, a] & vis[:, b]
            d = np.linalg.norm(gt[:, a, :2] - gt[:, b, :2], axis=-1)
            length = np.where(ok, d, length)
    return np.where(length > 0, length, np.nan)


def keypoint_distances(pred, gt, joints: str = "labelled") -> np.ndarray:
    """(N, P) pixel distances between predictions and ground truth; NaN where the ground-truth
    joint is not scored (unlabelled, or not visible with ``joints="visible"``), +inf where the
    prediction is NaN."""
    pred, gt = _as_array(pred, "pred"), _as_array(gt, "gt")
    if pred.shape[:2] != gt.shape[:2]:
        raise ValueError(f"pred has {pred.shape[:2]} (N, P) but gt has {gt.shape[:2]}")
    if joints not in JOINT_SETS:
        raise ValueError(f"unknown joints {joints!r}; choose one of {JOINT_SETS}")
    d = np.linalg.norm(pred[..., :2] - gt[..., :2], axis=-1)
    d = np.where(np.isfinite(d), d, np.inf)
    scored = labelled_mask(gt) if joints == "labelled" else visible_mask(gt)
    return np.where(scored, d, np.nan)


def _part_names(p: int) -> list[str]:
    return list(skeleton.SHORT_NAMES) if p == skeleton.NUM_JOINTS else [f"part{i}" for i in range(p)]


def _rows(stage, names, values_fn, metric, normalize, joints, threshold, mask) -> list[dict]:
    """One row per part and one pooled "mean" row; ``values_fn(m)`` averages over mask m."""
    rows = []
    for j, name in enumerate(names + ["mean"]):
        m = mask if name == "mean" else np.zeros_like(mask)
        if name != "mean":
            m[:, j] = mask[:, j]
        rows.append(dict(stage=stage, part=name, metric=metric, normalize=normalize, joints=joints,
                         threshold=threshold, value=values_fn(m), count=int(m.sum())))
    return rows


def keypoint_metrics(preds, gt, thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso",
                     auc_max: float | None = 0.5, epe: bool = True, stages: Sequence[int] | None = None,
                     joints: str = "labelled", head_boxes=None, crop_sizes=None) -> pd.DataFrame:
    """PCK at each threshold, AUC and EPE, per stage and per part, as a tidy DataFrame.

    Args:
        preds: predictions for ONE stage, shape (N, P, 3), or a sequence of them (one per
            stage), or an array (T, N, P, 3).
        gt: ground truth (N, P, 3) with the joint flag in the last column.
        thresholds: PCK thresholds alpha (fractions of the normalising length).
        normalize: one of ``NORMALIZATIONS``: "torso", "torso-other", "bbox", "head", "neck-head",
            "crop/10" or "px" (see module docstring).
        auc_max: upper end of the AUC range in normalised units; None skips AUC.
        epe: add the mean end-point error in pixels (metric "epe", threshold NaN).
        stages: stage labels (default 1..T).
        joints: "labelled" (every joint with a known position) or "visible".
        head_boxes: (N, 4) head boxes for ``normalize="head"``.
        crop_sizes: (N,) person crop sides in pixels for ``normalize="crop/10"``.
    Returns:
        DataFrame with columns ``METRIC_COLUMNS``: stage, part, metric, normalize, joints,
        threshold, value, count.
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
    norm = normalizer(gt, normalize, head_boxes, crop_sizes)  # (N,)
    names = _part_names(gt.shape[1])
    rows: list[dict] = []
    for stage, pred in zip(stages, stack):
        d = keypoint_distances(pred, gt, joints)
        gt_ok = ~np.isnan(d)
        with np.errstate(invalid="ignore", divide="ignore"):
            nd = d / norm[:, None]
        ok = gt_ok & np.isfinite(norm)[:, None]

        def mean_of(values, m):
            return float(values[m].mean()) if m.any() else float("nan")

        for t in thresholds:
            hit = (nd <= t).astype(np.float64)
            rows += _rows(stage, names, lambda m: mean_of(hit, m), "pck", normalize, joints, t, ok)
        if auc_max is not None:
            if auc_max <= 0:
                raise ValueError(f"auc_max must be > 0, got {auc_max}")
            area = 1.0 - np.minimum(np.nan_to_num(nd, nan=np.inf), auc_max) / auc_max
            rows += _rows(stage, names, lambda m: mean_of(area, m), "auc", normalize, joints, float(auc_max), ok)
        if epe:
            rows += _rows(stage, names, lambda m: mean_of(d, m), "epe", "px", joints, float("nan"), gt_ok)
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def pck(pred, gt, thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso",
        joints: str = "labelled", head_boxes=None, crop_sizes=None) -> pd.DataFrame:
    """PCK rows only (see ``keypoint_metrics``) for one stage's predictions (N, P, 3)."""
    return keypoint_metrics(pred, gt, thresholds, normalize, auc_max=None, epe=False, joints=joints,
                            head_boxes=head_boxes, crop_sizes=crop_sizes)


def auc(pred, gt, normalize: str = "torso", auc_max: float = 0.5, joints: str = "labelled") -> pd.DataFrame:
    """AUC rows only: normalised area under PCK(alpha) for alpha in [0, auc_max]."""
    return keypoint_metrics(pred, gt, (), normalize, auc_max=auc_max, epe=False, joints=joints)


def epe(pred, gt, joints: str = "labelled") -> pd.DataFrame:
    """Mean end-point error rows only (pixels)."""
    return keypoint_metrics(pred, gt, (), "px", auc_max=None, epe=True, joints=joints)


# ------------------------------------------------------------------------------------------------
# Conventions: left/right labels and one set of predictions scored every common way
# ------------------------------------------------------------------------------------------------
def _right_left_pairs() -> list[tuple[int, int]]:
    """``skeleton.FLIP_PAIRS`` as (right_ joint, left_ joint) index pairs."""
    return [(a, b) if skeleton.JOINT_NAMES[a].startswith("right_") else (b, a) for a, b in skeleton.FLIP_PAIRS]


def observer_centric(keypoints) -> np.ndarray:
    """Relabel left/right joints by image side: observer-centric (OC) labels.

    Within every left/right pair of ``skeleton.FLIP_PAIRS`` the joint with the smaller x takes
    the ``right_`` slot and the other the ``left_`` slot (a person facing the camera has their
    right on the image's left, so a frontal person is unchanged; a person facing away has each
    pair swapped). Each joint's whole row (x, y and flag) moves with it. A pair where either joint
    is unlabelled (``targets.labelled_mask``: flag 0 or non-finite) or whose x are equal keeps its
    labels. Applying this to both predictions and ground truth gives OC scoring, which forgives
    left/right swaps; LSP's own labels, and the CPM paper's LSP numbers, are person-centric.

    Args:
        keypoints: (..., 14, C) array or tensor in LSP-14 order, C >= 2 (x, y in pixels, then the
            joint flag; with C = 2 every finite joint counts as labelled, as for predictions).
    Returns:
        A new float64 array of the same shape.
    """
    if isinstance(keypoints, torch.Tensor):
        keypoints = keypoints.detach().cpu().numpy()
    kp = np.array(keypoints, dtype=np.float64)
    if kp.ndim < 2 or kp.shape[-2] != skeleton.NUM_JOINTS or kp.shape[-1] < 2:
        raise ValueError(f"observer_centric needs LSP-14 keypoints (..., 14, 3) = x, y, flag; got {kp.shape}")
    labelled = labelled_mask(kp)
    out = kp.copy()
    for right, left in _right_left_pairs():
        swap = (labelled[..., right] & labelled[..., left] & (kp[..., left, 0] < kp[..., right, 0]))[..., None]
        out[..., right, :] = np.where(swap, kp[..., left, :], kp[..., right, :])
        out[..., left, :] = np.where(swap, kp[..., right, :], kp[..., left, :])
    return out


def convention_table(pred, gt, thresholds: Sequence[float] = (0.2,), crop_sizes=None,
                     head_boxes=None) -> pd.DataFrame:
    """The same predictions scored under every common PCK convention, one row per convention
    and threshold, to see why published numbers differ.

    Conventions (rows in this order; ``normalize`` / ``joints`` as in ``keypoint_metrics``):

    ====================================================  =============  ========  ================
    convention                                            normalize      joints    labels
    ====================================================  =============  ========  ================
    torso, official diagonal (LSP benchmark)              torso          labelled  person-centric
    torso, other diagonal                                 torso-other    labelled  person-centric
    torso, visible joints only                            torso          visible   person-centric
    bbox of the joints                                    bbox           labelled  person-centric
    neck-head (stand-in, not MPII PCKh)                   neck-head      labelled  person-centric
    head box (MPII PCKh), only with ``head_boxes``        head           labelled  person-centric
    crop/10 (HRNet accuracy()), only with ``crop_sizes``  crop/10        labelled  person-centric
    torso, observer-centric labels                        torso          labelled  observer-centric
    ====================================================  =============  ========  ================

    The crop/10 rows come at ``thresholds`` plus 0.5 (``HRNET_THRESHOLD``, HRNet's default). The
    observer-centric row applies ``observer_centric`` to both predictions and ground truth, so its
    torso is the official diagonal of the relabelled ground truth.

    Args:
        pred: predictions (N, 14, C), C >= 2, x, y in pixels of the same image as ``gt`` (a third
            column is ignored: every finite prediction is scored and relabelled).
        gt: ground truth (N, 14, 3) with the joint flag in the last column.
        thresholds: PCK thresholds alpha (fractions of each convention's normalising length).
        crop_sizes: (N,) side of each person's square crop in pixels (or one number), for
            crop/10. For the official LSP protocol (the image height brought to 0.8 of the
            368 px box) it is the image height / 0.8.
        head_boxes: (N, 4) MPII head boxes x0, y0, x1, y1 in pixels, for the head row.
    Returns:
        DataFrame with columns ``CONVENTION_COLUMNS``: convention (a human label), normalize,
        joints, labels ("person-centric" / "observer-centric"), threshold, value (the pooled mean
        PCK over all included joints, the "mean" part of ``keypoint_metrics``) and count (joints
        counted).
    """
    pred, gt = _as_array(pred, "pred"), _as_array(gt, "gt")
    if gt.shape[1] != skeleton.NUM_JOINTS:
        raise ValueError(f"convention_table needs LSP-14 keypoints; got {gt.shape[1]} parts")
    thresholds = tuple(float(t) for t in thresholds)
    pc, oc = LABEL_CONVENTIONS
    specs = [("torso, official diagonal (LSP benchmark)", "torso", "labelled", pc, thresholds),
             ("torso, other diagonal", "torso-other", "labelled", pc, thresholds),
             ("torso, visible joints only", "torso", "visible", pc, thresholds),
             ("bbox of the joints", "bbox", "labelled", pc, thresholds),
             ("neck-head (stand-in, not MPII PCKh)", "neck-head", "labelled", pc, thresholds)]
    if head_boxes is not None:
        specs.append(("head box (MPII PCKh)", "head", "labelled", pc, thresholds))
    if crop_sizes is not None:
        crop_thresholds = tuple(sorted(set(thresholds) | {HRNET_THRESHOLD}))
        specs.append(("crop/10 (HRNet accuracy())", "crop/10", "labelled", pc, crop_thresholds))
    specs.append(("torso, observer-centric labels", "torso", "labelled", oc, thresholds))
    xy = pred[..., :2]
    rows: list[dict] = []
    for label, normalize, joints, labels, thrs in specs:
        p, g = (observer_centric(xy), observer_centric(gt)) if labels == oc else (xy, gt)
        table = pck(p, g, thrs, normalize, joints, head_boxes=head_boxes, crop_sizes=crop_sizes)
        for _, r in table[table["part"] == "mean"].iterrows():
            rows.append(dict(convention=label, normalize=normalize, joints=joints, labels=labels,
                             threshold=float(r["threshold"]), value=float(r["value"]), count=int(r["count"])))
    return pd.DataFrame(rows, columns=CONVENTION_COLUMNS)


def pck_table(table: pd.DataFrame, thresholds: Sequence[float] | None = None, part: str = "mean",
              metric: str = "pck") -> pd.DataFrame:
    """Pivot a tidy metrics table into stages (rows) x thresholds (columns) for one part.

    Column labels read e.g. ``"PCK@0.1 (torso)"``; the index is named ``stage``; ``attrs``
    holds ``joints`` (the joint set scored) and ``count`` (joints in the pooled rows).
    """
    sub = table[(table["metric"] == metric) & (table["part"] == part)]
    if thresholds is not None:
        sub = sub[sub["threshold"].isin([float(t) for t in thresholds])]
    if sub.empty:
        raise ValueError(f"no {metric!r} rows for part {part!r} in the table")
    wide = sub.pivot_table(index="stage", columns=["normalize", "threshold"], values="value", aggfunc="first")
    wide.columns = [f"{metric.upper()}@{thr:g} ({norm})" for norm, thr in wide.columns]
    wide.attrs.update(joints=str(sub["joints"].iloc[0]), count=int(sub["count"].iloc[0]))
    return wide


def part_table(table: pd.DataFrame, thresholds: Sequence[float] = (0.1, 0.2), stage: int | None = None,
               metric: str = "pck") -> pd.DataFrame:
    """Pivot a tidy metrics table into parts (rows, the pooled "mean" last) x thresholds
    (columns ``"PCK@0.1"``...) for one stage (default: the last), plus ``n``, the number of
    joints each row averages. The index is named ``part``; ``attrs`` holds ``stage``,
    ``normalize`` and ``joints``."""
    sub = table[table["metric"] == metric]
    if sub.empty:
        raise ValueError(f"no {metric!r} rows in the table")
    stage = int(sub["stage"].max()) if stage is None else int(stage)
    sub = sub[(sub["stage"] == stage) & sub["threshold"].isin([float(t) for t in thresholds])]
    if sub.empty:
        raise ValueError(f"no {metric!r} rows for stage {stage} at thresholds {list(thresholds)} in the table")
    wide = sub.pivot_table(index="part", columns="threshold", values="value", aggfunc="first", sort=False)
    parts = [p for p in sub["part"].drop_duplicates() if p != "mean"] + ["mean"]
    out = wide.reindex(index=parts, columns=sorted(wide.columns))
    out.columns = [f"{metric.upper()}@{t:g}" for t in out.columns]
    out["n"] = sub.groupby("part", sort=False)["count"].first().reindex(parts).astype(int)
    out.index.name = "part"
    out.attrs.update(stage=stage, normalize=str(sub["normalize"].iloc[0]), joints=str(sub["joints"].iloc[0]))
    return out
