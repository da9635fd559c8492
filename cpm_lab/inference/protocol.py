"""The official CPM test (``testing/src/run_benchmark.m`` of the CPM release) as reusable pieces.

::

    from cpm_lab.inference import evaluate_protocol, locate_person, predict_person

    center, height = locate_person(image.shape[-2:])           # LSP: image centre and height
    out = predict_person(model, image, center, height)          # 7 scales, beliefs summed
    out.keypoints[-1]                                           # last stage (P, 3), image pixels
    table = evaluate_protocol(model, make_dataset("lsp", 368, "test"))   # the paper's LSP table

For each image (``predict_person``):

1. The person: centre = the image centre, height = the image height (``locate_person``; a
   person box gives its own centre and height instead).
2. Scale search: ``scale0 = target * box / height`` (target 0.8: the person fills 0.8 of the
   network input side ``box``, which is ``model.codec.input_size``, 368 for the paper), and the
   image is run at ``scale0 * m`` for each multiplier m in ``scales`` (0.7, 0.8, ..., 1.3).
3. At each scale the image is resized (bicubic, antialiased: MATLAB's ``imresize``) to
   ``ceil(h * scale) x ceil(w * scale)`` and pasted into a ``box x box`` input with an integer
   offset that puts the scaled person centre on the box centre ``(box - 1) / 2``, where the centre
   map (``targets.center_map``, the model's codec) peaks; the rest is grey 0.5 (the official
   128/255 of an 8-bit image; a model's own input convention is applied inside the model).
   Where the scaled image is larger than the box it is cropped. All scales share the box size,
   so they go through the model in one forward pass (several images per pass in
   ``evaluate_protocol``).
4. Every stage's beliefs are upsampled to the box, the padding is removed (where the scaled
   image stuck out of the box, the missing area is background: 0 for parts, 1 for the
   background channel, like the official ``resizeIntoScaledImg``), resized to the original
   image and summed over the scales (``PersonPrediction.beliefs`` holds sum / number of scales).
5. Each part's prediction is its arg-max pixel on the original image (integer pixels, no
   sub-pixel refinement: the official ``findMaximum``), with the peak of the averaged beliefs
   as confidence. One prediction per stage.

``evaluate_protocol`` scores all images of a dataset that keeps its original images
(``paths``, ``keypoints_orig``: the real-data loaders) with ``metrics.keypoint_metrics``:
PCK normalised by the ground-truth torso ``|left shoulder - right hip|`` ("following
evalLSP_official"), every labelled joint counted. ``protocol="gt-crop"`` is the package's crop
evaluation (``evaluate``) instead: crops made from the ground-truth joints, an oracle box.

The resizes, the paste and the un-padding are separable, so per axis they are composed into
one small matrix (``resample``) and applied once on the model's device: the result equals
running them one after the other (up to float rounding) without materialising box-sized maps.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..metrics import keypoint_metrics
from ..targets import center_map
from ..utils import resolve_device
from .core import Prediction, _EvalMode, evaluate, model_device, stage_outputs
from .resample import resize_matrix, resize_taps

#: The official scale search: multipliers of ``scale0`` (``0.7:0.1:1.3`` in run_benchmark.m).
LSP_SCALES: tuple[float, ...] = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
#: Fraction of the network input side the person's height is brought to (LSP: the image height).
LSP_TARGET = 0.8
#: The padding colour, in the [0, 1] RGB of cpm_lab images (official: 128 of 0..255).
GREY = 0.5
#: ``evaluate_protocol`` / ``cpm-lab eval --protocol`` choices.
PROTOCOLS = ("lsp", "gt-crop")


def protocol_title(protocol: str, scales: Sequence[float] | None = None) -> str:
    """One line naming an evaluation protocol for table titles, e.g. "official LSP test (person
    from the image centre and height, 7 scales 0.7-1.3)"; ``scales`` = the LSP multipliers."""
    if protocol == "gt-crop":
        return "oracle crops from the ground-truth joints (not comparable with published numbers)"
    if protocol != "lsp":
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    m = _multipliers(scales)
    which = f"1 scale {m[0]:g}" if len(m) == 1 else f"{len(m)} scales {min(m):g}-{max(m):g}"
    return f"official LSP test (person from the image centre and height, {which})"


def locate_person(image_hw: Sequence[int], box: Sequence[float] | None = None) -> tuple[tuple[float, float], float]:
    """Where the LSP protocol looks for the person: ``((x, y) centre, height)`` in pixels.

    Args:
        image_hw: (height, width) of the image in pixels (e.g. ``image.shape[-2:]``).
        box: optional person box (x0, y0, x1, y1) in pixels; pixel centres are integers, so
            the whole image is (-0.5, -0.5, w - 0.5, h - 0.5).
    Returns:
        the image centre ``((w - 1) / 2, (h - 1) / 2)`` and height ``h``, or with a box its
        centre and height ``y1 - y0``.
    """
    h, w = (int(v) for v in image_hw)
    if h < 1 or w < 1:
        raise ValueError(f"image_hw must be a positive (height, width), got {tuple(image_hw)}")
    if box is None:
        return ((w - 1) / 2, (h - 1) / 2), float(h)
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
        raise ValueError(f"box must be finite (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {tuple(box)}")
    return ((x0 + x1) / 2, (y0 + y1) / 2), y1 - y0


@dataclass
class PersonPrediction:
    """What ``predict_person`` returns, on the CPU.

    Attributes:
        keypoints: one (P, 3) float tensor per stage: x, y of each part's arg-max pixel of the
            original image (integers) and the averaged belief there.
        beliefs: one (P + 1, H, W) tensor per stage (background last): the beliefs at image
            resolution summed over the scales and divided by their number; None unless kept.
        center, height: the person (``locate_person``) in image pixels.
        scales: the absolute resize factors the image was run at.
    """

    keypoints: list[torch.Tensor]
    beliefs: list[torch.Tensor] | None
    center: tuple[float, float]
    height: float
    scales: tuple[float, ...]

    @property
    def num_stages(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class ScalePlan:
    """One step of the scale search: the image resized by ``scale`` to ``size`` (h, w) pixels and
    pasted with its pixel (0, 0) at pixel ``offset`` (y, x) of the box (negative: cropped)."""

    scale: float
    size: tuple[int, int]
    offset: tuple[int, int]


def plan_scales(image_hw: Sequence[int], center: Sequence[float], height: float, box: int,
                scales: Sequence[float] = LSP_SCALES, target: float = LSP_TARGET) -> list[ScalePlan]:
    """The scale search for one person: ``scale = target * box / height * m`` for each multiplier
    m, the size MATLAB's imresize gives (``ceil``), and the integer offset that brings the scaled
    centre nearest the box centre ``(box - 1) / 2``."""
    h, w = (int(v) for v in image_hw)
    if not (math.isfinite(height) and height > 0):
        raise ValueError(f"person height must be a positive number of pixels, got {height!r}")
    cx, cy = (float(v) for v in center)
    if not (math.isfinite(cx) and math.isfinite(cy)):
        raise ValueError(f"person centre must be finite, got {tuple(center)}")
    mid = (box - 1) / 2
    plans = []
    for m in _multipliers(scales):
        s = target * box / height * m
        hs, ws = max(1, math.ceil(h * s - 1e-9)), max(1, math.ceil(w * s - 1e-9))
        sx, sy = (cx + 0.5) * ws / w - 0.5, (cy + 0.5) * hs / h - 0.5  # centre in scaled pixels
        plans.append(ScalePlan(s, (hs, ws), (math.floor(mid - sy + 0.5), math.floor(mid - sx + 0.5))))
    return plans


def _multipliers(scales: Sequence[float] | None) -> list[float]:
    m = list(LSP_SCALES) if scales is None else [float(v) for v in scales]
    if not m or not all(v > 0 and math.isfinite(v) for v in m):
        raise ValueError(f"scales must be positive numbers, got {m}")
    return m


# ------------------------------------------------------------------------------------------------
# Per-axis operators
# ------------------------------------------------------------------------------------------------
def _paste_axis(n: int, n_scaled: int, offset: int, box: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image axis -> box axis: (box, n) weights of "resize n -> n_scaled, paste at offset", and
    (box,) bool, True where the box holds scaled image pixels (the rest is padding)."""
    q = torch.arange(box) - offset
    inside = (q >= 0) & (q < n_scaled)
    op = torch.zeros(box, n, dtype=torch.float64)
    if inside.any():
        op[inside] = resize_matrix(n, n_scaled, q[inside])
    return op, inside


def _unpaste_axis(n_cells: int, box: int, n_scaled: int, offset: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Belief axis -> image axis: (n, n_cells) weights of "upsample n_cells -> box, take the
    scaled image's pixels, resize n_scaled -> n", and (n,) the weight each image pixel draws from
    inside the box (1 - it = the share of the padding fill)."""
    index, weight = resize_taps(n_scaled, n)
    b = index + offset
    ok = (b >= 0) & (b < box)
    # (n, box) weights of box pixels; taps outside the box go to a spare column and are dropped
    take = torch.zeros(n, box + 1, dtype=torch.float64).scatter_add_(1, torch.where(ok, b, box), weight)[:, :box]
    return take @ resize_matrix(n_cells, box), take.sum(1)


def _stacked(pairs: list[tuple[torch.Tensor, torch.Tensor]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """One axis's (operator, share) pairs of every scale, built on the CPU in float64, stacked
    into (S, ...) float32 tensors on ``device`` (MPS has no float64)."""
    ops, shares = zip(*pairs)
    return torch.stack(ops).float().to(device), torch.stack(shares).float().to(device)


def _inputs(image: torch.Tensor, plans: list[ScalePlan], box: int) -> torch.Tensor:
    """(S, 3, box, box) network inputs of one image (3, h, w) in [0, 1], one per plan."""
    h, w = image.shape[-2:]
    op_y, in_y = _stacked([_paste_axis(h, p.size[0], p.offset[0], box) for p in plans], image.device)
    op_x, in_x = _stacked([_paste_axis(w, p.size[1], p.offset[1], box) for p in plans], image.device)
    x = torch.einsum("sbh,chw->scbw", op_y, image)
    x = torch.einsum("scbw,sdw->scbd", x, op_x).clamp_(0, 1)  # bicubic overshoot, as uint8 saturates
    pad = (in_y[:, :, None] * in_x[:, None, :]) == 0
    return x.masked_fill_(pad[:, None], GREY)


class _Unpaste:
    """Takes the beliefs of one image's scales back to the image: per-axis operators (S, h, ny)
    and (S, w, nx) plus the summed padding share (h, w), on ``device`` in float32."""

    def __init__(self, plans: list[ScalePlan], box: int, image_hw, cells_hw, device):
        h, w = (int(v) for v in image_hw)
        ny, nx = (int(v) for v in cells_hw)
        self.op_y, in_y = _stacked([_unpaste_axis(ny, box, p.size[0], p.offset[0], h) for p in plans], device)
        self.op_x, in_x = _stacked([_unpaste_axis(nx, box, p.size[1], p.offset[1], w) for p in plans], device)
        self.num_scales = len(plans)
        self.fill = len(plans) - torch.einsum("sy,sx->yx", in_y, in_x)

    def __call__(self, beliefs: torch.Tensor, num_parts: int) -> torch.Tensor:
        """Beliefs (S, C, ny, nx) of the scales -> (C, h, w) at image resolution, averaged over
        the scales; where a scale did not reach, parts count 0 and channels >= ``num_parts``
        (the background) 1."""
        t = torch.einsum("scij,sxj->scix", beliefs, self.op_x)
        out = torch.einsum("syi,scix->cyx", self.op_y, t)
        out[num_parts:] += self.fill
        return out / self.num_scales


def _argmax_keypoints(maps: torch.Tensor, num_parts: int) -> torch.Tensor:
    """(P, 3): each part's arg-max pixel (x, y) of maps (C, h, w) and the value there."""
    conf, idx = maps[:num_parts].flatten(1).max(1)
    w = maps.shape[-1]
    return torch.stack([(idx % w).float(), torch.div(idx, w, rounding_mode="floor").float(), conf.float()], -1)


@torch.no_grad()
def _predict_people(model, images: list[torch.Tensor], people: list, scales, target: float, keep_beliefs: bool,
                    amp: bool) -> list[PersonPrediction]:
    """The protocol for several images (3, h, w) on one device, all their scales in ONE forward
    pass; ``people`` holds each image's (centre, height)."""
    codec = model.codec
    box, num_parts = codec.input_size, codec.num_parts
    dev = images[0].device
    plans = [plan_scales(img.shape[-2:], c, hgt, box, scales, target) for img, (c, hgt) in zip(images, people)]
    x = torch.cat([_inputs(img, pl, box) for img, pl in zip(images, plans)])
    cmaps = center_map(torch.full((len(x), 2), (box - 1) / 2, device=dev), codec, box, box)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
        stages = stage_outputs(model, x, cmaps)
    out, start = [], 0
    for img, pl, (c, hgt) in zip(images, plans, people):
        rows = slice(start, start + len(pl))
        start += len(pl)
        ops: dict[tuple, _Unpaste] = {}
        keypoints, kept = [], []
        for b in stages:
            key = tuple(b.shape[-2:])
            if key not in ops:
                ops[key] = _Unpaste(pl, box, img.shape[-2:], key, dev)
            maps = ops[key](b[rows].float(), num_parts)
            keypoints.append(_argmax_keypoints(maps, num_parts).cpu())
            if keep_beliefs:
                kept.append(maps.cpu())
        out.append(PersonPrediction(keypoints, kept if keep_beliefs else None, (float(c[0]), float(c[1])),
                                    float(hgt), tuple(p.scale for p in pl)))
    return out


# ------------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------------
def as_image(image) -> torch.Tensor:
    """An image as a float32 (3, H, W) tensor in [0, 1]: a PIL image of any mode (grayscale,
    CMYK, palette, RGBA: converted to RGB), an (H, W, 3) or grayscale (H, W) numpy array (uint8
    0..255, or floats in [0, 1]) or a (3, H, W) / (1, H, W) / (H, W) tensor (uint8, or floats)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None].repeat(3, -1)
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"a numpy image must have shape (H, W, 3) or (H, W); got {image.shape}")
        t = torch.from_numpy(np.array(image)).permute(2, 0, 1)  # a copy: PIL's arrays are read-only
    else:
        t = torch.as_tensor(image)
        if t.ndim == 2:
            t = t[None]
        if t.ndim == 3 and t.shape[0] == 1:
            t = t.expand(3, -1, -1)
        if t.ndim != 3 or t.shape[0] != 3:
            raise ValueError(f"an image tensor must have shape (3, H, W) or (H, W); got {tuple(t.shape)}")
    if t.shape[-2] < 1 or t.shape[-1] < 1:
        raise ValueError(f"empty image of shape {tuple(t.shape)}")
    return t.float() / 255 if t.dtype == torch.uint8 else t.float()


def load_image(path: str | os.PathLike, exif_transpose: bool = True) -> torch.Tensor:
    """Decode an image file as a float32 (3, H, W) RGB tensor in [0, 1], turned upright by its
    EXIF orientation unless ``exif_transpose`` is False (dataset annotations refer to the stored
    pixels, as the crops of ``cpm_lab.data`` do)."""
    from PIL import Image, ImageOps

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img) if exif_transpose else img
            return as_image(img)
    except Exception as exc:  # noqa: BLE001 - name the file whatever the decoder raised
        raise ValueError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc


def _device(model, device) -> torch.device:
    """``device`` (resolved; the model is moved there) or, for None, the model's own device."""
    if device is None:
        return model_device(model)
    dev = resolve_device(device)
    if hasattr(model, "to"):
        model.to(dev)
    return dev


def predict_person(model, image, center: Sequence[float], height: float, scales: Sequence[float] = LSP_SCALES,
                   target: float = LSP_TARGET, keep_beliefs: bool = False, device: str | torch.device | None = None,
                   amp: bool = False) -> PersonPrediction:
    """The official scale search for one person in one image (module docstring, steps 2-5).

    Args:
        model: a CPM (or any model with a ``codec`` mapping (images, centre maps) to per-stage
            beliefs); its ``codec.input_size`` is the box.
        image: the whole image, (3, H, W) in [0, 1] or anything ``as_image`` reads.
        center, height: the person in image pixels (``locate_person``).
        scales: multipliers of ``scale0 = target * box / height``.
        target: fraction of the box the person height is scaled to.
        keep_beliefs: also return every stage's beliefs at image resolution.
        device: where to run ("auto" picks cuda > mps > cpu; the model is moved there); default
            the model's device.
        amp: bf16 autocast on CUDA.
    Returns:
        a ``PersonPrediction`` on the CPU, keypoints in image pixels.
    """
    dev = _device(model, device)
    img = as_image(image).to(dev)
    return _predict_people(model, [img], [(center, height)], scales, target, keep_beliefs, amp)[0]


class _ImageFiles(torch.utils.data.Dataset):
    """The original images of a dataset as uint8 (3, H, W) tensors, decoded like its crops."""

    def __init__(self, paths: Sequence[str]):
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        from ..data.crop import open_image

        path = self.paths[index]
        try:
            img, _ = open_image(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"image file not found: {path} (sample {index})") from None
        except Exception as exc:  # noqa: BLE001 - name the file whatever the decoder raised
            raise ValueError(f"cannot decode image {path} (sample {index}): {type(exc).__name__}: {exc}") from exc
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)


def _as_list(batch):
    return batch


def _originals(dataset) -> tuple[list[str], np.ndarray]:
    paths, truth = getattr(dataset, "paths", None), getattr(dataset, "keypoints_orig", None)
    if paths is None or truth is None:
        raise ValueError(f"{type(dataset).__name__} has no original images (paths and keypoints_orig): the LSP "
                         f"protocol runs on photographs such as the real-data loaders'; use protocol 'gt-crop'")
    if len(paths) == 0:
        raise ValueError("cannot evaluate an empty dataset")
    truth = np.asarray(truth, dtype=np.float32)
    if truth.ndim != 3 or truth.shape[0] != len(paths) or truth.shape[-1] != 3:
        raise ValueError(f"keypoints_orig must have shape ({len(paths)}, P, 3); got {truth.shape}")
    return list(paths), truth


def predict_protocol(model, dataset, scales: Sequence[float] | None = None, target: float = LSP_TARGET,
                     batch_size: int = 32, device: str | torch.device | None = "auto", amp: bool = False,
                     num_workers: int = 0, progress: bool = False) -> Prediction:
    """``predict_person`` on every original image of ``dataset`` (``paths``, ``keypoints_orig``:
    the real-data loaders), the person located from the image alone (``locate_person``).

    ``scales`` are the multipliers (default ``LSP_SCALES``); ``batch_size`` is the number of
    network inputs per forward pass, filled with whole images (each brings one input per scale;
    at least one image per pass). The model is moved to ``device`` ("auto": cuda > mps > cpu;
    None keeps it where it is). Returns a ``Prediction``: per-stage keypoints (N, P, 3) in
    original image pixels and ``truth`` = the dataset's ``keypoints_orig``.
    """
    from tqdm.auto import tqdm

    paths, truth = _originals(dataset)
    multipliers = _multipliers(scales)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = _device(model, device)
    loader = torch.utils.data.DataLoader(_ImageFiles(paths), batch_size=max(1, batch_size // len(multipliers)),
                                         num_workers=num_workers, collate_fn=_as_list)
    keypoints: list[list[torch.Tensor]] = []
    with _EvalMode(model):
        for batch in tqdm(loader, desc="LSP protocol", disable=not progress, leave=False):
            images = [t.to(dev).float().div_(255) for t in batch]
            people = [locate_person(t.shape[-2:]) for t in images]
            keypoints += [r.keypoints for r in _predict_people(model, images, people, multipliers, target, False, amp)]
    stages = [torch.stack(k) for k in zip(*keypoints)]
    return Prediction(stages, None, torch.from_numpy(truth))


def evaluate_protocol(model, dataset, protocol: str = "lsp", thresholds: Sequence[float] = (0.1, 0.2),
                      joints: str = "labelled", normalize: str = "torso", auc_max: float | None = 0.5,
                      scales: Sequence[float] | None = None, target: float = LSP_TARGET, flip: bool = False,
                      batch_size: int = 32, device: str | torch.device | None = "auto", amp: bool = False,
                      num_workers: int = 0, progress: bool = False):
    """The tidy metrics table (``metrics.keypoint_metrics``, every stage) of ``model`` on
    ``dataset`` under ``protocol``.

    ``"lsp"``: the official LSP test (``predict_protocol``; ``scales`` = multipliers, default
    0.7-1.3), scored in original image pixels against ``keypoints_orig``. ``"gt-crop"``: the
    oracle crops of ``evaluate`` (person boxes from the ground-truth joints; ``flip`` and
    ``scales`` are its test-time augmentation). ``joints`` ("labelled" or "visible") and
    ``normalize`` (default the official torso ``|left shoulder - right hip|``) choose what is
    scored. The table's ``attrs["protocol"]`` holds ``protocol_title``.
    """
    if protocol == "gt-crop":
        table = evaluate(model, dataset, batch_size=batch_size, device=device, flip=flip, scales=scales,
                         thresholds=thresholds, normalize=normalize, auc_max=auc_max, num_workers=num_workers,
                         amp=amp, progress=progress, joints=joints)
        table.attrs["protocol"] = protocol_title(protocol)
        return table
    if protocol != "lsp":
        raise ValueError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")
    if flip:
        raise ValueError("flip is test-time augmentation of the gt-crop protocol; the official LSP test has none")
    out = predict_protocol(model, dataset, scales=scales, target=target, batch_size=batch_size, device=device,
                           amp=amp, num_workers=num_workers, progress=progress)
    table = keypoint_metrics(out.keypoints, out.truth, thresholds, normalize, auc_max=auc_max, joints=joints)
    table.attrs["protocol"] = protocol_title(protocol, scales)
    return table
