"""Geometry of person-centred crops (cpm_lab.data.crop) and batched augmentation
(cpm_lab.data.augment): every check transforms something with a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cpm_lab import skeleton
from cpm_lab.data.augment import Augment, AugmentParams
from cpm_lab.data.crop import crop_batch, crop_matrix, crop_pil, warp_batch, warp_images, warp_keypoints
from cpm_lab.skeleton import FLIP_INDEX_BY_PARTS
from cpm_lab.targets import MISSING, OCCLUDED, VISIBLE

S = 64


def smooth_images(n: int, size: int = S, seed: int = 0) -> torch.Tensor:
    """Low-frequency random images (N, 3, size, size) in [0, 1]: bilinear round trips keep them."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True).clamp(0, 1)


def make_batch(n: int = 4, p: int = 14, size: int = S, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    xy = size * 0.3 + size * 0.4 * torch.rand(n, p, 2, generator=g)  # central 40% of the image
    kp = torch.cat([xy, torch.ones(n, p, 1)], -1)
    return {"image": smooth_images(n, size, seed), "keypoints": kp,
            "center": torch.full((n, 2), (size - 1) / 2), "scale": torch.full((n,), 0.2),
            "index": torch.arange(n)}


def params(n, zoom=1.0, angle=0.0, flip=False, shift=(0.0, 0.0)) -> AugmentParams:
    return AugmentParams(zoom=torch.full((n,), float(zoom), dtype=torch.float64),
                         angle=torch.full((n,), float(angle), dtype=torch.float64),
                         flip=torch.full((n,), bool(flip)),
                         shift=torch.tensor([shift] * n, dtype=torch.float64))


def dot_image(h: int, w: int, x: int, y: int) -> torch.Tensor:
    img = torch.zeros(1, 3, h, w)
    img[0, :, y, x] = 1.0
    return img


def centroid(channel: torch.Tensor) -> tuple[float, float]:
    c = channel.double()
    ys, xs = torch.meshgrid(torch.arange(c.shape[0], dtype=torch.float64),
                            torch.arange(c.shape[1], dtype=torch.float64), indexing="ij")
    return float((c * xs).sum() / c.sum()), float((c * ys).sum() / c.sum())


# --------------------------------------------------------------------------------------------
# Augment
# --------------------------------------------------------------------------------------------
def test_identity_params_leave_batch_unchanged():
    b = make_batch()
    out = Augment().apply(b, params(4))
    torch.testing.assert_close(out["image"], b["image"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["keypoints"], b["keypoints"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["center"], b["center"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out["scale"], b["scale"])
    assert out["index"] is b["index"]  # other keys pass through


def test_rotation_by_90_degrees_moves_a_known_point():
    # 65 px image: centre (32, 32). A dot 20 px right of centre, rotated +90 deg (counter-
    # clockwise as displayed, y down) must land 20 px ABOVE the centre, at (32, 12).
    b = {"image": dot_image(65, 65, 52, 32),
         "keypoints": torch.tensor([[[52.0, 32.0, 1.0]]]),
         "center": torch.tensor([[52.0, 32.0]]), "scale": torch.tensor([1.0])}
    out = Augment(flip_index=[0]).apply(b, params(1, angle=90.0))
    torch.testing.assert_close(out["keypoints"][0, 0], torch.tensor([32.0, 12.0, 1.0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(out["center"][0], torch.tensor([32.0, 12.0]), atol=1e-4, rtol=0)
    assert out["image"][0, 0].argmax().item() == 12 * 65 + 32
    assert out["image"][0, 0, 12, 32].item() == pytest.approx(1.0, abs=1e-4)


def test_zoom_scales_about_the_centre_and_updates_scale():
    b = make_batch(1)
    b["keypoints"][0, 0] = torch.tensor([41.5, 31.5, 1.0])  # 10 px right of centre (31.5)
    out = Augment().apply(b, params(1, zoom=1.25))
    assert out["keypoints"][0, 0, 0].item() == pytest.approx(31.5 + 12.5, abs=1e-4)
    assert out["keypoints"][0, 0, 1].item() == pytest.approx(31.5, abs=1e-4)
    assert out["scale"][0].item() == pytest.approx(0.2 * 1.25, rel=1e-6)


def test_flip_twice_is_identity_and_flip_swaps_labels():
    b = make_batch(3)
    aug = Augment()
    once = aug.apply(b, params(3, flip=True))
    twice = aug.apply(once, params(3, flip=True))
    torch.testing.assert_close(twice["image"], b["image"], atol=1e-6, rtol=0)
    torch.testing.assert_close(twice["keypoints"], b["keypoints"], atol=1e-4, rtol=0)
    # One flip mirrors the image exactly and relabels left <-> right, like the numpy reference.
    torch.testing.assert_close(once["image"], b["image"].flip(-1), atol=1e-6, rtol=0)
    ref = torch.from_numpy(skeleton.flip_keypoints(b["keypoints"].numpy(), S))
    torch.testing.assert_close(once["keypoints"], ref, atol=1e-4, rtol=0)
    rw, lw = skeleton.JOINT_INDEX["right_wrist"], skeleton.JOINT_INDEX["left_wrist"]
    assert once["keypoints"][0, rw, 0].item() == pytest.approx(S - 1 - b["keypoints"][0, lw, 0].item(), abs=1e-4)


def test_flip_is_per_sample():
    b = make_batch(2)
    p = params(2)
    p.flip = torch.tensor([True, False])
    out = Augment().apply(b, p)
    torch.testing.assert_close(out["image"][1], b["image"][1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out["image"][0], b["image"][0].flip(-1), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["keypoints"][1], b["keypoints"][1], atol=1e-4, rtol=0)


@pytest.mark.parametrize("p", [16, 17])
def test_flip_index_follows_the_part_set(p):
    b = make_batch(1, p=p)
    out = Augment().apply(b, params(1, flip=True))
    perm = list(FLIP_INDEX_BY_PARTS[p])
    assert perm != list(range(p))
    expect = b["keypoints"][0, perm].clone()
    expect[:, 0] = S - 1 - expect[:, 0]
    torch.testing.assert_close(out["keypoints"][0], expect, atol=1e-4, rtol=0)


def test_unknown_part_count_needs_an_explicit_flip_index():
    b = make_batch(1, p=5)
    with pytest.raises(ValueError, match="flip_index"):
        Augment().apply(b, params(1, flip=True))
    out = Augment(flip_index=[1, 0, 2, 4, 3]).apply(b, params(1, flip=True))
    assert out["keypoints"][0, 0, 0].item() == pytest.approx(S - 1 - b["keypoints"][0, 1, 0].item(), abs=1e-4)
    with pytest.raises(ValueError, match="flip_index has 3 entries"):
        Augment(flip_index=[0, 1, 2]).apply(b, params(1, flip=True))


def test_random_augmentation_round_trip():
    """Augment, then apply the inverse affine (and undo the relabelling): keypoints come back
    within 0.5 px (in fact ~1e-4) and the image interior closely matches."""
    b = make_batch(8, seed=3)
    aug = Augment(scale=(1.0, 1.3), rotation=40.0, flip=True)
    p = aug.sample(8, torch.Generator().manual_seed(7), (S, S))
    out = aug.apply(b, p)
    inv = torch.linalg.inv(p.matrices(S, S))
    back = warp_batch(out, inv, flipped=p.flip, flip_index=skeleton.FLIP_INDEX)
    both_vis = (b["keypoints"][..., 2] > 0) & (out["keypoints"][..., 2] > 0)
    assert both_vis.float().mean() > 0.9
    err = (back["keypoints"][..., :2] - b["keypoints"][..., :2]).norm(dim=-1)[both_vis]
    assert err.max().item() < 0.5
    torch.testing.assert_close(back["center"], b["center"], atol=1e-3, rtol=0)
    torch.testing.assert_close(back["scale"], b["scale"], atol=1e-5, rtol=1e-5)
    # Image: compare where the round trip stayed inside the source (coverage of a ones image).
    ones = {"image": torch.ones(8, 1, S, S)}
    cover = warp_batch(warp_batch(ones, p.matrices(S, S)), inv)["image"]
    interior = cover > 0.999
    assert interior.float().mean() > 0.3
    diff = (back["image"] - b["image"]).abs()[interior.expand_as(back["image"])]
    assert diff.mean().item() < 0.01 and diff.max().item() < 0.08


def test_joints_leaving_the_image_stay_labelled_but_not_visible():
    b = make_batch(1)
    b["keypoints"][0, 0] = torch.tensor([2.0, 2.0, VISIBLE])      # near the top-left corner
    b["keypoints"][0, 1] = torch.tensor([31.5, 31.5, VISIBLE])    # the centre
    b["keypoints"][0, 2] = torch.tensor([31.5, 31.5, MISSING])    # missing stays missing
    b["keypoints"][0, 3] = torch.tensor([31.5, 31.5, OCCLUDED])   # occluded stays occluded
    out = Augment().apply(b, params(1, zoom=1.3))
    assert out["keypoints"][0, :4, 2].tolist() == [OCCLUDED, VISIBLE, MISSING, OCCLUDED]
    assert out["keypoints"][0, 0, 0].item() < -0.5  # coordinates still transformed


def test_sampling_is_reproducible_and_within_ranges():
    aug = Augment()
    p1 = aug.sample(2000, torch.Generator().manual_seed(1))
    p2 = aug.sample(2000, torch.Generator().manual_seed(1))
    assert torch.equal(p1.zoom, p2.zoom) and torch.equal(p1.flip, p2.flip)
    assert 0.7 <= p1.zoom.min() and p1.zoom.max() <= 1.3
    assert p1.angle.abs().max() <= 40 and p1.angle.abs().max() > 35
    assert 0.45 < p1.flip.float().mean() < 0.55
    b = make_batch(4)
    o1 = aug(b, torch.Generator().manual_seed(5))
    o2 = aug(b, torch.Generator().manual_seed(5))
    assert torch.equal(o1["image"], o2["image"]) and torch.equal(o1["keypoints"], o2["keypoints"])
    assert not Augment(flip=False).sample(100, torch.Generator().manual_seed(0)).flip.any()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="scale"):
        Augment(scale=(1.3, 0.7))
    with pytest.raises(ValueError, match="rotation"):
        Augment(rotation=-5)
    with pytest.raises(ValueError, match="image"):
        Augment()({"image": torch.zeros(3, 8, 8)})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_runs_on_the_batch_device():
    b = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in make_batch(4).items()}
    out = Augment()(b, torch.Generator().manual_seed(0))
    assert all(out[k].is_cuda for k in ("image", "keypoints", "center", "scale"))
    cpu = Augment()(make_batch(4), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["keypoints"].cpu(), cpu["keypoints"], atol=1e-3, rtol=0)


# --------------------------------------------------------------------------------------------
# Crops
# --------------------------------------------------------------------------------------------
def test_crop_matrix_puts_the_centre_in_the_middle():
    m = crop_matrix(torch.tensor([[100.0, 50.0]]), torch.tensor([80.0]), out_size=60, margin=1.5)
    pt = m[0] @ torch.tensor([100.0, 50.0, 1.0], dtype=torch.float64)
    assert pt[:2].tolist() == pytest.approx([29.5, 29.5])
    # a point half a box right of the centre lands half a box (60 / 1.5 / 2 = 20 px) right
    pt = m[0] @ torch.tensor([140.0, 50.0, 1.0], dtype=torch.float64)
    assert pt[0].item() == pytest.approx(49.5)
    with pytest.raises(ValueError, match="positive"):
        crop_matrix(torch.tensor([[0.0, 0.0]]), torch.tensor([0.0]), 60)


@pytest.mark.parametrize("suffix", ["png", "jpg"])
@pytest.mark.parametrize("box,size", [(100, 64), (40, 128), (400, 64)])
def test_crop_pil_matches_the_keypoint_geometry(tmp_path, suffix, box, size):
    """A 3x3 white square centred on (122, 58): its centroid in the crop equals the keypoint
    transform (the JPEG 400 px case also exercises reduced-resolution draft decoding)."""
    img = np.full((200, 300, 3), 128, np.uint8)  # the grey of the padding outside the photograph
    img[57:60, 121:124] = 255
    path = tmp_path / f"dot.{suffix}"
    Image.fromarray(img).save(path, quality=100) if suffix == "jpg" else Image.fromarray(img).save(path)
    crop = crop_pil(path, (130.0, 70.0), box, size, margin=1.5)
    assert crop.shape == (size, size, 3) and crop.dtype == np.uint8
    cx, cy = centroid(torch.from_numpy(np.abs(crop[..., 0].astype(np.float64) - 128)))
    kp = warp_keypoints(torch.tensor([[[122.0, 58.0, 1.0]]]),
                        crop_matrix(torch.tensor([[130.0, 70.0]]), torch.tensor([float(box)]), size, 1.5), size)
    assert abs(cx - kp[0, 0, 0].item()) < 0.3 and abs(cy - kp[0, 0, 1].item()) < 0.3


def test_crop_pil_and_torch_warp_agree(tmp_path):
    img = (smooth_images(1, 120)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(img).save(tmp_path / "s.png")
    center, box = (60.0, 55.0), 50.0  # upscaling: no anti-aliasing difference between the two
    a = crop_pil(tmp_path / "s.png", center, box, 96, 1.5).astype(np.float32) / 255
    t = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    b = warp_images(t, crop_matrix(torch.tensor([center]), torch.tensor([box]), 96, 1.5), 96)[0]
    diff = np.abs(a - b.permute(1, 2, 0).numpy())[4:-4, 4:-4]
    assert diff.max() < 0.02


def test_crop_batch_centres_the_person():
    b = make_batch(2, size=96)
    b["center"] = torch.tensor([[30.0, 40.0], [60.0, 50.0]])
    b["scale"] = torch.tensor([0.2, 0.1])  # boxes of 40 and 20 px
    out = crop_batch(b, out_size=48, margin=1.5)
    assert out["image"].shape == (2, 3, 48, 48)
    torch.testing.assert_close(out["center"], torch.full((2, 2), 23.5), atol=1e-4, rtol=0)
    # box fills 1/margin of the crop: scale * 200 = 48 / 1.5 px
    torch.testing.assert_close(out["scale"], torch.full((2,), 48 / 1.5 / 200), atol=1e-6, rtol=0)
    s = 48 / (0.2 * 200 * 1.5)
    expect = (b["keypoints"][0, :, :2] - torch.tensor([30.0, 40.0])) * s + 23.5
    torch.testing.assert_close(out["keypoints"][0, :, :2], expect, atol=1e-4, rtol=0)


def test_synthetic_dataset_through_crop_and_augment():
    from torch.utils.data import default_collate

    from cpm_lab.data.synthetic import SyntheticPoses
    ds = SyntheticPoses(4, 64, "easy", seed=0)
    batch = default_collate([ds[i] for i in range(4)])
    cropped = crop_batch(batch, 48)
    out = Augment()(cropped, torch.Generator().manual_seed(0))
    assert out["image"].shape == (4, 3, 48, 48) and out["keypoints"].shape == (4, 14, 3)
    assert math.isfinite(out["keypoints"].sum().item())
