"""Resizing as explicit 1-D weights, so that a chain of resizes, crops and pads can be composed.

The official CPM test resizes with MATLAB's ``imresize`` defaults: bicubic interpolation with
Keys' kernel (a = -0.5), widened by the shrink factor when shrinking (antialiasing). The same
filter is PIL's bicubic and torch's ``interpolate(mode="bicubic", antialias=True)``; this module
writes it as weight taps. Geometry: pixel centres at integer coordinates and image edges aligned,
so output pixel ``o`` of an ``n_in -> n_out`` resize sits at input coordinate
``(o + 0.5) * n_in / n_out - 0.5``. Taps that fall outside the input are dropped and each row's
weights renormalised to sum to 1 (PIL's border rule; MATLAB mirrors the border instead, which
only changes the outermost output pixel or two).

Every resize here is separable, and a crop or pad is a selection of rows, so each axis of the
protocol's "resize the image, pad it into the box, run the model, upsample the beliefs, remove
the padding, resize to the original image" chain is one small matrix; ``cpm_lab.inference.protocol``
composes them on the CPU in float64 and applies them once on the model's device.
"""
from __future__ import annotations

import math

import torch

#: Keys' cubic convolution parameter used by MATLAB's imresize and PIL (OpenCV and torch's
#: non-antialiased bicubic use -0.75).
KEYS_A = -0.5


def cubic(x: torch.Tensor, a: float = KEYS_A) -> torch.Tensor:
    """Keys' cubic convolution kernel at distances ``x`` (in input pixels); zero for |x| >= 2."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((x - 5) * x + 8) * x * a - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def resize_taps(n_in: int, n_out: int, outputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Input taps of a bicubic, antialiased ``n_in -> n_out`` resize (see module docstring).

    Args:
        n_in, n_out: lengths of the input and output signals in pixels (>= 1).
        outputs: (m,) integer output pixels whose taps are wanted (any values, also outside
            ``[0, n_out)``); default all ``n_out``.
    Returns:
        ``index`` (m, K) long input pixels, clamped into ``[0, n_in)``, and ``weight`` (m, K)
        float64 (zero for taps outside the input), each row summing to 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"resize lengths must be >= 1, got {n_in} -> {n_out}")
    o = torch.arange(n_out, dtype=torch.float64) if outputs is None else outputs.to(torch.float64)
    ratio = n_in / n_out
    stretch = max(ratio, 1.0)  # the kernel widens by the shrink factor (antialiasing)
    support = 2.0 * stretch
    centre = (o + 0.5) * ratio  # in input edge coordinates: pixel i spans [i, i + 1)
    first = torch.floor(centre - support + 0.5)
    k = int(math.ceil(2 * support)) + 1
    index = first[:, None] + torch.arange(k, dtype=torch.float64)
    weight = cubic((index + 0.5 - centre[:, None]) / stretch)
    weight = torch.where((index >= 0) & (index < n_in), weight, torch.zeros_like(weight))
    total = weight.sum(1, keepdim=True)
    weight = weight / torch.where(total != 0, total, torch.ones_like(total))
    return index.clamp(0, n_in - 1).long(), weight


def resize_matrix(n_in: int, n_out: int, outputs: torch.Tensor | None = None) -> torch.Tensor:
    """The resize of ``resize_taps`` as a dense (m, n_in) float64 matrix: ``signal_out = M @ signal_in``."""
    index, weight = resize_taps(n_in, n_out, outputs)
    out = torch.zeros(index.shape[0], n_in, dtype=torch.float64)
    return out.scatter_add_(1, index, weight)
