"""Hiding a joint: the occluder square of the belief explorer, and the same experiment over a dataset.

``Occluder`` greys out a square of an image; ``hidden_joint_errors`` puts one over a chosen joint
of every person of a dataset and measures, per stage, how far that joint's estimate lands from
its true position with the joint visible and with it hidden: whether later stages recover a
joint they cannot see from the rest of the body (the paper's argument for context, Sec. 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .. import skeleton
from ..metrics import normalizer
from ..targets import labelled_mask
from .core import predict


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
    chosen = range(len(dataset)) if indices is None else indices
    items = [(int(i), dataset[int(i)]) for i in chosen]
    items = [(i, it) for i, it in items if labelled_mask(torch.as_tensor(it["keypoints"])[p][None])[0]]
    if not items:
        raise ValueError(f"no chosen person has the {skeleton.JOINT_NAMES[p]} labelled")
    truth = torch.stack([torch.as_tensor(it["keypoints"]).float() for _, it in items])
    images = torch.stack([torch.as_tensor(it["image"]).float() for _, it in items])
    centers = torch.stack([torch.as_tensor(it["center"]).float() for _, it in items]) \
        if all("center" in it for _, it in items) else None
    hidden = torch.stack([Occluder(float(kp[p, 0]), float(kp[p, 1]), size).apply(im) for im, kp in zip(images, truth)])
    torso = np.asarray(normalizer(truth, "torso"), dtype=float)
    rows = []
    for condition, batch in (("visible", images), ("hidden", hidden)):
        for t, kp in enumerate(predict(model, batch, centers, device=device, keep_beliefs=False).keypoints, start=1):
            err = torch.linalg.norm(kp[:, p, :2].cpu() - truth[:, p, :2], dim=-1).numpy()
            rows += [dict(person=i, stage=t, condition=condition, error_px=float(e), torso_px=float(s))
                     for (i, _), e, s in zip(items, err, torso)]
    return pd.DataFrame(rows)
