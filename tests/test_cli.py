"""The ``cpm-lab`` command line: train / eval outputs, resume, and one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from cpm_lab.cli import COMMANDS, main
from cpm_lab.train import read_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--threads", "1", "--no-progress", "--batch-size", "2", "--eval-size", "4"]


@pytest.fixture(autouse=True)
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


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
    assert {"config.json", "history.csv", "checkpoint.pt", "eval.csv"} <= set(os.listdir(out))
    config = json.loads((out / "config.json").read_text())
    assert config["preset"] == "tiny" and config["train"]["steps"] == 2 and config["train"]["batch_size"] == 2
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
    evaluated = pd.read_csv(csv)
    # same model, same held-out items -> the same numbers as train's final evaluation (up to float
    # rounding: training ran the model in channels_last, eval loads it in the default layout)
    pd.testing.assert_frame_equal(evaluated, table, check_exact=False, rtol=1e-4, atol=1e-4)


def test_stop_and_resume(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:easy", "--steps", 3, "--out", out, *FAST]
    code, stdout, err = run(capsys, *args, "--stop-at", 1)
    assert code == 0, err
    assert "continue with --resume" in stdout
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 1
    code, stdout, err = run(capsys, *args, "--resume")
    assert code == 0, err
    assert pd.read_csv(out / "history.csv")["step"].tolist() == [1, 2, 3]
    assert read_checkpoint(out / "checkpoint.pt")["step"] == 3
    # resuming with different settings is refused
    code, _, err = run(capsys, "train", "--data", "synthetic:easy", "--steps", 5, "--out", out, *FAST, "--resume")
    assert_one_line_error(code, err, "steps=3")


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
