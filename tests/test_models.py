import pytest
import torch
import torch.nn as nn

from cpm_lab.models import CPM, PRESETS, preset_config
from cpm_lab.models.cpm import CPMConfig


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_shapes(name):
    model = CPM.from_preset(name).eval()
    c = model.config
    size = c.input_size if name != "paper" else 184  # keep the paper forward cheap
    with torch.no_grad():
        out = model(torch.rand(2, 3, size, size))
    assert len(out) == c.num_stages
    for b in out:
        assert b.shape == (2, c.num_parts + 1, size // 8, size // 8)


def test_paper_preset_is_faithful():
    model = CPM.from_preset("paper")
    assert sum(p.numel() for p in model.parameters()) == 31_219_866
    assert model.config.input_size == 368 and model.config.num_stages == 6
    assert model.codec.output_size == 46 and model.codec.sigma == 7 and model.codec.center_sigma == 21
    with torch.no_grad():
        out = model(torch.rand(1, 3, 368, 368))
    assert [tuple(b.shape) for b in out] == [(1, 15, 46, 46)] * 6
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_stages_parts_and_batchnorm_are_arguments():
    model = CPM.from_preset("tiny", num_stages=5, num_parts=16, batch_norm=True).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert len(out) == 5 and out[0].shape == (1, 17, 8, 8)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    one = CPM.from_preset("tiny", num_stages=1)
    assert one.trunk is None and len(one(torch.rand(1, 3, 64, 64))) == 1


def test_center_map_changes_later_stages_only():
    torch.manual_seed(0)
    model = CPM.from_preset("tiny").eval()
    x = torch.rand(1, 3, 128, 128)
    cm = torch.zeros(1, 1, 128, 128)
    with torch.no_grad():
        a, b = model(x), model(x, cm)
    assert torch.equal(a[0], b[0])
    assert not torch.allclose(a[1], b[1])


def test_stage_modules_partition_parameters():
    model = CPM.from_preset("tiny", num_stages=4)
    owned = [p for t in range(1, 5) for m in model.stage_modules(t) for p in m.parameters()]
    assert len(owned) == len(list(model.parameters()))
    assert len({id(p) for p in owned}) == len(owned)


def test_clear_errors():
    with pytest.raises(ValueError, match="unknown CPM preset 'huge'"):
        CPM.from_preset("huge")
    with pytest.raises(ValueError, match="unknown CPM option"):
        preset_config("tiny", chanels=3)
    with pytest.raises(ValueError, match="odd"):
        CPM.from_preset("tiny", stage_kernel=4)
    model = CPM.from_preset("tiny")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(3, 128, 128))
    with pytest.raises(ValueError, match="center_maps"):
        model(torch.rand(1, 3, 128, 128), torch.rand(1, 128, 128))


# ------------------------------------------------------------------------------------------------ official conventions
PAPER_NARROW = dict(num_stages=3, input_size=64, trunk_channels=16, feature_channels=8, stage1_channels=32,
                    stage_channels=16)  # the paper's kernels and layers, narrow enough to be cheap
NEW_FIELDS = ("init", "init_std", "dropout", "input_convention")


def test_paper_preset_uses_the_official_conventions_and_old_configs_load():
    c = PRESETS["paper"]
    assert (c.init, c.init_std, c.dropout, c.input_convention) == ("gaussian", 0.01, 0.5, "caffe")
    for name in ("tiny", "small"):
        c = PRESETS[name]
        assert (c.init, c.dropout, c.input_convention) == ("he", 0.0, "rgb")
        old = {k: v for k, v in c.to_dict().items() if k not in NEW_FIELDS}  # a checkpoint from before
        assert CPMConfig.from_dict(old) == c
    for bad, match in [(dict(init="xavier"), "init must be one of"), (dict(init_std=0.0), "init_std"),
                       (dict(dropout=1.0), "dropout must be a probability"),
                       (dict(input_convention="bgr"), "input_convention must be one of")]:
        with pytest.raises(ValueError, match=match):
            preset_config("tiny", **bad)


def test_gaussian_init_gives_every_conv_std_0_01_and_zero_bias():
    torch.manual_seed(0)
    convs = [m for m in CPM.from_preset("paper", **PAPER_NARROW).modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 7 + 3 + 2 * 6  # stage 1, shared trunk, 2 x (feature conv + 5 refinement convs)
    for m in convs:  # within 5 standard errors of a sample std, 0.01 / sqrt(2 n)
        assert abs(m.weight.std().item() / 0.01 - 1) < 5 / (2 * m.weight.numel()) ** 0.5, m
        assert torch.count_nonzero(m.bias) == 0
    pooled = torch.cat([m.weight.flatten() for m in convs])
    assert abs(pooled.std().item() - 0.01) < 2e-4 and abs(pooled.mean().item()) < 2e-4
    torch.manual_seed(0)
    he = [m for m in CPM.from_preset("paper", init="he", **PAPER_NARROW).modules() if isinstance(m, nn.Conv2d)]
    assert he[0].weight.std().item() > 0.05  # He-normal: sqrt(2 / (3 * 9 * 9)) = 0.09


def test_lecun_init_gives_every_conv_std_one_over_sqrt_fan_in():
    torch.manual_seed(0)
    model = CPM.from_preset("ablation")
    assert model.config.init == "lecun" and not model.config.batch_norm
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert not [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in convs:
        want = (m.in_channels * m.kernel_size[0] * m.kernel_size[1]) ** -0.5
        assert abs(m.weight.std().item() / want - 1) < 5 / (2 * m.weight.numel()) ** 0.5, m
        assert torch.count_nonzero(m.bias) == 0
    # at the official 9x9 convs on 128 channels it is the official std 0.01 (to 2%)
    assert abs((128 * 9 * 9) ** -0.5 / 0.01 - 1) < 0.02


def test_stage1_dropout_only_when_asked_and_only_in_train_mode():
    torch.manual_seed(0)
    plain = CPM.from_preset("paper", dropout=0.0, **PAPER_NARROW)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    model = CPM.from_preset("paper", **PAPER_NARROW)
    drops = [i for i, m in enumerate(model.stage1) if isinstance(m, nn.Dropout)]
    assert len(drops) == 2 and all(model.stage1[i].p == 0.5 for i in drops)
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 2  # none outside stage 1
    for i in drops:  # after the ReLU of the 9x9/512 conv and of the 1x1/512 conv
        conv = model.stage1[i - 2]
        assert isinstance(model.stage1[i - 1], nn.ReLU) and conv.out_channels == 32
        assert conv.kernel_size in ((9, 9), (1, 1))
    model.load_state_dict(dict(zip(model.state_dict(), plain.state_dict().values())))
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.eval()(x), plain.eval()(x)))
        model.train()
        a, b = model(x)[0], model(x)[0]
    assert not torch.equal(a, b)  # a fresh mask every forward


def test_caffe_input_convention_is_bgr_rescaled_rgb():
    torch.manual_seed(0)  # He init: beliefs of order 1, so the comparisons below are sharp
    caffe = CPM.from_preset("paper", init="he", **PAPER_NARROW).eval()
    rgb = CPM.from_preset("paper", init="he", input_convention="rgb", **PAPER_NARROW).eval()
    rgb.load_state_dict(caffe.state_dict())
    x = torch.rand(2, 3, 64, 64)
    x[:, 0] *= 0.5  # make the channel order matter
    with torch.no_grad():
        out, ref = caffe(x), rgb(x.flip(1) * 255 / 256 - 0.5)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(out, ref))
        assert not torch.allclose(out[-1], rgb(x)[-1], rtol=1e-2, atol=1e-3)
    assert caffe.network_input(torch.full((1, 3, 2, 2), 0.5)).abs().max() < 0.002  # grey padding ~ 0
    assert torch.equal(rgb.network_input(x), x)
