"""Faults a hostile user (or a bad day) produces, one test per case of issue 18, part 2: damaged
checkpoints, annotations that cannot be right, and one clear line for every other fault (see
``test_faults.py`` for part 1 and the conventions)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.io
import torch
from _faults import (
    FAST,
    ROOT,
    TRAIN,
    assert_fails,
    run,
    write_lspet,
)

from cpm_lab.data import LSP, PoseDataError
from cpm_lab.models.cpm import CPM
from cpm_lab.train import CHECKPOINT_FORMAT, read_checkpoint
from cpm_lab.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.usefixtures("restore_threads")  # conftest: commands set torch's thread count


# ================================================================================================
# 4. Checkpoints are checked on load
# ================================================================================================
def test_4a_eval_refuses_a_bit_flipped_weight(run_copy, capsys):
    ck = run_copy / "checkpoint.pt"
    raw = bytearray(ck.read_bytes())
    weight = read_checkpoint(ck)["model"]["stage1.0.weight"].numpy().tobytes()
    at = bytes(raw).find(weight)
    assert at > 0 and bytes(raw).find(weight, at + 1) < 0
    raw[at + 101] ^= 0x04  # one bit of one weight; the zip container still reads
    ck.write_bytes(bytes(raw))
    torch.load(ck, weights_only=True)
    code, _, err = run(capsys, "eval", "--checkpoint", ck, "--data", "synthetic:easy", "--size", 4)
    assert_fails(code, err, 2, f"{str(ck)!r} is corrupt", "content hash")


def test_4b_eval_refuses_non_finite_weights(run_copy, capsys):
    ck = run_copy / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    state["model"]["stage1.0.weight"][0, 0, 0, 0] = float("nan")
    save_checkpoint(state, ck)  # a consistent hash of bad weights
    code, _, err = run(capsys, "eval", "--checkpoint", ck, "--data", "synthetic:easy", "--size", 4)
    assert_fails(code, err, 2, "non-finite weights", "stage1.0.weight")


def test_4c_checkpoints_without_a_hash_still_load(capsys):
    shipped = ROOT / "data" / "weights" / "cpm_tiny_synthetic.pt"
    assert "weights_sha256" not in torch.load(shipped, weights_only=True)
    code, out, err = run(capsys, "eval", "--checkpoint", shipped, "--data", "synthetic:easy", "--size", 4)
    assert code == 0, err
    assert "no integrity hash" in out


# ================================================================================================
# 5. Annotations are sanity-checked
# ================================================================================================
def test_5a_a_joint_5000_px_off_the_image_is_an_error(tmp_path, capsys):
    root = write_lspet(tmp_path / "lspet", edit=lambda xy: xy[2, 5].__setitem__(0, 5000.0))
    code, out, err = run(capsys, "validate", "--data", f"lspet:{root}")
    assert code == 2, err
    assert (f"joints.mat image 3: image {root / 'images' / 'im00003.jpg'}: labelled joint 5 (left_ankle) at "
            f"(5000, 100) lies far outside the 90x110 image") in out
    with pytest.raises(PoseDataError, match=r"im00003\.jpg \(sample 2, .*image 3\): labelled joint 5"):
        LSP(root, image_size=32)[2]  # never a black crop marked "visible"


def test_5b_one_joint_at_minus_3000_px_does_not_make_a_box_20x_too_big(tmp_path):
    root = write_lspet(tmp_path / "lspet", edit=lambda xy: xy[1, 13].__setitem__(1, -3000.0))
    ds = LSP(root, image_size=32)
    assert ds.boxes_orig[1] > 20 * ds.boxes_orig[0]  # what the joints would make of the box ...
    with pytest.raises(PoseDataError, match=r"joint 13 \(head_top\) at \(45, -3000\) lies far outside"):
        ds[1]  # ... is refused when the image is opened, naming the joint
    with pytest.warns(UserWarning, match="skipped 1"):
        assert len(LSP(root, image_size=32, on_error="skip", validate_images=True)) == 4


def test_5c_an_inf_coordinate_names_the_file_image_and_joint(tmp_path, capsys):
    root = write_lspet(tmp_path / "lspet", edit=lambda xy: xy[3, 8].__setitem__(0, np.inf))
    with pytest.raises(PoseDataError, match=r"joints\.mat image 4: NaN/inf coordinates \(inf, 30\) for labelled "
                                            r"joint 8 \(right_shoulder\)"):
        LSP(root)
    code, out, _ = run(capsys, "validate", "--data", f"lspet:{root}")
    assert code == 2 and f"{root / 'joints.mat'} image 4: NaN/inf" in out


def test_5d_a_coordinate_of_1e5_is_not_blamed_on_the_image(tmp_path, capsys):
    root = write_lspet(tmp_path / "lspet", edit=lambda xy: xy[0, 0].__setitem__(0, 1e5))
    with pytest.raises(PoseDataError, match=r"joint 0 \(right_ankle\) at \(100000, 100\) lies far outside") as info:
        LSP(root, image_size=32)[0]
    assert "Decompression" not in str(info.value) and "decode" not in str(info.value)
    code, out, _ = run(capsys, "validate", "--data", f"lspet:{root}")
    assert code == 2 and "right_ankle" in out and "Decompression" not in out


# ================================================================================================
# 6. One clear line for every fault
# ================================================================================================
def test_6a_empty_mpii_or_coco_inputs(tmp_path, capsys):
    (tmp_path / "mpii.json").write_text("[]")
    (tmp_path / "coco.json").write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    for kind in ("mpii", "coco"):
        path = tmp_path / f"{kind}.json"
        code, _, err = run(capsys, "eval", "--mean-pose", "--data", f"{kind}:{path}")
        assert_fails(code, err, 2, f"no annotations in {path}")


def test_6b_a_4000_image_joints_mat_asked_for_images_8001_9000(tmp_path, finished_run, capsys):
    root = tmp_path / "lspet"
    root.mkdir()
    j = np.ones((14, 3, 4000))
    scipy.io.savemat(root / "joints.mat", {"joints": j})
    code, _, err = run(capsys, "eval", "--checkpoint", finished_run / "checkpoint.pt", "--data", f"lspet:{root}",
                       "--split", "val")
    assert_fails(code, err, 2, f"{root}/joints.mat holds 4000 images, but the LSPet val split is images 8001-9000")


def test_6c_a_16_part_checkpoint_on_14_part_data(tmp_path, capsys):
    model = CPM.from_preset("tiny", input_size=32, num_parts=16)
    ck = tmp_path / "ck16.pt"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model": model.state_dict(),
                     "model_config": model.config.to_dict(), "step": 0}, ck)
    code, _, err = run(capsys, "eval", "--checkpoint", ck, "--data", "synthetic:easy", "--size", 4)
    assert_fails(code, err, 2, "the checkpoint predicts 16 parts, the data (synthetic:easy) has 14")


def test_6d_a_checkpoint_without_model_config(run_copy, capsys):
    ck = run_copy / "checkpoint.pt"
    state = torch.load(ck, weights_only=True)
    del state["model_config"]
    torch.save(state, ck)
    code, _, err = run(capsys, "eval", "--checkpoint", ck, "--data", "synthetic:easy", "--size", 4)
    assert_fails(code, err, 2, "has no 'model_config'")
    assert "KeyError" not in err


class _Payload:
    """Unpickling this would run code (it never does: checkpoints load with weights_only=True)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_6e_random_bytes_truncated_or_code_as_a_checkpoint(run_copy, tmp_path, capsys):
    cases = {"random.pt": np.random.default_rng(0).bytes(4000),
             "truncated.pt": (run_copy / "checkpoint.pt").read_bytes()[:5000], "empty.pt": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    marker = tmp_path / "executed"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": _Payload(str(marker))}, tmp_path / "code.pt")
    for name in [*cases, "code.pt"]:
        code, _, err = run(capsys, "eval", "--checkpoint", tmp_path / name, "--data", "synthetic:easy", "--size", 4)
        line = assert_fails(code, err, 2, name, "is not a readable cpm_lab checkpoint")
        assert "weights_only" not in line and "will likely succeed" not in line
    assert not marker.exists()


def test_6f_a_bad_image_read_by_a_dataloader_worker_is_one_line(mpii_bad_image, tmp_path, capsys):
    ann, bad = mpii_bad_image
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "--data", f"mpii:{ann}", *FAST, "--steps", 8, "--workers", 2, "--out", out)
    line = assert_fails(code, err, 2, f"cannot decode image {ann.parent / f'{bad:09d}.jpg'}", "progress kept")
    assert "Caught" not in line and "Original Traceback" not in line and 'File "' not in line
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 2


def test_6g_a_full_disk_keeps_the_previous_checkpoint(tmp_path, capsys, monkeypatch):
    real_save, calls = torch.save, []

    def save_onto_a_full_disk(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) < 2:
            return real_save(obj, f, *args, **kwargs)
        with open("/dev/full", "wb") as full:  # the kernel's own ENOSPC
            real_save(obj, full, *args, **kwargs)

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    monkeypatch.setattr(torch, "save", save_onto_a_full_disk)
    out = tmp_path / "run"
    code, _, err = run(capsys, *TRAIN, "--steps", 3, "--checkpoint-every", 1, "--out", out)
    assert_fails(code, err, 2, f"no space left on device writing {out / 'checkpoint.pt'}; "
                               "the previous checkpoint is intact")
    assert "enforce fail" not in err
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 1
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]


def test_6h_divergence_does_not_claim_a_checkpoint_that_is_not_there(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run(capsys, *TRAIN, "--steps", 5, "--lr", "1e30", "--out", out)
    line = assert_fails(code, err, 2, "non-finite loss at step", f"no checkpoint has been written to {out}")
    assert "left untouched" not in line and not (out / "checkpoint.pt").exists()


def test_6i_temp_files_of_a_killed_save_are_removed_by_the_next_save(run_copy, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    killed = run_copy / f".tmp-{dead.pid}@{host}-abcd1234.pt"  # what a kill -9 during a save leaves
    old_style = run_copy / ".tmp-k1ll3d_x.pt"                  # ... and what older versions left
    alive = run_copy / f".tmp-{os.getpid()}@{host}-inflight.pt"  # a save in progress: not touched
    for path in (killed, old_style, alive):
        path.write_bytes(b"partial checkpoint")
    os.utime(old_style, (time.time() - 7200,) * 2)
    with pytest.warns(UserWarning, match=r"removed 2 temporary file\(s\)"):
        code, _, err = run(capsys, *TRAIN, "--out", run_copy, "--resume", "--steps", 3)
    assert code == 0, err
    assert not killed.exists() and not old_style.exists() and alive.exists()


