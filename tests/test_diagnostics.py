"""Receptive fields, gradient tracking and cost counting (cpm_lab.diagnostics)."""
from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn as nn

from cpm_lab.diagnostics import (
    GradientTracker,
    effective_receptive_field,
    layer_graph,
    model_cost,
    receptive_fields,
    tracked_layers,
)
from cpm_lab.models import CPM


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return CPM.from_preset("paper")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return CPM.from_preset("tiny")


def _rf(seq):
    return receptive_fields(seq).stages.iloc[0]


# ------------------------------------------------------------------ analytic receptive fields
@pytest.mark.parametrize("layers, rf, jump", [
    ([nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)], 5, 1),
    ([nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(2, 2), nn.Conv2d(1, 1, 3, padding=1)], 8, 2),
    ([nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3)], 7, 2),
    ([nn.Conv2d(1, 1, 3, dilation=2, padding=2)], 5, 1),
    ([nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3, dilation=3)], 11, 1),
    ([nn.Conv2d(1, 1, 5, padding=2), nn.AvgPool2d(3, 2, ceil_mode=True), nn.Conv2d(1, 1, 1)], 7, 2),
    ([nn.Conv2d(1, 1, 7), nn.ReLU(), nn.BatchNorm2d(1), nn.Dropout()], 7, 1),
])
def test_analytic_rf_of_small_networks(layers, rf, jump):
    row = _rf(nn.Sequential(*layers))
    assert row["rf_px"] == rf and row["jump_px"] == jump


def test_analytic_start_tracks_padding():
    # 3x3 without padding: unit 0 is centred on pixel 1; 'same' padding keeps it at 0;
    # a 2x2/2 pool centres unit 0 between pixels 0 and 1.
    assert _rf(nn.Sequential(nn.Conv2d(1, 1, 3)))["start_px"] == 1
    assert _rf(nn.Sequential(nn.Conv2d(1, 1, 3, padding="same")))["start_px"] == 0
    assert _rf(nn.Sequential(nn.MaxPool2d(2, 2)))["start_px"] == 0.5


def test_nested_sequential_and_layer_table():
    seq = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU()),
                        nn.MaxPool2d(2, 2), nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)))
    rf = receptive_fields(seq, input_size=32)
    assert list(rf.layers["layer"]) == ["conv1", "pool1", "conv2"]
    assert list(rf.layers["rf"]) == [3, 4, 8]
    assert list(rf.layers["jump"]) == [1, 2, 2]
    assert rf.stages["rf_fraction_of_input"].iloc[0] == pytest.approx(8 / 32)
    assert {"stage", "layer", "kind", "kernel", "stride", "padding", "rf", "jump", "start"} <= set(rf.layers)


def test_unsupported_modules_raise_clear_errors():
    with pytest.raises(TypeError, match="Linear"):
        receptive_fields(nn.Sequential(nn.Conv2d(1, 1, 3), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="non-square"):
        receptive_fields(nn.Sequential(nn.Conv2d(1, 1, (3, 5))))
    with pytest.raises(ValueError, match="input_size"):
        receptive_fields(nn.Sequential(nn.Conv2d(1, 1, 3)), input_size=-4)


def test_paper_preset_stage_fields(paper):
    rf = receptive_fields(paper)
    assert list(rf.stages["rf_px"]) == [167, 407, 647, 887, 1127, 1367]
    assert set(rf.stages["jump_px"]) == {8}
    assert rf.stages["rf_fraction_of_input"].iloc[0] == pytest.approx(167 / 368)
    layers = rf.layers.set_index("layer")
    assert layers.loc["trunk.pool3", "rf"] == 71 and layers.loc["stage2.conv1", "rf"] == 103
    assert layers.loc["stage2.concat", "rf"] == 167  # union: the previous beliefs dominate
    assert layers.loc["center.pool1", "kind"] == "avgpool"


def test_single_stage_cpm_has_no_trunk():
    rf = receptive_fields(CPM.from_preset("tiny", num_stages=1))
    assert list(rf.stages["stage"]) == [1] and rf.stages["rf_px"].iloc[0] == 61


def test_analytic_field_equals_gradient_support():
    # A linear net (convs + average pooling): the input gradient of one unit is non-zero exactly
    # on its analytic field, whose centre is start + jump * index.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.AvgPool2d(2, 2), nn.Conv2d(2, 2, 5, padding=1),
                        nn.AvgPool2d(3, 2, padding=1), nn.Conv2d(2, 1, 3, padding=1))
    row = _rf(net)
    x = torch.zeros(1, 1, 64, 64, requires_grad=True)
    y = net(x)
    i, j = 3, 4
    (g,) = torch.autograd.grad(y[0, 0, i, j], x)
    ys, xs = np.nonzero(g[0, 0].numpy())
    assert ys.max() - ys.min() + 1 == row["rf_px"] == xs.max() - xs.min() + 1
    assert (xs.max() + xs.min()) / 2 == row["start_px"] + row["jump_px"] * j
    assert (ys.max() + ys.min()) / 2 == row["start_px"] + row["jump_px"] * i


def test_layer_graph_names(tiny):
    names = [n.name for n in layer_graph(tiny).convs]
    assert names[:7] == [f"stage1.conv{i}" for i in range(1, 8)]
    assert "trunk.conv1" in names and "stage3.conv6" in names
    depth = {lay.name: lay.depth for lay in tracked_layers(tiny)}
    assert depth["stage1.conv1"] == 1 and depth["stage2.conv1"] == 4
    assert depth["stage2.conv2"] == 8  # after all 7 convs of stage 1
    assert depth["stage3.conv6"] == 17
    main = {lay.name for lay in tracked_layers(tiny) if lay.main_path}
    assert main == {f"stage1.conv{i}" for i in range(1, 8)} | {f"stage{t}.conv{i}" for t in (2, 3) for i in range(2, 7)}


# ------------------------------------------------------------------ effective receptive field
@pytest.mark.parametrize("k", [3, 5])
def test_erf_of_single_conv_is_its_kernel(k):
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(3, 2, k, padding=k // 2))
    erf = effective_receptive_field(conv, n_images=2, image_size=15)
    m = erf.maps[0]
    ys, xs = np.nonzero(m)
    assert erf.location == (7, 7) and erf.center == (7.0, 7.0)
    assert len(ys) == k * k
    assert ys.min() == xs.min() == 7 - k // 2 and ys.max() == xs.max() == 7 + k // 2
    assert erf.summary["radius_px"].iloc[0] <= k // 2
    assert erf.cumulative["mass_fraction"].iloc[-1] == pytest.approx(1.0)


def test_erf_of_cpm_stays_inside_analytic_field(tiny):
    for p in tiny.parameters():
        p.grad = None
    erf = effective_receptive_field(tiny, n_images=2, batch_size=1, stages=[1, 2])
    assert erf.maps.shape == (2, 128, 128) and erf.stages == [1, 2]
    summ = erf.summary.set_index("stage")
    cx, cy = summ.loc[1, "center_x"], summ.loc[1, "center_y"]
    assert (cx, cy) == (8 * 8 + 7, 8 * 8 + 7)  # centre cell (8, 8), analytic start 7, jump 8
    half = (summ.loc[1, "analytic_rf_px"] - 1) / 2
    yy, xx = np.mgrid[:128, :128]
    outside = (np.abs(xx - cx) > half) | (np.abs(yy - cy) > half)
    m = erf.maps[0]
    assert m[outside].max() == 0 and m[~outside].sum() > 0
    assert summ.loc[1, "side_px"] <= summ.loc[1, "analytic_rf_px"]
    assert all(p.grad is None for p in tiny.parameters())  # parameters' grads untouched
    assert tiny.training  # mode restored


def test_erf_argument_errors(tiny):
    with pytest.raises(ValueError, match="location"):
        effective_receptive_field(tiny, n_images=1, location=(99, 0))
    with pytest.raises(ValueError, match="unknown part"):
        effective_receptive_field(tiny, n_images=1, part="tail")
    with pytest.raises(ValueError, match="image_size"):
        effective_receptive_field(nn.Sequential(nn.Conv2d(3, 1, 3)))


# ------------------------------------------------------------------ gradient tracker
def _toy():
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, 2),
                         nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Conv2d(4, 2, 1))


def _step(model, x):
    model.zero_grad(set_to_none=True)
    out = model(x)
    out = out if isinstance(out, torch.Tensor) else sum(o.square().mean() for o in out)
    out.square().mean().backward()


def test_tracker_norms_match_manual_computation():
    model = _toy()
    tracker = GradientTracker(every=3, histogram_layers="all")
    trainer = SimpleNamespace(model=model)
    x = torch.rand(2, 3, 16, 16)
    manual = {}
    for step in range(1, 8):
        _step(model, x * step)
        tracker.on_after_backward(trainer, step)
        convs = [m for m in model if isinstance(m, nn.Conv2d)]
        manual[step] = [torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in c.parameters()])).item()
                        for c in convs]
        manual[step].append(torch.linalg.vector_norm(
            torch.cat([p.grad.flatten() for p in model.parameters()])).item())
    assert tracker.steps == [1, 3, 6]
    df = tracker.norms
    assert list(df.columns) == ["step", "stage", "layer", "depth", "norm"]
    for step in tracker.steps:
        got = df[df["step"] == step]
        assert list(got["layer"]) == ["conv1", "conv2", "conv3", "stage1"]
        np.testing.assert_allclose(got["norm"].to_numpy(), manual[step], rtol=1e-5)
    hist = tracker.histograms
    counts = hist.groupby(["step", "layer"])["count"].sum()
    sizes = {"conv1": 4 * 3 * 9, "conv2": 4 * 4 * 9, "conv3": 2 * 4}
    for (step, layer), n in counts.items():
        assert n == sizes[layer]


def test_tracker_stage_norms_follow_stage_modules(tiny):
    tiny.zero_grad(set_to_none=True)
    _step(tiny, torch.rand(1, 3, 128, 128))
    tracker = GradientTracker(every=1, histogram_layers=None)
    tracker.record(tiny, 5)
    st = tracker.stage_norms.set_index("stage")["norm"]
    for t in (1, 2, 3):
        grads = [p.grad.flatten() for m in tiny.stage_modules(t) for p in m.parameters()]
        assert st[t] == pytest.approx(torch.linalg.vector_norm(torch.cat(grads)).item(), rel=1e-5)
    ln = tracker.layer_norms.set_index("layer")
    w = tiny.trunk[0]
    assert ln.loc["trunk.conv1", "stage"] == 2
    assert ln.loc["trunk.conv1", "norm"] == pytest.approx(
        torch.linalg.vector_norm(torch.cat([q.grad.flatten() for q in w.parameters()])).item(), rel=1e-5)
    assert tracker.histograms.empty
    tiny.zero_grad(set_to_none=True)


def test_tracker_histogram_bins_and_missing_grads():
    conv = nn.Conv2d(1, 1, 2, bias=False)
    model = nn.Sequential(conv, nn.Conv2d(1, 1, 1))
    conv.weight.grad = torch.tensor([0.0, -3e-5, 0.5, 100.0]).view(1, 1, 2, 2)
    edges = np.array([1e-6, 1e-4, 1e-2, 1.0])
    tracker = GradientTracker(every=1, histogram_layers=["conv1"], bin_edges=edges)
    tracker.record(model, 1)
    h = tracker.histograms
    assert list(h["bin_left"]) == [0.0, 1e-6, 1e-4, 1e-2, 1.0]
    assert list(h["bin_right"]) == [1e-6, 1e-4, 1e-2, 1.0, np.inf]
    assert list(h["count"]) == [1, 1, 0, 1, 1]
    norms = tracker.norms.set_index("layer")["norm"]
    assert norms["conv2"] == 0.0  # no gradient counts as zero
    assert norms["conv1"] == pytest.approx(np.linalg.norm([3e-5, 0.5, 100.0]))


def test_tracker_argument_errors():
    with pytest.raises(ValueError, match="every"):
        GradientTracker(every=0)
    with pytest.raises(ValueError, match="bin_edges"):
        GradientTracker(bin_edges=[1.0, 0.1])
    tr = GradientTracker(histogram_layers=["stage9.conv1"])
    model = _toy()
    _step(model, torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="stage9.conv1"):
        tr.record(model, 1)


# ------------------------------------------------------------------ cost
def test_cost_of_one_conv_by_hand():
    conv = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2))
    c = model_cost(conv, input_size=32)
    row = c.layers.iloc[0]
    assert (row["out_h"], row["out_w"]) == (16, 16)
    assert row["params"] == 8 * 3 * 25 + 8
    assert row["macs"] == 8 * 16 * 16 * 3 * 25
    assert row["bias_adds"] == 8 * 16 * 16
    assert c.totals["inference_gflops"] == pytest.approx(2 * row["macs"] / 1e9)
    assert c.totals["training_gflops"] == pytest.approx(3 * c.totals["inference_gflops"])
    assert c.max_images_per_s(1.0, training=False) == pytest.approx(1e12 / (2 * row["macs"]))
    assert c.utilization(c.max_images_per_s(2.0), 2.0) == pytest.approx(1.0)
    grouped = model_cost(nn.Sequential(nn.Conv2d(4, 8, 3, padding=1, groups=2, bias=False)), 10,
                         in_channels=4)
    assert grouped.layers["macs"].iloc[0] == 8 * 10 * 10 * 2 * 9


def test_paper_parameter_total(paper):
    c = model_cost(paper)
    assert c.totals["params"] == 31_219_866 == sum(p.numel() for p in paper.parameters())
    assert c.stages["params"].sum() == 31_219_866
    assert list(c.stages["stage"]) == [1, 2, 3, 4, 5, 6]


def test_cost_shapes_match_a_real_forward(tiny):
    shapes = {}
    hooks = [n.module.register_forward_hook(lambda m, i, o, name=n.name: shapes.__setitem__(name, o.shape[1:]))
             for n in layer_graph(tiny).convs]
    try:
        with torch.no_grad():
            tiny(torch.rand(1, 3, 96, 96))
    finally:
        for h in hooks:
            h.remove()
    c = model_cost(tiny, input_size=96).layers.set_index("layer")
    for name, shp in shapes.items():
        assert (c.loc[name, "out_channels"], c.loc[name, "out_h"], c.loc[name, "out_w"]) == tuple(shp)
    with pytest.raises(ValueError, match="different sizes"):
        model_cost(tiny, input_size=100)  # not a multiple of 8: the concat fails, as in forward


# ------------------------------------------------------------------ plots
def test_plots_draw_what_they_say(tiny):
    from cpm_lab.viz.diagnostics import (
        plot_cost,
        plot_effective_receptive_field,
        plot_gradient_histograms,
        plot_gradient_norm_by_depth,
        plot_gradient_norms,
        plot_receptive_fields,
    )
    fig = plot_receptive_fields(tiny)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert labels[:3] == ["stage 1: 61 px", "stage 2: 157 px", "stage 3: 253 px"]
    plt.close(fig)
    erf = effective_receptive_field(nn.Sequential(nn.Conv2d(3, 1, 3, padding=1)), n_images=1, image_size=9)
    plt.close(plot_effective_receptive_field(erf))
    model = _toy()
    tr = GradientTracker(every=1, histogram_layers="default")
    for s in (1, 2):
        _step(model, torch.rand(1, 3, 8, 8))
        tr.record(model, s)
    for fig in (plot_gradient_norms({"a": tr, "b": tr}), plot_gradient_norm_by_depth(tr),
                plot_gradient_histograms({"a": tr}), plot_cost(model_cost(tiny))):
        assert fig.axes
        plt.close(fig)



def test_gradient_histogram_plot_reports_what_it_leaves_out():
    from cpm_lab.viz.diagnostics import _percent, plot_gradient_histograms
    assert (_percent(0.0), _percent(0.003), _percent(0.26)) == ("0%", "<1%", "26%")
    model = _toy()
    edges = [1e-6, 1e-4, 1e-3]   # narrow on purpose: some gradients fall below, some above
    tr = GradientTracker(every=1, histogram_layers="default", bin_edges=edges)
    _step(model, torch.rand(1, 3, 8, 8))
    tr.record(model, 1)
    h = tr.histograms
    layer = h["layer"].iloc[0]
    counts = h[h["layer"] == layer]["count"].to_numpy()
    frac = counts / counts.sum()
    assert frac[-1] > 0, "the test needs gradients above the last edge"
    fig = plot_gradient_histograms(tr, layers=[layer])
    ax = fig.axes[0]
    (patch,) = ax.patches
    values, x = patch.get_data()[:2]
    np.testing.assert_allclose(x, np.log10(edges))            # only the real bins are drawn
    np.testing.assert_allclose(values, frac[1:-1])
    (label,) = ax.get_legend_handles_labels()[1]
    assert f"{_percent(frac[0])} below 1e-06" in label and f"{_percent(frac[-1])} above 1e-03" in label
    plt.close(fig)

@pytest.mark.slow
def test_compare_supervision_early_gradients_shrink_without_intermediate_loss():
    from cpm_lab.diagnostics import compare_supervision
    g = torch.Generator().manual_seed(0)
    data = [dict(image=torch.rand(3, 128, 128, generator=g),
                 keypoints=torch.cat([torch.rand(14, 2, generator=g) * 100 + 14, torch.ones(14, 1)], 1))
            for _ in range(6)]
    res = compare_supervision("tiny", steps=3, batch_size=2, every=1, device="cpu", window=3, dataset=data)
    s = res.summary.set_index(["run", "layer"])["norm_end"]
    with_is, without = res.summary["run"].unique()
    assert s[(without, "stage1.conv1")] < 0.5 * s[(with_is, "stage1.conv1")]
    assert set(res.losses["stage"]) == {1, 2, 3}


def test_early_exit_stops_after_each_stage_and_adds_up_the_cost():
    from cpm_lab.data import SyntheticPoses
    from cpm_lab.diagnostics import early_exit, model_cost

    torch.manual_seed(0)
    model = CPM.from_preset("tiny", input_size=64)
    calls = []
    original = model.forward
    model.forward = lambda *a, **k: calls.append(k.get("num_stages")) or original(*a, **k)
    table = early_exit(model, SyntheticPoses(8, image_size=64, seed=1), repeats=2)
    assert list(table["stage"]) == [1, 2, 3] and {1, 2, 3} <= set(calls)     # forward stopped after each stage
    cost = model_cost(model).stages
    assert table["gmacs"].iloc[-1] == pytest.approx(cost["macs"].sum() / 1e9)
    assert table["gmacs"].is_monotonic_increasing and table["params_m"].is_monotonic_increasing
    assert (table["ms"] > 0).all() and table["pck"].between(0, 1).all()
    assert table["pck_per_gmac"].iloc[0] == pytest.approx(table["pck"].iloc[0] / table["gmacs"].iloc[0])
