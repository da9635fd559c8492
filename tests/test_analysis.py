"""Tables about predictions (cpm_lab.analysis): side swaps, part confusions, example pickers, importances."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cpm_lab import skeleton
from cpm_lab.analysis import (
    confusion_example,
    feature_importances,
    mirror_beliefs,
    most_improved,
    part_confusion,
    side_swaps,
    wrong_side_beliefs,
)
from cpm_lab.data import SyntheticPoses
from cpm_lab.models import PoseMachine

R_WRIST, L_WRIST = skeleton.JOINT_INDEX["right_wrist"], skeleton.JOINT_INDEX["left_wrist"]


@pytest.fixture(scope="module")
def tiny_pm():
    """A 3-stage machine fitted on 12 small images (seconds)."""
    train = SyntheticPoses(12, 64, "standard", seed=0)
    return PoseMachine(num_stages=3, image_size=64, n_estimators=4, n_jobs=1).fit(train, seed=0, progress=False)


def test_part_confusion_and_side_swaps_on_constructed_beliefs():
    kp = np.zeros((2, 14, 3), np.float32)
    for j in range(14):  # every joint in its own cell of a 16x16 grid
        kp[:, j] = (8 * j + 3.5, 8 * (j % 4) + 3.5, 1)
    kp[1, 0, 2] = 0  # right ankle missing in image 1
    b = np.zeros((2, 15, 16, 16), np.float32)
    for j in range(14):
        r, c = int(kp[0, j, 1] // 8), int(kp[0, j, 0] // 8)
        b[:, j, r, c] = 1.0
    b[:, R_WRIST] = b[:, L_WRIST]  # the right-wrist map fires on the LEFT wrist only
    m = part_confusion(b, kp)
    assert m.shape == (14, 14)
    assert m[R_WRIST, L_WRIST] == 1 and m[R_WRIST, R_WRIST] == 0 and m[L_WRIST, L_WRIST] == 1
    assert m[0, 0] == 1  # ankle averaged over the one image that shows it
    kp[:, 0, 2] = 0
    assert np.isnan(part_confusion(b, kp)[:, 0]).all()

    gt = torch.as_tensor(kp)
    gt[:, :, 2] = 1
    table = side_swaps([gt, gt[:, list(skeleton.FLIP_INDEX)]], gt)
    pooled = table[table["part"] == "all L/R"].set_index("stage")["swapped"]
    assert pooled[1] == 0 and pooled[2] == 1
    sided = {skeleton.SHORT_NAMES[c] for c in range(14) if skeleton.FLIP_INDEX[c] != c}
    assert set(table["part"]) == sided | {"all L/R"}


def test_part_confusion_skips_unlabelled_and_off_grid_joints():
    kp = np.zeros((1, 14, 3), np.float32)
    for j in range(14):
        kp[0, j] = (8 * j + 3.5, 3.5, 1)
    kp[0, 1, :2] = np.nan          # flagged but no position: not labelled
    kp[0, 2, 0] = -0.6             # x < -0.5 lies in cell -1: off the grid
    kp[0, 3, 0] = 8 * 16 - 0.5     # the first pixel of cell 16: off a 16-cell grid
    kp[0, 4, 0] = 8 * 16 - 0.6     # still in the last cell
    b = np.ones((1, 15, 16, 16), np.float32)
    m = part_confusion(torch.from_numpy(b), kp)
    assert np.isnan(m[:, [1, 2, 3]]).all()
    assert (m[:, [0, 4]] == 1).all()


def test_most_improved_picks_the_largest_drop():
    gt = torch.zeros(3, 14, 3)
    gt[..., 2] = 1
    first, last = gt.clone(), gt.clone()
    first[0, R_WRIST, 0] += 5
    first[2, L_WRIST, 0] += 30
    first[1, R_WRIST, 0] += 50
    gt[1, L_WRIST, 2] = 0  # sample 1 improves most but hides a wrist: skipped
    assert most_improved([first, last], gt) == 2
    with pytest.raises(ValueError, match="first and last"):
        most_improved([first, last], gt, first=3)


def test_most_improved_skips_joints_without_a_position():
    gt = torch.zeros(2, 14, 3)
    gt[..., 2] = 1
    first, last = gt.clone(), gt.clone()
    first[0, R_WRIST, 0] += 5
    gt[1, L_WRIST, :2] = float("nan")  # flagged but unlabelled (NaN position): its error is unknown
    assert most_improved([first, last], gt) == 0


def test_feature_importance_table(tiny_pm):
    pm = tiny_pm
    table = feature_importances(pm)
    sums = table.groupby("stage")["importance"].sum()
    np.testing.assert_allclose(sums.to_numpy(), 1.0, atol=1e-6)
    assert "context" not in set(table[table["stage"] == 1]["family"])
    ctx = table[(table["stage"] == 3) & (table["family"] == "context")]
    assert len(ctx) == len(pm.context_feature_names()) and set(ctx["part"]) == set(skeleton.SHORT_NAMES)
    assert set(ctx["kind"]) == {"own", "ring1", "ring2", "ring4", "peak", "max"}
    broken = PoseMachine(pm.config)
    broken.models_ = [object()] * 3
    with pytest.raises(ValueError, match="feature_importances_"):
        feature_importances(broken)
    with pytest.raises(ValueError, match="fitted"):
        feature_importances(PoseMachine(pm.config))


def test_confusion_example_finds_a_repaired_left_right_confusion():
    kp = np.zeros((3, 14, 3), np.float32)
    kp[..., 2] = 1
    kp[:, R_WRIST, :2] = (3.5, 3.5)      # cell (0, 0)
    kp[:, L_WRIST, :2] = (99.5, 99.5)    # cell (12, 12)
    first = np.full((3, 15, 16, 16), 0.01, np.float32)
    last = first.copy()
    first[:, R_WRIST, 0, 0] = last[:, R_WRIST, 0, 0] = 0.5   # every map finds the right wrist
    first[1, R_WRIST, 12, 12] = 0.5                           # sample 1: stage 1 also fires on the left wrist
    first[2, R_WRIST, 12, 12] = last[2, R_WRIST, 12, 12] = 0.5  # sample 2: and never stops
    assert confusion_example([first, last], kp, "r_wrist") == 1
    kp[1, L_WRIST, 2] = 0
    assert confusion_example([first, last], kp, "right_wrist") != 1
    with pytest.raises(ValueError, match="mirror"):
        confusion_example([first, last], kp, "neck")


def test_mirror_beliefs_and_the_wrong_side_table():
    kp = np.zeros((3, 14, 3), np.float32)
    kp[:, :, 2] = 1
    kp[:, R_WRIST, :2] = (3.5, 3.5)      # cell (0, 0)
    kp[:, L_WRIST, :2] = (83.5, 3.5)     # cell (0, 10)
    kp[2, L_WRIST, :2] = (11.5, 3.5)     # image 2: one cell apart, too close to tell the windows apart
    stage1 = np.zeros((3, 15, 16, 16), np.float32)
    stage1[:, R_WRIST, 0, 0] = 1.0
    stage1[:, R_WRIST, 1, 10] = 0.5       # within the 3x3 window around the left wrist
    stage1[:, L_WRIST, 0, 10] = 1.0
    stage2 = stage1.copy()
    stage2[:, R_WRIST, 1, 10] = 0.0       # the right-wrist map no longer fires on the left wrist
    own, mirror, ok = mirror_beliefs(stage1, kp, "right_wrist")
    assert ok.tolist() == [True, True, False] and own[0] == 1.0 and mirror[0] == 0.5
    table = wrong_side_beliefs([stage1, stage2], kp).set_index(["stage", "part"])
    assert table.loc[(1, "r_wrist"), "median_ratio"] == pytest.approx(0.5)
    assert table.loc[(2, "r_wrist"), "median_ratio"] == 0.0 and table.loc[(2, "r_wrist"), "n"] == 2
    assert table.loc[(1, "l_wrist"), "median_ratio"] == 0.0 and table.loc[(1, "pooled"), "n"] == 4
    with pytest.raises(ValueError, match="no left/right mirror"):
        mirror_beliefs(stage1, kp, "neck")


def test_side_fix_example_finds_the_wrist_moved_from_the_wrong_arm():
    from cpm_lab.analysis import side_fix_example

    r, left = skeleton.JOINT_INDEX["right_wrist"], skeleton.JOINT_INDEX["left_wrist"]
    truth = np.zeros((3, 14, 3), np.float32)
    truth[..., 2] = 2
    truth[:, r, :2], truth[:, left, :2] = (20, 50), (80, 50)
    first, last = truth.copy(), truth.copy()
    first[0, r, :2] = (78, 50)       # wrong arm at stage 1, right one at the end: fixed by 58 px
    first[1, r, :2] = (30, 50)       # right arm throughout
    first[2, r, :2] = (79, 50)       # wrong arm at stage 1 ...
    last[2, r, :2] = (75, 50)        # ... and still wrong at the end
    assert side_fix_example([first, last], truth, "right_wrist") == 0
    with pytest.raises(ValueError, match="no sample has its right_wrist on the wrong side"):
        side_fix_example([first, last], truth, "right_wrist", first=2)
    with pytest.raises(ValueError, match="no mirror joint"):
        side_fix_example([first, last], truth, "neck")



def test_error_taxonomy_classes_one_hand_built_prediction_each():
    from cpm_lab.analysis import ERROR_KINDS, error_taxonomy

    J = skeleton.JOINT_INDEX
    truth = np.zeros((1, 14, 3))
    truth[..., 2] = 2
    for name, x in (("right", 30.0), ("left", 70.0)):             # a person facing the camera, torso 50 px
        for k, joint in enumerate(("shoulder", "elbow", "wrist", "hip", "knee", "ankle")):
            truth[0, J[f"{name}_{joint}"], :2] = (x, 20.0 + 10 * k)
    truth[0, J["left_shoulder"], :2] = (70.0, 20.0)
    truth[0, J["right_hip"], :2] = (30.0, 50.0)                   # |l_shoulder - r_hip| = 50 px
    truth[0, J["neck"], :2], truth[0, J["head_top"], :2] = (50.0, 10.0), (50.0, 0.0)
    pred = truth.copy()
    pred[0, J["right_wrist"], :2] += (2.0, 0.0)                   # 0.04 torso: good
    pred[0, J["right_elbow"], :2] += (7.0, 0.0)                   # 0.14 torso: jitter
    pred[0, J["right_knee"], :2] = truth[0, J["left_knee"], :2] + (1, 0)     # on the mirror joint: swap
    pred[0, J["left_ankle"], :2] = truth[0, J["left_elbow"], :2] + (0, 2)    # on its own side's elbow: inversion
    pred[0, J["right_shoulder"], :2] = (200.0, 200.0)             # nowhere: miss
    table = error_taxonomy([pred], truth)
    kind = table[table["count"] > 0].set_index("part")["kind"]
    assert (kind["r_wrist"], kind["r_elbow"], kind["r_knee"], kind["l_ankle"], kind["r_shoulder"]) == \
        ("good", "jitter", "swap", "inversion", "miss")
    everything = table[table["part"] == "all"].set_index("kind")
    assert list(everything.index) == list(ERROR_KINDS)
    assert everything["count"].to_dict() == dict(good=10, jitter=1, inversion=1, swap=1, miss=1)
    assert everything["share"].sum() == pytest.approx(1.0)
    truth[0, J["left_knee"], 2] = 0                               # an unlabelled joint is neither scored nor a target
    again = error_taxonomy([pred], truth).set_index(["part", "kind"])["count"]
    assert again[("l_knee", "good")] == 0 and again[("r_knee", "miss")] == 1 and again[("l_ankle", "inversion")] == 1
    with pytest.raises(ValueError, match="good < near"):
        error_taxonomy([pred], truth, good=0.3, near=0.2)


def test_decoder_table_scores_each_decoder_on_the_same_beliefs():
    from cpm_lab.analysis import decoder_table
    from cpm_lab.models import CPM
    from cpm_lab.targets import DECODERS, encode

    codec = CPM.from_preset("tiny").codec
    g = torch.Generator().manual_seed(0)
    truth = torch.cat([30 + 60 * torch.rand(6, 14, 2, generator=g), torch.full((6, 14, 1), 2.0)], -1)
    beliefs, _ = encode(truth, codec)                     # exact Gaussians at sub-pixel positions
    table = decoder_table(beliefs, truth, codec, thresholds=(0.01, 0.2))
    assert list(table["method"].unique()) == list(DECODERS) and (table["count"] == 6 * 14).all()
    value = table.set_index(["method", "threshold"])["value"]
    assert value[("parabola", 0.01)] == 1.0 and value[("argmax", 0.01)] < 0.5       # quantisation shows at 1%
    assert value[("parabola", 0.2)] == 1.0 and value[("dark", 0.2)] == 1.0 and value[("argmax", 0.2)] < 1.0
