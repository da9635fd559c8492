"""PCK / AUC / EPE and the tables people read, on hand-made predictions."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cpm_lab import skeleton
from cpm_lab.metrics import auc, epe, keypoint_metrics, normalizer, part_table, pck, pck_table

J = skeleton.JOINT_INDEX

pytestmark = pytest.mark.usefixtures("one_thread")


def person(n: int = 1) -> np.ndarray:
    """n identical ground-truth skeletons (14, 3): right shoulder (0, 0), left hip (30, 40) -> torso 50;
    left shoulder (30, 0), right hip (0, 40) -> other diagonal 50; neck (15, -5), head top (15, -25)
    -> head 20; all joints inside x 0..30, y -25..60 -> bbox longest side 85."""
    kp = np.zeros((14, 3), np.float32)
    kp[:, 2] = 1
    xy = {"right_shoulder": (0, 0), "left_hip": (30, 40), "left_shoulder": (30, 0), "right_hip": (0, 40),
          "neck": (15, -5), "head_top": (15, -25), "right_ankle": (0, 60), "left_ankle": (30, 60)}
    for name, (x, y) in xy.items():
        kp[J[name], :2] = (x, y)
    for name in ("right_knee", "left_knee", "right_wrist", "right_elbow", "left_elbow", "left_wrist"):
        kp[J[name], :2] = (15, 20)
    return np.repeat(kp[None], n, axis=0)


def shifted(gt: np.ndarray, dx: dict[int, float]) -> np.ndarray:
    pred = gt.copy()
    for j, d in dx.items():
        pred[:, j, 0] += d
    return pred


def value(df, part="mean", metric="pck", threshold=None, stage=1):
    rows = df[(df.part == part) & (df.metric == metric) & (df.stage == stage)]
    if threshold is not None:
        rows = rows[np.isclose(rows.threshold, threshold)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def test_normalizers_follow_their_definitions():
    gt = person(3)
    assert np.allclose(normalizer(gt, "torso"), 50)
    assert np.allclose(normalizer(gt, "neck-head"), 20)
    assert np.allclose(normalizer(gt, "bbox"), 85)
    assert np.allclose(normalizer(gt, "px"), 1)
    # the official diagonal (left shoulder - right hip) wins where the two differ
    gt[0, J["left_shoulder"], :2] = (60, 0)  # (60,0)-(0,40) -> 72.11; the other diagonal stays 50
    # torso falls back to the other diagonal, then to NaN
    gt[1, J["left_shoulder"], 2] = 0
    gt[1, J["right_shoulder"], :2] = (-30, 0)  # other diagonal: (-30,0)-(30,40) -> 72.11
    gt[2, [J["right_shoulder"], J["right_hip"]], 2] = 0
    torso = normalizer(gt, "torso")
    assert math.isclose(torso[0], math.hypot(60, 40), rel_tol=1e-6)
    assert math.isclose(torso[1], math.hypot(60, 40), rel_tol=1e-6) and np.isnan(torso[2])
    # bbox only uses visible joints
    gt2 = person(1)
    gt2[0, J["head_top"], 2] = 0
    assert np.allclose(normalizer(gt2, "bbox"), 65)  # y from -5 to 60
    with pytest.raises(ValueError, match="unknown normalize"):
        normalizer(gt, "shoulders")


def test_pck_on_hand_made_predictions_excludes_invisible_joints():
    gt = person(2)
    # sample 0: right wrist off by 6 px (0.12 torso), left wrist off by 12 px (0.24 torso)
    pred = shifted(gt, {J["right_wrist"]: 6.0, J["left_wrist"]: 12.0})
    pred[1] = gt[1]
    pred[1, J["head_top"], 0] += 100  # a miss ...
    gt[1, J["head_top"], 2] = 0       # ... on an invisible joint: excluded
    df = pck(pred, gt, thresholds=(0.1, 0.2), normalize="torso")
    assert set(df.columns) >= {"stage", "part", "metric", "threshold", "value", "count"}
    assert value(df, "r_wrist", threshold=0.1).value == 0.5
    assert value(df, "r_wrist", threshold=0.2).value == 1.0
    assert value(df, "l_wrist", threshold=0.2).value == 0.5
    assert value(df, "head_top", threshold=0.1).value == 1.0 and value(df, "head_top", threshold=0.1)["count"] == 1
    mean01 = value(df, threshold=0.1)
    assert mean01["count"] == 27 and math.isclose(mean01.value, 25 / 27)  # pooled over visible joints
    assert math.isclose(value(df, threshold=0.2).value, 26 / 27)
    # the same errors judged by the neck-head segment (20 px): 6 px = 0.3, 12 px = 0.6
    dfh = pck(pred, gt, thresholds=(0.5,), normalize="neck-head")
    # head normaliser undefined for sample 1 (head top invisible) -> it drops out entirely
    assert value(dfh, threshold=0.5)["count"] == 14 and value(dfh, "l_wrist", threshold=0.5)["count"] == 1
    assert value(dfh, "r_wrist", threshold=0.5).value == 1.0 and value(dfh, "l_wrist", threshold=0.5).value == 0.0
    # by bbox (85 px): 12 px = 0.14
    dfb = pck(pred, gt, thresholds=(0.1, 0.15), normalize="bbox")
    assert value(dfb, "l_wrist", threshold=0.1).value == 0.5 and value(dfb, "l_wrist", threshold=0.15).value == 1.0


def test_visible_only_mode_and_mpii_head_boxes():
    gt = person(2)
    gt[..., 2] = 2
    gt[0, J["right_wrist"], 2] = 1      # labelled but occluded
    gt[1, J["neck"], 2] = 0              # missing
    pred = shifted(gt, {J["right_wrist"]: 100.0})
    labelled = value(pck(pred, gt, thresholds=(0.2,)), threshold=0.2)
    visible = value(pck(pred, gt, thresholds=(0.2,), joints="visible"), threshold=0.2)
    assert labelled["count"] == 27 and labelled["joints"] == "labelled" and math.isclose(labelled.value, 25 / 27)
    assert visible["count"] == 26 and visible["joints"] == "visible" and math.isclose(visible.value, 25 / 26)
    # MPII PCKh: 0.6 x the head box diagonal (a 30 x 40 box -> 30 px); without boxes it refuses
    boxes = np.array([[0, 0, 30, 40], [0, 0, 60, 80]], dtype=float)
    assert np.allclose(normalizer(gt, "head", boxes), [30, 60])
    dfh = pck(shifted(gt, {J["head_top"]: 20.0}), gt, thresholds=(0.5,), normalize="head", head_boxes=boxes)
    assert value(dfh, "head_top", threshold=0.5).value == 0.5  # 20 px > 15 px, but <= 30 px
    with pytest.raises(ValueError, match="not MPII PCKh"):
        normalizer(gt, "head")
    with pytest.raises(ValueError, match="unknown joints"):
        pck(pred, gt, joints="hidden")


def test_nan_prediction_is_a_miss():
    gt = person(1)
    pred = gt.copy()
    pred[0, 0, :2] = np.nan
    df = pck(pred, gt, thresholds=(0.5,))
    assert value(df, "r_ankle", threshold=0.5).value == 0.0
    assert math.isclose(value(df, threshold=0.5).value, 13 / 14)


def test_auc_is_the_normalised_area_under_pck():
    gt = person(1)
    # normalised errors 0.1 on r_wrist, 0.3 on l_wrist, 1.0 (beyond range) on neck, 0 elsewhere
    pred = shifted(gt, {J["right_wrist"]: 5.0, J["left_wrist"]: 15.0, J["neck"]: 50.0})
    df = auc(pred, gt, normalize="torso", auc_max=0.5)
    row = value(df, metric="auc")
    expected = (11 * 1.0 + (1 - 0.1 / 0.5) + (1 - 0.3 / 0.5) + 0.0) / 14
    assert row.threshold == 0.5 and math.isclose(row.value, expected)
    assert math.isclose(value(df, "l_wrist", metric="auc").value, 0.4)
    # agrees with numerically integrating the PCK curve
    alphas = np.linspace(0, 0.5, 501)
    curve = pck(pred, gt, thresholds=alphas)
    curve = curve[curve.part == "mean"].sort_values("threshold")
    numeric = np.trapezoid(curve.value, curve.threshold) / 0.5
    assert math.isclose(numeric, expected, abs_tol=2e-3)


def test_epe_and_multi_stage_table():
    gt = person(2)
    p1 = shifted(gt, {0: 3.0, 1: 4.0})
    p2 = gt.copy()
    gt[1, 0, 2] = 0
    df = keypoint_metrics([p1, p2], gt, thresholds=(0.1, 0.2))
    assert sorted(df.stage.unique()) == [1, 2]
    e1 = value(df, "mean", metric="epe", stage=1)
    assert e1.normalize == "px" and e1["count"] == 27 and math.isclose(e1.value, (3 + 4 + 4) / 27)
    assert value(df, "mean", metric="epe", stage=2).value == 0.0
    assert math.isclose(value(epe(p1, gt), "r_knee", metric="epe").value, 4.0)
    table = pck_table(df, (0.1, 0.2))
    assert list(table.index) == [1, 2] and list(table.columns) == ["PCK@0.1 (torso)", "PCK@0.2 (torso)"]
    assert (table.loc[2] == 1.0).all()
    # a (T, N, P, 3) array works too
    df2 = keypoint_metrics(np.stack([p1, p2]), gt, thresholds=(0.1, 0.2))
    pd.testing.assert_frame_equal(df, df2)
    with pytest.raises(ValueError, match="shape"):
        pck(np.zeros((2, 14)), gt)


def test_part_table_lists_parts_then_the_pooled_mean():
    gt = person(4)
    pred = shifted(gt, {J["right_wrist"]: 1000.0})
    table = keypoint_metrics([pred, gt], gt, thresholds=(0.1, 0.2))
    last = part_table(table)
    assert list(last.index) == list(skeleton.SHORT_NAMES) + ["mean"]
    assert list(last.columns) == ["PCK@0.1", "PCK@0.2", "n"] and last.attrs["stage"] == 2
    assert (last["PCK@0.2"] == 1.0).all() and (last["n"].iloc[:-1] == 4).all() and last.loc["mean", "n"] == 56
    first = part_table(table, thresholds=(0.2,), stage=1)
    assert first.loc["r_wrist", "PCK@0.2"] == 0.0 and first.loc["mean", "PCK@0.2"] == pytest.approx(13 / 14)
    with pytest.raises(ValueError, match="stage 3"):
        part_table(table, stage=3)
