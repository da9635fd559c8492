"""The official LSP test protocol (``cpm_lab.inference.protocol``): person location, the scale
search's geometry through a whole forward pass, the padding fill, the composed resizes against
the step-by-step chain, scoring a dataset, the mean-pose baseline in the image frame, and the
``cpm-lab eval --protocol`` command line."""
from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from cpm_lab import skeleton
from cpm_lab.assets import TINY_WEIGHTS, asset
from cpm_lab.cli import main
from cpm_lab.data import SyntheticPoses
from cpm_lab.data.baseline import ImageMeanPose
from cpm_lab.inference import (
    GREY,
    LSP_SCALES,
    PROTOCOLS,
    as_image,
    evaluate,
    evaluate_protocol,
    load_image,
    locate_person,
    plan_scales,
    predict_person,
    predict_protocol,
    protocol_title,
)
from cpm_lab.metrics import JOINT_SETS, keypoint_metrics
from cpm_lab.targets import OCCLUDED, VISIBLE, CodecConfig, encode

pytestmark = pytest.mark.usefixtures("one_thread")

#: Part p's dot has colour (A, A * LEVELS[p], 0): the ratio green / red names the part.
LEVELS = torch.linspace(0.0, 0.78, skeleton.NUM_JOINTS)
DOT_AMPLITUDE = 0.8  # below 1, so resizing overshoot is not clipped (which would bend the ratio)


def dot_image(h: int, w: int, points) -> torch.Tensor:
    """A black (3, h, w) image with a small Gaussian dot (std 1.2 px) of part p's colour at each
    (x, y) of ``points`` (P, 2)."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    img = torch.zeros(3, h, w)
    for p, (x, y) in enumerate(torch.as_tensor(points, dtype=torch.float32)):
        a = DOT_AMPLITUDE * torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.2**2))
        img[0] += a
        img[1] += a * LEVELS[p]
    return img


class DotModel(nn.Module):
    """A fake CPM that finds the dots of ``dot_image`` in its input: part p's beliefs are a
    Gaussian (``targets.encode``, codec geometry) at the centroid of the pixels of part p's
    colour; the grey padding (blue > 0) and black are nobody's colour. Two stages."""

    def __init__(self, box: int = 128):
        super().__init__()
        self.codec = CodecConfig(input_size=box, stride=8, sigma=10.0, center_sigma=box / 6)
        self.dummy = nn.Parameter(torch.zeros(()))
        self.seen: list[torch.Tensor] = []

    def forward(self, images, center_maps):
        self.seen.append(images.detach().clone())
        r, g, b = images.unbind(1)
        ratio = g / r.clamp_min(1e-6)
        weight = (r**2 * ((r > 0.05) & (b < 0.02)))[:, None]
        w = weight * torch.exp(-(((ratio[:, None] - LEVELS.view(1, -1, 1, 1)) / 0.015) ** 2))  # (N, P, H, W)
        mass = w.sum((-2, -1))
        xs = torch.arange(images.shape[-1], dtype=torch.float32)
        ys = torch.arange(images.shape[-2], dtype=torch.float32)
        cx = (w.sum(-2) * xs).sum(-1) / mass.clamp_min(1e-12)
        cy = (w.sum(-1) * ys).sum(-1) / mass.clamp_min(1e-12)
        flag = torch.where(mass > 1e-2, float(VISIBLE), 0.0)
        maps, _ = encode(torch.stack([cx, cy, flag], -1), self.codec)
        return [maps + self.dummy, 0.5 * maps + self.dummy]


def grid_points(h: int, w: int, x_range=(0.3, 0.7), y_range=(0.12, 0.88)) -> torch.Tensor:
    """14 dot positions on a 3 x 5 grid inside the given fractions of the image, off the pixel grid."""
    xs = torch.linspace(x_range[0] * w, x_range[1] * w, 3)
    ys = torch.linspace(y_range[0] * h, y_range[1] * h, 5)
    pts = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)[:skeleton.NUM_JOINTS]
    return pts + torch.tensor([0.3, -0.2])


# ------------------------------------------------------------------------------------------------
# (c) where the person is, and the scale search it implies
# ------------------------------------------------------------------------------------------------
def test_locate_person_from_the_image_or_a_box():
    assert locate_person((150, 230)) == ((114.5, 74.5), 150.0)
    assert locate_person(torch.zeros(3, 150, 230).shape[-2:]) == ((114.5, 74.5), 150.0)
    # the whole image as a box (pixel edges) is the same person; any other box brings its own
    assert locate_person((150, 230), box=(-0.5, -0.5, 229.5, 149.5)) == locate_person((150, 230))
    assert locate_person((150, 230), box=(10, 20, 50, 120)) == ((30.0, 70.0), 100.0)
    for bad in [(10, 20, 5, 120), (10, 20, 50, 20), (0, 0, float("nan"), 9)]:
        with pytest.raises(ValueError, match="box"):
            locate_person((150, 230), box=bad)
    with pytest.raises(ValueError, match="image_hw"):
        locate_person((0, 230))


@pytest.mark.parametrize("box", [368, 128])
def test_scale_search_brings_the_person_to_0_8_of_the_box_and_centres_it(box):
    h, w = 150, 230
    center, height = locate_person((h, w))
    plans = plan_scales((h, w), center, height, box)
    assert [p.scale for p in plans] == pytest.approx([0.8 * box / h * m for m in LSP_SCALES])
    for p in plans:
        assert p.size == (math.ceil(h * p.scale - 1e-9), math.ceil(w * p.scale - 1e-9))
        # the scaled image's centre lands within half a pixel of the box centre (integer paste)
        for axis in (0, 1):
            assert abs(p.offset[axis] + (p.size[axis] - 1) / 2 - (box - 1) / 2) <= 0.5
    with pytest.raises(ValueError, match="height"):
        plan_scales((h, w), center, 0.0, box)
    with pytest.raises(ValueError, match="scales"):
        plan_scales((h, w), center, height, box, scales=[1.0, -1.0])


# ------------------------------------------------------------------------------------------------
# (a) geometry through the whole scale search
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("h, w", [(230, 150), (150, 230), (90, 60), (60, 90), (40, 30)])
def test_dots_come_back_where_they_are(h, w):
    """Portrait and landscape images larger and smaller than the 128 px box: each dot, seen by
    the fake model in its input, is predicted within 1.5 px of where it is in the image."""
    pts = grid_points(h, w)
    model = DotModel(128)
    out = predict_person(model, dot_image(h, w, pts), *locate_person((h, w)), keep_beliefs=True)
    assert out.num_stages == 2 and len(model.seen) == 1  # all 7 scales in ONE forward pass
    assert model.seen[0].shape == (7, 3, 128, 128)
    for kp in out.keypoints:
        assert kp.shape == (14, 3)
        assert torch.equal(kp[:, :2], kp[:, :2].round())  # arg-max pixels, no sub-pixel refinement
        err = (kp[:, :2] - pts).norm(dim=-1)
        assert err.max() <= 1.5, err
    assert out.beliefs[0].shape == (15, h, w)
    peak = out.beliefs[0][:14].flatten(1).max(1).values
    assert torch.allclose(out.keypoints[0][:, 2], peak)  # confidence = the averaged belief at the peak


def test_a_person_box_elsewhere_in_a_large_image():
    h, w = 300, 420
    box = (250.0, 40.0, 330.0, 200.0)  # x0, y0, x1, y1: a person 160 px tall right of centre
    pts = grid_points(160, 80, (0.15, 0.85), (0.1, 0.9)) + torch.tensor([250.0, 40.0])
    center, height = locate_person((h, w), box=box)
    assert (center, height) == ((290.0, 120.0), 160.0)
    out = predict_person(DotModel(128), dot_image(h, w, pts), center, height)
    assert out.scales == pytest.approx([0.8 * 128 / 160 * m for m in LSP_SCALES])
    assert (out.keypoints[-1][:, :2] - pts).norm(dim=-1).max() <= 1.5


def test_other_multipliers_and_a_different_box():
    h, w = 150, 230
    pts = grid_points(h, w, (0.35, 0.65))
    model = DotModel(64)
    out = predict_person(model, dot_image(h, w, pts), *locate_person((h, w)), scales=[0.9, 1.1])
    assert model.seen[0].shape == (2, 3, 64, 64)
    assert out.scales == pytest.approx([0.8 * 64 / 150 * 0.9, 0.8 * 64 / 150 * 1.1])
    assert (out.keypoints[-1][:, :2] - pts).norm(dim=-1).max() <= 3.0  # at 1/3 scale, 8 px cells are 24 px


# ------------------------------------------------------------------------------------------------
# (b) padding: grey in, background out
# ------------------------------------------------------------------------------------------------
class ConstantBeliefs(nn.Module):
    """Beliefs that ignore the image: every part 0.2, the background 0.3, at every cell."""

    def __init__(self, box: int = 64):
        super().__init__()
        self.codec = CodecConfig(input_size=box, stride=8, sigma=4.0, center_sigma=8.0)
        self.seen: list[torch.Tensor] = []

    def forward(self, images, center_maps):
        self.seen.append(images)
        n, s = len(images), self.codec.output_size
        maps = torch.cat([torch.full((n, 14, s, s), 0.2), torch.full((n, 1, s, s), 0.3)], 1)
        return [maps]


def test_where_the_scaled_image_did_not_reach_the_background_is_one():
    h, w, box = 60, 400, 64  # wide: at every scale the image sticks out of the box left and right
    model = ConstantBeliefs(box)
    center, height = locate_person((h, w))
    scales = (0.5, 1.0, 2.0)  # far apart, so that columns covered by 1, 2 and 3 scales are wide
    out = predict_person(model, torch.rand(3, h, w), center, height, scales=scales, keep_beliefs=True)
    parts, bg = out.beliefs[0][:14], out.beliefs[0][14]
    plans = plan_scales((h, w), center, height, box, scales)
    # the inputs: the image's pixels in the box, grey where the (shorter) scaled image ends
    x = model.seen[0]
    assert x.shape == (3, 3, box, box)
    top, bottom = plans[0].offset[0], plans[0].offset[0] + plans[0].size[0]
    assert 0 < top and bottom < box
    assert torch.all(x[0, :, :top] == GREY) and torch.all(x[0, :, bottom:] == GREY)
    assert not torch.any(x[0, :, top + 1:bottom - 1] == GREY)
    # where each scale's box lies on the image, from the plans; compare away from its edges
    covered = torch.zeros(h, w)
    near_edge = torch.zeros(h, w, dtype=torch.bool)
    for p in plans:
        inside, edge = [], []
        for n, n_scaled, off in ((h, p.size[0], p.offset[0]), (w, p.size[1], p.offset[1])):
            pix = torch.arange(n, dtype=torch.float64)
            lo, hi = -off * n / n_scaled - 0.5, (box - off) * n / n_scaled - 0.5  # box edges in image pixels
            inside.append((pix > lo) & (pix < hi))
            edge.append(((pix - lo).abs() < 6) | ((pix - hi).abs() < 6))  # within reach of the resize kernel
        covered += (inside[0][:, None] & inside[1][None, :]).float()
        near = [e | i for e, i in zip(edge, inside)]
        near_edge |= (edge[0][:, None] & near[1][None, :]) | (near[0][:, None] & edge[1][None, :])
    ok = ~near_edge
    want_bg = (covered * 0.3 + (3 - covered) * 1.0) / 3
    assert torch.allclose(bg[ok], want_bg[ok], atol=1e-5)
    assert torch.allclose(parts[:, ok], (covered * 0.2 / 3)[ok].expand(14, -1), atol=1e-5)
    assert set(covered[ok].tolist()) == {0.0, 1.0, 2.0, 3.0}  # the test saw every coverage
    assert torch.all(bg[:, :20] == 1) and torch.all(parts[:, :, -20:] == 0)  # no scale reached the sides


class RandomBeliefs(nn.Module):
    """Fixed random beliefs (seeded), recording the inputs they were given."""

    def __init__(self, box: int = 64, seed: int = 0):
        super().__init__()
        self.codec = CodecConfig(input_size=box, stride=8, sigma=4.0, center_sigma=8.0)
        self.gen = torch.Generator().manual_seed(seed)
        self.seen, self.returned = [], []

    def forward(self, images, center_maps):
        s = self.codec.output_size
        maps = torch.rand(len(images), 15, s, s, generator=self.gen)
        self.seen.append((images, center_maps))
        self.returned.append(maps)
        return [maps]


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)


@pytest.mark.parametrize("h, w", [(70, 45), (150, 230)])
def test_composed_resizes_equal_the_step_by_step_chain(h, w):
    """The inputs and the beliefs equal resize -> paste into grey -> model -> upsample to the box
    -> remove the padding (fill: parts 0, background 1) -> resize to the image -> mean over scales,
    done one step at a time with torch's bicubic antialiased resize."""
    box = 64
    model = RandomBeliefs(box)
    image = torch.rand(3, h, w)
    center, height = (w / 3, h / 2), h * 0.9
    out = predict_person(model, image, center, height, keep_beliefs=True)
    inputs, cmaps = model.seen[0]
    beliefs = model.returned[0]
    total = torch.zeros(15, h, w)
    for i, p in enumerate(plan_scales((h, w), center, height, box)):
        (hs, ws), (oy, ox) = p.size, p.offset
        canvas = torch.full((3, hs + 2 * box, ws + 2 * box), GREY)
        canvas[:, box:box + hs, box:box + ws] = _resize(image[None], (hs, ws))[0].clamp(0, 1)
        want = canvas[:, box - oy:2 * box - oy, box - ox:2 * box - ox]
        assert torch.allclose(inputs[i], want, atol=1e-5)
        up = _resize(beliefs[i:i + 1], (box, box))[0]
        scaled = torch.zeros(15, hs + 2 * box, ws + 2 * box)
        scaled[14] = 1.0
        scaled[:, box - oy:2 * box - oy, box - ox:2 * box - ox] = up
        total += _resize(scaled[None, :, box:box + hs, box:box + ws], (h, w))[0]
    assert torch.allclose(out.beliefs[0], total / 7, atol=1e-4)
    # every input's centre map peaks at the box centre
    peak = cmaps[:, 0].flatten(1).argmax(1)
    for coord in (peak // box, peak % box):
        assert torch.all((coord - (box - 1) / 2).abs() <= 0.5)


# ------------------------------------------------------------------------------------------------
# (d) scoring a dataset of original images
# ------------------------------------------------------------------------------------------------
#: A standing figure in a 160 x 200 image, LSP-14 order (x, y, 0-based), with a long right
#: shoulder - left hip diagonal so that the official torso |l_sho - r_hip| is the only one that
#: gives the expected PCK.
FIGURE = torch.tensor([[62, 186], [66, 152], [72, 110], [100, 120], [98, 152], [100, 186], [38, 118],
                       [44, 84], [50, 40], [95, 58], [118, 86], [124, 117], [78, 40], [80, 16]], dtype=torch.float32)


def torso(kp) -> float:
    return float((kp[skeleton.JOINT_INDEX["left_shoulder"], :2] - kp[skeleton.JOINT_INDEX["right_hip"], :2]).norm())


@pytest.fixture
def figures(tmp_path):
    """Three PNG images with the figure's dots: image 0 exact, image 1 with the right wrist's dot
    0.15 torso to the right, image 2 with the left ankle's dot 0.3 torso to the left, its left knee
    occluded and its right knee missing."""
    rng = np.random.default_rng(0)
    t = torso(FIGURE)
    paths, truth = [], []
    for i, (joint, shift) in enumerate([(None, 0.0), ("right_wrist", 0.15), ("left_ankle", -0.3)]):
        gt = FIGURE + torch.from_numpy(rng.uniform(-2, 2, (14, 2))).float()
        dots = gt.clone()
        if joint:
            dots[skeleton.JOINT_INDEX[joint], 0] += shift * t
        img = (dot_image(200, 160, dots).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        path = tmp_path / f"im{i}.png"
        Image.fromarray(img).save(path)
        flags = torch.full((14, 1), float(VISIBLE))
        if i == 2:
            flags[skeleton.JOINT_INDEX["left_knee"]] = OCCLUDED
            flags[skeleton.JOINT_INDEX["right_knee"]] = 0
        paths.append(str(path))
        truth.append(torch.cat([gt, flags], 1))
    return SimpleNamespace(paths=paths, keypoints_orig=torch.stack(truth).numpy())


def test_evaluate_protocol_scores_every_labelled_joint_with_the_official_torso(figures):
    model = DotModel(128)
    table = evaluate_protocol(model, figures, device="cpu")
    assert len(model.seen) == 1  # 3 images x 7 scales = 21 inputs: one pass at batch_size 32
    assert table.attrs["protocol"] == protocol_title("lsp")
    pck = table[(table.metric == "pck") & (table.stage == 2)].set_index(["part", "threshold"])
    assert set(table.normalize[table.metric == "pck"]) == {"torso"} and set(table.joints) == {"labelled"}
    assert pck.loc[("mean", 0.2), "count"] == 41  # 3 x 14 joints, less the missing right knee
    assert pck.loc[("mean", 0.2), "value"] == pytest.approx(40 / 41)  # only the 0.3-torso ankle misses
    assert pck.loc[("mean", 0.1), "value"] == pytest.approx(39 / 41)  # and the 0.15-torso wrist
    assert pck.loc[("r_wrist", 0.1), "value"] == pytest.approx(2 / 3)
    assert pck.loc[("r_wrist", 0.2), "value"] == 1.0
    assert pck.loc[("r_knee", 0.2), "count"] == 2 and pck.loc[("l_knee", 0.2), "count"] == 3
    visible = evaluate_protocol(model, figures, joints="visible", device="cpu", batch_size=7)
    assert len(model.seen) == 1 + 3  # batch_size 7 = one image of 7 scales per pass
    vis = visible[(visible.metric == "pck") & (visible.part == "mean") & (visible.stage == 2)]
    assert vis["count"].tolist() == [40, 40]
    # the same numbers as scoring predict_protocol's keypoints by hand
    pred = predict_protocol(model, figures, device="cpu")
    assert torch.equal(pred.truth, torch.from_numpy(figures.keypoints_orig))
    assert np.allclose(keypoint_metrics(pred.keypoints, pred.truth).value, table.value, equal_nan=True)


def test_protocol_choices_and_errors(figures):
    assert PROTOCOLS == ("lsp", "gt-crop") and JOINT_SETS == ("labelled", "visible")
    assert "oracle" in protocol_title("gt-crop") and "not comparable" in protocol_title("gt-crop")
    assert "7 scales 0.7-1.3" in protocol_title("lsp") and "3 scales 0.8-1.2" in protocol_title("lsp", [0.8, 1, 1.2])
    synthetic = SyntheticPoses(3, 32, "easy", seed=1)
    model = ConstantBeliefs(32)
    with pytest.raises(ValueError, match="no original images"):
        evaluate_protocol(model, synthetic, "lsp", device="cpu")
    oracle = evaluate_protocol(model, synthetic, "gt-crop", device="cpu")
    assert oracle.equals(evaluate(model, synthetic, device="cpu"))
    with pytest.raises(ValueError, match="flip"):
        evaluate_protocol(DotModel(), figures, flip=True, device="cpu")
    with pytest.raises(ValueError, match="unknown protocol"):
        evaluate_protocol(DotModel(), figures, "mpii", device="cpu")
    figures.paths[1] = figures.paths[1] + ".missing"
    with pytest.raises(FileNotFoundError, match="missing"):
        evaluate_protocol(DotModel(), figures, device="cpu")


def test_load_image_and_image_arguments(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    img = load_image(tmp_path / "a.png")
    assert img.shape == (3, 20, 30) and torch.allclose(img, torch.from_numpy(arr).permute(2, 0, 1) / 255)
    # a PIL image, a numpy array and a tensor are the same image to predict_person
    model = RandomBeliefs(32)
    for form in (Image.fromarray(arr), arr, torch.from_numpy(arr).permute(2, 0, 1)):
        predict_person(model, form, *locate_person((20, 30)))
    assert all(torch.equal(model.seen[0][0], s[0]) for s in model.seen)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="bad.png"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="shape"):
        predict_person(model, torch.zeros(2, 20, 30), (10, 10), 20)
    grey = arr[..., 0]  # grayscale: (H, W) arrays and tensors become three equal channels
    for form in (grey, torch.from_numpy(grey), torch.from_numpy(grey)[None]):
        assert torch.equal(as_image(form), torch.from_numpy(grey).float().div(255).expand(3, -1, -1))


# ------------------------------------------------------------------------------------------------
# the mean-pose baseline in the image frame
# ------------------------------------------------------------------------------------------------
def test_image_mean_pose_fits_in_the_image_frame(figures):
    base = ImageMeanPose().fit(figures)
    kp = torch.from_numpy(figures.keypoints_orig).double()
    c, h = locate_person((200, 160))
    norm = (kp[..., :2] - torch.tensor(c, dtype=torch.float64)) / h
    knee = skeleton.JOINT_INDEX["right_knee"]  # missing in image 2: the mean of images 0 and 1
    assert torch.allclose(base.mean[knee].double(), norm[:2, knee].mean(0), atol=1e-6)
    assert torch.allclose(base.mean[0].double(), norm[:, 0].mean(0), atol=1e-6)
    assert base.count[skeleton.JOINT_INDEX["right_knee"]] == 2 and base.count[0] == 3
    pred = base.predict(torch.tensor([c]), torch.tensor([h]))
    assert pred.shape == (1, 14, 3) and torch.all(pred[..., 2] == 1)
    table = base.evaluate(figures)
    assert table.stage.unique().tolist() == [1]
    assert table[(table.metric == "pck") & (table.part == "mean")]["count"].tolist() == [41, 41]
    with pytest.raises(ValueError, match="no original images"):
        ImageMeanPose().fit(SyntheticPoses(2, 32, "easy"))
    with pytest.raises(RuntimeError, match="not fitted"):
        ImageMeanPose().predict(torch.zeros(1, 2), torch.ones(1))


# ------------------------------------------------------------------------------------------------
# (e) the command line
# ------------------------------------------------------------------------------------------------
def run(capsys, *argv):
    code = main([str(a) for a in argv])
    return (code, *capsys.readouterr())


def one_line_error(code, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def lsp_dir(tmp_path_factory):
    """An LSP-format folder (joints (3, 14, 2000), flag 0 = visible): the figure with 3 px noise
    in a 160 x 200 JPEG, hard-linked for every image."""
    root = tmp_path_factory.mktemp("lsp")
    rng = np.random.default_rng(0)
    n = 2000
    xy = FIGURE.numpy() + rng.normal(0, 3, (n, 14, 2))
    j = np.zeros((3, 14, n))
    j[:2] = (xy + 1).transpose(2, 1, 0)  # 1-based
    j[2] = (rng.random((n, 14)) < 0.1).T  # 10 % occluded, still labelled
    scipy.io.savemat(root / "joints.mat", {"joints": j})
    images = root / "images"
    images.mkdir()
    first = images / "im0001.jpg"
    Image.fromarray(rng.integers(0, 255, (200, 160, 3), dtype=np.uint8)).save(first)
    for i in range(2, n + 1):
        os.link(first, images / f"im{i:04d}.jpg")
    return root


def test_cli_protocol_errors(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    junk = tmp_path / "junk.pt"
    cases = [
        (["--checkpoint", junk, "--data", "synthetic", "--protocol", "lsp"], ["--protocol lsp", "synthetic"]),
        (["--mean-pose", "--data", "synthetic:easy", "--protocol", "lsp"], ["--protocol lsp", "synthetic:easy"]),
        (["--checkpoint", junk, "--data", "lsp", "--flip"], ["--flip", "gt-crop"]),
        (["--mean-pose", "--data", "lsp", "--image-size", "64"], ["--image-size", "gt-crop"]),
        (["--checkpoint", junk, "--protocol", "mpii"], ["--protocol", "mpii"]),
        (["--checkpoint", junk, "--joints", "all"], ["--joints", "all"]),
    ]
    for argv, needles in cases:
        code, _, err = run(capsys, "eval", *argv)
        one_line_error(code, err, *needles)


def test_cli_titles_name_the_protocol_and_joints(lsp_dir, tmp_path, capsys):
    spec = f"lsp:{lsp_dir}"
    lsp_title = "protocol: official LSP test (person from the image centre and height, 7 scales 0.7-1.3)"
    code, out, err = run(capsys, "eval", "--mean-pose", "--data", spec, "--size", 20)
    assert code == 0, err
    assert "fitted on 1000 items of LSP images 1-1000" in out and "LSP images 1001-2000, 20 original images" in out
    assert out.count(f"{lsp_title}; joints: labelled") == 2  # both tables
    assert "mean over 280 labelled joints" in out

    code, out, err = run(capsys, "eval", "--mean-pose", "--data", spec, "--size", 20, "--protocol", "gt-crop",
                         "--joints", "visible")
    oracle = "protocol: oracle crops from the ground-truth joints (not comparable with published numbers)"
    assert code == 0 and out.count(f"{oracle}; joints: visible") == 2 and "visible joints" in out, err

    csv = tmp_path / "eval.csv"
    code, out, err = run(capsys, "eval", "--checkpoint", asset(TINY_WEIGHTS), "--data", spec,
                         "--size", 2, "--scales", "0.9,1.1", "--device", "cpu", "--out", csv)
    title = "protocol: official LSP test (person from the image centre and height, 2 scales 0.9-1.1)"
    assert code == 0 and out.count(f"{title}; joints: labelled") == 2 and "2 original images" in out, err
    assert "mean over 28 labelled joints" in out and csv.is_file()


# ------------------------------------------------------------------------------------------------
# the real LSP test images
# ------------------------------------------------------------------------------------------------
def test_real_lsp_test_split_under_the_protocol(datasets_root):
    from cpm_lab.data.specs import make_dataset
    from cpm_lab.inference import load_model

    root = datasets_root / "lsp"
    if not (root / "joints.mat").is_file():
        pytest.skip(f"the original LSP release is not at {root}")
    test = make_dataset(f"lsp:{root}", 128, "test")
    table = ImageMeanPose().fit(make_dataset(f"lsp:{root}", 128, "train")).evaluate(test)
    mean = table[(table.metric == "pck") & (table.part == "mean") & (table.threshold == 0.2)]
    assert mean["count"].item() == 14000  # every joint of the 1000 test images, occluded ones included
    assert 0.15 < mean["value"].item() < 0.22  # measured 0.185: the floor a model must clear
    few = test.select(range(6))
    pred = predict_protocol(load_model("tiny-synthetic", "cpu"), few, device="cpu")
    assert [k.shape for k in pred.keypoints] == [(6, 14, 3)] * 3
    for i, path in enumerate(few.paths):
        with Image.open(path) as img:
            w, h = img.size
        xy = pred.keypoints[-1][i, :, :2]
        assert torch.all((xy >= 0) & (xy < torch.tensor([w, h]))) and torch.equal(xy, xy.round())
