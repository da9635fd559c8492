"""One photo in, one pose out: the LSP protocol's person search on any image file or array.

::

    from cpm_lab.inference import load_model, predict_image

    model = load_model("tiny-lsp")                             # the shipped real-data model
    out = predict_image(model, "me.jpg")                       # person: the image centre and height
    out = predict_image(model, "me.jpg", box=(x0, y0, x1, y1)) # or a person box, in pixels
    out.keypoints[-1]                                          # last stage (P, 3): x, y, confidence
    out.beliefs[-1]                                            # last stage (P + 1, H, W) on the photo
    out.to_dict()                                              # JSON-ready, what `cpm-lab predict` writes

A file is decoded upright (its EXIF orientation applied) and in RGB whatever its mode
(grayscale, CMYK, palette, alpha), so coordinates refer to the photo as a viewer shows it.
The person is found as in the official LSP test (``protocol.locate_person``): without a box the
network assumes a person centred in the image and as tall as it, which suits photos framed
around one person; a box (x0, y0, x1, y1) around the person replaces that. Then
``protocol.predict_person`` runs the scale search and returns every stage's arg-max pixels.

A large photo is first shrunk (antialiased) so that its longer side is at most ``max_side``
pixels (default ``MAX_SIDE``), but never so far that the person gets shorter than twice the
network's input box: the network sees the person at that box size anyway, so the keypoints do not
change beyond the resize's rounding, while the work and memory on a 12-megapixel phone picture
drop about tenfold. Keypoints, centre, height and box are reported in the ORIGINAL photo's pixels;
``image`` and ``beliefs`` are at the working resolution (``factor`` original pixels per working
pixel). The LSP benchmark (``protocol.evaluate_protocol``) never shrinks.

``person_item`` gives the person as a dataset item at the model's input size (the search's
scale 1.0), for the belief explorer: its occluder then works on a photo too.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import skeleton
from ..targets import MISSING
from .protocol import (
    LSP_SCALES,
    LSP_TARGET,
    _inputs,
    as_image,
    load_image,
    locate_person,
    plan_scales,
    predict_person,
)

#: ``predict_image``'s default bound on the longer side of the photo it works on, in pixels.
MAX_SIDE = 1280

#: How ``PhotoPrediction.to_dict`` describes its coordinates.
COORDINATES = "pixels of the upright image (EXIF orientation applied); pixel centres at integers, (0, 0) top left"


@dataclass
class PhotoPrediction:
    """What ``predict_image`` returns, on the CPU.

    Attributes:
        image: the photo as decoded and, if large, shrunk (module docstring): (3, h, w) float in
            [0, 1], ``factor`` original pixels per pixel.
        keypoints: one (P, 3) tensor per stage: x, y in the ORIGINAL photo's pixels (each part's
            arg-max pixel) and the belief there as confidence (0..1; low means the stage is unsure).
        beliefs: one (P + 1, h, w) tensor per stage at ``image``'s resolution (background last),
            averaged over the scales; None unless kept.
        center, height: the person the search looked for, in original pixels.
        box: the person box that was given (original pixels), or None (image centre and height).
        scales: the absolute resize factors of the original photo the network saw.
        source: the file it came from, if any.
        size: (H, W) of the original photo; factor: (fy, fx) original pixels per ``image`` pixel.
    """

    image: torch.Tensor
    keypoints: list[torch.Tensor]
    beliefs: list[torch.Tensor] | None
    center: tuple[float, float]
    height: float
    box: tuple[float, float, float, float] | None
    scales: tuple[float, ...]
    source: str | None = None
    size: tuple[int, int] | None = None
    factor: tuple[float, float] = (1.0, 1.0)

    def to_image(self, xy) -> torch.Tensor:
        """Original-photo pixel coordinates (..., 2) (x, y) as coordinates of ``image``."""
        xy = torch.as_tensor(xy, dtype=torch.float32)
        scale = torch.tensor([self.factor[1], self.factor[0]])
        return (xy + 0.5) / scale - 0.5

    @property
    def num_stages(self) -> int:
        return len(self.keypoints)

    def to_dict(self, part_names: Sequence[str] | None = None) -> dict:
        """A JSON-ready record: the photo, the person searched for, and per stage each part's
        ``x``, ``y`` (``COORDINATES``) and ``confidence``."""
        num_parts = self.keypoints[0].shape[0]
        names = list(part_names or (skeleton.JOINT_NAMES if num_parts == skeleton.NUM_JOINTS
                                    else [f"part_{j}" for j in range(num_parts)]))
        h, w = self.size or self.image.shape[-2:]
        stages = [{"stage": t + 1,
                   "keypoints": [{"part": name, "x": float(x), "y": float(y), "confidence": round(float(c), 6)}
                                 for name, (x, y, c) in zip(names, kp.tolist())]}
                  for t, kp in enumerate(self.keypoints)]
        return {
            "image": self.source, "width": int(w), "height": int(h), "coordinates": COORDINATES,
            "person": {"center": [float(v) for v in self.center], "height": float(self.height),
                       "box": None if self.box is None else [float(v) for v in self.box],
                       "located_by": "box" if self.box is not None else "image centre and height (LSP protocol)"},
            "scales": [round(s, 6) for s in self.scales],
            "parts": names,
            "stages": stages,
        }


def read_photo(image) -> tuple[torch.Tensor, str | None]:
    """``(image (3, H, W) float in [0, 1], its file path or None)`` of a path (``load_image``:
    upright, RGB) or anything ``as_image`` reads."""
    if isinstance(image, (str, os.PathLike)):
        return load_image(image), os.fspath(image)
    return as_image(image), None


def _working_image(img: torch.Tensor, person_height: float, box: int,
                   max_side: int | None) -> tuple[torch.Tensor, tuple[float, float]]:
    """The photo shrunk so its longer side is <= ``max_side``, but the person stays >= 2 boxes
    tall (module docstring); and (fy, fx), original pixels per working pixel."""
    h, w = img.shape[-2:]
    f = 1.0 if max_side is None else min(max(h, w) / max_side, person_height / (2 * box))
    if f <= 1:
        return img, (1.0, 1.0)
    nh, nw = max(1, round(h / f)), max(1, round(w / f))
    small = F.interpolate(img[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)[0]
    return small.clamp_(0, 1), (h / nh, w / nw)


def predict_image(model, image, box: Sequence[float] | None = None, *, scales: Sequence[float] = LSP_SCALES,
                  target: float = LSP_TARGET, keep_beliefs: bool = True, max_side: int | None = MAX_SIDE,
                  device: str | torch.device | None = None, amp: bool = False) -> PhotoPrediction:
    """Per-stage keypoints (and beliefs) of the person in one photo.

    Args:
        model: a CPM (``load_model``) or any model ``predict_person`` runs.
        image: a file path (decoded upright, any mode, see the module docstring), a PIL image,
            an (H, W, 3) / (H, W) array or a (3, H, W) tensor, uint8 or floats in [0, 1].
        box: optional person box (x0, y0, x1, y1) in the photo's pixels; default the image
            centre and height, as in the LSP test.
        scales: multipliers of the search's base scale (default the official 0.7-1.3).
        target: the fraction of the network input the person's height is scaled to.
        keep_beliefs: also return each stage's beliefs (at the working resolution).
        max_side: shrink larger photos first (module docstring); None never shrinks.
        device: where to run (None: where the model is; "auto": cuda > mps > cpu).
        amp: bf16 autocast on CUDA.
    """
    img, source = read_photo(image)
    size = tuple(int(v) for v in img.shape[-2:])
    center, height = locate_person(size, box)
    work, (fy, fx) = _working_image(img, height, model.codec.input_size, max_side)
    center_w = ((center[0] + 0.5) / fx - 0.5, (center[1] + 0.5) / fy - 0.5)
    out = predict_person(model, work, center_w, height / fy, scales, target, keep_beliefs, device, amp)
    keypoints = [torch.cat([(k[:, :2] + 0.5) * torch.tensor([fx, fy]) - 0.5, k[:, 2:]], 1) for k in out.keypoints]
    return PhotoPrediction(work, keypoints, out.beliefs, center, height,
                           None if box is None else tuple(float(v) for v in box),
                           tuple(s / fy for s in out.scales), source, size, (fy, fx))


def person_item(model, image, box: Sequence[float] | None = None, target: float = LSP_TARGET) -> dict:
    """The person of a photo as a dataset item the belief explorer takes: ``image`` (3, S, S),
    the photo scaled like the search's scale 1.0 and pasted grey-padded into the model's input
    box S; ``center`` its centre (where the person is); ``keypoints`` (P, 3) all missing (a
    photo has no ground truth)."""
    img, _ = read_photo(image)
    size = model.codec.input_size
    center, height = locate_person(img.shape[-2:], box)
    crop = _inputs(img, plan_scales(img.shape[-2:], center, height, size, (1.0,), target), size)[0]
    keypoints = torch.zeros(model.codec.num_parts, 3)
    keypoints[:, 2] = MISSING
    return {"image": crop, "center": torch.full((2,), (size - 1) / 2), "keypoints": keypoints}
