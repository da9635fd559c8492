"""``metrics.convention_table``: one set of predictions scored under every common PCK convention
(torso diagonals, visible-only, bbox, neck-head, MPII head box, HRNet crop/10, observer-centric
labels), checked against values worked out by hand on three toy people, and on the official CPM
LSP predictions (the benchmark convention must give the paper's 84.32%)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cpm_lab import skeleton
from cpm_lab.metrics import CONVENTION_COLUMNS, convention_table, normalizer, observer_centric, pck
from cpm_lab.targets import OCCLUDED, VISIBLE

J = skeleton.JOINT_INDEX

pytestmark = pytest.mark.usefixtures("one_thread")

#: A frontal person (facing the camera: their right on the image's left), x, y in pixels.
#: Torso diagonals |l_shoulder - r_hip| = |r_shoulder - l_hip| = |(30, 40)| = 50; neck-head 20;
#: joints span x 20..80, y 0..140, so the bbox's longest side is 140.
FRONTAL = {"head_top": (50, 0), "neck": (50, 20),
           "right_shoulder": (35, 20), "left_shoulder": (65, 20),
           "right_elbow": (25, 45), "left_elbow": (75, 45),
           "right_wrist": (20, 70), "left_wrist": (80, 70),
           "right_hip": (35, 60), "left_hip": (65, 60),
           "right_knee": (35, 100), "left_knee": (65, 100),
           "right_ankle": (35, 140), "left_ankle": (65, 140)}


def skeleton_from(xy: dict[str, tuple[float, float]], scale: float = 1.0) -> np.ndarray:
    kp = np.zeros((14, 3))
    for name, (x, y) in xy.items():
        kp[J[name]] = (scale * x, scale * y, VISIBLE)
    return kp


def mirrored(xy: dict) -> dict:
    """The same image positions with left and right labels exchanged: a person facing away."""
    swap = {"right": "left", "left": "right"}
    return {(swap[n.split("_")[0]] + n[n.index("_"):] if n.split("_")[0] in swap else n): v for n, v in xy.items()}


def toy():
    """Three people (ground truth) and predictions with seven wrong joints.

    person 0, frontal, torso 50 (both diagonals), bbox 140, neck-head 20:
        e1: right and left wrists swapped (each 60 px off), e2: right knee 8 px off,
        e7: head top 5 px off;
    person 1, facing away (the frontal positions with left/right labels exchanged), same sizes:
        e3: left elbow OCCLUDED (flag 1) and predicted 15 px off;
    person 2, frontal at twice the size: official torso 100, but the left hip moved to
        (120, 160) so the other diagonal |r_shoulder (70, 40) - l_hip| = |(50, 120)| = 130;
        bbox 280 (x 40..160, y 0..280), neck-head 40:
        e4: right ankle 24 px off, e6: neck 28 px off.
    """
    gt = np.stack([skeleton_from(FRONTAL), skeleton_from(mirrored(FRONTAL)), skeleton_from(FRONTAL, 2.0)])
    gt[2, J["left_hip"], :2] = (120, 160)
    gt[1, J["left_elbow"], 2] = OCCLUDED
    pred = gt.copy()
    pred[:, :, 2] = 1.0
    pred[0, [J["right_wrist"], J["left_wrist"]], :2] = gt[0, [J["left_wrist"], J["right_wrist"]], :2]  # e1
    pred[0, J["right_knee"], 1] += 8     # e2
    pred[0, J["head_top"], 0] += 5       # e7
    pred[1, J["left_elbow"], 1] += 15    # e3
    pred[2, J["right_ankle"], 1] += 24   # e4
    pred[2, J["neck"], 1] += 28          # e6
    return pred, gt


#: MPII head boxes: diagonals 50, 50, 180 -> head sizes 0.6 x = 30, 30, 108 px.
HEAD_BOXES = np.array([[35, -15, 65, 25], [35, -15, 65, 25], [0, 0, 108, 144]], dtype=float)
#: Person crop sides in pixels -> crop/10 lengths 20, 20, 50.
CROP_SIZES = np.array([200.0, 200.0, 500.0])

#: (normalize, joints, labels, threshold) -> (joints counted, joints correct), worked out by hand.
#: Errors in px: e1 60 (x2), e2 8, e3 15 (occluded), e4 24, e6 28, e7 5; per-person thresholds:
EXPECTED = {
    # torso 50, 50, 100 -> 10, 10, 20: e1 e1 e3 e4 e6 miss
    ("torso", "labelled", "person-centric", 0.2): (42, 37),
    # other diagonal 50, 50, 130 -> 10, 10, 26: e4 (24) now hits
    ("torso-other", "labelled", "person-centric", 0.2): (42, 38),
    # the occluded e3 is not counted: e1 e1 e4 e6 miss out of 41
    ("torso", "visible", "person-centric", 0.2): (41, 37),
    # bbox 140, 140, 280 -> 28, 28, 56: only e1 e1 miss
    ("bbox", "labelled", "person-centric", 0.2): (42, 40),
    # neck-head 20, 20, 40 -> 4, 4, 8: all seven miss
    ("neck-head", "labelled", "person-centric", 0.2): (42, 35),
    # head 30, 30, 108 -> 6, 6, 21.6: e7 (5) hits, the other six miss
    ("head", "labelled", "person-centric", 0.2): (42, 36),
    # crop/10 20, 20, 50 -> 4, 4, 10: all seven miss
    ("crop/10", "labelled", "person-centric", 0.2): (42, 35),
    # at 0.5 -> 10, 10, 25: e2 (8), e4 (24), e7 (5) hit; e1 e1 e3 e6 miss
    ("crop/10", "labelled", "person-centric", 0.5): (42, 38),
    # observer-centric: the wrist swap e1 is forgiven; e3 e4 e6 miss
    ("torso", "labelled", "observer-centric", 0.2): (42, 39),
}


def test_each_convention_gives_its_hand_computed_pck():
    pred, gt = toy()
    table = convention_table(pred, gt, thresholds=(0.2,), crop_sizes=CROP_SIZES, head_boxes=HEAD_BOXES)
    assert list(table.columns) == CONVENTION_COLUMNS
    got = {(r.normalize, r.joints, r.labels, r.threshold): (r["count"], r.value) for _, r in table.iterrows()}
    assert set(got) == set(EXPECTED)
    for key, (count, correct) in EXPECTED.items():
        assert got[key][0] == count, key
        assert got[key][1] == pytest.approx(correct / count), key
    assert table.iloc[0].convention == "torso, official diagonal (LSP benchmark)"
    assert len(table) == len(EXPECTED) and table.convention.nunique() == len(EXPECTED) - 1  # crop/10 twice


def test_optional_conventions_need_their_inputs():
    pred, gt = toy()
    table = convention_table(pred, gt, thresholds=(0.1, 0.2))
    assert set(table.normalize) == {"torso", "torso-other", "bbox", "neck-head"}
    assert len(table) == 6 * 2  # six conventions (two of them "torso") x two thresholds
    with pytest.raises(ValueError, match="crop_sizes") as info:
        normalizer(gt, "crop/10")
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="crop_sizes"):
        pck(pred, gt, (0.5,), "crop/10")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        normalizer(gt, "crop/10", crop_sizes=[200.0, 200.0])


def test_new_normalizers():
    _, gt = toy()
    np.testing.assert_allclose(normalizer(gt, "torso"), [50, 50, 100])
    np.testing.assert_allclose(normalizer(gt, "torso-other"), [50, 50, 130])
    np.testing.assert_allclose(normalizer(gt, "crop/10", crop_sizes=CROP_SIZES), [20, 20, 50])
    np.testing.assert_allclose(normalizer(gt, "crop/10", crop_sizes=256), [25.6] * 3)
    gt[2, J["right_shoulder"], 2] = 0  # the other diagonal is missing: fall back to the official one
    np.testing.assert_allclose(normalizer(gt, "torso-other"), [50, 50, 100])


def test_observer_centric_relabels_by_image_side():
    _, gt = toy()
    frontal, away = gt[0], gt[1]
    np.testing.assert_array_equal(observer_centric(frontal[None])[0], frontal)
    oc = observer_centric(away[None])[0]
    np.testing.assert_array_equal(oc[:, :2], frontal[:, :2])        # back to image-side labels
    assert oc[J["right_elbow"], 2] == OCCLUDED and oc[J["left_elbow"], 2] == VISIBLE  # flags move too
    np.testing.assert_array_equal(observer_centric(away[None])[0], observer_centric(oc[None])[0])
    # a pair with an unlabelled joint keeps its labels
    part = away.copy()
    part[J["left_wrist"], 2] = 0
    out = observer_centric(part[None])[0]
    np.testing.assert_array_equal(out[[J["right_wrist"], J["left_wrist"]]], part[[J["right_wrist"], J["left_wrist"]]])
    np.testing.assert_array_equal(out[J["right_knee"], :2], frontal[J["right_knee"], :2])
    with pytest.raises(ValueError, match="LSP-14"):
        observer_centric(np.zeros((2, 16, 3)))


def test_observer_centric_scoring_forgives_a_left_right_swap():
    pred, gt = toy()
    one = slice(0, 1)  # person 0: wrists swapped (plus e2, e7, which hit at 0.2 of the torso)
    pc = pck(pred[one], gt[one], (0.2,))
    oc = pck(observer_centric(pred[one, :, :2]), observer_centric(gt[one]), (0.2,))
    assert pc.set_index("part").loc["r_wrist", "value"] == 0.0
    assert oc.set_index("part").loc["r_wrist", "value"] == 1.0
    assert oc.set_index("part").loc["mean", "value"] == 1.0


def test_official_predictions_under_every_convention():
    """The official LSP_6s predictions (LSP test images 1001-2000, original pixels) against
    LSP's joints, loaded as ``cpm-lab score`` loads them. crop/10 uses the official protocol's
    person box: the image height is brought to 0.8 of the 368 px box, so its side is h / 0.8."""
    from cpm_lab.data.specs import default_data_root, make_dataset
    from cpm_lab.scoring import read_predictions, score_conventions

    root = default_data_root()
    path, joints = root / "reference" / "LSP_prediction_model_LSP_6s.mat", root / "lsp" / "joints.mat"
    if not path.is_file() or not joints.is_file() or not (root / "lsp" / "images" / "im1001.jpg").is_file():
        pytest.skip(f"official LSP_6s predictions, LSP joints.mat or images not found under {root}")
    dataset = make_dataset(f"lsp:{root / 'lsp'}", 64, split="test")
    table = score_conventions(read_predictions(path), dataset, thresholds=(0.2, 0.5))
    official = table.iloc[0]
    assert (official.normalize, official.joints, official.labels) == ("torso", "labelled", "person-centric")
    assert official.value == pytest.approx(0.8432, abs=1e-4) and official["count"] == 14000
    assert set(table.normalize) >= {"torso-other", "bbox", "neck-head"}
    oc = table[table.labels == "observer-centric"].iloc[0]
    assert oc.value > official.value + 0.04  # 89.14%: forgiving left/right swaps
    assert set(table[table.normalize == "crop/10"].threshold) == {0.2, 0.5}
    # the README's conventions table says what these predictions score: PCK@0.2, crop/10 at its own 0.5
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    shown = table[(table.threshold == 0.2) & (table.normalize != "crop/10")]["value"].tolist()
    shown += table[(table.threshold == 0.5) & (table.normalize == "crop/10")]["value"].tolist()
    for value in shown:
        assert f"| {100 * value:.2f} |" in readme or f"| **{100 * value:.2f}** |" in readme, f"{100 * value:.2f}"
