import base64

import pytest
import torch

from cpm_lab.models import CPM
from cpm_lab.viz import BeliefExplorer, Occluder


class TinyData:
    """Four random 64×64 samples: enough to drive the explorer without the real datasets."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        kp = torch.cat([8 + torch.rand(14, 2, generator=g) * 48, torch.ones(14, 1)], 1)
        kp[3, 2] = 0
        return dict(image=torch.rand(3, 64, 64, generator=g), keypoints=kp, center=torch.tensor([32.0, 32.0]))


@pytest.fixture
def explorer():
    torch.manual_seed(0)
    return BeliefExplorer(CPM.from_preset("tiny", input_size=64), TinyData())


def test_stage_and_part_changes_use_cached_beliefs(explorer):
    first = explorer.png()
    assert explorer.runs == 1
    explorer.update(stage=1)
    explorer.update(part=6, opacity=0.3, show_path=True)
    explorer.update(part="all", stage=3)
    assert explorer.runs == 1
    assert explorer.png() != explorer.update(stage=1).png()
    assert explorer.png() != first


def test_occluder_and_sample_rerun_the_model(explorer):
    before = explorer._beliefs()[0][-1].copy()
    explorer.update(occluder=Occluder(32, 32, 20)).png()
    assert explorer.runs == 2
    assert not (explorer._beliefs()[0][-1] == before).all()
    explorer.update(occluder=None).png()
    assert explorer.runs == 2  # back to a cached state
    explorer.update(index=2).png()
    assert explorer.runs == 3


def test_occluder_greys_out_a_square():
    img = torch.zeros(3, 20, 20)
    out = Occluder(10, 10, 4).apply(img)
    assert out[:, 8:12, 8:12].eq(0.5).all() and out.sum() == pytest.approx(0.5 * 3 * 16)
    assert img.sum() == 0


def test_widget_controls_drive_the_view(explorer):
    w = explorer.widget
    assert w is explorer.widget
    png = explorer._image_widget.value
    explorer.controls["stage"].value = 1
    assert explorer.state["stage"] == 1 and explorer._image_widget.value != png
    explorer.controls["part"].value = 6
    explorer.controls["occluder"].value = True
    assert explorer.state["occluder"] is not None and explorer.runs == 2


def test_static_fallback_in_mimebundle(explorer):
    bundle = explorer._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")


def test_bad_settings(explorer):
    with pytest.raises(ValueError, match="stage must be in 1..3"):
        explorer.update(stage=7)
    with pytest.raises(ValueError, match="index must be in 0..3"):
        explorer.update(index=9)
    with pytest.raises(ValueError, match="unknown explorer setting"):
        explorer.update(colour="red")
    with pytest.raises(ValueError, match="unknown part 'elbow'"):
        explorer.update(part="elbow")
    with pytest.raises(ValueError, match=r"index in 0..13, got 14"):
        explorer.update(part=14)


def test_part_accepts_names_and_none(explorer):
    assert explorer.update(part="right_wrist").state["part"] == 6
    assert explorer.update(part=None).state["part"] == "all"  # as ReceptiveFieldExplorer spells it
    assert explorer.update(part=3).state["part"] == 3


def test_scale_to_peak_changes_colours_not_beliefs(explorer):
    before = explorer.png()
    explorer.update(scale_to_peak=True)
    assert explorer.png() != before and explorer.runs == 1
