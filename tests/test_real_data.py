"""Real-data loaders (LSP/LSPet, MPII, COCO) and the mean-pose baseline.

Small files in each format are written into tmp_path by the tests themselves; the real sample
files beside the project (../shared/datasets or $CPM_LAB_DATA) are used when present and the
tests that need them skip with a reason otherwise.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image
from torch.utils.data import DataLoader, default_collate

from cpm_lab import skeleton
from cpm_lab.data.baseline import MeanPoseBaseline
from cpm_lab.data.coco import COCOKeypoints
from cpm_lab.data.crop import PoseDataError
from cpm_lab.data.lsp import LSP, read_joints
from cpm_lab.data.mpii import MPII
from cpm_lab.data.specs import make_dataset
from cpm_lab.targets import MISSING, OCCLUDED, VISIBLE

CORE_KEYS = {"image", "keypoints", "center", "scale", "index"}
HEAD = skeleton.JOINT_INDEX["head_top"]


# --------------------------------------------------------------------------------------------
# Writers for tiny datasets in each format
# --------------------------------------------------------------------------------------------
def write_image(path, w, h, dot=None, fmt=None):
    """Grey image with a 3x3 white square centred on ``dot`` (0-based pixel x, y)."""
    img = np.full((h, w, 3), 60, np.uint8)
    if dot is not None:
        x, y = int(round(dot[0])), int(round(dot[1]))
        img[y - 1:y + 2, x - 1:x + 2] = 255
    Image.fromarray(img).save(path, format=fmt, quality=95)


def random_poses(n, rng, w=90, h=110):
    """(n, 14, 2) 0-based joints inside the central part of a w x h image; head top at a
    whole pixel so a painted dot marks it exactly."""
    xy = np.stack([rng.uniform(15, w - 15, (n, 14)), rng.uniform(15, h - 15, (n, 14))], -1)
    xy[:, HEAD] = np.round(xy[:, HEAD])
    return xy


def write_lsp(root, layout, xy, visible, pattern):
    """joints.mat in the given layout (coordinates 1-based as MATLAB stores them) + images."""
    n = len(xy)
    (root / "images").mkdir(parents=True, exist_ok=True)
    coords = xy + 1.0
    if layout == "lspet":
        j = np.zeros((14, 3, n))
        j[:, :2] = np.where(visible[..., None], coords, np.array([0.0, -26.0])).transpose(1, 2, 0)
        j[:, 2] = visible.T.astype(float)
    else:
        j = np.zeros((3, 14, n))
        j[:2] = coords.transpose(2, 1, 0)
        j[2] = (~visible).T.astype(float)  # LSP: flag 0 = visible
    scipy.io.savemat(root / "joints.mat", {"joints": j})
    for i in range(n):
        write_image(root / "images" / pattern.format(i + 1), 90, 110, dot=xy[i, HEAD])
    return root


@pytest.fixture
def poses():
    rng = np.random.default_rng(0)
    xy = random_poses(5, rng)
    visible = np.ones((5, 14), bool)
    visible[0, 0] = visible[2, [3, 7]] = False
    return xy, visible


@pytest.fixture
def lspet_dir(tmp_path, poses):
    return write_lsp(tmp_path / "lspet", "lspet", *poses, "im{:05d}.jpg")


def write_mpii(tmp_path, n=3):
    rng = np.random.default_rng(1)
    d = tmp_path / "mpii"
    d.mkdir()
    records = []
    for i in range(n):
        joints = np.stack([rng.uniform(30, 150, 16), rng.uniform(30, 110, 16)], -1)
        joints[9] = np.round(joints[9])  # head top on a whole pixel (0-based)
        vis = np.ones(16, int)
        vis[i] = 0
        name = f"{i:09d}.png"
        write_image(d / name, 180, 140, dot=joints[9], fmt="PNG")
        records.append({"image": name, "joints": (joints + 1).tolist(), "joints_vis": vis.tolist(),
                        "center": [91.0, 71.0], "scale": 0.6})
    (d / "ann.json").write_text(json.dumps(records))
    return d, records


def write_coco(tmp_path):
    d = tmp_path / "coco"
    d.mkdir()
    rng = np.random.default_rng(2)
    write_image(d / "a.jpg", 160, 120)
    write_image(d / "b.jpg", 100, 100)

    def person(aid, iid, nvis, bbox, crowd=0):
        k = np.zeros((17, 3))
        k[:nvis, :2] = rng.uniform(20, 90, (nvis, 2)).round()
        k[:nvis, 2] = 2
        if nvis > 1:
            k[1, 2] = 1  # labelled but occluded: OCCLUDED
        return {"id": aid, "image_id": iid, "category_id": 1, "iscrowd": crowd, "num_keypoints": nvis,
                "keypoints": k.ravel().tolist(), "bbox": bbox, "area": 100.0}

    anns = [person(10, 1, 17, [20, 10, 60, 90]), person(11, 1, 0, [90, 10, 30, 40]),
            person(12, 2, 6, [10, 10, 50, 70]), person(13, 2, 5, [0, 0, 100, 100], crowd=1)]
    data = {"images": [{"id": 1, "file_name": "a.jpg", "width": 160, "height": 120},
                       {"id": 2, "file_name": "b.jpg", "width": 100, "height": 100}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person", "keypoints": list(skeleton.COCO_JOINT_NAMES)}]}
    (d / "ann.json").write_text(json.dumps(data))
    return d, data


def brightest(image: torch.Tensor) -> tuple[float, float]:
    """Centroid of the brightest pixels of a (3, H, W) image."""
    g = image.mean(0)
    mask = (g > g.max() - 0.15).double() * g.double()
    ys, xs = torch.meshgrid(torch.arange(g.shape[0], dtype=torch.float64),
                            torch.arange(g.shape[1], dtype=torch.float64), indexing="ij")
    return float((mask * xs).sum() / mask.sum()), float((mask * ys).sum() / mask.sum())


# --------------------------------------------------------------------------------------------
# LSP / LSPet
# --------------------------------------------------------------------------------------------
def test_both_lsp_layouts_map_their_flags_to_the_joint_flags(tmp_path, poses):
    xy, flagged = poses
    a = LSP(write_lsp(tmp_path / "lspet", "lspet", xy, flagged, "im{:05d}.jpg"), image_size=64)
    b = LSP(write_lsp(tmp_path / "lsp", "lsp", xy, flagged, "im{:04d}.jpg"), image_size=64)
    assert (a.layout, b.layout) == ("lspet", "lsp")
    assert a.paths[0].endswith("im00001.jpg") and b.paths[0].endswith("im0001.jpg")
    # LSPet: flag 1 annotated -> VISIBLE, flag 0 -> MISSING (coordinates meaningless, stored as 0)
    kp = a.keypoints_orig
    assert np.array_equal(kp[..., 2], np.where(flagged, VISIBLE, MISSING))
    np.testing.assert_allclose(kp[..., :2][flagged], xy[flagged], atol=1e-4)  # 1-based -> 0-based
    assert np.all(kp[..., :2][~flagged] == 0)
    # LSP: flag 0 visible -> VISIBLE, flag 1 occluded -> OCCLUDED, position kept: every joint labelled
    kp = b.keypoints_orig
    assert np.array_equal(kp[..., 2], np.where(flagged, VISIBLE, OCCLUDED))
    np.testing.assert_allclose(kp[..., :2], xy, atol=1e-4)
    torch.testing.assert_close(a[1]["keypoints"], b[1]["keypoints"])  # image 1 has no unflagged joint


def test_layout_override_changes_only_the_flag_meaning(lspet_dir, poses):
    kp, used = read_joints(lspet_dir / "joints.mat", "lsp")
    assert used == "lsp"
    assert np.array_equal(kp[..., 2] == VISIBLE, ~poses[1])
    with pytest.raises(ValueError, match="layout"):
        read_joints(lspet_dir / "joints.mat", "coco")


def test_lsp_sample_contract_and_geometry(lspet_dir, poses):
    ds = LSP(lspet_dir, image_size=96)
    assert len(ds) == 5 and ds.num_parts == 14
    item = ds[1]
    assert CORE_KEYS <= set(item)
    assert item["image"].shape == (3, 96, 96) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["keypoints"].shape == (14, 3) and item["keypoints"].dtype == torch.float32
    torch.testing.assert_close(item["center"], torch.tensor([47.5, 47.5]))
    assert item["scale"].item() == pytest.approx(96 / 1.5 / 200)
    # The painted dot (head top) appears where the transformed keypoint says.
    x, y = brightest(item["image"])
    assert abs(x - item["keypoints"][HEAD, 0].item()) < 0.6 and abs(y - item["keypoints"][HEAD, 1].item()) < 0.6
    # crop_affine maps the original keypoints to the crop keypoints
    orig = torch.cat([item["keypoints_orig"][:, :2], torch.ones(14, 1)], 1)
    torch.testing.assert_close((orig @ item["crop_affine"].T)[:, :2], item["keypoints"][:, :2], atol=1e-3, rtol=0)
    # the person box derived from the joints: box_pad * the joints' bounding-box side
    xy = poses[0][1]
    side = (xy.max(0) - xy.min(0)).max() * 1.2
    assert ds.boxes_orig[1] == pytest.approx(side)


def test_lsp_start_end_are_one_based_inclusive(lspet_dir):
    ds = LSP(lspet_dir, image_size=32, start=2, end=4)
    assert len(ds) == 3 and ds.numbers.tolist() == [2, 3, 4]
    assert ds.paths[0].endswith("im00002.jpg")
    with pytest.raises(ValueError, match="start"):
        LSP(lspet_dir, start=4, end=9)


def test_collate_and_metadata_off(lspet_dir):
    ds = LSP(lspet_dir, image_size=32, metadata=False)
    assert set(ds[0]) == CORE_KEYS
    batch = default_collate([ds[i] for i in range(3)])
    assert batch["image"].shape == (3, 3, 32, 32) and batch["scale"].shape == (3,)
    full = default_collate([LSP(lspet_dir, image_size=32)[i] for i in range(2)])
    assert isinstance(full["path"], list) and full["crop_affine"].shape == (2, 3, 3)


# Bad input -----------------------------------------------------------------------------------
def test_missing_files_are_named(tmp_path, lspet_dir):
    with pytest.raises(FileNotFoundError, match="root folder"):
        LSP(tmp_path / "nope")
    (lspet_dir / "images" / "im00003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"im00003\.jpg"):
        LSP(lspet_dir)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = LSP(lspet_dir, on_error="skip")
    assert len(ds) == 4 and ds.skipped == 1 and "image 3" in ds.skipped_reasons[0]
    assert ds.numbers.tolist() == [1, 2, 4, 5]
    (lspet_dir / "joints.mat").unlink()
    with pytest.raises(FileNotFoundError, match="joints.mat"):
        LSP(lspet_dir)


def test_wrong_array_shape_is_an_error(tmp_path, lspet_dir):
    scipy.io.savemat(lspet_dir / "joints.mat", {"joints": np.zeros((14, 2, 5))})
    with pytest.raises(PoseDataError, match=r"joints.mat.*\(14, 2, 5\)"):
        LSP(lspet_dir)
    scipy.io.savemat(lspet_dir / "joints.mat", {"points": np.zeros((14, 3, 5))})
    with pytest.raises(PoseDataError, match="'joints'"):
        LSP(lspet_dir)
    (lspet_dir / "joints.mat").write_bytes(b"not a mat file")
    with pytest.raises(PoseDataError, match="MATLAB"):
        LSP(lspet_dir)


def test_nan_coordinates_raise_or_skip(tmp_path, poses):
    xy, visible = poses
    xy = xy.copy()
    xy[3, 5] = np.nan
    root = write_lsp(tmp_path / "lspet", "lspet", xy, visible, "im{:05d}.jpg")
    with pytest.raises(PoseDataError, match=r"image 4: NaN.*joint 5 \(left_ankle\)"):
        LSP(root)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = LSP(root, on_error="skip")
    assert ds.skipped == 1 and len(ds) == 4 and 4 not in ds.numbers
    # a NaN on a joint that is NOT annotated (LSPet flag 0) carries no label: not an error
    visible = visible.copy()
    visible[3, 5] = False
    ok = LSP(write_lsp(tmp_path / "lspet2", "lspet", xy, visible, "im{:05d}.jpg"))
    assert len(ok) == 5 and ok.keypoints_orig[3, 5].tolist() == [0.0, 0.0, 0.0]


def test_sample_without_a_person_box_raises_or_skips(tmp_path, poses):
    xy, visible = poses
    visible = visible.copy()
    visible[1] = False
    visible[1, 4] = True  # a single annotated joint: no box
    root = write_lsp(tmp_path / "lspet", "lspet", xy, visible, "im{:05d}.jpg")
    with pytest.raises(PoseDataError, match="image 2: fewer than two"):
        LSP(root)
    with pytest.warns(UserWarning):
        assert len(LSP(root, on_error="skip")) == 4


def test_corrupt_image_lazily_or_up_front(lspet_dir):
    (lspet_dir / "images" / "im00002.jpg").write_bytes(b"\xff\xd8\xff garbage, not a jpeg")
    ds = LSP(lspet_dir, image_size=32)  # lazy: construction succeeds
    ds[0]
    with pytest.raises(PoseDataError, match=r"im00002\.jpg \(sample 1, .*image 2\)"):
        ds[1]
    with pytest.raises(PoseDataError, match=r"im00002\.jpg"):
        LSP(lspet_dir, validate_images=True)
    with pytest.warns(UserWarning, match="skipped 1"):
        ds = LSP(lspet_dir, image_size=32, validate_images=True, on_error="skip")
    assert len(ds) == 4 and ds.skipped == 1 and "cannot decode" in ds.skipped_reasons[0]
    assert ds[1]["path"].endswith("im00003.jpg")


def test_bad_arguments(lspet_dir):
    with pytest.raises(ValueError, match="on_error"):
        LSP(lspet_dir, on_error="ignore")
    with pytest.raises(ValueError, match="layout"):
        LSP(lspet_dir, layout="mpii")
    ds = LSP(lspet_dir, image_size=32)
    with pytest.raises(IndexError):
        ds[5]
    assert ds[-1]["index"] == 4


def test_select_keeps_per_sample_fields_aligned(lspet_dir):
    ds = LSP(lspet_dir, image_size=32)
    sub = ds.select([3, 1])
    assert len(sub) == 2 and sub.numbers.tolist() == [4, 2] and len(ds) == 5
    assert sub[0]["path"].endswith("im00004.jpg")
    torch.testing.assert_close(sub[1]["keypoints"], ds[1]["keypoints"])
    with pytest.raises(IndexError):
        ds.select([7])


def test_make_dataset_specs_for_real_data(tmp_path, lspet_dir):
    ds = make_dataset(f"lspet:{lspet_dir}", 32, "train", length=3)
    assert isinstance(ds, LSP) and ds.numbers.tolist() == [1, 2, 3] and ds.image_size == 32
    with pytest.raises(ValueError, match="holds 5 images, but the LSPet val split is images 8001-9000"):
        make_dataset(f"lspet:{lspet_dir}", 32, "val")  # 8001-9000 are not in a 5-image file
    assert ds.split_description == "LSPet images 1-5"   # the split's images; length keeps the first 3
    d, _ = write_coco(tmp_path)
    coco = make_dataset(f"coco:{d / 'ann.json'}", 32, "test")
    assert len(coco) == 2 and coco.split_description == "COCO ann.json"
    m, _ = write_mpii(tmp_path)
    mpii = make_dataset(f"mpii:{m / 'ann.json'}", 32)
    assert mpii.num_parts == 14 and mpii.split_description == "MPII ann.json"
    with pytest.raises(FileNotFoundError, match="nope.json"):
        make_dataset(f"coco:{tmp_path / 'nope.json'}", 32)


# Cache -----------------------------------------------------------------------------------------
def test_cache_returns_identical_crops_and_is_shared_with_workers(lspet_dir):
    ds = LSP(lspet_dir, image_size=32, cache=True)
    first = ds[0]["image"]
    assert len(ds._cache) == 1
    (lspet_dir / "images" / "im00001.jpg").unlink()  # a cache hit no longer needs the file
    assert torch.equal(ds[0]["image"], first)
    # Workers fill the shared cache; the main process sees their crops afterwards.
    fresh = LSP(lspet_dir, image_size=32, cache=True, start=2)
    list(DataLoader(fresh, batch_size=2, num_workers=2))
    assert len(fresh._cache) == len(fresh) == 4


# --------------------------------------------------------------------------------------------
# MPII and COCO (files written here)
# --------------------------------------------------------------------------------------------
def test_mpii_json_native_and_lsp_parts(tmp_path):
    d, records = write_mpii(tmp_path)
    native = MPII(d / "ann.json", d, image_size=64, parts="mpii")
    lsp = MPII(d / "ann.json", d, image_size=64)
    assert native.num_parts == 16 and lsp.num_parts == 14
    assert native.joint_names == skeleton.MPII_JOINT_NAMES
    j = np.asarray(records[1]["joints"]) - 1  # 1-based -> 0-based
    np.testing.assert_allclose(native.keypoints_orig[1, 2:, :2], j[2:], atol=1e-4)
    assert native.keypoints_orig[1, 1, 2] == 0  # joints_vis 0
    np.testing.assert_allclose(native.centers_orig[0], [90.0, 70.0])
    assert native.boxes_orig[0] == pytest.approx(120.0)  # scale 0.6 * 200
    mapped = skeleton.to_lsp(native.keypoints_orig, "mpii")
    np.testing.assert_allclose(lsp.keypoints_orig, mapped, atol=1e-5)
    item = native[0]
    x, y = brightest(item["image"])  # the dot marks MPII head top (index 9)
    assert abs(x - item["keypoints"][9, 0].item()) < 0.7 and abs(y - item["keypoints"][9, 1].item()) < 0.7


def test_mpii_bad_records_are_named(tmp_path):
    d, records = write_mpii(tmp_path)
    records[2]["joints"] = records[2]["joints"][:15]
    records[1]["joints"][4] = [float("nan"), 3.0]
    (d / "bad.json").write_text(json.dumps(records))
    with pytest.raises(PoseDataError, match=r"(?s)2 unusable.*record 1.*NaN.*joint 4 \(left_knee\).*record 2.*16x"):
        MPII(d / "bad.json", d)
    with pytest.warns(UserWarning, match="skipped 2"):
        ds = MPII(d / "bad.json", d, on_error="skip")
    assert len(ds) == 1 and ds.skipped == 2
    with pytest.raises(FileNotFoundError, match="nope.json"):
        MPII(d / "nope.json", d)
    (d / "broken.json").write_text("[{")
    with pytest.raises(PoseDataError, match="broken.json.*JSON"):
        MPII(d / "broken.json", d)


def test_coco_skips_people_without_keypoints_and_crowds(tmp_path):
    d, data = write_coco(tmp_path)
    ds = COCOKeypoints(d / "ann.json", d, image_size=48, parts="coco")
    assert len(ds) == 2 and ds.annotation_ids == [10, 12] and ds.image_ids == [1, 2]
    assert ds.num_unlabelled == 1 and ds.num_crowd == 1 and ds.skipped == 0
    assert ds.num_parts == 17 and (ds.keypoints_orig[:, :, 2] > 0).sum(1).tolist() == [17, 6]  # v=1 counts
    assert ds.keypoints_orig[0, :3, 2].tolist() == [VISIBLE, OCCLUDED, VISIBLE]  # COCO's v is the flag
    np.testing.assert_allclose(ds.centers_orig[0], [20 + 30 - 0.5, 10 + 45 - 0.5])
    assert ds.boxes_orig[0] == pytest.approx(90.0)
    lsp = COCOKeypoints(d / "ann.json", d, image_size=48)
    assert lsp.num_parts == 14
    np.testing.assert_allclose(lsp.keypoints_orig, skeleton.to_lsp(ds.keypoints_orig, "coco"), atol=1e-5)
    assert ds[1]["keypoints"].shape == (17, 3) and lsp[1]["keypoints"].shape == (14, 3)


def test_coco_bad_annotations_are_named(tmp_path):
    d, data = write_coco(tmp_path)
    data["annotations"][2]["keypoints"] = data["annotations"][2]["keypoints"][:50]
    data["annotations"][0]["keypoints"][3] = float("nan")
    (d / "bad.json").write_text(json.dumps(data))
    with pytest.raises(PoseDataError, match=r"(?s)annotation 0 \(id 10.*NaN.*annotation 2 \(id 12.*51"):
        COCOKeypoints(d / "bad.json", d)
    with pytest.raises(PoseDataError, match="every one of its 2 samples is unusable"):  # nothing left to skip to
        COCOKeypoints(d / "bad.json", d, on_error="skip")


# --------------------------------------------------------------------------------------------
# Real files beside the project
# --------------------------------------------------------------------------------------------
def test_real_lspet_first_images(datasets_root):
    root = datasets_root / "lspet"
    if not (root / "joints.mat").is_file():
        pytest.skip(f"LSPet not found under {root}")
    ds = LSP(root, image_size=128, start=1, end=8)
    raw = scipy.io.loadmat(root / "joints.mat")["joints"]
    assert ds.layout == "lspet" and len(ds) == 8
    assert np.array_equal(ds.keypoints_orig[..., 2], np.where(raw[:, 2, :8].T == 1, VISIBLE, MISSING))
    np.testing.assert_allclose(ds.keypoints_orig[0, 1, :2], raw[1, :2, 0] - 1, atol=1e-4)
    batch = default_collate([ds[i] for i in range(8)])
    assert batch["image"].shape == (8, 3, 128, 128)
    vis = batch["keypoints"][..., 2] == VISIBLE
    assert vis.sum() >= 0.9 * (raw[:, 2, :8] > 0).sum()  # box + margin keep annotated joints inside
    xy = batch["keypoints"][..., :2][vis]
    assert xy.min() >= -0.5 and xy.max() < 127.5
    assert batch["image"].std() > 0.1  # real pixels, not padding


def test_real_mpii_and_coco_samples(datasets_root):
    mp = datasets_root / "samples" / "mpii"
    co = datasets_root / "samples" / "coco"
    if not (mp / "test_mpii.json").is_file() or not (co / "test_coco.json").is_file():
        pytest.skip(f"MPII/COCO samples not found under {datasets_root / 'samples'}")
    m = MPII(mp / "test_mpii.json", mp, image_size=96)
    assert len(m) == 5 and m.skipped == 0
    item = m[0]
    assert item["image"].shape == (3, 96, 96) and (item["keypoints"][:, 2] > 0).sum() >= 12
    native = MPII(mp / "test_mpii.json", mp, image_size=96, parts="mpii")
    rec = json.loads((mp / "test_mpii.json").read_text())
    assert (native.keypoints_orig[:, :, 2] == VISIBLE).sum() == sum(sum(r["joints_vis"]) for r in rec)

    ann = json.loads((co / "test_coco.json").read_text())
    labelled = [a for a in ann["annotations"] if a["num_keypoints"] > 0 and not a.get("iscrowd")]
    c = COCOKeypoints(co / "test_coco.json", co, image_size=96, parts="coco")
    assert len(c) == len(labelled) and c.num_unlabelled == len(ann["annotations"]) - len(labelled)
    assert (c.keypoints_orig[:, :, 2] > 0).sum(1).tolist() == [a["num_keypoints"] for a in labelled]
    flags = [np.asarray(a["keypoints"]).reshape(17, 3)[:, 2] for a in labelled]
    assert np.array_equal(c.keypoints_orig[:, :, 2], np.stack(flags))  # COCO's v is the joint flag
    batch = default_collate([c[i] for i in range(len(c))])
    assert batch["keypoints"].shape == (len(c), 17, 3)
    assert (batch["keypoints"][..., 2] > 0).sum() >= 0.9 * sum(a["num_keypoints"] for a in labelled)


# --------------------------------------------------------------------------------------------
# Mean-pose baseline
# --------------------------------------------------------------------------------------------
def test_mean_pose_baseline_fit_and_predict():
    # Two samples with boxes of 100 and 200 px; normalised poses a and b average to (a + b) / 2.
    a = torch.tensor([[0.1, -0.2], [0.3, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.3, 0.2], [0.1, 0.4], [0.0, 0.0]])
    centers = torch.tensor([[50.0, 60.0], [100.0, 100.0]])
    scales = torch.tensor([0.5, 1.0])
    xy = torch.stack([a, b]) * (scales * 200)[:, None, None] + centers[:, None]
    vis = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # joint 2 never visible
    batch = {"keypoints": torch.cat([xy, vis[..., None]], -1), "center": centers, "scale": scales}
    base = MeanPoseBaseline().fit(batch)
    torch.testing.assert_close(base.mean[:2], (a[:2] + b[:2]) / 2)
    assert base.count.tolist() == [2, 2, 0] and torch.isnan(base.mean[2]).all()
    pred = base.predict({"center": torch.tensor([[10.0, 20.0]]), "scale": torch.tensor([0.25])})
    expected = torch.tensor([[10 + 0.2 * 50, 20 + 0.0], [10 + 0.2 * 50, 20 + 0.2 * 50]])
    torch.testing.assert_close(pred[0, :2, :2], expected)
    assert pred[0, :, 2].tolist() == [1.0, 1.0, 0.0]
    with pytest.raises(RuntimeError, match="fit"):
        MeanPoseBaseline().predict(batch)


def test_mean_pose_baseline_on_a_loader_matches_iterating_items(lspet_dir):
    ds = LSP(lspet_dir, image_size=64)
    fast = MeanPoseBaseline().fit(ds)  # annotations(): no image decoding

    class Items:  # a plain indexable dataset, like SyntheticPoses
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            return ds[i]

    slow = MeanPoseBaseline().fit(Items())
    torch.testing.assert_close(fast.mean, slow.mean, atol=1e-5, rtol=0)
    pred = fast.predict(default_collate([ds[i] for i in range(5)]))
    assert pred.shape == (5, 14, 3)
    # Mean pose placed in each (identical) crop box: one prediction for all five samples.
    torch.testing.assert_close(pred[0], pred[4])
    # It is the mean of the crop keypoints where visible
    kp = ds.annotations()["keypoints"]
    v = kp[..., 2:] > 0
    mean_xy = (kp[..., :2] * v).sum(0) / v.sum(0)
    torch.testing.assert_close(pred[0, :, :2], mean_xy, atol=1e-3, rtol=0)


def test_lsp_specs_refuse_the_other_layout_and_combine_train_splits(tmp_path, poses):
    xy, flagged = poses
    lspet = write_lsp(tmp_path / "lspet", "lspet", xy, flagged, "im{:05d}.jpg")
    lsp = write_lsp(tmp_path / "lsp", "lsp", xy, flagged, "im{:04d}.jpg")
    with pytest.raises(ValueError, match="LSPET layout .* use lspet:"):
        make_dataset(f"lsp:{lspet}", 64, split="test")
    with pytest.raises(ValueError, match="LSP layout .* use lsp:"):
        make_dataset(f"lspet:{lsp}", 64, split="train")
    with pytest.raises(ValueError, match="holds 5 images; the LSP test split needs images 1001-2000"):
        make_dataset(f"lsp:{lsp}", 64, split="test")
    both = make_dataset(f"lspet:{lspet}+lspet:{lspet}", 64, split="train")
    assert len(both) == 10 and both.split_description == "LSPet images 1-5 + LSPet images 1-5"
    assert both.annotations()["keypoints"].shape == (10, 14, 3)
    torch.testing.assert_close(both[7]["keypoints"], both[2]["keypoints"])
    with pytest.raises(ValueError, match="joined by"):
        make_dataset("lspet+", 64)
