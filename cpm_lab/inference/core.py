"""Batched prediction at the model's input size: ``load_model``, ``predict``, ``predict_dataset``,
``evaluate`` (see the package docstring).

``predict`` runs a model on images (N, 3, H, W) whose person is already framed (a crop, or a
synthetic image); ``evaluate`` scores a dataset's own person crops, which for the real-data
loaders come from the ground-truth joints: the oracle "gt-crop" protocol. The official test on
whole images is ``cpm_lab.inference.protocol``.

The centre map tells a CPM which person to look at. Where no person centre is given it is
a Gaussian on the image centre (``targets.default_centers``), the one default of the package.
Test-time augmentation follows the official testing code: ``flip`` averages with the mirrored
image (left/right channels swapped back, ``skeleton.flip_index``), ``scales`` resizes the input
by each factor (rounded to a multiple of the stride) and averages the beliefs resized back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from .. import skeleton
from ..assets import SHIPPED_MODELS, asset
from ..metrics import keypoint_metrics
from ..targets import CodecConfig, center_map, decode, default_centers
from ..utils import resolve_device


@dataclass
class Prediction:
    """What ``predict`` returns, on the CPU.

    Attributes:
        keypoints: one (N, P, 3) float tensor per stage: x, y in input pixels and the peak
            belief as confidence (``targets.decode``).
        beliefs: one (N, P + 1, h, w) float tensor per stage (background last), or None when
            they were not kept.
        truth: (N, P, 3) ground truth when the images came from a dataset, else None.
    """

    keypoints: list[torch.Tensor]
    beliefs: list[torch.Tensor] | None = None
    truth: torch.Tensor | None = None

    @property
    def num_stages(self) -> int:
        return len(self.keypoints)


def load_model(path_or_name: str | os.PathLike, device: str | torch.device | None = "auto"):
    """A CPM from a checkpoint file, or a shipped model by name (``SHIPPED_MODELS``: e.g.
    ``"tiny-synthetic"``), rebuilt from the config it stores, on ``device``, in eval mode.

    The file goes through ``train.checkpoint.read_checkpoint`` (content hash, finite weights);
    a config this version cannot build, or weights that do not fit it, raise ValueError naming
    the file."""
    from ..models.cpm import CPM, CPMConfig
    from ..train.checkpoint import read_checkpoint

    name = os.fspath(path_or_name)
    path = asset(SHIPPED_MODELS[name]) if name in SHIPPED_MODELS else name
    ckpt = read_checkpoint(path)
    try:
        model = CPM(CPMConfig.from_dict(ckpt["model_config"]))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path!r}: its model_config cannot be built by this cpm_lab ({exc})") from None
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        why = " ".join(str(exc).split())
        why = why if len(why) < 300 else why[:297] + "..."
        raise ValueError(f"{path!r}: its weights do not fit the model its model_config describes ({why})") from None
    return model.to(resolve_device(device)).eval()


def model_device(model) -> torch.device:
    """The device of a model's parameters (the CPU for a model without any)."""
    params = model.parameters() if hasattr(model, "parameters") else iter(())
    first = next(iter(params), None)
    return first.device if first is not None else torch.device("cpu")


def center_maps(codec: CodecConfig, centers: torch.Tensor | None, n: int, height: int, width: int,
                device=None) -> torch.Tensor:
    """Centre maps (N, 1, H, W) for person centres (N, 2) in pixels, or for the image centres
    when ``centers`` is None."""
    if centers is None:
        centers = default_centers(n, height, width, device=device)
    return center_map(torch.as_tensor(centers, dtype=torch.float32, device=device).reshape(-1, 2), codec,
                      height, width)


@torch.no_grad()
def stage_outputs(model, images: torch.Tensor, center_maps: torch.Tensor | None = None) -> list[torch.Tensor]:
    """One plain forward pass in eval mode without gradients (the mode is restored afterwards):
    the per-stage outputs as a list. ``center_maps`` is passed only when given, so any module
    mapping images to one tensor or a list of tensors works (one tensor becomes a list of one)."""
    with _EvalMode(model):
        out = model(images) if center_maps is None else model(images, center_maps)
    return list(out) if isinstance(out, (list, tuple)) else [out]


def _scaled_centers(centers: torch.Tensor, h: int, w: int, sh: int, sw: int) -> torch.Tensor:
    """Person centres after resizing an h x w image to sh x sw (pixel centres at integers)."""
    return torch.stack([(centers[:, 0] + 0.5) * sw / w - 0.5, (centers[:, 1] + 0.5) * sh / h - 0.5], -1)


@torch.no_grad()
def _beliefs(model, images: torch.Tensor, centers: torch.Tensor | None, flip: bool,
             scales: Sequence[float] | None, amp: bool) -> list[torch.Tensor]:
    """Per-stage beliefs (N, P + 1, H/s, W/s) at the input's own output size, test-time
    augmentation averaged, float32 on the images' device."""
    codec = model.codec
    n, _, h, w = images.shape
    s = codec.stride
    out_h, out_w = h // s, w // s
    if centers is None:
        centers = default_centers(n, h, w, device=images.device)
    centers = centers.to(images.device, torch.float32)
    use_amp = amp and images.device.type == "cuda"
    total: list[torch.Tensor] | None = None
    count = 0
    for sc in scales or (1.0,):
        sh, sw = max(s, round(h * sc / s) * s), max(s, round(w * sc / s) * s)
        img = images if (sh, sw) == (h, w) else F.interpolate(images, size=(sh, sw), mode="bilinear",
                                                               align_corners=False)
        c = _scaled_centers(centers, h, w, sh, sw)
        passes = [(img, c, False)]
        if flip:
            passes.append((img.flip(-1), torch.stack([sw - 1 - c[:, 0], c[:, 1]], -1), True))
        for x, cc, flipped in passes:
            cmaps = center_map(cc, codec, sh, sw).to(x.dtype)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                beliefs = stage_outputs(model, x, cmaps)
            outs = []
            for b in beliefs:
                b = b.float()
                if flipped:
                    perm = list(skeleton.flip_index(codec.num_parts)) + list(range(codec.num_parts, b.shape[1]))
                    b = b.flip(-1)[:, perm]
                if b.shape[-2:] != (out_h, out_w):
                    b = F.interpolate(b, size=(out_h, out_w), mode="bilinear", align_corners=False)
                outs.append(b)
            total = outs if total is None else [a + b for a, b in zip(total, outs)]
            count += 1
    return [t / count for t in total]


def _check_tta(scales) -> list[float] | None:
    if scales is None:
        return None
    scales = [float(v) for v in scales]
    if not scales or any(not v > 0 for v in scales):
        raise ValueError(f"scales must be positive, got {scales}")
    return scales


class _EvalMode:
    """Context: the model in eval mode, restored to its previous mode afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = getattr(self.model, "training", False)
        if hasattr(self.model, "eval"):
            self.model.eval()

    def __exit__(self, *exc):
        if self.was_training:
            self.model.train()


def predict(model, images, centers=None, *, flip: bool = False, scales: Sequence[float] | None = None,
            batch_size: int = 64, device: str | torch.device | None = None, amp: bool = False,
            keep_beliefs: bool = True) -> Prediction:
    """Run ``model`` on images and decode every stage.

    Args:
        images: (N, 3, H, W) or one (3, H, W) image, floats in [0, 1] (H, W multiples of 8).
        centers: (N, 2) or (2,) person centres in pixels for the centre map; None = image centres.
        flip, scales: test-time augmentation (module docstring).
        batch_size: images per forward pass (bounds memory).
        device: where to run; default the model's device ("auto" picks cuda > mps > cpu).
        amp: bf16 autocast on CUDA.
        keep_beliefs: also return the belief maps (default), not only the keypoints.
    Returns:
        a ``Prediction`` on the CPU.
    """
    images = torch.as_tensor(images)
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (N, 3, H, W) or (3, H, W); got {tuple(images.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dev = resolve_device(device) if device is not None else model_device(model)
    if centers is not None:
        centers = torch.as_tensor(centers, dtype=torch.float32).reshape(-1, 2)
        if len(centers) != len(images):
            raise ValueError(f"got {len(centers)} centres for {len(images)} images")
    scales = _check_tta(scales)
    parts: list[Prediction] = []
    with _EvalMode(model):
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(dev, torch.float32)
            c = centers[i:i + batch_size].to(dev) if centers is not None else None
            parts.append(_decode(model, _beliefs(model, x, c, flip, scales, amp), keep_beliefs))
    return _concat(parts)


def _decode(model, beliefs: list[torch.Tensor], keep_beliefs: bool) -> Prediction:
    keypoints = [decode(b, model.codec).cpu() for b in beliefs]
    return Prediction(keypoints, [b.cpu() for b in beliefs] if keep_beliefs else None)


def _concat(parts: list[Prediction], truth: torch.Tensor | None = None) -> Prediction:
    keypoints = [torch.cat(k) for k in zip(*(p.keypoints for p in parts))]
    beliefs = [torch.cat(b) for b in zip(*(p.beliefs for p in parts))] if parts[0].beliefs is not None else None
    return Prediction(keypoints, beliefs, truth)


def predict_dataset(model, dataset, *, batch_size: int = 32, device: str | torch.device | None = "auto",
                    flip: bool = False, scales: Sequence[float] | None = None, amp: bool = False,
                    num_workers: int = 0, progress: bool = False, keep_beliefs: bool = False) -> Prediction:
    """``predict`` over a dataset whose items are dicts with ``image`` (3, H, W) at the model's
    input size, ``keypoints`` (P, 3) in the same pixels and optionally ``center`` (2,).

    The model is moved to ``device`` ("auto" picks cuda > mps > cpu; None keeps it where it is).
    Returns a ``Prediction`` with ``truth`` set; beliefs only with ``keep_beliefs``.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(dataset) == 0:
        raise ValueError("cannot predict on an empty dataset")
    dev = model_device(model) if device is None else resolve_device(device)
    if hasattr(model, "to"):
        model.to(dev)
    scales = _check_tta(scales)
    size = model.codec.input_size
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         pin_memory=dev.type == "cuda")
    parts, truth = [], []
    with _EvalMode(model):
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
            images = batch["image"].to(dev, torch.float32, non_blocking=True)
            if tuple(images.shape[-2:]) != (size, size):
                raise ValueError(f"dataset images are {images.shape[-2]}x{images.shape[-1]} but the model "
                                 f"expects {size}x{size}")
            centers = batch.get("center")
            centers = centers.to(dev, torch.float32) if centers is not None else None
            parts.append(_decode(model, _beliefs(model, images, centers, flip, scales, amp), keep_beliefs))
            truth.append(torch.as_tensor(batch["keypoints"]).float())
    return _concat(parts, torch.cat(truth))


def evaluate(model, dataset, batch_size: int = 32, device: str | torch.device | None = "auto",
             flip: bool = False, scales: Sequence[float] | None = None,
             thresholds: Sequence[float] = (0.1, 0.2), normalize: str = "torso", auc_max: float | None = 0.5,
             num_workers: int = 0, amp: bool = False, progress: bool = False, joints: str = "labelled"):
    """Run ``model`` over ``dataset`` (``predict_dataset``, on the dataset's own images: for
    person crops made from the ground-truth joints that is an oracle box; the official LSP test
    locates the person from the image alone) and return the tidy metrics table of every stage
    (``metrics.keypoint_metrics``, scoring the ``joints`` set)."""
    out = predict_dataset(model, dataset, batch_size=batch_size, device=device, flip=flip, scales=scales,
                          amp=amp, num_workers=num_workers, progress=progress)
    return keypoint_metrics(out.keypoints, out.truth, thresholds, normalize, auc_max=auc_max, joints=joints)
