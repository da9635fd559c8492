"""Tables about predictions: where a model's beliefs and keypoints go wrong, and which sample shows it.

Where :mod:`cpm_lab.metrics` scores predictions (PCK, AUC, EPE), this module takes them apart:

* :func:`side_swaps`: how often a left/right part is predicted nearer its MIRROR joint than
  itself, per stage (a tidy DataFrame).
* :func:`error_taxonomy`: every labelled joint's prediction at every stage classed as good,
  jitter, inversion, swap or miss (after Ronchi & Perona, ICCV 2017), as a tidy DataFrame.
* :func:`decoder_table`: the same beliefs decoded by every decoder of ``targets.DECODERS`` and
  scored with PCK, side by side.
* :func:`part_confusion`: on which TRUE joint each part's belief map fires, as a parts x joints
  matrix (left/right confusions light up the mirror column).
* :func:`feature_importances`: how much each stage of a fitted ``PoseMachine`` rests on image
  features and on which parts' context (a tidy DataFrame).
* :func:`confusion_example`, :func:`most_improved` and :func:`side_fix_example`: pick a sample by
  a stated criterion (a map firing on both sides that later stages repair; the largest error drop
  between stages; an estimate on the wrong arm that a later stage moves to the right one).

All are pure functions of arrays (torch tensors or numpy, any device) and return numpy arrays,
sample indices or tidy pandas DataFrames; the figures that draw them are in
:mod:`cpm_lab.viz.pose_machine`. Keypoints are (N, P, 3) in input pixels (x, y, flag; a joint
counts when :func:`cpm_lab.targets.labelled_mask` says it is labelled), beliefs (N, P+1, G, G)
or (N, P, G, G) on the grid of :func:`cpm_lab.targets.cell_index` (``stride`` input pixels per
cell), stages are 1-based, and left/right mirrors are ``skeleton.FLIP_INDEX`` (LSP-14 order).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from . import skeleton
from .targets import CodecConfig, cell_index, labelled_mask
from .utils import to_numpy

__all__ = ["ERROR_KINDS", "confusion_example", "decoder_table", "error_taxonomy", "feature_importances",
           "most_improved", "part_confusion", "side_fix_example", "side_swaps", "wrong_side_ratio"]

STRIDE = CodecConfig.stride  # input pixels per belief cell, the CPM's and the pose machine's 8


# ---------------------------------------------------------------------------------------------
# Left/right confusions
# ---------------------------------------------------------------------------------------------
def side_swaps(stage_preds: Sequence, keypoints) -> pd.DataFrame:
    """How often a left/right part is predicted nearer to its MIRROR joint than to itself.

    Args:
        stage_preds: per-stage decoded keypoints, each (N, P, 3) (``cpm_lab.inference.predict(...).keypoints``).
        keypoints: (N, P, 3) ground truth in the same pixels; LSP-14 order (``skeleton.FLIP_INDEX``).
    Returns:
        tidy DataFrame with columns ``stage`` (1-based), ``part`` (short name, plus ``"all L/R"``
        pooling every left/right part), ``swapped`` (fraction of samples where both the part
        and its mirror are visible and the prediction lies strictly nearer the mirror's true
        position) and ``n`` (such samples). A prediction that lands anywhere at random is
        "swapped" about half the time, so values near 0.5 mean the sides are not told apart.
    """
    gt = to_numpy(keypoints)
    if gt.ndim != 3 or gt.shape[1] != skeleton.NUM_JOINTS:
        raise ValueError(f"keypoints must be (N, {skeleton.NUM_JOINTS}, 3) in LSP order; got {gt.shape}")
    mirror = list(skeleton.FLIP_INDEX)
    sided = [c for c in range(gt.shape[1]) if mirror[c] != c]
    vis = labelled_mask(gt)
    both = vis & vis[:, mirror]
    rows = []
    for t, pred in enumerate(stage_preds, start=1):
        pr = to_numpy(pred)
        if pr.shape[:2] != gt.shape[:2]:
            raise ValueError(f"stage {t} predictions {pr.shape} do not match keypoints {gt.shape}")
        d_own = np.linalg.norm(pr[..., :2] - gt[..., :2], axis=-1)
        d_mir = np.linalg.norm(pr[..., :2] - gt[:, mirror, :2], axis=-1)
        swapped = (d_mir < d_own) & both
        for c in sided:
            n = int(both[:, c].sum())
            rows.append((t, skeleton.SHORT_NAMES[c], swapped[:, c].sum() / n if n else np.nan, n))
        n = int(both[:, sided].sum())
        rows.append((t, "all L/R", swapped[:, sided].sum() / n if n else np.nan, n))
    return pd.DataFrame(rows, columns=["stage", "part", "swapped", "n"])


def part_confusion(beliefs, keypoints, stride: int = STRIDE) -> np.ndarray:
    """Mean belief of every part channel in the cell of every TRUE joint.

    Args:
        beliefs: (N, P+1, G, G) or (N, P, G, G) beliefs of one stage (torch or numpy).
        keypoints: (N, P, 3) ground truth in input pixels; invisible joints, and joints outside
            the image, are skipped.
        stride: input pixels per belief cell.
    Returns:
        (P, P) array M: ``M[c, j]`` = mean over images of part c's belief at the cell holding
        joint j (NaN where joint j is never visible). A detector that knows left from right has
        most of row c on the diagonal; one that confuses the sides also lights up ``M[c, mirror(c)]``.
    """
    b = to_numpy(beliefs)
    kp = to_numpy(keypoints)
    if b.ndim != 4 or kp.ndim != 3 or kp.shape[0] != b.shape[0] or kp.shape[-1] != 3:
        raise ValueError(f"beliefs must be (N, C, G, G) and keypoints (N, P, 3) for the same N; got "
                         f"{b.shape} and {kp.shape}")
    n, p = kp.shape[:2]
    if b.shape[1] < p:
        raise ValueError(f"beliefs have {b.shape[1]} channels for {p} keypoints")
    gh, gw = b.shape[-2:]
    cols = cell_index(np.nan_to_num(kp[..., 0]), stride)
    rows = cell_index(np.nan_to_num(kp[..., 1]), stride)
    ok = labelled_mask(kp) & (rows >= 0) & (rows < gh) & (cols >= 0) & (cols < gw)
    at = b[np.arange(n)[:, None], :p, np.clip(rows, 0, gh - 1), np.clip(cols, 0, gw - 1)]  # (N, P_joint, P_channel)
    at = np.where(ok[..., None], at, 0.0)
    count = ok.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (at.sum(0) / count[:, None]).T  # (channel, joint)


#: The classes of :func:`error_taxonomy`, best first.
ERROR_KINDS = ("good", "jitter", "inversion", "swap", "miss")


def _side(name: str) -> str:
    return name.split("_")[0] if name.startswith(("right_", "left_")) else "centre"


def error_taxonomy(stage_preds: Sequence, keypoints, good: float = 0.1, near: float = 0.2) -> pd.DataFrame:
    """Class every labelled joint's prediction at every stage by what went wrong.

    After Ronchi & Perona ("Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation",
    ICCV 2017), for one person per image. Distances are divided by the person's torso size
    (``metrics.normalizer(..., "torso")``, the PCK normaliser), so the classes nest with PCK:

    * **good**: within ``good`` (0.1) torso of its own joint (PCK@0.1 counts it);
    * **jitter**: within ``near`` (0.2) but not ``good`` (PCK@0.2 counts good + jitter);
    * otherwise, looking at the person's other true joints within ``near`` of the prediction:
      **swap** if the nearest of them is the part's mirror joint, the other side's same joint
      (a right wrist predicted on the left wrist); **inversion** if it is another joint of the
      same side of the body (a right wrist on the right elbow; for the neck and head top, the
      other of the two). Ronchi & Perona call a left/right confusion an inversion and keep
      "swap" for another person's joint; this single-person table names the two confusions
      context is meant to fix separately instead;
    * **miss**: none of these (a distractor, the background, another body part of the other side).

    Args:
        stage_preds: per-stage decoded keypoints, each (N, 14, 3) in input pixels.
        keypoints: (N, 14, 3) ground truth, LSP-14 order; unlabelled joints and people without a
            torso size are left out.
        good, near: the two thresholds as fractions of the torso size.
    Returns:
        tidy DataFrame with columns ``stage`` (1-based), ``part`` (short name, and ``"all"``
        pooling every part), ``kind`` (one of ``ERROR_KINDS``), ``count`` and ``share`` (of that
        stage and part's classified joints; the shares of a stage and part sum to 1).
    """
    from .metrics import normalizer

    if not 0 < good < near:
        raise ValueError(f"need 0 < good < near; got good={good}, near={near}")
    gt = to_numpy(keypoints).astype(np.float64)
    if gt.ndim != 3 or gt.shape[1] != skeleton.NUM_JOINTS:
        raise ValueError(f"keypoints must be (N, {skeleton.NUM_JOINTS}, 3) in LSP order; got {gt.shape}")
    length = normalizer(gt, "torso")                                     # (N,)
    lab = labelled_mask(gt) & np.isfinite(length)[:, None]
    p_all = gt.shape[1]
    mirror = np.array(skeleton.FLIP_INDEX)
    sides = [_side(n) for n in skeleton.JOINT_NAMES]
    same_side = np.array([[q != p and q != mirror[p] and sides[q] == sides[p] for q in range(p_all)]
                          for p in range(p_all)])                         # (P, P): inversion candidates
    rows = []
    for t, pred in enumerate(stage_preds, start=1):
        pr = to_numpy(pred).astype(np.float64)
        if pr.shape[:2] != gt.shape[:2]:
            raise ValueError(f"stage {t} predictions {pr.shape} do not match keypoints {gt.shape}")
        # d[n, p, q]: prediction of part p to true joint q, in torso units (inf where q is unlabelled)
        d = np.linalg.norm(pr[:, :, None, :2] - gt[:, None, :, :2], axis=-1) / length[:, None, None]
        d = np.where(labelled_mask(gt)[:, None, :], d, np.inf)
        d = np.nan_to_num(d, nan=np.inf)
        own = d[:, np.arange(p_all), np.arange(p_all)]
        mir = d[:, np.arange(p_all), mirror]
        mir = np.where(mirror[None] != np.arange(p_all)[None], mir, np.inf)
        inv = np.where(same_side[None], d, np.inf).min(-1)
        kind = np.full(own.shape, 4)                                      # miss
        kind = np.where((inv <= near) & (inv < mir), 2, kind)            # inversion
        kind = np.where((mir <= near) & (mir <= inv), 3, kind)           # swap
        kind = np.where(own <= near, 1, kind)                            # jitter
        kind = np.where(own <= good, 0, kind)                            # good
        for c, name in [*enumerate(skeleton.SHORT_NAMES), (None, "all")]:
            k = kind[lab[:, c], c] if c is not None else kind[lab]
            counts = np.bincount(k, minlength=len(ERROR_KINDS))
            total = max(int(counts.sum()), 1)
            rows += [(t, name, kname, int(counts[i]), counts[i] / total) for i, kname in enumerate(ERROR_KINDS)]
    return pd.DataFrame(rows, columns=["stage", "part", "kind", "count", "share"])


def decoder_table(beliefs, keypoints, codec, methods: Sequence[str] | None = None,
                  thresholds: Sequence[float] = (0.05, 0.1, 0.2)) -> pd.DataFrame:
    """PCK of one set of beliefs under every decoder.

    Args:
        beliefs: (N, P(+1), h, w) beliefs of one stage (e.g. the last) over N images.
        keypoints: (N, P, 3) ground truth in the same input pixels.
        codec: the model's ``targets.CodecConfig`` (stride and sigma of the maps).
        methods: decoders (default all of ``targets.DECODERS``).
        thresholds: PCK thresholds (torso, all labelled joints).
    Returns:
        tidy DataFrame with columns ``method``, ``threshold``, ``value`` (PCK over all joints)
        and ``count``, in the order of ``methods``.
    """
    import torch

    from .metrics import keypoint_metrics
    from .targets import DECODERS, decode

    maps = torch.as_tensor(beliefs)
    rows = []
    for method in methods or DECODERS:
        kp = decode(maps, codec, method=method)
        table = keypoint_metrics([kp], keypoints, thresholds, "torso", auc_max=None)
        table = table[(table["part"] == "mean") & (table["metric"] == "pck")]
        rows += [(method, float(r.threshold), float(r.value), int(r.count)) for r in table.itertuples()]
    return pd.DataFrame(rows, columns=["method", "threshold", "value", "count"])


# ---------------------------------------------------------------------------------------------
# Picking an example
# ---------------------------------------------------------------------------------------------
def mirror_beliefs(beliefs, keypoints, part: int | str, stride: int = STRIDE,
                   min_separation: float = 3.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How bright ``part``'s belief map is at the part's own true position and at its mirror joint's.

    Args:
        beliefs: (N, P+1, G, G) or (N, P, G, G) beliefs of one stage over N images.
        keypoints: (N, P, 3) ground truth in input pixels, LSP-14 order (``skeleton.FLIP_INDEX``).
        part: a left/right joint, index or name.
        stride: input pixels per belief cell.
        min_separation: the two joints' cells must be at least this many cells apart (Euclidean),
            so that the 3x3 windows read below do not overlap.
    Returns:
        ``(own, mirror, ok)``, each (N,): the map's maximum over the 3x3 cells around the true
        cell of ``part`` and of its mirror joint, and whether both joints are labelled and far
        enough apart (own and mirror are meaningless where ``ok`` is False).
    """
    from scipy.ndimage import maximum_filter

    b, kp = to_numpy(beliefs), to_numpy(keypoints)
    if b.ndim != 4 or kp.ndim != 3 or kp.shape[1] != skeleton.NUM_JOINTS or kp.shape[0] != b.shape[0]:
        raise ValueError(f"beliefs must be (N, C, G, G) and keypoints (N, {skeleton.NUM_JOINTS}, 3) for the "
                         f"same N; got {b.shape} and {kp.shape}")
    p = skeleton.part_index(part, skeleton.NUM_JOINTS)
    q = skeleton.FLIP_INDEX[p]
    if q == p:
        raise ValueError(f"part {part!r} has no left/right mirror")
    g = b.shape[-1]
    cells = cell_index(np.nan_to_num(kp[:, [p, q], :2]), stride).clip(0, g - 1)  # (N, 2, xy)
    ok = labelled_mask(kp[:, [p, q]]).all(-1)
    ok &= np.linalg.norm(cells[:, 0] - cells[:, 1], axis=-1) >= min_separation
    pooled = maximum_filter(b[:, p], size=(1, 3, 3), mode="constant")
    n = np.arange(len(b))
    return pooled[n, cells[:, 0, 1], cells[:, 0, 0]], pooled[n, cells[:, 1, 1], cells[:, 1, 0]], ok


def wrong_side_ratio(beliefs, keypoints, part: int | str, stride: int = STRIDE,
                     min_separation: float = 3.0) -> np.ndarray:
    """For one stage's beliefs (N, P(+1), G, G), ``part``'s map at the mirror joint divided by
    its value at the part's own joint (``mirror_beliefs``), one value per image where both joints
    are labelled and at least ``min_separation`` cells apart (the same images at every stage, so
    two stages' ratios pair up image by image). 1: the two sides look the same to the map; 0: no
    trace on the other side."""
    own, mirror, ok = mirror_beliefs(beliefs, keypoints, part, stride, min_separation)
    return mirror[ok] / np.maximum(own[ok], 1e-6)


def wrong_side_beliefs(stage_beliefs: Sequence, keypoints, parts: Sequence[int | str] = ("right_wrist", "left_wrist"),
                       stride: int = STRIDE, min_separation: float = 3.0) -> pd.DataFrame:
    """Per stage, how strongly each part's map fires on the OTHER side (``mirror_beliefs``).

    Returns a tidy DataFrame with columns ``stage`` (1-based), ``part`` (short name, plus
    ``"pooled"`` over ``parts``), ``median_ratio`` (median over images of the belief at the
    mirror joint / the belief at the own joint: 1 = the two sides look the same to the map,
    0 = no trace on the other side), ``own_brighter`` (share of images with ratio < 1) and ``n``
    (images where both joints are labelled and at least ``min_separation`` cells apart).
    """
    rows = []
    for t, beliefs in enumerate(stage_beliefs, start=1):
        pooled = []
        for part in parts:
            ratio = wrong_side_ratio(beliefs, keypoints, part, stride, min_separation)
            pooled.append(ratio)
            name = skeleton.SHORT_NAMES[skeleton.part_index(part, skeleton.NUM_JOINTS)]
            rows.append(_ratio_row(t, name, ratio))
        rows.append(_ratio_row(t, "pooled", np.concatenate(pooled)))
    return pd.DataFrame(rows, columns=["stage", "part", "median_ratio", "own_brighter", "n"])


def _ratio_row(stage: int, part: str, ratio: np.ndarray) -> tuple:
    if not len(ratio):
        return stage, part, float("nan"), float("nan"), 0
    return stage, part, float(np.median(ratio)), float((ratio < 1).mean()), len(ratio)


def confusion_example(stage_beliefs: Sequence, keypoints, part: int | str = "right_wrist", first: int = 1,
                      last: int | None = None, min_separation: float = 3.0) -> int:
    """Index of a sample where ``part``'s map fires on BOTH sides at stage ``first`` and on its own side
    at stage ``last``: a clean picture of a left/right confusion being repaired.

    Beliefs are read as in ``mirror_beliefs`` (the maximum over the 3x3 cells around each true
    joint), divided by the map's maximum. Score = min(own, mirror) at ``first`` (both sides lit)
    + (own - mirror) at ``last`` (the mirror faded). Samples where the part or its mirror joint
    is unlabelled, or the two lie closer than ``min_separation`` cells, are skipped.

    Args:
        stage_beliefs: per-stage beliefs over the same N images, each (N, P+1, G, G), on a grid of
            ``STRIDE`` (8) input pixels per cell.
        keypoints: (N, P, 3) ground truth, LSP-14 order (``skeleton.FLIP_INDEX`` gives the mirror).
        part: a left/right joint, index or name.
        first, last: 1-based stages (``last`` defaults to the final stage).
    Returns:
        the sample index (int). Raises ValueError when no sample qualifies.
    """
    maps = [to_numpy(b) for b in stage_beliefs]
    last = len(maps) if last is None else int(last)
    if not (1 <= first <= len(maps) and 1 <= last <= len(maps)):
        raise ValueError(f"first and last must be in 1..{len(maps)}, got {first}, {last}")
    p = skeleton.part_index(part, skeleton.NUM_JOINTS)

    def own_and_mirror(stage):
        own, mirror, ok = mirror_beliefs(maps[stage - 1], keypoints, p, STRIDE, min_separation)
        peak = np.maximum(maps[stage - 1][:, p].max((1, 2)), 1e-12)
        return own / peak, mirror / peak, ok

    own_f, mir_f, ok = own_and_mirror(first)
    own_l, mir_l, _ = own_and_mirror(last)
    if not ok.any():
        q = skeleton.FLIP_INDEX[p]
        raise ValueError(f"no sample shows {skeleton.JOINT_NAMES[p]} and {skeleton.JOINT_NAMES[q]} "
                         f"at least {min_separation} cells apart")
    score = np.minimum(own_f, mir_f) + own_l - mir_l
    return int(np.where(ok, score, -np.inf).argmax())


def most_improved(stage_preds: Sequence, keypoints, parts: Sequence[int | str] = ("right_wrist", "left_wrist"),
                  first: int = 1, last: int | None = None) -> int:
    """Index of the sample whose ``parts`` improve most from stage ``first`` to stage ``last``.

    Args:
        stage_preds: per-stage decoded keypoints, each (N, P, 3) (``cpm_lab.inference.predict(...).keypoints``).
        keypoints: (N, P, 3) ground truth.
        parts: joints whose summed pixel error counts; samples where any is unlabelled
            (``labelled_mask``) are skipped.
        first, last: 1-based stages (``last`` defaults to the final stage).
    Returns:
        the sample index (int). Raises ValueError when no sample shows all ``parts``.
    """
    preds = [to_numpy(p) for p in stage_preds]
    gt = to_numpy(keypoints)
    last = len(preds) if last is None else int(last)
    if not (1 <= first <= len(preds) and 1 <= last <= len(preds)):
        raise ValueError(f"first and last must be in 1..{len(preds)}, got {first}, {last}")
    if gt.ndim != 3 or preds[0].shape[:2] != gt.shape[:2]:
        raise ValueError(f"keypoints {gt.shape} do not match the predictions {preds[0].shape}")
    idx = [skeleton.part_index(q, gt.shape[1]) for q in parts]
    err = [np.linalg.norm(preds[s - 1][:, idx, :2] - gt[:, idx, :2], axis=-1).sum(-1) for s in (first, last)]
    ok = labelled_mask(gt[:, idx]).all(-1)
    if not ok.any():
        raise ValueError(f"no sample has all of {list(parts)} visible")
    return int(np.where(ok, err[0] - err[1], -np.inf).argmax())


def side_fix_example(stage_preds: Sequence, keypoints, part: int | str = "right_wrist", first: int = 1,
                     last: int | None = None) -> int:
    """Index of the sample whose ``part`` estimate moves most from the wrong side at stage ``first``
    to the right side at stage ``last``.

    "Wrong side" means nearer the true position of the mirror joint (``skeleton.FLIP_INDEX``) than
    its own, as in :func:`side_swaps`; "right side" the opposite. Among samples with both joints
    labelled that are on the wrong side at ``first`` and on the right side at ``last``, the one
    with the largest drop in the part's pixel error wins.

    Args:
        stage_preds: per-stage decoded keypoints, each (N, P, 3) in input pixels.
        keypoints: (N, P, 3) ground truth, LSP-14 order.
        part: a left/right joint, index or name.
        first, last: 1-based stages (``last`` defaults to the final stage).
    Returns:
        the sample index (int). Raises ValueError when no sample is fixed this way.
    """
    preds = [to_numpy(p) for p in stage_preds]
    gt = to_numpy(keypoints)
    last = len(preds) if last is None else int(last)
    if not (1 <= first <= len(preds) and 1 <= last <= len(preds)):
        raise ValueError(f"first and last must be in 1..{len(preds)}, got {first}, {last}")
    p = skeleton.part_index(part, gt.shape[1])
    q = skeleton.FLIP_INDEX[p]
    if q == p:
        raise ValueError(f"{skeleton.JOINT_NAMES[p]} has no mirror joint")

    def own_and_mirror(stage):
        xy = preds[stage - 1][:, p, :2]
        return np.linalg.norm(xy - gt[:, p, :2], axis=-1), np.linalg.norm(xy - gt[:, q, :2], axis=-1)

    own_f, mir_f = own_and_mirror(first)
    own_l, mir_l = own_and_mirror(last)
    ok = labelled_mask(gt[:, [p, q]]).all(-1) & (mir_f < own_f) & (own_l < mir_l)
    if not ok.any():
        raise ValueError(f"no sample has its {skeleton.JOINT_NAMES[p]} on the wrong side at stage {first} "
                         f"and on the right side at stage {last}")
    return int(np.where(ok, own_f - own_l, -np.inf).argmax())


# ---------------------------------------------------------------------------------------------
# What each stage of a pose machine relies on
# ---------------------------------------------------------------------------------------------
def _context_kind(block: str) -> str:
    """Family of a context block name: ``own`` (c), ``ring{r}`` (r{r}_{dir}), ``peak`` or ``max``."""
    if block == "c":
        return "own"
    if block.startswith("peak"):
        return "peak"
    if block.startswith("max"):
        return "max"
    return block.split("_")[0].replace("r", "ring")


def feature_importances(model) -> pd.DataFrame:
    """Impurity-based feature importances of every stage's forest, as a tidy table.

    Columns: ``stage`` (1-based), ``feature`` (name), ``family`` (``hog``, ``hogring``, ``rgb``,
    ``pos`` or ``context``), ``part`` (short name of the part whose beliefs a context feature
    summarises; empty for image features), ``kind`` (context block family: ``own``,
    ``ring{r}``, ``peak``, ``max``; empty otherwise) and ``importance`` (sums to 1 per stage).
    Needs a fitted ``PoseMachine`` with a forest estimator (``extra_trees`` or ``random_forest``).
    """
    models = getattr(model, "models_", None)
    if not models:
        raise ValueError("model must be a fitted PoseMachine (call fit(...) or PoseMachine.load first)")
    rows = []
    for t, est in enumerate(models, start=1):
        if not hasattr(est, "feature_importances_"):
            raise ValueError(f"stage {t}'s {type(est).__name__} has no feature_importances_; use "
                             "estimator='extra_trees' or 'random_forest'")
        names = model.feature_names(t)
        imp = np.asarray(est.feature_importances_, dtype=np.float64)
        if len(imp) != len(names):
            raise ValueError(f"stage {t}: {len(imp)} importances for {len(names)} feature names")
        for name, value in zip(names, imp):
            if ":" in name:
                part, blk = name.split(":", 1)
                rows.append((t, name, "context", part, _context_kind(blk), value))
            else:
                rows.append((t, name, name.split("_", 1)[0], "", "", value))
    return pd.DataFrame(rows, columns=["stage", "feature", "family", "part", "kind", "importance"])
