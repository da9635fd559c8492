"""The inference door: loading models, batched prediction with test-time flip and scales, the
centre-map default, and evaluation over a dataset."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cpm_lab import skeleton
from cpm_lab.assets import SHIPPED_MODELS
from cpm_lab.data import SyntheticPoses
from cpm_lab.inference import evaluate, load_model, predict, predict_dataset, stage_outputs
from cpm_lab.models.cpm import CPM
from cpm_lab.targets import CodecConfig, center_map, default_centers, encode

pytestmark = pytest.mark.usefixtures("one_thread")


def small_cpm():
    torch.manual_seed(0)
    return CPM.from_preset("tiny", input_size=32, sigma=2.0, center_sigma=4.0, trunk_channels=4,
                           feature_channels=4, stage1_channels=4, stage_channels=4, stage_kernel=3)


class FixedPeaks(nn.Module):
    """A fake CPM whose beliefs ignore the image: channel p peaks at a fixed cell (not mirror-symmetric)."""

    def __init__(self, size=32):
        super().__init__()
        self.codec = CodecConfig(input_size=size, stride=8, sigma=2.0, center_sigma=4.0)
        self.dummy = nn.Parameter(torch.zeros(()))
        kp = torch.zeros(1, 14, 3)
        kp[0, :, 0] = torch.arange(14) % 4 * 8 + 3.5
        kp[0, :, 1] = torch.arange(14) // 4 * 8 + 3.5
        kp[0, :, 2] = 1
        self.kp = kp
        self.maps, _ = encode(kp, self.codec)
        self.maps[:, -1] = 0.25  # a background that a wrong flip would move

    def forward(self, images, center_maps):
        n, _, h, w = images.shape
        maps = self.maps.expand(n, -1, -1, -1)
        if (h, w) != (self.codec.input_size,) * 2:
            maps = nn.functional.interpolate(maps, size=(h // 8, w // 8), mode="bilinear", align_corners=False)
        return [maps + self.dummy, 2 * maps + self.dummy]


def test_flip_averaging_mirrors_and_swaps_channels():
    model = FixedPeaks()
    images = torch.rand(2, 3, 32, 32)
    plain = predict(model, images).beliefs
    flipped = predict(model, images, flip=True).beliefs
    m = model.maps[0]
    expected = 0.5 * (m + m.flip(-1)[list(skeleton.FLIP_INDEX) + [14]])
    assert torch.allclose(plain[0][0], m) and torch.allclose(flipped[0][0], expected)
    assert torch.allclose(flipped[1][0], 2 * expected)
    assert torch.allclose(flipped[0][0, -1], torch.full((4, 4), 0.25))  # background untouched


def test_multiscale_resizes_back_to_base_size():
    model = FixedPeaks()
    images = torch.rand(1, 3, 32, 32)
    one = predict(model, images, scales=[1.0]).beliefs
    multi = predict(model, images, scales=[1.0, 2.0]).beliefs
    assert multi[0].shape == one[0].shape == (1, 15, 4, 4)
    assert torch.allclose(predict(model, images).beliefs[0], one[0])
    assert not torch.allclose(multi[0], one[0])  # the x2 pass contributed (blurred by resizing)
    with pytest.raises(ValueError, match="positive"):
        predict(model, images, scales=[0.0])


def test_predict_decodes_each_stage():
    model = FixedPeaks()
    out = predict(model, torch.rand(3, 32, 32))
    assert out.num_stages == 2 and out.keypoints[0].shape == (1, 14, 3) and out.beliefs[1].shape == (1, 15, 4, 4)
    assert torch.allclose(out.keypoints[0][0, :, :2], model.kp[0, :, :2], atol=1e-3)
    assert predict(model, torch.rand(2, 3, 32, 32), keep_beliefs=False).beliefs is None


def test_evaluate_returns_a_tidy_table_per_stage():
    torch.manual_seed(0)
    model = CPM.from_preset("tiny", input_size=32, sigma=2.0, center_sigma=4.0, trunk_channels=4,
                            feature_channels=4, stage1_channels=4, stage_channels=4, stage_kernel=3)
    data = SyntheticPoses(6, 32, "easy", seed=3)
    model.train()
    df = evaluate(model, data, batch_size=4, device="cpu", thresholds=(0.1, 0.2), flip=True)
    assert model.training  # mode restored
    assert sorted(df.stage.unique()) == [1, 2, 3]
    assert set(df.metric) == {"pck", "auc", "epe"}
    assert set(df.part) == set(skeleton.SHORT_NAMES) | {"mean"}
    pcks = df[df.metric == "pck"].value.dropna()
    assert ((pcks >= 0) & (pcks <= 1)).all()
    n_vis = int(sum((data[i]["keypoints"][:, 2] > 0).sum() for i in range(6)))
    epe = df[(df.metric == "epe") & (df.part == "mean") & (df.stage == 3)]
    assert int(epe["count"].iloc[0]) == n_vis
    with pytest.raises(ValueError, match="expects 32x32"):
        evaluate(model, SyntheticPoses(2, 64, "easy"), device="cpu")


def test_batches_and_centres_do_not_change_the_answer():
    model = small_cpm()
    images = torch.rand(5, 3, 32, 32)
    centers = torch.tensor([[10.0, 12.0]] * 5)
    whole = predict(model, images, centers, batch_size=5)
    chunked = predict(model, images, centers, batch_size=2)
    for a, b in zip(whole.beliefs + whole.keypoints, chunked.beliefs + chunked.keypoints):
        assert torch.allclose(a, b, atol=1e-6)
    # no centre = the image centre (targets.default_centers), the one default of the package
    default = predict(model, images, batch_size=5)
    explicit = predict(model, images, default_centers(5, 32, 32), batch_size=5)
    assert all(torch.equal(a, b) for a, b in zip(default.beliefs, explicit.beliefs))
    assert not torch.allclose(default.beliefs[-1], whole.beliefs[-1])  # the centre map matters
    with pytest.raises(ValueError, match="2 centres for 5 images"):
        predict(model, images, centers[:2])


def test_model_forward_defaults_to_the_image_centre_and_runs_the_first_stages():
    model = small_cpm().eval()
    x = torch.rand(2, 3, 32, 32)
    cm = center_map(default_centers(2, 32, 32), model.codec, 32, 32)
    full = model(x, cm)
    assert all(torch.equal(a, b) for a, b in zip(model(x), full))
    for t in (1, 2, 3):
        part = model(x, cm, num_stages=t)
        assert len(part) == t and all(torch.equal(a, b) for a, b in zip(part, full))
    with pytest.raises(ValueError, match="num_stages must be in 1..3"):
        model(x, cm, num_stages=4)


def test_stage_outputs_restores_the_mode_and_wraps_single_tensors():
    seq = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1)).train()
    out = stage_outputs(seq, torch.rand(1, 3, 8, 8))
    assert len(out) == 1 and out[0].shape == (1, 2, 8, 8) and seq.training and not out[0].requires_grad


def test_predict_dataset_keeps_the_truth_and_evaluate_matches_it():
    model = small_cpm()
    data = SyntheticPoses(6, 32, "easy", seed=3)
    out = predict_dataset(model, data, batch_size=4, device="cpu")
    assert out.beliefs is None and out.truth.shape == (6, 14, 3)
    assert torch.equal(out.truth[2], torch.as_tensor(data[2]["keypoints"]).float())
    with pytest.raises(ValueError, match="empty dataset"):
        predict_dataset(model, [], device="cpu")


def test_load_model_by_name_and_by_path(tmp_path):
    assert "tiny-synthetic" in SHIPPED_MODELS
    model = load_model("tiny-synthetic", device="cpu")
    assert model.config.name == "tiny" and not model.training
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.pt")
