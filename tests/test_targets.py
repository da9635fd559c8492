import pytest
import torch

from cpm_lab.targets import (
    MISSING,
    OCCLUDED,
    VISIBLE,
    CodecConfig,
    center_map,
    decode,
    encode,
    labelled_mask,
    visible_mask,
)


def random_keypoints(n, p, size, generator, margin=4.0):
    xy = margin + torch.rand(n, p, 2, generator=generator) * (size - 1 - 2 * margin)
    return torch.cat([xy, torch.ones(n, p, 1)], dim=-1)


@pytest.mark.parametrize("cfg", [CodecConfig(), CodecConfig(input_size=128, sigma=5.0),
                                 CodecConfig(input_size=64, sigma=3.0, num_parts=3)])
def test_round_trip_within_half_output_pixel(cfg):
    g = torch.Generator().manual_seed(0)
    kp = random_keypoints(16, cfg.num_parts, cfg.input_size, g, margin=cfg.stride)
    targets, weights = encode(kp, cfg)
    assert targets.shape == (16, cfg.num_parts + 1, cfg.output_size, cfg.output_size)
    out = decode(targets, cfg)
    err = (out[..., :2] - kp[..., :2]).abs().max().item()
    assert err < 0.5 * cfg.stride
    # The log-parabola fit is exact for a sampled Gaussian away from the border.
    assert err < 0.05 * cfg.stride
    # Confidence is the sampled peak: at most 1, and never far below for an off-grid joint.
    assert (out[..., 2] <= 1).all() and (out[..., 2] > 0.1).all()


def test_targets_peak_and_background():
    cfg = CodecConfig(input_size=64, stride=8, sigma=4.0, num_parts=2)
    kp = torch.tensor([[[3.5, 3.5, 1.0], [35.5, 19.5, 1.0]]])  # exactly on cell centres (0,0) and (4,2)
    t, w = encode(kp, cfg)
    assert t[0, 0, 0, 0] == pytest.approx(1.0) and t[0, 1, 2, 4] == pytest.approx(1.0)
    assert t[0, 2, 0, 0] == pytest.approx(0.0, abs=1e-6)
    bg = (1 - t[:, :2].amax(1)).clamp_min(0)
    assert torch.allclose(t[:, 2], bg)
    assert torch.equal(w, torch.ones(1, 3))
    assert t.min() >= 0 and t.max() <= 1


def test_invisible_joints_are_empty_and_masked():
    cfg = CodecConfig(input_size=64, num_parts=3)
    kp = torch.tensor([[[10.0, 10.0, 1.0], [float("nan"), 5.0, 1.0], [30.0, 30.0, 0.0]]])
    t, w = encode(kp, cfg)
    assert t[0, 1].abs().sum() == 0 and t[0, 2].abs().sum() == 0
    assert w.tolist() == [[1.0, 0.0, 0.0, 1.0]]
    assert torch.isfinite(t).all()


def test_encode_follows_device_and_dtype():
    cfg = CodecConfig(input_size=64, num_parts=2)
    kp = torch.zeros(2, 2, 3, dtype=torch.float64)
    t, w = encode(kp, cfg)
    assert t.dtype == torch.float64 and w.dtype == torch.float64


def test_center_map():
    cfg = CodecConfig(input_size=64, center_sigma=5.0)
    cm = center_map(torch.tensor([[20.0, 40.0]]), cfg)
    assert cm.shape == (1, 1, 64, 64)
    assert cm[0, 0, 40, 20] == pytest.approx(1.0)
    assert cm[0, 0].argmax().item() == 40 * 64 + 20
    assert center_map(torch.tensor([[1.0, 1.0]]), cfg, height=10, width=20).shape == (1, 1, 10, 20)


def test_clear_errors():
    cfg = CodecConfig(input_size=64, num_parts=14)
    with pytest.raises(ValueError, match=r"\(N, P, 3\)"):
        encode(torch.zeros(14, 3), cfg)
    with pytest.raises(ValueError, match="expects 14"):
        encode(torch.zeros(1, 13, 3), cfg)
    with pytest.raises(ValueError, match="channels"):
        decode(torch.zeros(1, 10, 8, 8), cfg)
    with pytest.raises(ValueError, match="multiple of stride"):
        CodecConfig(input_size=100)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        center_map(torch.zeros(3), cfg)


def test_targets_follow_the_joint_flags():
    cfg = CodecConfig(input_size=64, sigma=4.0, num_parts=4)
    kp = torch.tensor([[[20.0, 20.0, VISIBLE],     # a Gaussian
                        [40.0, 30.0, OCCLUDED],    # labelled but occluded: a Gaussian too (official transformer)
                        [70.0, 30.0, VISIBLE],     # labelled but outside the 64 px input: an empty map, in the loss
                        [30.0, 30.0, MISSING]]])   # missing: no map, out of the loss
    targets, weights = encode(kp, cfg)
    peaks = targets[0, :4].amax(dim=(-1, -2))
    assert peaks[0] > 0.5 and peaks[1] > 0.5 and peaks[2] == 0 and peaks[3] == 0
    assert weights[0].tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    assert labelled_mask(kp)[0].tolist() == [True, True, True, False]
    assert visible_mask(kp)[0].tolist() == [True, False, True, False]
    assert visible_mask(kp.numpy())[0].tolist() == [True, False, True, False]
