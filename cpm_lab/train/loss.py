"""The CPM objective (paper, Sec. 3.3).

For stage t with beliefs ``b_t`` (N, P+1, h, w) and targets ``b*`` from ``targets.encode``::

    f_t = 1/N * sum_n sum_{p=1..P+1} w_np * sum_{ij} (b_t[n, p, i, j] - b*[n, p, i, j])^2

i.e. the squared error summed over parts + background and all locations, AVERAGED over the batch
(so the gradient scale does not depend on the batch size), with ``w_np = 0`` for joints without
a label (the background channel always counts). That is ``scale="mean"``; ``scale="caffe"`` is
the official release's Caffe ``EuclideanLoss``, the same sum divided by 2N (half of "mean").
The total is ``F = sum_t lambda_t f_t`` with stage weights ``lambda_t`` (all 1 in the paper).
Without intermediate supervision only the final stage's term is kept. The trainer logs every
stage's ``f_t``, supervised or not.
"""
from __future__ import annotations

from typing import Sequence

import torch

#: Normalisations of the summed squared error (``stage_losses(scale=...)``): divide by N, or by 2N.
LOSS_SCALES = ("mean", "caffe")


def stage_losses(beliefs: Sequence[torch.Tensor], targets: torch.Tensor, weights: torch.Tensor,
                 scale: str = "mean") -> torch.Tensor:
    """Per-stage loss f_t, shape (T,), computed in float32.

    Args:
        beliefs: T tensors (N, C, h, w) (any float dtype).
        targets: (N, C, h, w) from ``targets.encode``.
        weights: (N, C), 0 for channels of joints without a label.
        scale: "mean" = weighted sum of squared differences / N (N = batch size); "caffe" = the
            same sum / (2N), Caffe's EuclideanLoss as in the official release.
    """
    if scale not in LOSS_SCALES:
        raise ValueError(f"scale must be one of {LOSS_SCALES}, got {scale!r}")
    if targets.ndim != 4 or weights.shape != targets.shape[:2]:
        raise ValueError(f"targets must be (N, C, h, w) and weights (N, C); got {tuple(targets.shape)}, "
                         f"{tuple(weights.shape)}")
    n = targets.shape[0] if scale == "mean" else 2 * targets.shape[0]
    w = weights.float()[:, :, None, None]
    out = []
    for t, b in enumerate(beliefs):
        if b.shape != targets.shape:
            raise ValueError(f"stage {t + 1} beliefs have shape {tuple(b.shape)}, targets {tuple(targets.shape)}")
        out.append(((b.float() - targets.float()) ** 2 * w).sum() / n)
    return torch.stack(out)


def cpm_loss(beliefs: Sequence[torch.Tensor], targets: torch.Tensor, weights: torch.Tensor,
             stage_weights: Sequence[float] | None = None,
             intermediate_supervision: bool = True, scale: str = "mean") -> tuple[torch.Tensor, torch.Tensor]:
    """The CPM objective ``F = sum_t lambda_t f_t``; returns ``(F, per_stage f_t (T,))``.

    ``stage_weights`` are the lambda_t of the T stages given (default all 1). With
    ``intermediate_supervision=False`` only the last of them enters F (the others are still
    returned in ``per_stage`` for monitoring, but no gradient flows from them). ``scale`` is
    ``stage_losses``'s normalisation ("mean": / N, "caffe": / 2N).
    """
    per_stage = stage_losses(beliefs, targets, weights, scale)
    t = len(beliefs)
    lam = list(stage_weights) if stage_weights is not None else [1.0] * t
    if len(lam) != t:
        raise ValueError(f"stage_weights has {len(lam)} entries for {t} stages")
    used = range(t) if intermediate_supervision else [t - 1]
    total = sum(lam[i] * per_stage[i] for i in used)
    return total, per_stage
