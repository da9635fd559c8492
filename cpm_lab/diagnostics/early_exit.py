"""Early exit: is each stage worth its cost?

A CPM's stage t produces usable beliefs on its own, so a deployment may stop after any stage.
``early_exit`` puts, side by side for every t, the accuracy of stage t's beliefs, the compute of
running stages 1..t (``model_cost``; the shared image trunk is counted with stage 2, the first
stage that uses it) and the measured time of a forward pass that stops after stage t
(``CPM.forward(..., num_stages=t)``).
"""
from __future__ import annotations

import time
from typing import Sequence

import pandas as pd
import torch

from ..utils import resolve_device
from .cost import model_cost


@torch.inference_mode()
def _forward_ms(model, images: torch.Tensor, num_stages: int, repeats: int) -> float:
    times = []
    for k in range(repeats + 2):                     # two warm-up passes
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        model(images, num_stages=num_stages)
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        if k >= 2:
            times.append(time.perf_counter() - start)
    return 1e3 * float(torch.tensor(times).median())


def early_exit(model, dataset, threshold: float = 0.2, indices: Sequence[int] | None = None, repeats: int = 10,
               batch_size: int = 1, device: str | torch.device = "cpu") -> pd.DataFrame:
    """Per stage t of ``model`` (a ``CPM``): accuracy, cumulative compute and measured time.

    Returns a DataFrame with one row per stage and columns ``stage``, ``pck`` (PCK at
    ``threshold``, torso, all labelled joints, of stage t's beliefs on ``dataset`` or its
    ``indices``; ``inference.evaluate``), ``gmacs`` (multiply-accumulates of stages 1..t per
    image, in 10^9), ``params_m`` (parameters of stages 1..t, in millions), ``ms`` (median wall
    time in milliseconds of a forward pass that stops after stage t, on ``batch_size`` images at
    the model's input size on ``device``, over ``repeats`` passes after two warm-ups) and
    ``pck_per_gmac`` (the stage's PCK gain over the previous stage per added GMAC; stage 1's
    gain is over 0). Times are this machine's, not a benchmark of the method.
    """
    from ..inference import evaluate
    from ..metrics import pck_table

    dev = resolve_device(device)
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    table = pck_table(evaluate(model.to(dev), subset, device=dev, thresholds=(threshold,), auc_max=None))
    cost = model_cost(model).stages.set_index("stage")
    size = model.codec.input_size
    images = torch.rand(batch_size, 3, size, size, generator=torch.Generator().manual_seed(0)).to(dev)
    rows = []
    for t in cost.index:
        rows.append(dict(stage=int(t), pck=float(table.loc[t].iloc[0]), gmacs=float(cost.loc[:t, "macs"].sum()) / 1e9,
                         params_m=float(cost.loc[:t, "params"].sum()) / 1e6,
                         ms=_forward_ms(model.eval(), images, int(t), repeats)))
    out = pd.DataFrame(rows)
    out["pck_per_gmac"] = out["pck"].diff().fillna(out["pck"]) / out["gmacs"].diff().fillna(out["gmacs"])
    return out
