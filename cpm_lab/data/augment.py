"""Batched, on-device geometric augmentation: random scale, rotation and horizontal flip.

The paper (Wei et al. 2016, Sec. 4) augments with random scaling 0.7-1.3, rotation +-40 deg and
horizontal flips. ``Augment`` draws those per sample from a ``torch.Generator`` (a CPU generator makes
a run reproducible whatever the batch's device), builds one 3x3 affine per sample about the image centre and
applies it with ``cpm_lab.data.crop.warp_batch``: images through ``affine_grid`` /
``grid_sample`` on the batch's device, keypoints and centres through the same matrix, the
person ``scale`` multiplied by the zoom factor. A flip mirrors the image about its vertical
centre line AND swaps left/right joint labels (``flip_index``), so "right wrist" stays the
person's right wrist. Joints that leave the image become invisible.

Typical use inside a training step::

    augment = Augment()                      # paper defaults
    batch = augment(batch, generator)        # batch on the GPU; generator on the CPU
    targets, weights = encode(batch["keypoints"], codec)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .. import skeleton
from .crop import warp_batch


@dataclass
class AugmentParams:
    """Per-sample augmentation parameters, CPU tensors of length N.

    zoom: scale factor (> 1 enlarges the person); angle: rotation in degrees, positive =
    counter-clockwise as displayed; flip: bool, mirror left-right; shift: (N, 2) translation
    in pixels of the output.
    """

    zoom: torch.Tensor
    angle: torch.Tensor
    flip: torch.Tensor
    shift: torch.Tensor

    def matrices(self, height: int, width: int) -> torch.Tensor:
        """(N, 3, 3) float64 output-from-input pixel affines: flip, then rotate and zoom about
        the image centre, then shift."""
        n = self.zoom.shape[0]
        cx, cy = (width - 1) / 2, (height - 1) / 2
        t = torch.deg2rad(self.angle.to(torch.float64))
        z = self.zoom.to(torch.float64)
        cos, sin = torch.cos(t) * z, torch.sin(t) * z
        fx = torch.where(self.flip, -1.0, 1.0).to(torch.float64)
        # y points down, so [[cos, sin], [-sin, cos]] turns content counter-clockwise on screen.
        a = torch.stack([torch.stack([cos * fx, sin], -1), torch.stack([-sin * fx, cos], -1)], -2)
        m = torch.zeros(n, 3, 3, dtype=torch.float64)
        m[:, :2, :2] = a
        c = torch.tensor([cx, cy], dtype=torch.float64)
        m[:, :2, 2] = c - (a @ c) + self.shift.to(torch.float64)
        m[:, 2, 2] = 1
        return m


def _image_shape(batch: dict) -> tuple[int, int, int, int]:
    images = batch.get("image") if isinstance(batch, dict) else None
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("batch must be a dict whose 'image' is a (N, C, H, W) tensor; got "
                         f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    return tuple(images.shape)


class Augment:
    """Random zoom, rotation and flip for a batch dict, on the batch's device.

    Args:
        scale: (min, max) zoom factor, drawn uniformly (paper: 0.7-1.3). (1, 1) disables.
        rotation: maximum absolute rotation in degrees, drawn uniformly (paper: 40).
        flip: whether to mirror horizontally with probability ``flip_prob``.
        flip_prob: probability of a flip when ``flip`` is on.
        translate: maximum shift as a fraction of the image side, per axis (default 0).
        flip_index: joint relabelling after a flip; default chosen from the number of parts
            (14 LSP, 16 MPII, 17 COCO; see ``skeleton.flip_index``).
        padding_mode: fill outside the source image: "grey" (default, the official padding) or a
            ``grid_sample`` mode ("zeros" = black, "border", "reflection").

    ``augment(batch, generator)`` returns a new dict with ``image`` (N, 3, H, W),
    ``keypoints`` (N, P, 3), ``center`` (N, 2) and ``scale`` (N,) transformed; all other keys
    are passed through. ``augment.sample(n, generator)`` + ``augment.apply(batch, params)`` do
    the same in two steps (the matrices are ``params.matrices(H, W)``).
    """

    def __init__(self, scale: tuple[float, float] = (0.7, 1.3), rotation: float = 40.0, flip: bool = True,
                 flip_prob: float = 0.5, translate: float = 0.0, flip_index: Sequence[int] | None = None,
                 padding_mode: str = "grey"):
        lo, hi = (float(v) for v in scale)
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale!r}")
        if rotation < 0 or not math.isfinite(rotation):
            raise ValueError(f"rotation is a maximum angle in degrees and must be >= 0, got {rotation!r}")
        if not 0 <= flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob!r}")
        if not 0 <= translate < 1:
            raise ValueError(f"translate must be a fraction in [0, 1), got {translate!r}")
        self.scale, self.rotation, self.flip = (lo, hi), float(rotation), bool(flip)
        self.flip_prob, self.translate = float(flip_prob), float(translate)
        self.flip_index = None if flip_index is None else tuple(int(i) for i in flip_index)
        self.padding_mode = padding_mode

    def __repr__(self) -> str:
        return (f"Augment(scale={self.scale}, rotation={self.rotation}, flip={self.flip}, "
                f"flip_prob={self.flip_prob}, translate={self.translate})")

    def sample(self, n: int, generator: torch.Generator | None = None, size: tuple[int, int] = (1, 1)) -> AugmentParams:
        """Draw parameters for ``n`` samples from ``generator`` (None = torch's global CPU
        generator) on the generator's device (a CPU generator gives the same draws whatever the
        batch's device), returned as CPU tensors. ``size`` = (H, W) scales the translation."""
        device = generator.device if generator is not None else torch.device("cpu")
        # float32 draws: MPS has no float64; the geometry is then built in float64 on the CPU
        u = torch.rand(n, 5, generator=generator, device=device).cpu().to(torch.float64)
        lo, hi = self.scale
        zoom = lo + (hi - lo) * u[:, 0]
        angle = self.rotation * (2 * u[:, 1] - 1)
        flip = (u[:, 2] < self.flip_prob) if self.flip else torch.zeros(n, dtype=torch.bool)
        shift = self.translate * (2 * u[:, 3:5] - 1) * torch.tensor([size[1], size[0]], dtype=torch.float64)
        return AugmentParams(zoom=zoom, angle=angle, flip=flip, shift=shift)

    def _flip_index(self, num_parts: int) -> tuple[int, ...]:
        if self.flip_index is not None:
            if len(self.flip_index) != num_parts:
                raise ValueError(f"flip_index has {len(self.flip_index)} entries but keypoints have {num_parts} parts")
            return self.flip_index
        if num_parts not in skeleton.FLIP_INDEX_BY_PARTS:
            raise ValueError(f"no default flip_index for {num_parts} parts; pass Augment(flip_index=...) "
                             f"(known: {sorted(skeleton.FLIP_INDEX_BY_PARTS)})")
        return skeleton.flip_index(num_parts)

    def apply(self, batch: dict, params: AugmentParams) -> dict:
        """Apply ``params`` to ``batch`` (see class docstring)."""
        n, _, h, w = _image_shape(batch)
        if params.zoom.shape[0] != n:
            raise ValueError(f"params are for {params.zoom.shape[0]} samples but the batch has {n}")
        flip_index = None
        if "keypoints" in batch and bool(params.flip.any()):
            flip_index = self._flip_index(batch["keypoints"].shape[1])
        return warp_batch(batch, params.matrices(h, w), (h, w), flipped=params.flip,
                          flip_index=flip_index, padding_mode=self.padding_mode)

    def __call__(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        n, _, h, w = _image_shape(batch)
        return self.apply(batch, self.sample(n, generator, (h, w)))
