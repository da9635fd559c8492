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
    explorer.update(scale_to_peak=not explorer.state["scale_to_peak"])
    assert explorer.png() != before and explorer.runs == 1


def test_scripted_update_moves_the_controls_and_touching_one_keeps_the_rest(explorer):
    explorer.widget
    c = explorer.controls
    explorer.update(part="right_wrist", occluder=Occluder(20.4, 30.0, 10), show_path=True, stage=1, index=2)
    assert (c["part"].value, c["occluder"].value, c["path"].value, c["stage"].value, c["play"].value,
            c["sample"].value) == (6, True, True, 1, 1, 2)
    assert (c["occluder_x"].value, c["occluder_y"].value, c["occluder_size"].value) == (20, 30, 10)
    runs = explorer.runs
    c["opacity"].value = 0.3                       # touching one control changes only its setting
    assert explorer.state["part"] == 6 and explorer.state["occluder"] == Occluder(20.4, 30.0, 10)
    assert explorer.state["show_path"] and explorer.state["index"] == 2 and explorer.runs == runs
    c["occluder"].value = False
    assert explorer.state["occluder"] is None and explorer.state["part"] == 6


def test_scale_to_peak_defaults_to_on_only_for_faint_beliefs():
    torch.manual_seed(0)
    model = CPM.from_preset("tiny", input_size=64)
    faint = BeliefExplorer(model, TinyData())            # untrained: peaks far below FAINT_PEAK
    assert faint.state["scale_to_peak"]
    assert not BeliefExplorer(model, TinyData(), scale_to_peak=False).state["scale_to_peak"]

    class Confident(torch.nn.Module):                    # every stage puts 1.0 on some cell
        codec = model.codec

        def forward(self, images, center_maps=None):
            b = torch.zeros(len(images), 15, 8, 8)
            b[:, :, 2, 3] = 1.0
            return [b, b]

    assert not BeliefExplorer(Confident(), TinyData()).state["scale_to_peak"]


def test_composite_view_has_the_part_key(explorer):
    names = lambda fig: {t.get_text() for leg in fig.legends for t in leg.get_texts()}  # noqa: E731
    assert {"R wrist", "L wrist", "neck", "head top"} <= names(explorer.update(part="all").figure())
    assert not names(explorer.update(part="right_wrist").figure())
