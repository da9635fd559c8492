"""Probing a model by changing its input: hiding a joint, moving or removing the centre map.

* ``Occluder`` greys out a square of an image (the belief explorer's occluder);
  ``hidden_joint_errors`` puts one over a chosen joint of every person of a dataset and measures,
  per stage, how far that joint's estimate lands from its true position with the joint visible
  and hidden: whether later stages recover a joint they cannot see from the rest of the body
  (the paper's argument for context, Sec. 3.1).
* ``centre_map_ablation`` scores every stage with the centre map on the person (as trained),
  removed (a uniform map, or an empty one) and displaced by k x the person's size;
  ``two_person_image`` and ``two_person_probe`` put two people side by side in one image and
  put the centre map on one of them: does the model follow it to the other person? This is what
  the centre map is for (Wei et al., Sec. 3: it tells the network which person to look at).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import skeleton
from ..metrics import keypoint_metrics, normalizer
from ..targets import center_map, decode, labelled_mask
from .core import model_device, predict, stage_outputs


@dataclass(frozen=True)
class Occluder:
    """A grey square hiding part of the image: centre (x, y) and side in input pixels."""

    x: float
    y: float
    size: float

    def apply(self, image: torch.Tensor) -> torch.Tensor:
        """Return a copy of ``image`` (3×H×W) with the square filled with mid-grey."""
        out = image.clone()
        h, w = out.shape[-2:]
        half = self.size / 2
        x0, x1 = int(max(0, round(self.x - half))), int(min(w, round(self.x + half)))
        y0, y1 = int(max(0, round(self.y - half))), int(min(h, round(self.y + half)))
        out[:, y0:y1, x0:x1] = 0.5
        return out


def hidden_joint_errors(model, dataset, part: int | str = "right_wrist", size: float = 24.0,
                        indices: Sequence[int] | None = None, device=None) -> pd.DataFrame:
    """Per person and stage, the pixel error of ``part``'s estimate, visible and hidden.

    Every person (of ``indices``, default all) whose ``part`` is labelled is predicted twice: as
    is, and with an :class:`Occluder` of side ``size`` input pixels centred on the joint's true
    position. Returns a tidy DataFrame with columns ``person`` (dataset index), ``stage``
    (1-based), ``condition`` ("visible" or "hidden"), ``error_px`` (input pixels) and
    ``torso_px`` (the person's torso size, the PCK normaliser, so ``error_px <= 0.2 * torso_px``
    is PCK@0.2). Raises ValueError when no chosen person has ``part`` labelled.
    """
    p = skeleton.part_index(part, skeleton.NUM_JOINTS)
    chosen = [int(i) for i in (range(len(dataset)) if indices is None else indices)]
    images, truth, centers = _batch(dataset, chosen)
    keep = labelled_mask(truth[:, p])
    if not keep.any():
        raise ValueError(f"no chosen person has the {skeleton.JOINT_NAMES[p]} labelled")
    people = [i for i, k in zip(chosen, keep.tolist()) if k]
    images, truth, centers = images[keep], truth[keep], centers[keep]
    hidden = torch.stack([Occluder(float(kp[p, 0]), float(kp[p, 1]), size).apply(im) for im, kp in zip(images, truth)])
    torso = np.asarray(normalizer(truth, "torso"), dtype=float)
    rows = []
    for condition, batch in (("visible", images), ("hidden", hidden)):
        for t, kp in enumerate(predict(model, batch, centers, device=device, keep_beliefs=False).keypoints, start=1):
            err = torch.linalg.norm(kp[:, p, :2].cpu() - truth[:, p, :2], dim=-1).numpy()
            rows += [dict(person=i, stage=t, condition=condition, error_px=float(e), torso_px=float(s))
                     for i, e, s in zip(people, err, torso)]
    return pd.DataFrame(rows)


CENTRE_CONDITIONS = ("on the person", "uniform", "empty")


def _batch(dataset, indices) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    images = torch.stack([torch.as_tensor(it["image"]).float() for it in items])
    truth = torch.stack([torch.as_tensor(it["keypoints"]).float() for it in items])
    h, w = images.shape[-2:]
    centers = torch.stack([torch.as_tensor(it["center"]).float() if "center" in it
                           else torch.tensor([(w - 1) / 2, (h - 1) / 2]) for it in items])
    return images, truth, centers


def _keypoints(model, images: torch.Tensor, maps: torch.Tensor, device) -> list[torch.Tensor]:
    dev = device if device is not None else model_device(model)
    beliefs = stage_outputs(model, images.to(dev), maps.to(dev, images.dtype))
    return [decode(b.float(), model.codec).cpu() for b in beliefs]


def centre_map_ablation(model, dataset, shifts: Sequence[float] = (0.25, 0.5, 1.0), indices=None, seed: int = 0,
                        thresholds: Sequence[float] = (0.1, 0.2), device=None) -> pd.DataFrame:
    """Per-stage PCK with the centre map as trained and changed.

    Conditions (column ``condition``): ``"on the person"`` (the Gaussian on the person centre,
    as in training), ``"uniform"`` (every pixel 1: no location preferred), ``"empty"`` (every
    pixel 0), and ``"displaced"`` by ``shift`` x the person's size (the longest side of the
    labelled joints' bounding box) in a random direction per person (``seed``). Returns the
    ``metrics.keypoint_metrics`` rows of part "mean", metric "pck" (torso), with columns
    ``condition``, ``shift`` (NaN for the first three), ``stage``, ``threshold``, ``value``, ``count``.
    """
    chosen = range(len(dataset)) if indices is None else indices
    images, truth, centers = _batch(dataset, chosen)
    n, _, h, w = images.shape
    codec = model.codec
    size = torch.as_tensor(normalizer(truth, "bbox"), dtype=torch.float32).nan_to_num(float(max(h, w)) / 2)
    angle = torch.rand(n, generator=torch.Generator().manual_seed(seed)) * 2 * torch.pi
    direction = torch.stack([angle.cos(), angle.sin()], -1)
    maps = {("on the person", float("nan")): center_map(centers, codec, h, w),
            ("uniform", float("nan")): torch.ones(n, 1, h, w),
            ("empty", float("nan")): torch.zeros(n, 1, h, w)}
    for k in shifts:
        maps[("displaced", float(k))] = center_map(centers + float(k) * size[:, None] * direction, codec, h, w)
    tables = []
    for (condition, shift), cmaps in maps.items():
        table = keypoint_metrics(_keypoints(model, images, cmaps, device), truth, thresholds, "torso", auc_max=None)
        table = table[(table["part"] == "mean") & (table["metric"] == "pck")]
        tables.append(table.assign(condition=condition, shift=shift))
    out = pd.concat(tables, ignore_index=True)
    return out[["condition", "shift", "stage", "threshold", "value", "count"]]


def two_person_image(dataset, left: int, right: int) -> dict:
    """Two people side by side in one image: items ``left`` and ``right`` of ``dataset`` (each
    3 x S x S) concatenated along the width into 3 x S x 2S. Returns ``image``, the two people's
    ``keypoints`` ((2, P, 3) in the pair image's pixels: the right one shifted by S) and their
    ``centers`` ((2, 2))."""
    images, truth, centers = _batch(dataset, [left, right])
    side = images.shape[-1]
    shift = torch.tensor([float(side), 0.0])
    truth[1, :, :2] += shift
    return dict(image=torch.cat([images[0], images[1]], -1), keypoints=truth, centers=centers + torch.stack(
        [torch.zeros(2), shift]))


def two_person_probe(model, dataset, pairs: Sequence[tuple[int, int]], threshold: float = 0.2,
                     device=None) -> pd.DataFrame:
    """For each pair of people side by side (``two_person_image``), the model is run with the
    centre map on the left person and on the right one. Per stage and centre, PCK at
    ``threshold`` (torso) of the predictions against the person the centre map is on
    (``on_target``) and against the other person (``on_other``): a model that follows the centre
    map scores high on the first and low on the second. Columns: ``stage``, ``centre`` ("left" /
    "right"), ``on_target``, ``on_other``, ``count`` (joints)."""
    codec = model.codec
    made = [two_person_image(dataset, left, right) for left, right in pairs]
    images = torch.stack([m["image"] for m in made])
    people = torch.stack([m["keypoints"] for m in made])                     # (pairs, 2, P, 3)
    centers = torch.stack([m["centers"] for m in made])                      # (pairs, 2, 2)
    _, _, h, w = images.shape
    rows = []
    for which in (0, 1):
        stages = _keypoints(model, images, center_map(centers[:, which], codec, h, w), device)
        for t, kp in enumerate(stages, start=1):
            score = []
            for truth in (people[:, which], people[:, 1 - which]):
                m = keypoint_metrics([kp], truth, (threshold,), "torso", auc_max=None)
                m = m[(m["part"] == "mean") & (m["metric"] == "pck")].iloc[0]
                score.append((float(m["value"]), int(m["count"])))
            rows.append(dict(stage=t, centre=("left", "right")[which], on_target=score[0][0], on_other=score[1][0],
                             count=score[0][1]))
    return pd.DataFrame(rows)
