"""Classical Pose Machine: features, context layout, labels, stacking, persistence, CPM duck typing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from cpm_lab import inference, metrics
from cpm_lab.data import SyntheticPoses
from cpm_lab.models.pose_machine import PoseMachine, PoseMachineConfig
from cpm_lab.models.pose_machine_features import (
    DIRECTIONS,
    context_block_names,
    context_feature_names,
    context_features,
    image_feature_names,
    image_features,
    location_labels,
)
from cpm_lab.targets import CodecConfig, decode


def _arrays(ds, n):
    items = [ds[i] for i in range(n)]
    return torch.stack([it["image"] for it in items]), torch.stack([it["keypoints"] for it in items])


@pytest.fixture(scope="module")
def tiny_pm():
    """A 2-stage machine on 12 small images: seconds to fit, for API/persistence tests."""
    ds = SyntheticPoses(12, 64, "easy", seed=3)
    pm = PoseMachine(num_stages=2, image_size=64, n_estimators=4, n_jobs=1)
    return pm.fit(ds, seed=0, progress=False), ds


# --- image features ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [64, 128])
def test_image_feature_shape_matches_codec_grid(size):
    f = image_features(torch.rand(2, 3, size, size))
    g = CodecConfig(input_size=size).output_size
    assert f.shape == (2, g, g, len(image_feature_names())) and f.dtype == np.float32
    assert len(image_feature_names()) == 144 + 72 + 30 + 2
    assert len(image_feature_names(6)) == 16 * 6 + 8 * 6 + 30 + 2


def test_image_features_are_aligned_with_cells():
    img = torch.zeros(1, 3, 128, 128)
    img[:, :, :, 40:44] = 1.0  # a vertical bar inside cell column 5 (pixels 40..47)
    img[:, 0, 16:24, 96:104] = 0.5  # red square = exactly cell (row 2, col 12)
    f = image_features(img)[0]
    names = image_feature_names()
    hog = f[6:, :, [i for i, n in enumerate(names) if n.startswith("hog_")]]  # rows below the red square
    energy = hog.sum((0, 2))  # per cell column
    # The bar's edges put gradients in cell columns 4 and 5; a cell's 4 blocks span its 3x3
    # neighbourhood, so exactly columns 3..6 see them.
    assert energy[[3, 4, 5, 6]].min() > 0 and energy[:3].max() == 0 and energy[7:].max() == 0
    r = f[..., names.index("rgb_cell_R")]
    # The red cell, plus the white bar covering half of each of 16 cells in column 5.
    assert r[2, 12] == pytest.approx(0.5) and r.sum() == pytest.approx(0.5 + 16 * 0.5)
    assert f[3, 7, names.index("pos_x")] == pytest.approx((8 * 7 + 3.5) / 128)
    assert f[3, 7, names.index("pos_y")] == pytest.approx((8 * 3 + 3.5) / 128)
    # The ring window 3 cells east of (2, 9) is centred on the red cell (2, 12).
    assert f[2, 9, names.index("rgb_ring_E_R")] == pytest.approx(0.5 / 9)
    assert f[2, 12, names.index("rgb_ring_E_R")] == 0


def test_image_features_reject_bad_sizes():
    with pytest.raises(ValueError, match="multiple of 8"):
        image_features(torch.rand(1, 3, 100, 100))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        image_features(torch.rand(1, 1, 64, 64))


# --- context features ----------------------------------------------------------------------------
def test_context_layout_single_peak():
    p, g = 3, 16
    b = torch.zeros(1, p, g, g)
    b[0, 1, 5, 9] = 1.0    # part 1: main peak at row 5, col 9
    b[0, 1, 5, 10] = 0.8   # inside the suppression window: must not become peak 2
    b[0, 1, 12, 2] = 0.5   # second peak
    f = context_features(b, context_radii=(1, 2, 4), n_peaks=2, peak_suppression=2)
    block = context_block_names((1, 2, 4), 2)
    assert f.shape == (1, g, g, p * len(block)) == (1, g, g, p * (1 + 24 + 6 + 5))
    names = context_feature_names(p, (1, 2, 4), 2)
    assert len(names) == f.shape[-1] and names[len(block)] == "p1:c"

    def at(row, col, name):
        return f[0, row, col, names.index(name)].item()

    assert at(5, 3, "p1:peak1_dx") == 6 and at(5, 3, "p1:peak1_dy") == 0 and at(5, 3, "p1:peak1_v") == 1
    assert at(0, 15, "p1:peak1_dx") == -6 and at(0, 15, "p1:peak1_dy") == 5
    assert (at(5, 3, "p1:peak2_dx"), at(5, 3, "p1:peak2_dy"), at(5, 3, "p1:peak2_v")) == (-1, 7, 0.5)
    assert at(5, 9, "p1:c") == 1 and at(5, 8, "p1:c") == 0
    assert at(5, 8, "p1:r1_E") == 1 and at(6, 10, "p1:r1_NW") == 1 and at(5, 8, "p1:r1_W") == 0
    assert at(5, 11, "p1:r2_W") == 1 and at(6, 11, "p1:r2_W") == 1   # 3x3 max-pool at radius 2
    assert at(9, 9, "p1:r4_N") == 1 and at(10, 11, "p1:r4_N") == 1   # 5x5 max-pool at radius 4
    assert at(12, 11, "p1:r4_N") == 0
    assert at(0, 0, "p1:max") == 1 and at(15, 15, "p1:max_tr") == 1 and at(3, 3, "p1:max_tl") == 0
    assert at(3, 3, "p1:max_bl") == 0.5 and at(3, 3, "p1:max_br") == 0
    # Other parts are all-zero maps: all their features except peak offsets are 0.
    other = [i for i, n in enumerate(names) if n.startswith(("p0:", "p2:")) and "_d" not in n]
    assert np.abs(f[..., other]).max() == 0
    assert [d for d, _, _ in DIRECTIONS] == ["E", "NE", "N", "NW", "W", "SW", "S", "SE"]


def test_context_names_use_lsp_parts():
    names = context_feature_names()
    assert names[0] == "r_ankle:c" and "l_wrist:peak1_dx" in names
    assert len(names) == 14 * len(context_block_names())
    pm = PoseMachine(num_stages=2, image_size=64)
    assert pm.feature_names(1) == image_feature_names()
    assert pm.feature_names(2) == image_feature_names() + names


# --- labels ---------------------------------------------------------------------------------------
def test_location_labels_nearest_cell_and_radius():
    kp = np.zeros((1, 3, 3), np.float32)
    kp[0, 0] = (35.5, 19.5, 1)   # exactly the centre of cell (row 2, col 4)
    kp[0, 1] = (60.0, 60.0, 0)   # invisible
    kp[0, 2] = (40.0, 20.0, 1)   # nearest cell (2, 5); cell (2, 4) is 0.56 cells away
    lab = location_labels(kp, 8, 8, label_radius=0.0)
    assert lab.shape == (1, 8, 8)
    assert lab[0, 2, 4] == 0 and lab[0, 2, 5] == 2 and (lab == 3).sum() == 62
    lab = location_labels(kp, 8, 8, label_radius=1.0)
    # Part 0 keeps its own cell and its 4-neighbours except (2, 5), the own cell of part 2.
    assert set(zip(*np.nonzero(lab[0] == 0))) == {(2, 4), (1, 4), (3, 4), (2, 3)}
    assert lab[0, 2, 5] == 2 and (lab[0] == 1).sum() == 0
    off_image = np.array([[[-20.0, 10.0, 1.0]]], np.float32)
    assert (location_labels(off_image, 8, 8) == 1).all()


# --- CPM conventions, persistence -------------------------------------------------------------------
def test_predict_shapes_probabilities_and_decode(tiny_pm):
    pm, ds = tiny_pm
    images, _ = _arrays(ds, 3)
    beliefs = pm(images, center_maps=torch.zeros(3, 1, 64, 64))
    assert len(beliefs) == 2
    for b in beliefs:
        assert b.shape == (3, 15, 8, 8) and b.dtype == torch.float32 and b.device == images.device
        assert torch.allclose(b.sum(1), torch.ones(3, 8, 8), atol=1e-5)
    kp = decode(beliefs[-1], pm.codec)
    assert kp.shape == (3, 14, 3) and (kp[..., :2] >= 0).all() and (kp[..., :2] < 64).all()
    assert pm.codec == CodecConfig(input_size=64, num_parts=14) and pm.codec.output_size == 8
    assert sum(p.numel() for p in pm.parameters()) == 0
    # Works through the generic evaluation path (device read from parameters).
    table = inference.evaluate(pm, ds, batch_size=5, device=None)
    assert sorted(table["stage"].unique()) == [1, 2]
    with pytest.raises(ValueError, match="64x64"):
        pm(torch.rand(1, 3, 128, 128))


def test_unfitted_and_bad_config_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        PoseMachine(image_size=64)(torch.rand(1, 3, 64, 64))
    with pytest.raises(ValueError, match="image_size"):
        PoseMachineConfig(image_size=100)
    with pytest.raises(ValueError, match="estimator"):
        PoseMachine(estimator="svm")
    with pytest.raises(ValueError, match="n_images"):
        PoseMachine(image_size=64).fit(SyntheticPoses(4, 64, "easy"), n_images=10)


def test_save_load_round_trip(tiny_pm, tmp_path):
    pm, ds = tiny_pm
    images, _ = _arrays(ds, 4)
    path = pm.save(tmp_path / "pm.joblib")
    pm2 = PoseMachine.load(path)
    assert pm2.config == pm.config
    for a, b in zip(pm(images), pm2(images)):
        assert torch.equal(a, b)


def test_load_rejects_foreign_files(tmp_path):
    import joblib

    with pytest.raises(FileNotFoundError, match="missing.joblib"):
        PoseMachine.load(tmp_path / "missing.joblib")
    joblib.dump({"format": "something else"}, tmp_path / "other.joblib")
    with pytest.raises(ValueError, match="not a cpm_lab pose machine"):
        PoseMachine.load(tmp_path / "other.joblib")
    joblib.dump({"format": "cpm_lab.pose_machine", "version": 999}, tmp_path / "future.joblib")
    with pytest.raises(ValueError, match="version 999"):
        PoseMachine.load(tmp_path / "future.joblib")
    (tmp_path / "junk.joblib").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="junk.joblib"):
        PoseMachine.load(tmp_path / "junk.joblib")


def test_fit_is_deterministic_given_seed(tiny_pm):
    pm, ds = tiny_pm
    again = PoseMachine(pm.config).fit(ds, seed=0, progress=False)
    images, _ = _arrays(ds, 2)
    assert torch.equal(pm(images)[-1], again(images)[-1])


# --- stacking and stage-wise improvement -----------------------------------------------------------
def test_heldout_beliefs_are_not_in_sample_beliefs(tiny_pm):
    """The beliefs passed to stage 2 come from fold models that never saw the image: their error is
    far above the in-sample error of the refitted stage-1 model on the same training images."""
    pm, ds = tiny_pm
    images, kp = _arrays(ds, len(ds))
    in_sample = decode(pm(images)[0], pm.codec)[..., :2]
    vis = kp[..., 2] > 0
    in_sample_err = (in_sample - kp[..., :2]).norm(dim=-1)[vis].mean().item()
    heldout_err = pm.fit_info_["heldout_epe_px"][0]
    assert len(pm.fit_info_["heldout_epe_px"]) == 1
    assert heldout_err > 1.3 * in_sample_err


def test_later_stages_improve_heldout_pck():
    train = SyntheticPoses(60, 128, "easy", seed=0)
    test = SyntheticPoses(40, 128, "easy", seed=1)
    pm = PoseMachine(num_stages=3, image_size=128, n_estimators=20).fit(train, seed=0, progress=False)
    table = inference.evaluate(pm, test, batch_size=40, device="cpu", thresholds=(0.2,))
    pck = metrics.pck_table(table).iloc[:, 0]
    assert pck.loc[3] > pck.loc[1] + 0.05, pck.to_dict()
