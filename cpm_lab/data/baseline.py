"""The trivial baseline every pose benchmark should beat: always predict the mean pose.

``MeanPoseBaseline.fit`` averages each joint's position over the training set in
person-box-normalised coordinates, ``(xy - center) / (scale * 200)`` (so 0 is the person
centre and +-0.5 the box edges); ``predict`` places that mean pose in each sample's person box.
A model that does not beat it on PCK has learnt nothing beyond "where joints usually are".

``evaluate`` scores it exactly like ``cpm_lab.inference.evaluate`` scores a model (same ground
truth, same PCK / AUC / EPE definitions, same tidy columns), as a single stage labelled 1::

    base = MeanPoseBaseline().fit(make_dataset("lspet", 128, "train"))
    table = base.evaluate(make_dataset("lspet", 128, "val"))   # stage, part, metric, ...

``ImageMeanPose`` is the same baseline in the person frame of the official LSP test
(``cpm_lab.inference.protocol``): the person is located from the image alone (centre = the image
centre, size = the image height), so it fits ``(joint - image centre) / image height`` on the
original images and predicts ``centre + mean * height`` in original pixels::

    base = ImageMeanPose().fit(make_dataset("lsp", 368, "train"))
    table = base.evaluate(make_dataset("lsp", 368, "test"))   # the LSP protocol's table
"""
from __future__ import annotations

from typing import Sequence

import torch

from ..targets import labelled_mask
from .synthetic import SCALE_UNIT_PX


def _mean_pose(norm: torch.Tensor, scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-joint mean (P, 2) float32 of normalised positions (N, P, 2) over ``scored`` (N, P)
    joints (NaN for a joint never scored), and how many each averages (P,)."""
    count = scored.sum(0)
    total = torch.where(scored[..., None], norm, 0.0).sum(0)
    mean = (total / count[:, None].clamp_min(1)).to(torch.float32)
    mean[count == 0] = float("nan")
    return mean, count


def _targets(data) -> dict[str, torch.Tensor]:
    """keypoints (N, P, 3), center (N, 2), scale (N,) from a dataset or a batch dict."""
    if isinstance(data, dict):
        return {k: torch.as_tensor(data[k]) for k in ("keypoints", "center", "scale")}
    if hasattr(data, "annotations"):  # real-data loaders: no image decoding needed
        return data.annotations()
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        items = [data[i] for i in range(len(data))]
        return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in ("keypoints", "center", "scale")}
    raise TypeError(f"fit expects a dataset or a batch dict with keypoints/center/scale; got {type(data).__name__}")


class MeanPoseBaseline:
    """Mean training pose in person-box-normalised coordinates.

    Attributes after ``fit``: ``mean`` (P, 2) float32 normalised x, y per joint (NaN for a
    joint never visible in training) and ``count`` (P,) how many visible examples each mean
    averages.
    """

    def __init__(self):
        self.mean: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def fit(self, data) -> "MeanPoseBaseline":
        """Fit on a dataset (anything indexable yielding sample dicts, or a cpm_lab real-data
        loader, whose ``annotations()`` avoids decoding images) or on a batch dict."""
        t = _targets(data)
        kp = t["keypoints"].to(torch.float64)
        if kp.ndim != 3 or kp.shape[-1] != 3 or len(kp) == 0:
            raise ValueError(f"need keypoints of shape (N, P, 3) with N >= 1; got {tuple(kp.shape)}")
        box = torch.as_tensor(t["scale"]).to(torch.float64).reshape(-1, 1, 1) * SCALE_UNIT_PX
        norm = (kp[..., :2] - t["center"].to(torch.float64)[:, None, :]) / box
        vis = labelled_mask(kp) & torch.isfinite(norm).all(-1)
        self.mean, self.count = _mean_pose(norm, vis)
        return self

    def predict(self, batch: dict) -> torch.Tensor:
        """Keypoints (N, P, 3) on the batch's device: the mean pose placed in each sample's box
        (``batch["center"]`` (N, 2), ``batch["scale"]`` (N,)), confidence 1 (0 and the box
        centre for joints never seen in training)."""
        if self.mean is None:
            raise RuntimeError("MeanPoseBaseline is not fitted; call fit(dataset) first")
        center = torch.as_tensor(batch["center"], dtype=torch.float32)
        scale = torch.as_tensor(batch["scale"], dtype=torch.float32).to(center.device).reshape(-1)
        if center.ndim != 2 or center.shape[1] != 2 or scale.shape[0] != center.shape[0]:
            raise ValueError(f"batch needs center (N, 2) and scale (N,); got {tuple(center.shape)} "
                             f"and {tuple(scale.shape)}")
        mean = self.mean.to(center.device)
        known = torch.isfinite(mean).all(-1)
        xy = center[:, None, :] + torch.nan_to_num(mean)[None] * (scale * SCALE_UNIT_PX)[:, None, None]
        conf = known.to(torch.float32)[None, :, None].expand(len(center), -1, 1)
        return torch.cat([xy, conf], dim=-1)

    def evaluate(self, data, thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso",
                 auc_max: float | None = 0.5, joints: str = "labelled"):
        """Tidy metrics table of the mean pose on ``data`` (a dataset or a batch dict, as for
        ``fit``): PCK at ``thresholds`` (fractions of the ``normalize`` length), AUC and EPE per
        part and for part "mean", with the columns of ``cpm_lab.metrics.keypoint_metrics`` and
        ``stage`` = 1, so it lines up with a model's table. Ground truth is each sample's
        ``keypoints`` (N, P, 3) in the same crop pixels a model is scored in."""
        from ..metrics import keypoint_metrics

        t = _targets(data)
        return keypoint_metrics([self.predict(t)], t["keypoints"], thresholds, normalize, auc_max=auc_max,
                                stages=[1], joints=joints)

    def __repr__(self) -> str:
        return f"MeanPoseBaseline(fitted={self.mean is not None})"


def image_frames(data) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ground truth and person frame of the LSP protocol for a dataset that keeps its original
    images (``paths``, ``keypoints_orig``): keypoints (N, P, 3) in original pixels, centres
    (N, 2) and heights (N,) from ``inference.locate_person`` of each image's size (read from the
    file header; the pixels are not decoded)."""
    from PIL import Image

    from ..inference import locate_person

    paths, kp = getattr(data, "paths", None), getattr(data, "keypoints_orig", None)
    if paths is None or kp is None:
        raise ValueError(f"{type(data).__name__} has no original images (paths and keypoints_orig): the image "
                         f"frame needs photographs such as the real-data loaders'")
    kp = torch.as_tensor(kp, dtype=torch.float64)
    if kp.ndim != 3 or kp.shape[-1] != 3 or len(kp) != len(paths) or len(kp) == 0:
        raise ValueError(f"need keypoints_orig of shape (N, P, 3) with N = {len(paths)} >= 1; got {tuple(kp.shape)}")
    centers, heights = [], []
    for path in paths:
        with Image.open(path) as img:
            w, h = img.size
        c, height = locate_person((h, w))
        centers.append(c)
        heights.append(height)
    return kp, torch.tensor(centers, dtype=torch.float64), torch.tensor(heights, dtype=torch.float64)


class ImageMeanPose:
    """Mean training pose in the image frame of the official LSP test: ``(xy - image centre) /
    image height`` per joint.

    Attributes after ``fit``: ``mean`` (P, 2) float32 (NaN for a joint never labelled in
    training) and ``count`` (P,) how many labelled examples each mean averages.
    """

    def __init__(self):
        self.mean: torch.Tensor | None = None
        self.count: torch.Tensor | None = None

    def fit(self, data) -> "ImageMeanPose":
        """Fit on the original images of ``data`` (``image_frames``), over its labelled joints."""
        kp, centers, heights = image_frames(data)
        norm = (kp[..., :2] - centers[:, None, :]) / heights[:, None, None]
        self.mean, self.count = _mean_pose(norm, labelled_mask(kp) & torch.isfinite(norm).all(-1))
        return self

    def predict(self, centers, heights) -> torch.Tensor:
        """Keypoints (N, P, 3) in image pixels: ``centre + mean * height`` for person centres
        (N, 2) and heights (N,) in pixels; confidence 1 (0 and the centre for joints never seen)."""
        if self.mean is None:
            raise RuntimeError("ImageMeanPose is not fitted; call fit(dataset) first")
        centers = torch.as_tensor(centers, dtype=torch.float32)
        heights = torch.as_tensor(heights, dtype=torch.float32).reshape(-1)
        if centers.ndim != 2 or centers.shape[1] != 2 or heights.shape[0] != centers.shape[0]:
            raise ValueError(f"need centers (N, 2) and heights (N,); got {tuple(centers.shape)} and "
                             f"{tuple(heights.shape)}")
        known = torch.isfinite(self.mean).all(-1)
        xy = centers[:, None, :] + torch.nan_to_num(self.mean)[None] * heights[:, None, None]
        conf = known.to(torch.float32)[None, :, None].expand(len(centers), -1, 1)
        return torch.cat([xy, conf], dim=-1)

    def evaluate(self, data, thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso",
                 auc_max: float | None = 0.5, joints: str = "labelled"):
        """Tidy metrics table (``metrics.keypoint_metrics``, ``stage`` = 1) of the mean pose on
        the original images of ``data``, scored in original pixels against ``keypoints_orig``
        like ``inference.evaluate_protocol`` scores a model."""
        from ..metrics import keypoint_metrics

        kp, centers, heights = image_frames(data)
        return keypoint_metrics([self.predict(centers, heights)], kp, thresholds, normalize, auc_max=auc_max,
                                stages=[1], joints=joints)

    def __repr__(self) -> str:
        return f"ImageMeanPose(fitted={self.mean is not None})"
