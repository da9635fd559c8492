"""The decoders of ``cpm_lab.targets.decode`` (``method=``) and the codec round trip, on hand-made maps."""
import math

import pandas as pd
import pytest
import torch

from cpm_lab.models import CPM
from cpm_lab.targets import DECODERS, VISIBLE, CodecConfig, decode, encode, round_trip

CODECS = {"tiny": CPM.from_preset("tiny").codec,    # 128 px, stride 8, sigma 8 px (1 cell)
          "paper": CPM.from_preset("paper").codec}  # 368 px, stride 8, sigma 7 px (0.875 cell)
REFINED = ("parabola", "dark")
ARGMAX_BASED = ("argmax", "parabola", "quarter", "dark")


def gaussian_keypoints(cfg, n, generator, margin_cells=4):
    """(n, P, 3) visible keypoints at uniform sub-pixel positions ``margin_cells`` cells inside the input."""
    lo = margin_cells * cfg.stride - 0.5
    hi = cfg.input_size - 0.5 - margin_cells * cfg.stride
    xy = lo + torch.rand(n, cfg.num_parts, 2, generator=generator) * (hi - lo)
    return torch.cat([xy, torch.full((n, cfg.num_parts, 1), float(VISIBLE))], dim=-1)


def one_part(cfg):
    return cfg.replace(num_parts=1)


def test_decoders_constant():
    assert DECODERS == ("argmax", "parabola", "quarter", "dark", "soft_argmax")


@pytest.mark.parametrize("name", list(CODECS))
def test_exact_gaussian_per_method(name):
    """Each part's map is an exact sampled Gaussian (the codec's own encode, sigma = config.sigma)
    with one peak at least 4 cells from the border, nothing else on it."""
    cfg = CODECS[name]
    kp = gaussian_keypoints(cfg, 64, torch.Generator().manual_seed(0))
    targets, _ = encode(kp, cfg)
    err = {m: (decode(targets, cfg, method=m)[..., :2] - kp[..., :2]).abs() for m in DECODERS}
    half = cfg.stride / 2
    for m in REFINED:
        assert err[m].max() < 0.05, m
    assert err["argmax"].max() <= half + 1e-3
    assert err["quarter"].max() <= half + 1e-3
    # Over 64 x 14 uniform positions argmax averages a quarter cell per axis and quarter an eighth.
    assert err["quarter"].mean() < 0.6 * err["argmax"].mean()
    assert err["argmax"].mean() == pytest.approx(cfg.stride / 4, rel=0.1)
    assert err["quarter"].mean() == pytest.approx(cfg.stride / 8, rel=0.1)
    # soft_argmax on an isolated peak on an otherwise zero map: the only errors are aliasing of
    # the sampled Gaussian (Poisson summation: about 2 pi sigma^2 exp(-2 pi^2 sigma^2) < 2e-6 cell
    # for sigma >= 0.875 cell) and the tail the border cuts off (peak >= 4 cells = 4 sigma inside:
    # mass ~ Phi(-4) = 3e-5 at a lever of ~4 cells, ~1e-4 cell ~ 1e-3 px). 0.01 px leaves 10x.
    assert err["soft_argmax"].max() < 0.01


@pytest.mark.parametrize("name", list(CODECS))
def test_confidence_is_the_unsmoothed_peak_for_every_method(name):
    cfg = CODECS[name]
    kp = gaussian_keypoints(cfg, 4, torch.Generator().manual_seed(1))
    targets, _ = encode(kp, cfg)
    peak = targets[:, :-1].amax(dim=(-2, -1))
    for m in DECODERS:
        out = decode(targets, cfg, method=m)
        assert out.shape == (4, cfg.num_parts, 3)
        assert torch.equal(out[..., 2], peak), m
        # Without the background channel the same.
        assert torch.equal(decode(targets[:, :-1], cfg, method=m), out), m


@pytest.mark.parametrize("name", list(CODECS))
def test_second_weaker_peak_pulls_soft_argmax_only(name):
    """Map = G(a) + 0.5 G(b), b 7 cells away: soft_argmax lands near the mass-weighted mean
    (a + 0.5 b) / 1.5, a third of the way to b; the arg-max based methods stay on a."""
    cfg = one_part(CODECS[name])
    s = cfg.stride
    a = torch.tensor([4.3 * s + 1.7, 5.6 * s + 2.2])
    b = a + torch.tensor([7.0 * s + 1.3, 0.4 * s])
    two = cfg.replace(num_parts=2)
    kp = torch.stack([torch.cat([a, torch.tensor([2.0])]), torch.cat([b, torch.tensor([2.0])])])[None]
    t, _ = encode(kp, two)
    beliefs = (t[:, 0] + 0.5 * t[:, 1])[:, None]  # (1, 1, S, S)
    out = {m: decode(beliefs, cfg, method=m)[0, 0, :2] for m in DECODERS}
    for m in ARGMAX_BASED:
        tol = 0.05 if m in REFINED else s / 2
        assert (out[m] - a).abs().max() <= tol, m
    pulled = out["soft_argmax"]
    assert (pulled - (a + 0.5 * b) / 1.5).abs().max() < 0.05
    assert (pulled - a).norm() > 0.3 * (b - a).norm()


def hand_map():
    """5 x 5 map, peak 1 at cell (row 2, col 2); left/right neighbours 0.5/0.25, up/down 0.25/0.5."""
    m = torch.zeros(1, 1, 5, 5)
    m[0, 0, 2, 2] = 1.0
    m[0, 0, 2, 1], m[0, 0, 2, 3] = 0.5, 0.25
    m[0, 0, 1, 2], m[0, 0, 3, 2] = 0.25, 0.5
    return m


def test_hand_computed_values_and_default_is_parabola():
    cfg = CodecConfig(input_size=40, stride=8, sigma=8.0, num_parts=1)
    m = hand_map()
    # cell c -> 8 c + 3.5 px. Parabola through ln(0.5), 0, ln(0.25): vertex at
    # 0.5 (lm - lp) / (lm - 2 l0 + lp) = 0.5 (ln 2) / (-3 ln 2) = -1/6 cell in x, +1/6 in y.
    expected = {
        "argmax": (19.5, 19.5),
        "parabola": (8 * (2 - 1 / 6) + 3.5, 8 * (2 + 1 / 6) + 3.5),
        "quarter": (19.5 - 2, 19.5 + 2),  # a quarter cell towards the 0.5 neighbour
        # mass 2.5; x: (2 + 0.5 + 0.75 + 0.5 + 1) / 2.5 = 1.9, y: 5.25 / 2.5 = 2.1
        "soft_argmax": (8 * 1.9 + 3.5, 8 * 2.1 + 3.5),
    }
    for method, (x, y) in expected.items():
        out = decode(m, cfg, method=method)[0, 0]
        assert out.tolist() == pytest.approx([x, y, 1.0], abs=1e-4), method
    # The default is parabola, bit for bit, on the hand map, on random maps and on encoded ones.
    cfg14 = CODECS["paper"]
    g = torch.Generator().manual_seed(2)
    rand = torch.rand(3, 15, 46, 46, generator=g)
    enc, _ = encode(gaussian_keypoints(cfg14, 3, g, margin_cells=0), cfg14)
    for beliefs, c in ((m, cfg), (rand, cfg14), (enc, cfg14), (enc - 0.2, cfg14)):
        assert torch.equal(decode(beliefs, c), decode(beliefs, c, method="parabola"))


def test_border_peak_is_not_refined():
    cfg = CodecConfig(input_size=40, stride=8, sigma=8.0, num_parts=1)
    m = torch.zeros(1, 1, 5, 5)
    m[0, 0, 0, 0], m[0, 0, 0, 1], m[0, 0, 1, 0] = 1.0, 0.6, 0.3
    for method in ARGMAX_BASED:
        assert decode(m, cfg, method=method)[0, 0, :2].tolist() == [3.5, 3.5], method


def test_dark_falls_back_to_the_argmax_cell_where_the_hessian_is_not_negative_definite():
    # A narrow spike between two broad, slightly lower, unequal ridges along its row: after
    # smoothing (sigma 1 cell) the log-map is convex along x at the spike, so no Newton step.
    cfg = CodecConfig(input_size=88, stride=8, sigma=8.0, num_parts=1)
    m = torch.zeros(1, 1, 11, 11)
    m[0, 0, 5, 5] = 1.0
    m[0, 0, 5, 1:4] = 0.95
    m[0, 0, 5, 7:10] = 0.9
    out = decode(m, cfg, method="dark")[0, 0]
    assert out.tolist() == [5 * 8 + 3.5, 5 * 8 + 3.5, 1.0]


def test_all_zero_map():
    cfg = CodecConfig(input_size=40, stride=8, sigma=8.0, num_parts=1)
    for method in DECODERS:
        assert decode(torch.zeros(2, 2, 5, 5), cfg, method=method).tolist() == [[[3.5, 3.5, 0.0]]] * 2, method


def test_unknown_method_message():
    cfg = CODECS["tiny"]
    with pytest.raises(ValueError) as info:
        decode(torch.zeros(1, 15, 16, 16), cfg, method="softargmax")
    msg = str(info.value)
    assert "\n" not in msg and "'softargmax'" in msg
    assert all(m in msg for m in DECODERS)
    with pytest.raises(ValueError, match="valid methods: argmax, parabola, quarter, dark, soft_argmax"):
        round_trip(cfg, methods=("parabola", "taylor"))


@pytest.mark.parametrize("name", list(CODECS))
def test_round_trip_table(name):
    cfg = CODECS[name]
    df = round_trip(cfg, n=300)
    assert list(df.columns) == ["method", "mean_px", "median_px", "p95_px", "max_px"]
    assert df["method"].tolist() == list(DECODERS)
    t = df.set_index("method")
    assert (t >= 0).all().all()
    assert (t["median_px"] <= t["p95_px"]).all() and (t["p95_px"] <= t["max_px"]).all()
    assert t.loc["parabola", "mean_px"] < 0.01 * t.loc["argmax", "mean_px"]
    # Uniform positions: argmax's mean error is ~0.38 cell (mean distance to the centre of a unit
    # square), never more than the half diagonal; quarter halves it.
    assert t.loc["argmax", "mean_px"] == pytest.approx(0.3826 * cfg.stride, rel=0.1)
    assert t.loc["argmax", "max_px"] <= cfg.stride * math.sqrt(2) / 2 + 1e-3
    assert t.loc["quarter", "mean_px"] < 0.6 * t.loc["argmax", "mean_px"]
    pd.testing.assert_frame_equal(df, round_trip(cfg, n=300))
    other = round_trip(cfg, n=300, seed=1)
    assert not other[["mean_px"]].equals(df[["mean_px"]])
    sub = round_trip(cfg, methods=("dark", "argmax"), n=300)
    pd.testing.assert_frame_equal(sub.reset_index(drop=True),
                                  df.set_index("method").loc[["dark", "argmax"]].reset_index())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_decode_on_cuda_matches_cpu():
    cfg = CODECS["paper"]
    targets, _ = encode(gaussian_keypoints(cfg, 8, torch.Generator().manual_seed(3)), cfg)
    for m in DECODERS:
        out = decode(targets.cuda(), cfg, method=m)
        assert out.device.type == "cuda"
        torch.testing.assert_close(out.cpu(), decode(targets, cfg, method=m), atol=1e-3, rtol=0)
