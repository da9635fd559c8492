"""ReceptiveFieldExplorer, LiveTrainingPlot and plot_history."""
from __future__ import annotations

import base64

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

from cpm_lab.callbacks import Callback  # noqa: E402
from cpm_lab.diagnostics import GradientTracker  # noqa: E402
from cpm_lab.models import CPM  # noqa: E402
from cpm_lab.viz import receptive  # noqa: E402
from cpm_lab.viz.receptive import ReceptiveFieldExplorer  # noqa: E402
from cpm_lab.viz.training import LiveTrainingPlot, plot_history  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class TinyData:
    """Eight random 64x64 people-shaped samples (keypoints inside the image)."""

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        kp = torch.cat([12 + torch.rand(14, 2, generator=g) * 40, torch.ones(14, 1)], 1)
        return dict(image=torch.rand(3, 64, 64, generator=g), keypoints=kp, center=torch.tensor([31.5, 31.5]))


def small_cpm(**overrides) -> CPM:
    torch.manual_seed(0)
    cfg = dict(input_size=64, trunk_channels=8, feature_channels=8, stage1_channels=16, stage_channels=8)
    cfg.update(overrides)
    return CPM.from_preset("tiny", **cfg)


@pytest.fixture
def explorer():
    return ReceptiveFieldExplorer(small_cpm(), TinyData(), n_images=1)


def labelled(ax, prefix=""):
    return [h for h in ax.get_lines() if not h.get_label().startswith("_") and h.get_label().startswith(prefix)]


# ---- ReceptiveFieldExplorer ------------------------------------------------------------------
def test_analytic_squares_grow_with_stage_and_sit_on_the_network_grid(explorer):
    sides = [explorer.analytic_side(t) for t in range(1, explorer.num_stages + 1)]
    assert sides == [61.0, 157.0, 253.0]  # tiny preset: +96 px per stage
    # The analysis's own grid: cell i is centred on input pixel 8 i + 7 (not the codec's 8 i + 3.5).
    assert explorer.analytic_center(2, (1, 3)) == (8 * 3 + 7, 8 * 1 + 7)
    fig = explorer.update(show_effective=False, stage=3).figure()
    squares = sorted((p.get_width(), p.get_label()) for p in fig.axes[0].patches
                     if p.get_label().startswith("analytic"))
    assert [w for w, _ in squares] == sides
    fig1 = explorer.update(stage=1).figure()
    assert [p.get_width() for p in fig1.axes[0].patches if p.get_label().startswith("analytic")] == [61.0]
    # Zoomed out to show the whole stage-3 square, which is larger than the 64 px image.
    lo, hi = fig.axes[0].get_xlim()
    assert hi - lo >= 253 and fig1.axes[0].get_xlim()[1] - fig1.axes[0].get_xlim()[0] < 253


def test_effective_field_is_cached_per_stage_location_and_part(explorer, monkeypatch):
    calls = []
    real = receptive.effective_receptive_field

    def counting(*args, **kwargs):
        calls.append((tuple(kwargs["stages"]), kwargs["location"], kwargs["part"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(receptive, "effective_receptive_field", counting)
    explorer.update(stage=2, location=(3, 4))
    explorer.png()
    assert explorer.erf_runs == 1 and calls == [((2,), (3, 4), None)]
    explorer.update(crop=True, show_analytic=False, opacity=0.5)
    explorer.png()
    explorer.update(show_effective=False).png()
    assert explorer.erf_runs == 1  # redraws only
    explorer.update(show_effective=True, location=(0, 0)).png()
    explorer.update(part="right_wrist").png()
    assert explorer.erf_runs == 3 and calls[-1] == ((2,), (0, 0), 6)
    explorer.update(location=(3, 4), part=None).png()
    assert explorer.erf_runs == 3 and len(calls) == 3  # back to a cached cell
    erf = explorer.effective()
    assert erf.maps.shape == (1, 64, 64) and erf.stages == [2]
    # The effective-field square is centred where the analysis centres the cell.
    assert (erf.summary["center_x"].iloc[0], erf.summary["center_y"].iloc[0]) == explorer.analytic_center(2, (3, 4))


def test_invalid_stage_location_and_part_are_rejected_by_name(explorer):
    rows, cols = explorer.grid
    assert (rows, cols) == (8, 8)
    for bad, word in [(dict(stage=0), "stage"), (dict(stage=4), "stage"), (dict(stage=1.5), "stage"),
                      (dict(location=(rows, 0)), "location"), (dict(location=(0, -1)), "location"),
                      (dict(location=3), "location"), (dict(location=(1.0, 2.0)), "location"),
                      (dict(part=14), "part"), (dict(part="left_thumb"), "part"), (dict(zoom=2), "zoom"),
                      (dict(opacity=2), "opacity")]:
        with pytest.raises(ValueError, match=word):
            explorer.update(**bad)
    assert explorer.state["stage"] == 3 and explorer.erf_runs == 0  # nothing changed, nothing computed
    with pytest.raises(ValueError, match="index"):
        ReceptiveFieldExplorer(small_cpm(), TinyData(), index=8)
    with pytest.raises(ValueError, match="dataset_or_image"):
        ReceptiveFieldExplorer(small_cpm(), torch.rand(1, 64, 64))
    with pytest.raises(TypeError, match="dataset_or_image"):
        ReceptiveFieldExplorer(small_cpm(), 3.0)


def test_single_image_and_static_png_in_mimebundle():
    ex = ReceptiveFieldExplorer(small_cpm(num_stages=2), torch.rand(3, 64, 64), stage=1, location=(2, 5))
    data = ex._repr_mimebundle_()
    png = base64.b64decode(data["image/png"])
    assert png.startswith(PNG_MAGIC)
    assert "application/vnd.jupyter.widget-view+json" in data
    assert "ReceptiveFieldExplorer(stage=1/2" in data["text/plain"]
    assert ex.erf_runs == 1 and ex.n_images == 1


def test_widget_controls_drive_the_view():
    explorer = ReceptiveFieldExplorer(small_cpm(), TinyData(), n_images=1, show_effective=False)
    w = explorer.widget
    assert w is explorer.widget
    before = explorer._image_widget.value
    explorer.controls["stage"].value = 1
    explorer.controls["row"].value = 2
    assert explorer.state["stage"] == 1 and explorer.state["location"] == (2, 4)
    assert explorer._image_widget.value != before and explorer.erf_runs == 0
    explorer.controls["effective"].value = True
    assert explorer.erf_runs == 1


def test_scripted_update_moves_the_controls():
    explorer = ReceptiveFieldExplorer(small_cpm(), TinyData(), n_images=1, show_effective=False)
    explorer.widget
    explorer.update(stage=2, location=(5, 1), part="left_wrist", crop=False)
    c = explorer.controls
    assert (c["stage"].value, c["row"].value, c["col"].value, c["part"].value, c["crop"].value) == (2, 5, 1, 11, False)
    c["analytic"].value = False                   # touching a control keeps the scripted rest
    assert explorer.state["location"] == (5, 1) and explorer.state["part"] == 11 and explorer.erf_runs == 0


# ---- LiveTrainingPlot --------------------------------------------------------------------------
def record(step, stages=3):
    r = dict(step=step, epoch=0, phase="end_to_end", loss=0.0, lr=1e-3 / step, images_per_s=1.0)
    for t in range(1, stages + 1):
        r[f"loss_stage{t}"] = 10.0 / (step * t)
    return r


class FakeTrainer:
    history = pd.DataFrame()


def test_live_plot_redraws_every_k_steps_by_hooks(tmp_path):
    path = tmp_path / "live" / "curves.png"
    live = LiveTrainingPlot(every=10, path=path, display=False)
    trainer = FakeTrainer()
    live.on_train_start(trainer)
    for step in range(1, 24):
        live.on_step_end(trainer, step, record(step))
        assert path.exists() == (step >= 10)
    assert live.redraws == 23 // 10 and live.last_drawn_step == 20 and not live.final_redraw
    live.on_train_end(trainer)
    assert live.final_redraw and live.last_drawn_step == 23
    assert path.read_bytes().startswith(PNG_MAGIC)
    # The plot does no work during backward.
    assert LiveTrainingPlot.on_after_backward is Callback.on_after_backward


def test_live_plot_updates_one_display_in_place(monkeypatch):
    import IPython.display

    shown = []

    class Handle:
        def __init__(self, obj):
            shown.append(obj)

        def update(self, obj):
            shown.append(obj)

    monkeypatch.setattr(IPython.display, "display", lambda obj, display_id=None: Handle(obj) if display_id else None)
    live = LiveTrainingPlot(every=4, display=True)
    trainer = FakeTrainer()
    live.on_train_start(trainer)
    for step in range(1, 9):
        live.on_step_end(trainer, step, record(step))
    live.on_train_end(trainer)  # step 8 was drawn: no extra render
    assert live.redraws == 2 and not live.final_redraw
    assert isinstance(shown[0], IPython.display.Markdown)  # placeholder until the first redraw
    assert [type(o).__name__ for o in shown[1:]] == ["Image", "Image"]
    assert shown[-1].data.startswith(PNG_MAGIC)


def test_live_plot_without_a_front_end_renders_nothing_but_can_draw():
    live = LiveTrainingPlot(every=2, display=False)
    trainer = FakeTrainer()
    live.on_train_start(trainer)
    for step in range(1, 7):
        live.on_step_end(trainer, step, record(step))
    live.on_train_end(trainer)
    assert live.redraws == 0 and not live.final_redraw
    assert live._repr_png_().startswith(PNG_MAGIC)
    with pytest.raises(ValueError, match="every"):
        LiveTrainingPlot(every=0)
    with pytest.raises(ValueError, match="display"):
        LiveTrainingPlot(display="yes")


def test_live_plot_in_a_real_training_run(tmp_path):
    from cpm_lab.train import TrainConfig, Trainer

    model = small_cpm()
    tracker = GradientTracker(every=1, histogram_layers=None)
    live = LiveTrainingPlot(every=2, tracker=tracker, path=tmp_path / "c.png")
    cfg = TrainConfig(steps=4, batch_size=2, progress=False, device="cpu")
    trainer = Trainer(model, TinyData(), cfg, callbacks=[tracker, live])
    trainer.fit(until=3)
    assert live.redraws == 1 and live.final_redraw  # step 2 periodic, step 3 at the end
    fig = live.figure()
    loss_ax, grad_ax = fig.axes[0], fig.axes[1]
    assert [h.get_label() for h in labelled(loss_ax)] == ["stage 1", "stage 2", "stage 3"]
    assert len(labelled(grad_ax, "stage")) == 3
    # A resumed run starts from the checkpoint's history.
    ckpt = trainer.save_checkpoint(tmp_path / "ckpt.pt")
    live2 = LiveTrainingPlot(every=2, display=False)
    Trainer(small_cpm(), TinyData(), cfg, callbacks=[live2]).fit(resume=ckpt)
    assert [r["step"] for r in live2.records] == [1, 2, 3, 4]


# ---- plot_history ----------------------------------------------------------------------------
def test_plot_history_draws_stage_losses_and_eval_pck():
    rows = [record(s, stages=4) for s in range(1, 41)]
    for r in rows:
        r["phase"] = "stage1" if r["step"] <= 20 else "finetune"
        if r["step"] % 10 == 0:
            for t in range(1, 5):
                r[f"pck@0.2_stage{t}"] = 0.1 * t + r["step"] / 100
                r[f"pck@0.1_stage{t}"] = 0.05 * t
    fig = plot_history(pd.DataFrame(rows))
    loss_ax, pck_ax = fig.axes[0], fig.axes[3]
    assert [h.get_label() for h in labelled(loss_ax)] == [f"stage {t}" for t in range(1, 5)]
    pck_lines = labelled(pck_ax, "stage")
    assert len(pck_lines) == 4
    np.testing.assert_allclose(pck_lines[-1].get_xdata(), [10, 20, 30, 40])  # evaluation steps only
    np.testing.assert_allclose(pck_lines[-1].get_ydata(), [0.5, 0.6, 0.7, 0.8])
    assert "PCK@0.2" in pck_ax.get_ylabel()
    assert any(abs(v.get_xdata()[0] - 20.5) < 1e-9 for v in loss_ax.get_lines())  # phase boundary
    fig01 = plot_history(pd.DataFrame(rows), pck_threshold=0.1)
    assert "PCK@0.1" in fig01.axes[3].get_ylabel()
    with pytest.raises(ValueError, match="pck_threshold"):
        plot_history(pd.DataFrame(rows), pck_threshold=0.5)
    with pytest.raises(ValueError, match="loss_stage1"):
        plot_history(pd.DataFrame({"step": [1, 2], "loss": [1.0, 0.5]}))
    with pytest.raises(TypeError, match="history"):
        plot_history(42)
    import matplotlib.pyplot as plt
    plt.close("all")
