"""cpm_lab.inference.probes: hiding a joint, and moving, removing or re-targeting the centre map."""
import pytest
import torch
import torch.nn.functional as F

from cpm_lab import skeleton
from cpm_lab.inference import Occluder, centre_map_ablation, hidden_joint_errors, two_person_image, two_person_probe
from cpm_lab.models import CPM

CODEC = CPM.from_preset("tiny", input_size=64).codec
WRIST = skeleton.JOINT_INDEX["right_wrist"]


class BrightestPixel(torch.nn.Module):
    """Stage 1 puts every part at the brightest 8x8 cell of the image, stage 2 at a fixed cell."""

    codec = CODEC

    def forward(self, images, center_maps=None):
        cells = F.avg_pool2d(images.mean(1, keepdim=True), 8)            # (N, 1, 8, 8)
        flat = cells.flatten(1)
        peak = (flat == flat.max(1, keepdim=True).values).float().view_as(cells)
        first = torch.cat([peak.expand(-1, 14, -1, -1), 1 - peak], 1)
        second = torch.zeros_like(first)
        second[:, :14, 0, 0] = 1.0
        return [first, second]


class Dots:
    """Black images with a white 8x8 patch on the right wrist and a light grey one in a corner;
    person 2 has no labelled wrist."""

    def __len__(self):
        return 3

    def __getitem__(self, i):
        kp = torch.full((14, 3), 2.0)
        kp[:, :2] = 20.0
        kp[skeleton.JOINT_INDEX["right_hip"], :2] = torch.tensor([30.0, 44.0])  # torso: l_shoulder to r_hip
        kp[WRIST, :2] = torch.tensor([43.5 - 8 * i, 27.5])
        if i == 2:
            kp[WRIST, 2] = 0
        image = torch.zeros(3, 64, 64)
        image[:, 48:56, 8:16] = 0.7                  # the brightest thing once the wrist is hidden
        x, y = int(kp[WRIST, 0]) - 3, int(kp[WRIST, 1]) - 3
        image[:, y:y + 8, x:x + 8] = 1.0
        return dict(image=image, keypoints=kp, center=torch.tensor([32.0, 32.0]))


def test_hidden_joint_errors_compares_visible_and_hidden_per_stage():
    table = hidden_joint_errors(BrightestPixel(), Dots(), "right_wrist", size=16)
    assert set(table["person"]) == {0, 1}                          # person 2's wrist is unlabelled
    assert len(table) == 2 * 2 * 2 and set(table["condition"]) == {"visible", "hidden"}
    s1 = table[table["stage"] == 1].set_index(["condition", "person"])["error_px"]
    assert s1.loc["visible"].max() < 4                             # the white cell is the wrist's
    assert s1.loc["hidden"].min() > 4                              # grey square: the peak moves off it
    s2 = table[table["stage"] == 2].pivot(index="person", columns="condition", values="error_px")
    assert (s2["visible"] == s2["hidden"]).all()                   # stage 2 ignores the image
    assert (table["torso_px"] > 0).all()
    with pytest.raises(ValueError, match="no chosen person has the right_wrist labelled"):
        hidden_joint_errors(BrightestPixel(), Dots(), "right_wrist", indices=[2])


def test_occluder_is_the_explorers():
    from cpm_lab.viz import Occluder as ViaViz

    assert ViaViz is Occluder


class FollowsCentre(torch.nn.Module):
    """Stage 1 puts every part in the top-left cell; stage 2 wherever the centre map peaks."""

    codec = CODEC

    def forward(self, images, center_maps=None):
        pooled = F.avg_pool2d(center_maps, 8)
        first = torch.zeros_like(pooled).expand(-1, 15, -1, -1).clone()
        first[:, :, 0, 0] = 1.0
        return [first, pooled.expand(-1, 15, -1, -1)]


class Huddles:
    """People whose joints sit on their centre, but for the left shoulder and right hip 4 px
    either side of it (so a torso of 11.3 px, PCK@0.2 radius 2.3 px: 12 of 14 joints are hit by
    a prediction on the centre)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        centre = torch.tensor([26.0 + 4 * i, 34.0 - 2 * i])
        kp = torch.cat([centre.expand(14, 2), torch.full((14, 1), 2.0)], 1)
        kp[skeleton.JOINT_INDEX["left_shoulder"], :2] -= 4
        kp[skeleton.JOINT_INDEX["right_hip"], :2] += 4
        return dict(image=torch.zeros(3, 64, 64), keypoints=kp, center=centre)


def test_centre_map_ablation_scores_each_condition():
    table = centre_map_ablation(FollowsCentre(), Huddles(), shifts=(1.0,), thresholds=(0.2,))
    value = table.set_index(["condition", "stage"])["value"]
    assert set(table["condition"]) == {"on the person", "uniform", "empty", "displaced"}
    assert value[("on the person", 2)] == pytest.approx(12 / 14)
    assert value[("displaced", 2)] == 0 and value[("uniform", 2)] == 0      # moved away / top-left cell
    assert (table[table["stage"] == 1]["value"] == table[table["stage"] == 1]["value"].iloc[0]).all()
    assert table[table["condition"] == "displaced"]["shift"].eq(1.0).all()
    assert table[table["condition"] != "displaced"]["shift"].isna().all()


def test_two_person_probe_follows_the_centre_map():
    pair = two_person_image(Huddles(), 0, 3)
    assert pair["image"].shape == (3, 64, 128)
    assert torch.equal(pair["centers"][1], torch.tensor([64.0 + 38.0, 28.0]))
    assert torch.equal(pair["keypoints"][1, 0, :2], pair["centers"][1])
    table = two_person_probe(FollowsCentre(), Huddles(), [(0, 1), (2, 3)]).set_index(["stage", "centre"])
    for centre in ("left", "right"):
        assert table.loc[(2, centre), "on_target"] == pytest.approx(12 / 14)
        assert table.loc[(2, centre), "on_other"] == 0
        assert table.loc[(2, centre), "count"] == 2 * 14
