"""Plots of the classical Pose Machine (cpm_lab.viz.pose_machine, cpm_lab.viz.pose_machine_features) on a tiny
fitted machine; the tables behind them are tested in test_analysis.py."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

from cpm_lab import skeleton  # noqa: E402
from cpm_lab.data import SyntheticPoses  # noqa: E402
from cpm_lab.models import PoseMachine  # noqa: E402
from cpm_lab.models.pose_machine_features import (  # noqa: E402
    context_block_names,
    context_features,
    image_feature_names,
    image_features,
)
from cpm_lab.viz import pose_machine as V  # noqa: E402
from cpm_lab.viz import pose_machine_features as VF  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
R_WRIST, L_WRIST = skeleton.JOINT_INDEX["right_wrist"], skeleton.JOINT_INDEX["left_wrist"]


@pytest.fixture(scope="module")
def tiny():
    """A 3-stage machine fitted on 12 small images (seconds), and a held-out item with both wrists visible."""
    train = SyntheticPoses(12, 64, "standard", seed=0)
    pm = PoseMachine(num_stages=3, image_size=64, n_estimators=4, n_jobs=1).fit(train, seed=0, progress=False)
    test = SyntheticPoses(16, 64, "standard", seed=1)
    item = next(test[i] for i in range(len(test)) if (test[i]["keypoints"][[R_WRIST, L_WRIST], 2] > 0).all())
    yield pm, test, item
    plt.close("all")


def _cell(kp, j):
    x, y = float(kp[j, 0]), float(kp[j, 1])
    return int(np.floor((y + 0.5) / 8)), int(np.floor((x + 0.5) / 8))


# ---------------------------------------------------------------------------------------------
def test_cell_histograms_follow_edge_orientation():
    img = torch.zeros(3, 64, 64)
    img[:, :, 32:] = 1.0  # a vertical edge: horizontal gradient (angle 0 or 180 degrees)
    hist = VF.cell_orientation_histograms(image_features(img[None])[0])
    assert hist.shape == (8, 8, 9)
    assert hist[4, 4].argmax() in (0, 8) and hist[4, 4].max() > 0  # the cell left of x = 32 holds the edge
    assert np.allclose(hist[:, 0], 0) and np.allclose(hist[:, 7], 0)  # flat far from the edge
    flipped = VF.cell_orientation_histograms(image_features(img.transpose(1, 2)[None])[0])  # horizontal edge
    assert flipped[4, 4].argmax() == 4  # gradient at 90 degrees: the middle bin
    with pytest.raises(ValueError, match="image features"):
        VF.cell_orientation_histograms(np.zeros((8, 8, 10)))


def test_feature_grid_panels(tiny):
    _, _, item = tiny
    fig = VF.plot_feature_grid(item["image"], item["keypoints"])
    grid_ax, hog_ax, support_ax, bar_ax = fig.axes
    assert len(grid_ax.lines) >= 2 * (8 - 1)  # 7 + 7 cell boundaries of the 8x8 grid (+ skeleton)
    cell_box = [p for p in grid_ax.patches if isinstance(p, Rectangle)][0]
    row, col = _cell(item["keypoints"], R_WRIST)  # default cell: the right wrist's
    assert cell_box.get_xy() == (col * 8 - 0.5, row * 8 - 0.5) and cell_box.get_width() == 8
    assert any(isinstance(c, LineCollection) and len(c.get_segments()) > 0 for c in hog_ax.collections)
    boxes = [p for p in support_ax.patches if isinstance(p, Rectangle)]
    assert sorted({p.get_width() for p in boxes}) == [8, 24] and len(boxes) == 2 + 8  # cell, 3x3, 8 rings
    assert len(bar_ax.patches) == len(image_feature_names())
    fig2 = VF.plot_feature_grid(item["image"], cell=(0, 7))
    assert [p for p in fig2.axes[0].patches][0].get_xy() == (7 * 8 - 0.5, -0.5)
    with pytest.raises(ValueError, match="cell"):
        VF.plot_feature_grid(item["image"], cell=(8, 0))
    plt.close("all")


def test_context_features_plot_shows_the_cells_vector(tiny):
    pm, _, item = tiny
    beliefs = pm(item["image"][None])
    b1 = beliefs[0][0]
    fig = VF.plot_context_features(b1, "r_wrist", config=pm, image=item["image"], keypoints=item["keypoints"])
    map_ax, matrix_ax = fig.axes[0], fig.axes[2]
    row, col = _cell(item["keypoints"], R_WRIST)
    block = context_block_names(pm.config.context_radii, pm.config.n_peaks)
    expected = context_features(b1[None, :14].numpy(), pm.config.context_radii, pm.config.n_peaks,
                                pm.config.peak_suppression)[0, row, col].reshape(14, len(block))
    shown = np.ma.filled(matrix_ax.images[0].get_array(), 0) + np.ma.filled(matrix_ax.images[1].get_array(), 0)
    assert shown.shape == (14, len(block))
    np.testing.assert_allclose(shown, expected, atol=1e-6)
    np.testing.assert_allclose(map_ax.images[-1].get_array(), b1[R_WRIST].numpy())
    ring_points = [ln for ln in map_ax.lines if ln.get_marker() == "o"]
    assert len(ring_points) == 8 * len(pm.config.context_radii)
    arrows = [p for p in map_ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == pm.config.n_peaks
    highlighted = [p for p in matrix_ax.patches if isinstance(p, Rectangle)]
    assert highlighted[0].get_xy()[1] == R_WRIST - 0.5
    assert f"(row {row}, col {col})" in map_ax.get_title()
    with pytest.raises(ValueError, match="unknown part"):
        VF.plot_context_features(b1, "tail", cell=(0, 0), config=pm)
    with pytest.raises(ValueError, match="grid"):
        VF.plot_context_features(b1, R_WRIST, cell=(0, 99), config=pm)
    plt.close("all")


def test_stage_comparison_rows_stages_and_values(tiny):
    pm, _, item = tiny
    beliefs = pm(item["image"][None])
    fig = V.plot_stage_comparison(pm, item["image"], item["keypoints"], stages=(1, 2, 3))
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(panels) == 2 * 4
    titles = [ax.get_title() for ax in panels]
    assert sum("stage 1:" in t for t in titles) == 2 and sum("stage 3:" in t for t in titles) == 2
    stage3_r = panels[3]  # row 0 = right wrist, column 3 = stage 3
    assert "r_wrist" in stage3_r.get_title()
    text = stage3_r.texts[0].get_text()
    for name, j in (("r_wrist", R_WRIST), ("l_wrist", L_WRIST)):
        r, c = _cell(item["keypoints"], j)
        near = float(beliefs[2][0, R_WRIST, max(r - 1, 0):r + 2, max(c - 1, 0):c + 2].max())
        assert f"near true {name}: {near:.2f}" in text
    vmax = {ax.images[-1].get_clim()[1] for ax in panels[1:4]}
    assert len(vmax) == 1  # one colour scale per row
    assert np.isclose(vmax.pop(), max(float(b[0, R_WRIST].max()) for b in beliefs))
    default = V.plot_stage_comparison(pm, item["image"], item["keypoints"], parts=("neck",), beliefs=beliefs)
    assert len([ax for ax in default.axes if ax.get_label() != "<colorbar>"]) == 3  # image, stage 1, stage 3
    with pytest.raises(ValueError, match="stages"):
        V.plot_stage_comparison(pm, item["image"], item["keypoints"], stages=(0,))
    plt.close("all")


def test_part_confusion_plot_on_constructed_beliefs():
    kp = np.zeros((2, 14, 3), np.float32)
    for j in range(14):  # every joint in its own cell of a 16x16 grid
        kp[:, j] = (8 * j + 3.5, 8 * (j % 4) + 3.5, 1)
    kp[:, 0, 2] = 0  # right ankle missing in both images
    b = np.zeros((2, 15, 16, 16), np.float32)
    for j in range(14):
        r, c = int(kp[0, j, 1] // 8), int(kp[0, j, 0] // 8)
        b[:, j, r, c] = 1.0
    b[:, R_WRIST] = b[:, L_WRIST]  # the right-wrist map fires on the LEFT wrist only

    fig = V.plot_part_confusion([torch.from_numpy(b)] * 2, kp, stages=(2,))
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == 1
    assert fig.axes[0].get_title().startswith("stage 2")
    with pytest.raises(ValueError, match="stages"):
        V.plot_part_confusion([b], kp, stages=(2,))
    plt.close("all")


def test_feature_importance_plot(tiny):
    pm, _, _ = tiny
    fig = V.plot_feature_importance(pm)
    assert len(fig.axes) == 3
    assert len(fig.axes[1].patches) == 14
    plt.close("all")


def test_bench_belief_figure_uses_the_module(tiny, tmp_path):
    pm, _, item = tiny
    spec = importlib.util.spec_from_file_location("bench_pose_machine", ROOT / "benchmarks" / "bench_pose_machine.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.belief_figure(pm, item, path=str(tmp_path / "b.png"))
    assert Path(out).stat().st_size > 10_000


def test_context_features_at_another_joint(tiny):
    pm, _, item = tiny
    b1 = pm(item["image"][None])[0][0]
    fig = VF.plot_context_features(b1, "r_wrist", config=pm, keypoints=item["keypoints"], at="left_wrist")
    row, col = _cell(item["keypoints"], L_WRIST)
    assert f"(row {row}, col {col}) = true l_wrist" in fig.axes[0].get_title()
    peak = divmod(int(b1[R_WRIST].argmax()), 8)
    fig = VF.plot_context_features(b1, R_WRIST, config=pm)  # no keypoints: the map's peak
    assert f"(row {peak[0]}, col {peak[1]}) = its peak" in fig.axes[0].get_title()
    plt.close("all")
