"""Single photos: ``inference.predict_image`` and ``cpm-lab predict`` on files of every common
kind (JPEG, PNG with alpha, grayscale, palette, CMYK, EXIF-rotated), a person box, unreadable
files, and the JSON/PNG they write."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cpm_lab.cli import main
from cpm_lab.cli.predict import output_names
from cpm_lab.inference import load_model, locate_person, person_item, predict_image, predict_person
from cpm_lab.skeleton import JOINT_NAMES

ONE = ["--scales", "1.0"]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model("tiny-synthetic", device="cpu")


def _photo(h=90, w=60, seed=0) -> np.ndarray:
    """A tall uint8 photo whose halves differ, so a wrong rotation or flip shows."""
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 12 + 40).astype(np.uint8)
    img[: h // 3] += 150
    img[:, : w // 4, 2] = 255
    return img


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict:
    """One file per kind predict must read, and the upright RGB pixels each should decode to
    (None where the codec is lossy or converts colours itself)."""
    d = tmp_path_factory.mktemp("photos")
    img = _photo()
    files = {}
    Image.fromarray(img).save(d / "rgb.jpg", quality=95)
    files["rgb.jpg"] = None
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 200, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    files["alpha.png"] = img
    grey = img.mean(-1).astype(np.uint8)
    Image.fromarray(grey, "L").save(d / "grey.png")
    files["grey.png"] = np.repeat(grey[..., None], 3, -1)
    Image.fromarray(img).convert("P").save(d / "palette.gif")
    files["palette.gif"] = None
    Image.fromarray(img).convert("CMYK").save(d / "cmyk.jpg", quality=95)
    files["cmyk.jpg"] = None
    # stored lying on its side; EXIF orientation 6 says "rotate 90 degrees clockwise to view"
    stored = np.ascontiguousarray(np.rot90(img, 1))
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(d / "exif6.jpg", quality=95, exif=exif)
    files["exif6.jpg"] = "upright"
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (d / "notes.txt").write_text("not an image, ignored in a folder")
    return {"dir": d, "files": files, "upright": img}


def test_every_file_kind_decodes_upright_in_rgb(model, photos):
    for name, expect in photos["files"].items():
        pred = predict_image(model, photos["dir"] / name, scales=(1.0,))
        assert pred.image.shape == (3, 90, 60), name
        assert pred.image.min() >= 0 and pred.image.max() <= 1, name
        got = (pred.image.permute(1, 2, 0).numpy() * 255).round()
        if isinstance(expect, np.ndarray):
            np.testing.assert_array_equal(got, expect, err_msg=name)
        elif expect == "upright":  # JPEG is lossy: near the upright photo, far from the stored-as-is turn
            upright = photos["upright"].astype(float)
            assert np.abs(got - upright).mean() < 6, name
            assert np.abs(got - np.rot90(upright, 2)).mean() > 30, name
        for kp in pred.keypoints:
            assert kp.shape == (14, 3)
            assert (kp[:, 0] >= 0).all() and (kp[:, 0] <= 59).all() and (kp[:, 1] >= 0).all() and (kp[:, 1] <= 89).all()


def test_arrays_files_and_grey_arrays_agree(model, photos):
    img = photos["files"]["grey.png"]
    from_file = predict_image(model, photos["dir"] / "grey.png", scales=(1.0,))
    from_array = predict_image(model, img, scales=(1.0,))
    from_grey = predict_image(model, img[..., 0], scales=(1.0,))
    for a, b, c in zip(from_file.keypoints, from_array.keypoints, from_grey.keypoints):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)
    assert from_file.source.endswith("grey.png") and from_array.source is None


def test_box_is_the_person_searched_for(model):
    img = _photo(120, 100)
    box = (10.0, 20.0, 70.0, 110.0)
    pred = predict_image(model, img, box=box, scales=(0.9, 1.1))
    assert pred.center == (40.0, 65.0) and pred.height == 90.0 and pred.box == box
    direct = predict_person(model, torch.from_numpy(img).permute(2, 0, 1), (40.0, 65.0), 90.0, (0.9, 1.1))
    for a, b in zip(pred.keypoints, direct.keypoints):
        torch.testing.assert_close(a, b)
    assert predict_image(model, img, scales=(1.0,)).center == locate_person((120, 100))[0]
    with pytest.raises(ValueError, match="x1 > x0"):
        predict_image(model, img, box=(50, 0, 10, 10))


def test_record_is_json_with_every_stage_and_part(model):
    pred = predict_image(model, _photo(), scales=(1.0,))
    record = json.loads(json.dumps(pred.to_dict()))
    assert record["width"] == 60 and record["height"] == 90 and record["parts"] == list(JOINT_NAMES)
    assert [s["stage"] for s in record["stages"]] == list(range(1, pred.num_stages + 1))
    last = record["stages"][-1]["keypoints"]
    assert [k["part"] for k in last] == list(JOINT_NAMES)
    np.testing.assert_allclose([[k["x"], k["y"], k["confidence"]] for k in last], pred.keypoints[-1].numpy(),
                               atol=1e-6)
    assert record["person"]["located_by"].startswith("image centre")


def test_person_item_frames_the_person_for_the_explorer(model):
    img = _photo(200, 100)
    item = person_item(model, img)
    size = model.codec.input_size
    assert item["image"].shape == (3, size, size) and (item["keypoints"][:, 2] == 0).all()
    # scale 1.0 brings the 200-px image height to 0.8 of the box: the rest of the rows are grey
    rows_grey = (item["image"] == 0.5).all(0).all(1)
    assert abs(int((~rows_grey).sum()) - round(0.8 * size)) <= 1


def test_cli_writes_json_and_png_per_image_and_survives_bad_files(photos, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", str(photos["dir"]), str(tmp_path / "missing.jpg"), "--checkpoint", "tiny-synthetic",
                 "--out", str(out), "--device", "cpu", *ONE])
    captured = capsys.readouterr()
    assert code == 2
    err = captured.err.strip().splitlines()
    assert len(err) == 2 and "broken.jpg" in err[0] + err[1] and "missing.jpg" in err[0] + err[1]
    stems = sorted(p.stem for p in out.glob("*.json"))
    assert stems == sorted(n.split(".")[0] for n in photos["files"])
    for stem in stems:
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["checkpoint"] == "tiny-synthetic" and len(record["stages"]) == 3
        with Image.open(out / f"{stem}.png") as png:
            assert png.format == "PNG" and png.width > png.height
    assert "wrote 6 of 8 image(s)" in captured.out


def test_cli_box_and_one_line_errors(photos, tmp_path, capsys):
    out = tmp_path / "boxed"
    code = main(["predict", str(photos["dir"] / "grey.png"), "--checkpoint", "tiny-synthetic", "--out", str(out),
                 "--box", "5,10,55,80", "--no-png", *ONE])
    assert code == 0
    record = json.loads((out / "grey.json").read_text())
    assert record["person"]["box"] == [5, 10, 55, 80] and not list(out.glob("*.png"))
    capsys.readouterr()
    assert main(["predict", str(photos["dir"] / "grey.png"), "--box", "5,10,1,80"]) == 2
    assert main(["predict", str(tmp_path / "nothing-here.jpg"), "--checkpoint", "tiny-synthetic"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "x1 > x0" in err[0] and "no images to run" in err[2]


def test_output_names_are_unique():
    assert output_names(["a/x.jpg", "b/y.png"]) == ["x", "y"]
    assert output_names(["a/x.jpg", "a/x.png"]) == ["x_jpg", "x_png"]
    assert output_names(["a/x.jpg", "b/x.jpg"]) == ["x_jpg", "x_jpg-2"]


def test_photo_panel_reruns_for_a_new_box_and_feeds_the_explorer(model, photos):
    pytest.importorskip("ipywidgets")
    from cpm_lab.viz import BeliefExplorer, PhotoPanel

    panel = PhotoPanel(model, photos["dir"] / "rgb.jpg")
    assert panel.png().startswith(b"\x89PNG") and panel.runs == 1 and panel.prediction.box is None
    panel.widget  # noqa: B018 - builds the controls
    panel.controls["box"].value = True         # the box sliders start on the whole photo
    assert panel.box == (0.0, 0.0, 59.0, 89.0) and panel.runs == 2
    panel.controls["x"].value = (10, 40)
    assert panel.box == (10.0, 0.0, 40.0, 89.0) and panel.prediction.box == panel.box and panel.runs == 3
    panel.png()
    assert panel.runs == 3                      # redraws reuse the prediction of the same box
    panel.update((5, 6, 30, 50))                # a scripted box moves the sliders with it
    c = panel.controls
    assert (c["box"].value, c["x"].value, c["y"].value) == (True, (5, 30), (6, 50))
    panel.update(None)
    assert panel.controls["box"].value is False and panel.box is None
    panel.update((10, 0, 40, 89))
    explorer = BeliefExplorer(model, [panel.item()])
    assert explorer.png().startswith(b"\x89PNG")
    assert "rgb.jpg" in repr(panel) and "box (10, 0, 40, 89)" in repr(panel)


def test_large_photos_are_shrunk_with_keypoints_in_original_pixels(model):
    """A synthetic figure upscaled 8x: predicting on a shrunk copy (max_side) finds the same
    joints, reported in the original pixels, as predicting at full size."""
    from cpm_lab.data import SyntheticPoses

    item = SyntheticPoses(4, image_size=128, seed=3)[0]
    big = torch.nn.functional.interpolate(item["image"][None], scale_factor=8, mode="bilinear")[0].clamp(0, 1)
    full = predict_image(model, big, scales=(1.0,), max_side=None, keep_beliefs=False)
    small = predict_image(model, big, scales=(1.0,), max_side=256, keep_beliefs=True)
    assert full.factor == (1.0, 1.0) and small.factor == (4.0, 4.0) and small.size == (1024, 1024)
    assert small.image.shape == (3, 256, 256) and small.beliefs[-1].shape[-2:] == (256, 256)
    # the network saw the same scale either way; the shrunk arg-max is quantised to 4 original px
    err = (full.keypoints[-1][:, :2] - small.keypoints[-1][:, :2]).norm(dim=-1)
    assert err.median() <= 6 and small.scales[0] == pytest.approx(full.scales[0])
    torch.testing.assert_close(small.to_image(small.keypoints[-1][:, :2]) * 4 + 1.5, small.keypoints[-1][:, :2])
    # never shrunk below twice the input box: a small person in a box keeps full resolution
    boxed = predict_image(model, big, box=(400, 400, 600, 600), scales=(1.0,), max_side=256, keep_beliefs=False)
    assert boxed.factor == (1.0, 1.0)
