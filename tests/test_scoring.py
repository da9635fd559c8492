"""Scoring predictions made elsewhere: file formats, conventions, and parity with the paper's
own LSP numbers (the official CPM predictions, scored with the official protocol)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.io

from cpm_lab import skeleton
from cpm_lab.cli import main
from cpm_lab.metrics import part_table
from cpm_lab.scoring import read_predictions, score_predictions, write_predictions_csv

#: The paper's LSP numbers (../shared/datasets/README.md): PCK@0.2 per joint in LSP order, and mean.
PAPER = {
    "LSP_prediction_model_LSP_6s.mat": (84.32, [81.0, 82.6, 86.5, 86.5, 83.7, 81.3, 75.2, 81.8, 87.8, 86.4, 79.0,
                                                75.0, 97.6, 96.1]),
    "LSP_prediction_model_MPII_LSP_6s.mat": (90.50, None),
}


class Truth:
    """A minimal dataset: ground truth in original-image pixels."""

    def __init__(self, keypoints):
        self.keypoints_orig = np.asarray(keypoints, dtype=np.float64)
        self.split_description = "toy"


def toy_truth(n=3):
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(20, 180, (n, 14, 2)), np.full((n, 14, 1), 2.0)], -1)
    return kp


def test_formats_read_back_the_same_predictions(tmp_path):
    xy = toy_truth()[..., :2]
    np.save(tmp_path / "p.npy", xy)
    write_predictions_csv(tmp_path / "p.csv", xy, images=["a.jpg", "b.jpg", "c.jpg"])
    scipy.io.savemat(tmp_path / "p.mat", {"prediction_all": (xy + 1).transpose(1, 2, 0)})  # MATLAB: 1-based
    for name in ("p.npy", "p.csv", "p.mat"):
        np.testing.assert_allclose(read_predictions(tmp_path / name), xy, atol=1e-3, err_msg=name)
    np.testing.assert_allclose(read_predictions(tmp_path / "p.npy", one_based=True), xy - 1)


def test_scoring_uses_the_official_torso_and_every_labelled_joint():
    truth = toy_truth(2)
    j = skeleton.JOINT_INDEX
    truth[:, j["left_shoulder"], :2], truth[:, j["right_hip"], :2] = (100, 50), (100, 150)    # official torso 100
    truth[:, j["right_shoulder"], :2], truth[:, j["left_hip"], :2] = (60, 50), (140, 150)     # other diagonal 128
    truth[1, j["neck"], 2] = 1  # occluded but labelled: scored
    pred = truth[..., :2].copy()
    pred[:, j["neck"], 0] += 25  # 0.25 of the official torso (0.195 of the other): a miss at 0.2
    table = score_predictions(pred, Truth(truth), thresholds=(0.2,))
    wide = part_table(table, thresholds=(0.2,))
    assert wide.loc["neck", "PCK@0.2"] == 0.0 and wide.loc["neck", "n"] == 2
    assert wide.loc["mean", "n"] == 28 and wide.loc["mean", "PCK@0.2"] == pytest.approx(26 / 28)


def test_bad_files_get_one_clear_error(tmp_path, capsys):
    (tmp_path / "p.txt").write_text("x")
    np.save(tmp_path / "bad.npy", np.zeros((3, 16, 2)))
    scipy.io.savemat(tmp_path / "bad.mat", {"preds": np.zeros((14, 2, 3))})
    (tmp_path / "bad.csv").write_text("image,x,y\na,1,2\n")
    for name, needle in (("p.txt", "unknown predictions format"), ("bad.npy", r"\(N, 14, 2\)"),
                         ("bad.mat", "prediction_all"), ("bad.csv", "missing column"), ("none.npy", "not found")):
        with pytest.raises((ValueError, FileNotFoundError), match=needle):
            read_predictions(tmp_path / name)
    with pytest.raises(ValueError, match="2 predictions for the 3 images"):
        score_predictions(np.zeros((2, 14, 2)), Truth(toy_truth(3)))


@pytest.mark.parametrize("name", sorted(PAPER))
def test_official_predictions_give_the_papers_numbers(datasets_root, name, tmp_path, capsys):
    path = datasets_root / "reference" / name
    if not path.is_file() or not (datasets_root / "lsp" / "joints.mat").is_file():
        pytest.skip(f"official predictions or LSP not found under {datasets_root}")
    out = tmp_path / "score.csv"
    code = main(["score", "--predictions", str(path), "--data", f"lsp:{datasets_root / 'lsp'}", "--split", "test",
                 "--out", str(out), "--conventions"])
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "torso, observer-centric labels" in printed and "crop/10" in printed
    mean, per_joint = PAPER[name]
    wide = part_table(pd.read_csv(out), thresholds=(0.2,))
    assert 100 * wide.loc["mean", "PCK@0.2"] == pytest.approx(mean, abs=0.01)
    assert wide.loc["mean", "n"] == 14000  # all 14 joints of all 1000 test images, occluded ones included
    assert f"{mean:.2f}" in printed
    if per_joint is not None:
        np.testing.assert_allclose(100 * wide["PCK@0.2"].iloc[:14].to_numpy(), per_joint, atol=0.1)


@pytest.mark.slow
def test_shipped_real_data_model_scores_what_the_readme_says(datasets_root):
    """README "Real-data benchmark (LSP, the paper's protocol)": the shipped tiny-lsp on the
    official LSP test, per stage, and the statements made about its per-joint table."""
    from cpm_lab.data.specs import make_dataset
    from cpm_lab.inference import evaluate_protocol, load_model
    from cpm_lab.metrics import part_table, pck_table

    if not (datasets_root / "lsp" / "joints.mat").is_file():
        pytest.skip(f"LSP not found under {datasets_root}")
    model = load_model("tiny-lsp", device="cpu")
    table = evaluate_protocol(model, make_dataset(f"lsp:{datasets_root / 'lsp'}", 64, split="test"), device="cpu")
    stages = pck_table(table, (0.1, 0.2))
    np.testing.assert_allclose(stages["PCK@0.2 (torso)"].to_numpy(), [0.371, 0.536, 0.577, 0.612], atol=0.0015)
    np.testing.assert_allclose(stages["PCK@0.1 (torso)"].to_numpy(), [0.184, 0.253, 0.290, 0.318], atol=0.0015)
    gains = np.diff(stages["PCK@0.2 (torso)"].to_numpy())
    assert (gains > 0).all() and gains.argmax() == 0      # each stage adds; the biggest step is 1 -> 2
    parts = part_table(table, (0.2,)).drop(index="mean")["PCK@0.2"].sort_values()
    assert set(parts.index[-2:]) == {"neck", "head_top"} and set(parts.index[:2]) == {"r_wrist", "l_wrist"}
