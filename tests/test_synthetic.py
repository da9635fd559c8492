"""SyntheticPoses: sample format, purity in (seed, index), left/right look-alike limbs,
occlusion labels, the facing cue, and knob validation."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cpm_lab import skeleton
from cpm_lab.data import DIFFICULTIES, SCALE_UNIT_PX, SyntheticPoses
from cpm_lab.targets import OCCLUDED, VISIBLE

# Everything except the person, so pixel tests see only the figure on its background.
CLEAN = dict(distractors=0, occluders=0, second_person_prob=0.0, background_shapes=0, noise=0.0)


#: What a few items look like (see test_items_match_the_recorded_fingerprint). Regenerate it
#: only after a deliberate change to the generator, with ``python tests/test_synthetic.py``,
#: and retrain or re-evaluate what was made with the old data (data/weights, data/results).
FINGERPRINT = Path(__file__).parent / "data" / "synthetic_fingerprint.json"
FINGERPRINT_ITEMS = {"easy": (0, 5), "standard": (0, 1, 7, 42), "hard": (3, 11)}


def _fingerprint(difficulty: str, index: int) -> dict:
    """Keypoints, centre, scale and an 8x8 thumbnail (block means per channel) of one
    128 px item of seed 0: enough to notice any change of pose, scene or colours."""
    s = SyntheticPoses(length=100, image_size=128, difficulty=difficulty, seed=0)[index]
    thumb = s["image"].reshape(3, 8, 16, 8, 16).mean(dim=(2, 4))
    return {"keypoints": s["keypoints"].tolist(), "center": s["center"].tolist(),
            "scale": float(s["scale"]), "thumbnail": thumb.tolist()}


def _digest(ds: SyntheticPoses, indices) -> str:
    h = hashlib.sha256()
    for i in indices:
        s = ds[i]
        for key in ("image", "keypoints", "center", "scale"):
            h.update(s[key].numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
@pytest.mark.parametrize("size", [96, 128])
def test_sample_format(difficulty, size):
    ds = SyntheticPoses(length=5, image_size=size, difficulty=difficulty, seed=3)
    assert len(ds) == 5
    for i in range(3):
        s = ds[i]
        assert set(s) == {"image", "keypoints", "center", "scale", "index"}
        img, kp = s["image"], s["keypoints"]
        assert img.shape == (3, size, size) and img.dtype == torch.float32
        assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
        assert kp.shape == (skeleton.NUM_JOINTS, 3) and kp.dtype == torch.float32
        assert torch.isfinite(kp).all() and set(kp[:, 2].tolist()) <= {OCCLUDED, VISIBLE}  # never missing
        assert s["center"].shape == (2,) and s["center"].dtype == torch.float32
        assert s["scale"].shape == () and s["scale"].dtype == torch.float32 and float(s["scale"]) > 0
        assert s["index"] == i
        lo, hi = kp[:, :2].min(0).values, kp[:, :2].max(0).values
        assert torch.allclose(s["center"], (lo + hi) / 2)
        # Raised arms can reach above the head, but not far beyond the standing height.
        assert float((hi - lo).max()) <= float(s["scale"]) * SCALE_UNIT_PX * 1.4


def test_easy_keypoints_inside_and_person_size():
    size = 128
    ds = SyntheticPoses(length=40, image_size=size, difficulty="easy", seed=1)
    for i in range(len(ds)):
        s = ds[i]
        xy = s["keypoints"][:, :2]
        assert float(xy.min()) >= 0 and float(xy.max()) <= size - 1
        assert (s["keypoints"][:, 2] == VISIBLE).all()
        height = float(s["scale"]) * SCALE_UNIT_PX
        assert 0.5 * size <= height <= 0.9 * size


def test_deterministic_in_process_and_order():
    a = SyntheticPoses(length=10, difficulty="hard", seed=7)
    b = SyntheticPoses(length=10, difficulty="hard", seed=7)
    s5 = a[5]
    for i in (9, 0, 3):   # other items in between must not matter
        b[i]
    t5 = b[5]
    assert torch.equal(s5["image"], t5["image"]) and torch.equal(s5["keypoints"], t5["keypoints"])
    c = SyntheticPoses(length=10, difficulty="hard", seed=8)
    assert not torch.equal(c[5]["image"], s5["image"])
    assert not torch.equal(a[4]["image"], s5["image"])


def test_items_match_the_recorded_fingerprint():
    """The shipped weights and results were made with this exact data: the generator may get
    faster, but its items must not change unnoticed. Tolerances allow another platform's libm
    to move a rare edge pixel: a thumbnail cell averages 256 pixels, so one moved pixel shifts
    it by at most 1/256; any real change (a colour, a shape, a placement) shifts many cells."""
    recorded = json.loads(FINGERPRINT.read_text())
    for difficulty, indices in FINGERPRINT_ITEMS.items():
        for i in indices:
            want, got = recorded[f"{difficulty}/{i}"], _fingerprint(difficulty, i)
            where = f"{difficulty} item {i}"
            np.testing.assert_allclose(got["keypoints"], want["keypoints"], atol=1e-4, err_msg=where)
            np.testing.assert_allclose(got["center"], want["center"], atol=1e-4, err_msg=where)
            assert got["scale"] == pytest.approx(want["scale"], abs=1e-6), where
            off = np.abs(np.array(got["thumbnail"]) - np.array(want["thumbnail"]))
            assert off.max() <= 0.02 and (off > 1e-4).mean() <= 0.02, (where, off.max(), (off > 1e-4).mean())


def test_deterministic_across_processes():
    code = (
        "import hashlib; from cpm_lab.data import SyntheticPoses\n"
        "ds = SyntheticPoses(length=4, image_size=96, difficulty='hard', seed=11)\n"
        "h = hashlib.sha256()\n"
        "for i in (3, 1, 2):\n"
        "    s = ds[i]\n"
        "    for k in ('image', 'keypoints', 'center', 'scale'):\n"
        "        h.update(s[k].numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ds = SyntheticPoses(length=4, image_size=96, difficulty="hard", seed=11)
    assert out.stdout.strip() == _digest(ds, (3, 1, 2))


def test_dataloader_batches():
    ds = SyntheticPoses(length=4, image_size=64, difficulty="easy")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 64, 64) and batch["keypoints"].shape == (4, 14, 3)
    assert batch["scale"].shape == (4,) and batch["index"].tolist() == [0, 1, 2, 3]


def test_indexing_and_shuffled_loader_batches():
    ds = SyntheticPoses(length=40, image_size=64, difficulty="hard", seed=3)
    last = ds[-1]
    assert last["index"] == 39 and torch.equal(last["image"], ds[39]["image"])
    with pytest.raises(IndexError, match="out of range"):
        ds[40]
    # Shuffled batches with a repeat equal the items fetched alone.
    loader = torch.utils.data.DataLoader(ds, batch_size=6, sampler=[9, 2, 33, 2, 14, 0])
    batch = next(iter(loader))
    assert batch["index"].tolist() == [9, 2, 33, 2, 14, 0]
    assert torch.equal(batch["image"], torch.stack([ds[i]["image"] for i in (9, 2, 33, 2, 14, 0)]))


def test_paired_limbs_share_style():
    ds = SyntheticPoses(length=30, difficulty="hard", seed=2)
    pairs = [((8, 7), (9, 10)), ((7, 6), (10, 11)), ((2, 1), (3, 4)), ((1, 0), (4, 5))]
    for i in range(len(ds)):
        styles = ds.meta(i)["limb_styles"]
        assert len(styles) == 8 and set(styles) <= set(skeleton.LIMBS)
        for right, left in pairs:
            assert styles[right] == styles[left]


def test_left_right_limbs_look_alike_in_pixels():
    # Sample each forearm at its midpoint: right and left show the same (shaded) colour.
    ds = SyntheticPoses(length=30, image_size=128, difficulty="easy", seed=4, **CLEAN)
    checked = matches = 0
    for i in range(len(ds)):
        s = ds[i]
        img, kp = s["image"].numpy(), s["keypoints"].numpy()
        style = ds.meta(i)["limb_styles"][(7, 6)]
        if style.stripe_period or style.noise:
            continue
        want = np.array(style.colour, dtype=np.float32)
        got = []
        for a, b in ((7, 6), (10, 11)):
            x, y = np.floor((kp[a, :2] + kp[b, :2]) / 2 + 0.5).astype(int)
            got.append(img[:, y, x])
        checked += 1
        # Shading darkens a limb by at most 35% towards its outline.
        matches += all(np.all(g <= want + 1e-5) and np.all(g >= 0.6 * want - 1e-5) for g in got)
    assert checked >= 8 and matches >= 0.8 * checked


def test_occluders_hide_joints_and_only_when_asked():
    clean = SyntheticPoses(length=30, difficulty="standard", seed=5, occluders=0, keep_inside=True)
    busy = SyntheticPoses(length=30, difficulty="standard", seed=5, occluders=3, keep_inside=True)
    hidden = 0
    for i in range(len(clean)):
        a, b = clean[i], busy[i]
        assert clean.meta(i)["n_occluders"] == 0 and busy.meta(i)["n_occluders"] == 3
        assert (a["keypoints"][:, 2] == VISIBLE).all()   # kept inside and nothing drawn over the joints
        # The occluder knob acts after the figure is sampled: same person, same joints.
        assert torch.equal(a["keypoints"][:, :2], b["keypoints"][:, :2])
        hidden += int((b["keypoints"][:, 2] == OCCLUDED).sum())  # position still known
    assert hidden >= 30


def test_joints_outside_the_image_are_labelled_but_not_visible():
    ds = SyntheticPoses(length=60, image_size=96, difficulty="hard", seed=6, occluders=0)
    outside = 0
    for i in range(len(ds)):
        kp = ds[i]["keypoints"]
        out = ((kp[:, :2] < -0.5) | (kp[:, :2] >= 96 - 0.5)).any(1)
        assert (kp[out, 2] == OCCLUDED).all()
        assert (kp[~out, 2] == VISIBLE).all()
        outside += int(out.sum())
    assert outside > 0   # hard lets people leave the frame a little


def test_facing_cue_and_labels_follow_the_person():
    size = 256
    ds = SyntheticPoses(length=120, image_size=size, difficulty="standard", seed=9,
                        facing_away_prob=0.5, rotation_range=10.0, **CLEAN)
    front_dx, back_dx, front_contrast, back_contrast = [], [], [], []
    for i in range(len(ds)):
        s = ds[i]
        kp = s["keypoints"].numpy().astype(np.float64)
        img = s["image"].numpy()
        away = ds.meta(i)["facing_away"]
        (front_dx, back_dx)[away].append(kp[8, 0] - kp[9, 0])   # right minus left shoulder x
        # Face cue: dark eye against skin when facing the viewer; uniform hair from behind.
        top, neck = kp[13, :2], kp[12, :2]
        hl = np.hypot(*(neck - top))
        hd = (neck - top) / hl
        eye = top + 0.42 * hl * hd + 0.12 * hl * np.array([-hd[1], hd[0]])
        mid = top + 0.42 * hl * hd

        def px(p):
            x, y = np.floor(p + 0.5).astype(int)
            return img[:, y, x].mean()

        (front_contrast, back_contrast)[away].append(px(mid) - px(eye))
    assert len(front_dx) > 30 and len(back_dx) > 30
    assert np.mean(front_dx) < 0 < np.mean(back_dx)
    assert np.mean(np.array(front_dx) < 0) > 0.95 and np.mean(np.array(back_dx) > 0) > 0.95
    assert np.mean(np.array(front_contrast) > 0.1) > 0.8
    assert np.mean(np.array(back_contrast) < 0.06) > 0.8


def test_second_person_is_unlabelled_and_optional():
    ds = SyntheticPoses(length=20, difficulty="hard", seed=1, second_person_prob=1.0)
    assert all(ds.meta(i)["second_person"] for i in range(5))
    ds0 = SyntheticPoses(length=20, difficulty="hard", seed=1, second_person_prob=0.0)
    assert not any(ds0.meta(i)["second_person"] for i in range(5))
    assert ds[0]["keypoints"].shape == (14, 3)


def test_invalid_difficulty_and_knobs():
    with pytest.raises(ValueError, match="easy.*hard.*standard"):
        SyntheticPoses(difficulty="medium")
    with pytest.raises(ValueError, match="occluders"):
        SyntheticPoses(occluderz=2)
    with pytest.raises(ValueError, match="facing_away_prob"):
        SyntheticPoses(facing_away_prob=1.5)
    with pytest.raises(ValueError, match="distractors"):
        SyntheticPoses(distractors=(3, 1))
    with pytest.raises(ValueError, match="scale_range"):
        SyntheticPoses(scale_range=(0.0, 1.0))
    with pytest.raises(ValueError, match="image_size"):
        SyntheticPoses(image_size=8)
    with pytest.raises(IndexError):
        SyntheticPoses(length=3)[3]


def test_overrides_and_description():
    ds = SyntheticPoses(length=7, image_size=64, difficulty="easy", occluders=2, distractors=(1, 3))
    assert ds.knobs["occluders"] == (2, 2) and ds.knobs["distractors"] == (1, 3)
    assert ds.knobs["rotation_range"] == DIFFICULTIES["easy"]["rotation_range"]
    text = ds.describe()
    for word in ("7 items", "64x64", "easy", "occluders", "preset"):
        assert word in text
    assert "difficulty='easy'" in repr(ds) and "occluders=(2, 2)" in repr(ds)
    assert ds[-1]["index"] == 6


if __name__ == "__main__":   # rewrite the fingerprint (only after a deliberate generator change)
    FINGERPRINT.parent.mkdir(exist_ok=True)
    items = {f"{d}/{i}": _fingerprint(d, i) for d, idx in FINGERPRINT_ITEMS.items() for i in idx}
    FINGERPRINT.write_text("{\n" + ",\n".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in items.items())
                           + "\n}\n")
    print(f"wrote {FINGERPRINT}")
