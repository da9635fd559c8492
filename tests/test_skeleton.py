import numpy as np
import pytest

from cpm_lab import skeleton


def test_lsp_order_and_flip_pairs():
    assert skeleton.NUM_JOINTS == 14
    assert skeleton.JOINT_NAMES[0] == "right_ankle" and skeleton.JOINT_NAMES[13] == "head_top"
    for a, b in skeleton.FLIP_PAIRS:
        assert skeleton.JOINT_NAMES[a].replace("right", "left") == skeleton.JOINT_NAMES[b]
    perm = np.array(skeleton.FLIP_INDEX)
    assert (perm[perm] == np.arange(14)).all()  # an involution


def test_flip_keypoints_mirrors_and_swaps():
    kp = np.zeros((14, 3), np.float32)
    kp[:, 2] = 1
    kp[0] = (10, 50, 1)   # right ankle
    kp[5] = (30, 50, 1)   # left ankle
    out = skeleton.flip_keypoints(kp, width=100)
    assert out[5, 0] == pytest.approx(89) and out[0, 0] == pytest.approx(69)
    np.testing.assert_allclose(skeleton.flip_keypoints(out, 100), kp)


def test_mpii_mapping_is_exact_for_limbs():
    rng = np.random.default_rng(0)
    mpii = np.concatenate([rng.uniform(0, 100, (16, 2)), np.ones((16, 1))], axis=1)
    lsp = skeleton.to_lsp(mpii, "mpii")
    np.testing.assert_allclose(lsp[6, :2], mpii[10, :2], rtol=1e-6)   # right wrist
    np.testing.assert_allclose(lsp[12, :2], mpii[8, :2], rtol=1e-6)   # neck <- upper neck
    np.testing.assert_allclose(lsp[13, :2], mpii[9, :2], rtol=1e-6)   # head top


def test_coco_mapping_approximations_and_visibility():
    coco = np.zeros((17, 3))
    coco[:, 2] = 2
    coco[5, :2] = (40, 50)   # left shoulder
    coco[6, :2] = (20, 50)   # right shoulder
    coco[0, :2] = (30, 30)   # nose
    lsp = skeleton.to_lsp(coco, "coco")
    np.testing.assert_allclose(lsp[12, :2], (30, 50))            # neck = shoulder midpoint
    np.testing.assert_allclose(lsp[13, :2], (30, 14), atol=1e-5)  # head top beyond the nose
    assert lsp[12, 2] == 2 and lsp[8, 2] == 2
    coco[6, 2] = 1  # right shoulder labelled but occluded: the neck built from it is too
    lsp = skeleton.to_lsp(coco, "coco")
    assert lsp[12, 2] == 1 and lsp[13, 2] == 1 and lsp[8, 2] == 1 and lsp[9, 2] == 2
    coco[5, 2] = 0  # left shoulder missing: every joint built from it is missing, at (0, 0)
    lsp = skeleton.to_lsp(coco, "coco")
    assert lsp[12, 2] == 0 and lsp[13, 2] == 0 and lsp[9, 2] == 0 and lsp[8, 2] == 1
    assert lsp[12, :2].tolist() == [0, 0]


def test_mapping_errors():
    with pytest.raises(ValueError, match="unknown keypoint source"):
        skeleton.to_lsp(np.zeros((16, 3)), "h36m")
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, 3\)"):
        skeleton.to_lsp(np.zeros((16, 3)), "coco")


def test_part_index_accepts_names_short_names_and_indices():
    assert skeleton.part_index("right_wrist") == skeleton.part_index("r_wrist") == skeleton.part_index(6) == 6
    assert skeleton.part_index(np.int64(13)) == 13 and skeleton.part_index(40, None) == 40
    for bad, num_parts, match in [("elbow", 14, "unknown part 'elbow'"), (14, 14, r"index in 0..13, got 14"),
                                  (-1, 14, "got -1"), (True, 14, "got True"), (2.0, 14, "got 2.0"),
                                  (3, 3, r"index in 0..2, got 3")]:
        with pytest.raises(ValueError, match=match):
            skeleton.part_index(bad, num_parts)
