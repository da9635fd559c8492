"""The ``cpm-lab`` command line: train / eval outputs, resume, real-data defaults (augmentation,
crop cache), the mean-pose baseline, and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.io
import torch
from PIL import Image

import cpm_lab
import cpm_lab.train
from cpm_lab.cli import COMMANDS, main
from cpm_lab.data import Augment, MeanPoseBaseline
from cpm_lab.data.specs import make_dataset
from cpm_lab.inference import evaluate
from cpm_lab.metrics import METRIC_COLUMNS, keypoint_metrics
from cpm_lab.models.cpm import CPM
from cpm_lab.train import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--no-progress", "--batch-size", "2", "--eval-size", "4"]


pytestmark = pytest.mark.usefixtures("restore_threads")  # conftest: commands set torch's thread count


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


#: A standing figure in a 90 x 110 image, LSP-14 order (0-based x, y pixels).
TEMPLATE = np.array([[35, 100], [37, 80], [38, 60], [52, 60], [53, 80], [55, 100], [25, 60], [28, 45],
                     [35, 30], [55, 30], [62, 45], [65, 60], [45, 25], [45, 10]], dtype=float)


@pytest.fixture(scope="module")
def lspet_dir(tmp_path_factory):
    """An LSPet-format folder with 8004 entries (train = 1-8000, val = 8001-8004): the template
    pose plus 3 px noise, about 5 % of joints unannotated; one JPEG hard-linked for every image."""
    root = tmp_path_factory.mktemp("lspet")
    rng = np.random.default_rng(0)
    n = 8004
    xy = TEMPLATE + rng.normal(0, 3, (n, 14, 2))
    vis = rng.random((n, 14)) > 0.05
    j = np.zeros((14, 3, n))
    j[:, :2] = np.where(vis[..., None], xy + 1, np.array([0.0, -26.0])).transpose(1, 2, 0)  # 1-based
    j[:, 2] = vis.T
    scipy.io.savemat(root / "joints.mat", {"joints": j})
    images = root / "images"
    images.mkdir()
    first = images / "im00001.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (110, 90, 3), dtype=np.uint8)).save(first)
    for i in range(2, n + 1):
        os.link(first, images / f"im{i:05d}.jpg")
    return root


class TrainerSpy(cpm_lab.train.Trainer):
    """The real Trainer, remembering what the CLI built it with."""
    seen: list[dict] = []

    def __init__(self, model, train_set, config=None, **kwargs):
        TrainerSpy.seen.append(dict(train_set=train_set, **kwargs))
        super().__init__(model, train_set, config, **kwargs)


def assert_one_line_error(code, err, *needles):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code != 0
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_train_writes_outputs_and_eval_reads_them(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run(capsys, "train", "--preset", "tiny", "--data", "synthetic:easy", "--steps", 2,
                            "--out", out, *FAST)
    assert code == 0, err
    assert "held-out synthetic easy test split (seed 20000003), " in stdout   # the final table's title
    assert {"config.json", "history.csv", "checkpoint.pt", "eval.csv"} <= set(os.listdir(out))
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "tiny" and config["train"]["steps"] == 2 and config["train"]["batch_size"] == 2
    assert config["augment"] == {"enabled": False} and config["cache"] is False  # synthetic defaults
    history = pd.read_csv(out / "history.csv")
    assert history["step"].tolist() == [1, 2] and {"loss_stage1", "loss_stage3", "lr"} <= set(history.columns)
    table = pd.read_csv(out / "eval.csv")
    assert {"stage", "part", "metric", "threshold", "value"} <= set(table.columns)
    assert sorted(table["stage"].unique()) == [1, 2, 3]
    assert "PCK@0.1 (torso)" in stdout and "PCK@0.2 (torso)" in stdout and "stage" in stdout

    csv = tmp_path / "e.csv"
    code, stdout, err = run(capsys, "eval", "--checkpoint", out / "checkpoint.pt", "--data", "synthetic:easy",
                            "--size", 4, "--out", csv)
    assert code == 0, err
    rows = [ln.split() for ln in stdout.splitlines() if ln.strip()[:1].isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "3"] and all(len(r) == 3 for r in rows)
    assert "per part, stage 3" in stdout
    section = stdout.split("per part", 1)[1].split("wrote", 1)[0]
    parts = {ln.split()[0]: ln.split()[1:] for ln in section.splitlines()[2:] if ln.strip()}
    assert {"r_ankle", "head_top", "mean"} <= set(parts) and all(len(v) == 3 for v in parts.values())
    evaluated = pd.read_csv(csv)
    # same model, same held-out items -> the same numbers as train's final evaluation (up to float
    # rounding: training ran the model in channels_last, eval loads it in the default layout)
    pd.testing.assert_frame_equal(evaluated, table, check_exact=False, rtol=1e-4, atol=1e-4)


def test_stop_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:easy", "--steps", 3, "--out", out, *FAST]
    code, stdout, err = run(capsys, *args, "--stop-at", 1)
    assert code == 0, err
    assert f"continue with: cpm-lab train --data synthetic:easy --steps 3 --out {out}" in stdout
    assert stdout.rstrip().endswith("--resume")
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 1
    code, stdout, err = run(capsys, *args, "--resume")
    assert code == 0, err
    assert pd.read_csv(out / "history.csv")["step"].tolist() == [1, 2, 3]
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 3
    # resuming with settings that change the run is refused, before anything is written
    before = (out / "config.json").read_bytes()
    code, _, err = run(capsys, *args, "--resume", "--lr", "0.01")
    assert_one_line_error(code, err, "--resume", "lr=0.005 (now 0.01)")
    # ... and so is switching augmentation on for a run trained without it
    code, _, err = run(capsys, *args, "--resume", "--augment")
    assert_one_line_error(code, err, "--resume", "augmentation off", "--no-augment")
    assert (out / "config.json").read_bytes() == before
    # more steps extend the run (the README's `--resume --steps N`), recorded in the settings history
    code, stdout, err = run(capsys, "train", "--data", "synthetic:easy", "--out", out, *FAST, "--resume",
                            "--steps", 4)
    assert code == 0, err
    assert "extending the run from 3 to 4 steps" in stdout
    assert pd.read_csv(out / "history.csv")["step"].tolist() == [1, 2, 3, 4]
    history = json.loads((out / "config.json").read_text())["history"]
    assert [h["event"] for h in history] == ["start", "resume", "resume"]
    assert history[-1]["from_step"] == 3 and history[-1]["changes"] == {"steps": [3, 4]}


def test_lspet_test_split_falling_back_to_val_images_says_so(lspet_dir):
    with pytest.warns(UserWarning, match="LSPet test images 9001-10000 are not in"):
        ds = make_dataset(f"lspet:{lspet_dir}", 32, "test", length=2)
    assert len(ds) == 2 and ds.split_description == "LSPet images 8001-8004"
    assert make_dataset(f"lspet:{lspet_dir}", 32, "train").split_description == "LSPet images 1-8000"


@pytest.mark.filterwarnings("ignore:.*LSPet test images")  # 8004 entries: the test split falls back to val
def test_real_data_trains_with_augmentation_and_crop_cache_by_default(lspet_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cpm_lab.train, "Trainer", TrainerSpy)
    TrainerSpy.seen.clear()
    base = ["train", "--data", f"lspet:{lspet_dir}", "--steps", 1, *FAST]
    code, stdout, err = run(capsys, *base, "--out", tmp_path / "on")
    assert code == 0, err
    assert "augment on, crop cache on" in stdout
    config = json.loads((tmp_path / "on" / "config.json").read_text())
    assert config["augment"] == {"enabled": True, "scale": [0.7, 1.3], "rotation_deg": 40.0, "flip": True,
                                 "flip_prob": 0.5, "translate": 0.0, "padding_mode": "grey"}
    assert config["cache"] is True and config["train_items"] == 8000
    seen = TrainerSpy.seen[-1]
    assert isinstance(seen["augment"], Augment) and seen["train_set"]._cache is not None
    assert len(seen["train_set"]._cache) == 2  # the one batch of 2 crops went into the cache

    code, stdout, err = run(capsys, *base, "--no-augment", "--no-cache", "--out", tmp_path / "off")
    assert code == 0, err
    config = json.loads((tmp_path / "off" / "config.json").read_text())
    assert config["augment"] == {"enabled": False} and config["cache"] is False
    seen = TrainerSpy.seen[-1]
    assert seen["augment"] is None and seen["train_set"]._cache is None


def test_eval_mean_pose_matches_the_baseline_computed_directly(lspet_dir, tmp_path, capsys):
    spec = f"lspet:{lspet_dir}"
    csv = tmp_path / "baseline.csv"
    code, stdout, err = run(capsys, "eval", "--mean-pose", "--data", spec, "--split", "val", "--out", csv)
    assert code == 0, err
    assert "mean-pose baseline" in stdout.splitlines()[0] and "8000" in stdout and "per part, stage 1" in stdout
    table = pd.read_csv(csv)
    assert list(table.columns) == METRIC_COLUMNS and table["stage"].unique().tolist() == [1]

    train, val = make_dataset(spec, 128, "train"), make_dataset(spec, 128, "val")
    ann = val.annotations()
    direct = keypoint_metrics([MeanPoseBaseline().fit(train).predict(ann)], ann["keypoints"], (0.1, 0.2))
    pck = table[table["metric"] == "pck"].reset_index(drop=True)
    want = direct[direct["metric"] == "pck"].reset_index(drop=True)
    pd.testing.assert_frame_equal(pck, want, check_dtype=False, rtol=1e-6, atol=1e-9)
    mean = pck[(pck["part"] == "mean") & (pck["threshold"] == 0.2)]["value"].item()
    assert 0.3 < mean <= 1.0  # noisy copies of one pose: the mean pose is close
    # scored on the same joints and torso lengths as a model: the counts match inference.evaluate
    model_table = evaluate(CPM.from_preset("tiny"), val, device="cpu")
    model_pck = model_table[(model_table["metric"] == "pck") & (model_table["stage"] == 1)]
    assert model_pck["count"].tolist() == pck["count"].tolist()

    code, stdout, err = run(capsys, "eval", "--mean-pose", "--data", "synthetic:easy", "--size", 4,
                            "--fit-size", 6)
    assert code == 0, err
    assert "fitted on 6 items of synthetic easy train split (seed 0)" in stdout
    assert "on synthetic easy test split (seed 20000003), 4 images" in stdout


def test_bad_arguments_give_one_line(tmp_path, capsys):
    out = tmp_path / "o"
    blocker = tmp_path / "file"
    blocker.write_text("x")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    cases = [
        (["train", "--preset", "huge", "--out", out], ["huge", "--preset"]),
        (["train", "--strategy", "greedy", "--out", out], ["greedy"]),
        (["train", "--steps", "0", "--out", out], ["--steps", "positive"]),
        (["train", "--steps", "-5", "--out", out], ["--steps"]),
        (["train", "--steps", "many", "--out", out], ["many"]),
        (["train", "--data", "imagenet", "--out", out], ["imagenet", "synthetic"]),
        (["train", "--data", "synthetic:ultra", "--out", out], ["ultra"]),
        (["train", "--out", blocker / "sub"], ["cannot write to output directory"]),
        (["train", "--resume", "--out", out], ["--resume", "no checkpoint"]),
        (["train"], ["--out"]),
        (["train", "--out", out, "--bogus"], ["--bogus"]),
        (["train", "--out", out, "--device", "cuda:7"], ["cuda"] if not torch.cuda.is_available() else []),
        (["eval", "--checkpoint", tmp_path / "missing.pt"], ["missing.pt", "does not exist"]),
        (["eval", "--checkpoint", junk], ["junk.pt", "checkpoint"]),
        (["eval", "--checkpoint", junk, "--scales", "a,b"], ["--scales"]),
        (["eval"], ["--checkpoint", "--mean-pose", "required"]),
        (["eval", "--checkpoint", junk, "--mean-pose"], ["--mean-pose", "not allowed", "--checkpoint"]),
        (["eval", "--mean-pose", "--flip"], ["--flip", "--mean-pose"]),
        (["eval", "--mean-pose", "--scales", "0.9,1.1"], ["--scales", "--mean-pose"]),
        (["eval", "--checkpoint", junk, "--fit-size", "5"], ["--fit-size", "--mean-pose"]),
        (["eval", "--mean-pose", "--data", "imagenet"], ["imagenet"]),
        (["train", "--cache", "--out", out], ["--cache", "synthetic"]),
        ([], ["choose a command"]),
        (["fly"], ["fly"]),
    ]
    for argv, needles in cases:
        if not needles:
            continue
        code, _, err = run(capsys, *argv)
        assert_one_line_error(code, err, *needles)


def test_module_entry_points_and_registry(tmp_path):
    assert list(COMMANDS)[:2] == ["train", "eval"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for module in ("cpm_lab.cli", "cpm_lab"):
        proc = subprocess.run([sys.executable, "-m", module, "train", "--preset", "nope", "--out", str(tmp_path)],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert proc.returncode == 2
        assert_one_line_error(proc.returncode, proc.stderr, "nope")
    proc = subprocess.run([sys.executable, "-m", "cpm_lab.cli", "--help"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout and "eval" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "cpm_lab.cli", "--version"], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == f"cpm-lab {cpm_lab.__version__}"


@pytest.mark.slow  # times a forward of every preset, the paper one included (~10 s on a CPU)
def test_demo_writes_its_figures_and_tables(tmp_path, capsys):
    out = tmp_path / "demo"
    code, stdout, _ = run(capsys, "demo", "--out", out, "--samples", "8", "--device", "cpu")
    assert code == 0
    expected = {"samples.png", "beliefs.png", "beliefs_right_wrist.png", "receptive_fields.png",
                "model.csv", "pck.csv", "pck_table.csv"}
    assert expected <= set(os.listdir(out))
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    assert "trained tiny CPM" in stdout   # the shipped weights, not a random model
    models = pd.read_csv(out / "model.csv").set_index("preset")
    assert models.loc["paper", "parameters"] == 31_219_866 and models.loc["paper", "belief_shape"] == "15×46×46"
    assert (models["forward_ms_batch1"] > 0).all()
    table = pd.read_csv(out / "pck_table.csv", index_col=0)
    assert len(table) == 3 and ((table >= 0) & (table <= 1)).all().all()
    assert str(out.resolve()) in stdout
