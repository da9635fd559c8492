"""The headless demo behind ``make demo`` / ``cpm-lab demo``: what ``make lab`` shows, as files.

Writes to ``out``:

* ``samples.png``   synthetic people at each difficulty, with their skeletons;
* ``beliefs.png``   a tiny CPM's beliefs on a held-out person, stage by stage (all parts, with
  the colour key), and ``beliefs_right_wrist.png`` for the right wrist (colours scaled to each
  stage's peak); the person is the one whose right wrist moves most from the wrong arm at stage 1
  to the right one at the last stage (``analysis.side_fix_example``), as in notebook 00;
* ``receptive_fields.png``  the analytic receptive field of each stage of that model;
* ``model.csv``     per preset: parameters, input size, per-stage belief shape, forward time;
* ``pck.csv``       the tidy per-stage, per-part metrics of the tiny CPM on held-out data, and
  ``pck_table.csv`` its stages × thresholds summary.

The tiny CPM is the one shipped in ``data/weights`` when present (trained on synthetic data),
otherwise a randomly initialised one, and the demo says which.
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from . import skeleton  # noqa: E402
from .analysis import side_fix_example  # noqa: E402
from .assets import TINY_WEIGHTS  # noqa: E402
from .data import SyntheticPoses  # noqa: E402
from .diagnostics import receptive_fields  # noqa: E402
from .inference import load_model, predict, predict_dataset  # noqa: E402
from .metrics import keypoint_metrics, pck_table  # noqa: E402
from .models import CPM, PRESETS  # noqa: E402
from .utils import resolve_device  # noqa: E402
from .viz import plot_receptive_fields, plot_stage_beliefs, sample_grid  # noqa: E402


def _model_table(device: torch.device) -> pd.DataFrame:
    rows = []
    for name, cfg in PRESETS.items():
        model = CPM(cfg).to(device).eval()
        x = torch.rand(1, 3, cfg.input_size, cfg.input_size, device=device)
        with torch.inference_mode():
            model(x)
            t0 = time.perf_counter()
            out = model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1e3
        rows.append(dict(preset=name, parameters=sum(p.numel() for p in model.parameters()),
                         input_px=cfg.input_size, stages=cfg.num_stages,
                         belief_shape="×".join(map(str, out[0].shape[1:])),
                         forward_ms_batch1=round(ms, 1), device=str(device)))
    return pd.DataFrame(rows)


def run_demo(out: str | Path = "runs/demo", device: str = "auto", samples: int = 128, seed: int = 0) -> Path:
    """Render the demo figures and tables into ``out`` and return its path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = resolve_device(device)

    shown, titles = [], []
    for difficulty in ("easy", "standard", "hard"):
        ds = SyntheticPoses(length=4, image_size=128, difficulty=difficulty, seed=seed)
        shown += [ds[i] for i in range(4)]
        titles += [f"{difficulty} #{i}" for i in range(4)]
    sample_grid(shown, ncols=4, titles=titles).savefig(out / "samples.png", dpi=100)
    plt.close("all")

    try:
        model = load_model("tiny-synthetic", device=dev)
        origin = f"trained tiny CPM ({TINY_WEIGHTS})"
    except FileNotFoundError:
        model = CPM.from_preset("tiny").to(dev).eval()
        origin = "randomly initialised tiny CPM (no shipped weights found)"
    test_set = SyntheticPoses(length=samples, image_size=model.config.input_size, difficulty="standard",
                              seed=1000 + seed)
    held_out = predict_dataset(model, test_set, device=dev)        # every stage, every held-out person
    try:   # as in notebook 00: the right wrist moved from the wrong arm to the right one
        index = side_fix_example(held_out.keypoints, held_out.truth, "right_wrist")
    except ValueError:   # e.g. an untrained model
        index = 0
    item = test_set[index]
    out_1 = predict(model, item["image"], item["center"])
    maps, preds = [b[0] for b in out_1.beliefs], [k[0] for k in out_1.keypoints]
    stride = model.codec.stride
    plot_stage_beliefs(item["image"], maps, part="all", stride=stride, keypoints=item["keypoints"],
                       predictions=preds, size=3.6).savefig(out / "beliefs.png", dpi=110)
    plot_stage_beliefs(item["image"], maps, part=skeleton.JOINT_INDEX["right_wrist"], stride=stride,
                       predictions=preds, size=3.6, scale_to_peak=True).savefig(out / "beliefs_right_wrist.png",
                                                                                dpi=110)
    plt.close("all")
    fig = plot_receptive_fields(receptive_fields(model), image=item["image"])
    (fig if hasattr(fig, "savefig") else fig.figure).savefig(out / "receptive_fields.png", dpi=100)
    plt.close("all")

    table = keypoint_metrics(held_out.keypoints, held_out.truth)   # what inference.evaluate computes
    table.to_csv(out / "pck.csv", index=False)
    summary = pck_table(table, thresholds=(0.1, 0.2))
    summary.to_csv(out / "pck_table.csv")
    models = _model_table(dev)
    models.to_csv(out / "model.csv", index=False)

    print(f"cpm_lab demo on {dev}: {origin}")
    print(models.to_string(index=False))
    print(f"\nper-stage PCK on {len(test_set)} held-out synthetic people (torso-normalised):")
    print(summary.round(3).to_string())
    print(f"\nwrote {', '.join(sorted(p.name for p in out.iterdir()))}\n   to {out.resolve()}")
    return out
