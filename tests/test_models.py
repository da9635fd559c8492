import pytest
import torch

from cpm_lab.models import CPM, PRESETS, preset_config


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
