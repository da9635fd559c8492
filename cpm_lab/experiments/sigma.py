"""The part Gaussian's width: what sigma does to accuracy and training speed.

The belief-map target of each part is a Gaussian of std ``sigma`` input pixels (``CPMConfig.sigma``;
the paper's release uses 7 px at 368 px input, the tiny preset 8 px = one belief cell).
``sigma_sweep`` trains the same preset once per sigma on the same data and budget and scores
every stage: a narrow Gaussian is a sharp but sparse target (few cells carry any signal), a wide
one is easy to hit but blurs neighbouring parts and the decoded peak.
"""
from __future__ import annotations

import time
from typing import Sequence

import pandas as pd


def sigma_sweep(sigmas: Sequence[float] = (3, 4, 6, 8, 10, 12), preset: str = "tiny", steps: int = 300,
                batch_size: int = 8, difficulty: str = "easy", eval_size: int = 128, seed: int = 0,
                device: str = "auto", thresholds: Sequence[float] = (0.1, 0.2)) -> pd.DataFrame:
    """Train ``preset`` once per part sigma (input pixels) for ``steps`` x ``batch_size`` images of
    synthetic ``difficulty`` people (same data, same seed, same recipe otherwise) and evaluate
    on ``eval_size`` held-out people (seed + 1000).

    Returns a tidy DataFrame with one row per sigma and stage: ``sigma_px``, ``stage``,
    ``pck@{t}`` per threshold (torso, all labelled joints), ``images_per_s`` (training
    throughput, median over the steps after the first 10), ``train_s`` (wall time of the run),
    ``loss_end`` (that stage's loss over the last tenth of the steps; the loss sums squared
    errors over the map, so its scale grows with sigma: compare PCK, not losses, across sigmas).
    """
    from ..data.synthetic import SyntheticPoses
    from ..inference import evaluate
    from ..metrics import pck_table
    from ..models import CPM
    from ..train import TrainConfig, Trainer
    from ..utils import seed_everything

    rows = []
    for sigma in sigmas:
        seed_everything(seed)
        model = CPM.from_preset(preset, sigma=float(sigma))
        size = model.config.input_size
        train = SyntheticPoses(steps * batch_size, image_size=size, difficulty=difficulty, seed=seed)
        held_out = SyntheticPoses(eval_size, image_size=size, difficulty=difficulty, seed=seed + 1000)
        cfg = TrainConfig.for_preset(preset, steps=steps, batch_size=batch_size, seed=seed, device=device,
                                     progress=False)
        start = time.perf_counter()
        history = Trainer(model, train, cfg).fit()
        train_s = time.perf_counter() - start
        speed = float(history["images_per_s"].iloc[10:].median() if len(history) > 10
                      else history["images_per_s"].median())
        table = pck_table(evaluate(model, held_out, device=device, thresholds=thresholds, auc_max=None))
        tail = history.iloc[-max(1, len(history) // 10):]
        for stage, pcks in table.iterrows():
            row = dict(sigma_px=float(sigma), stage=int(stage))
            row.update({f"pck@{t:g}": float(v) for t, v in zip(thresholds, pcks)})
            row.update(images_per_s=speed, train_s=train_s, loss_end=float(tail[f"loss_stage{stage}"].mean()))
            rows.append(row)
    return pd.DataFrame(rows)
