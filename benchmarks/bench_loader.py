"""Real-data loader and augmentation throughput, against what the tiny CPM consumes.

Prints images/s for:
  - LSPet person crops through a DataLoader with 0 and 2 workers, cache off / cold / warm;
  - batched ``Augment`` (paper settings) on the chosen device;
  - training consumption: CPM.from_preset("tiny") forward + backward with an MSE loss on
    encoded targets (a few steps, no data loading), on the chosen device.
If the loader (or augmentation) is slower than the training step, data is the bottleneck.

    python benchmarks/bench_loader.py [--data ../shared/datasets] [--n 256] [--size 128]
                                      [--device auto] [--grid /tmp/augment_grid.png]

``--grid PATH`` also renders a grid of augmented LSPet samples with skeletons (person's right
red, left blue) for a visual check that labels and flips are right.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cpm_lab.data.augment import Augment  # noqa: E402
from cpm_lab.data.lsp import LSP  # noqa: E402
from cpm_lab.models.cpm import CPM  # noqa: E402
from cpm_lab.targets import encode  # noqa: E402
from cpm_lab.utils import resolve_device  # noqa: E402


def find_data(arg: str | None) -> Path:
    for cand in [arg, os.environ.get("CPM_LAB_DATA"), ROOT.parent / "shared" / "datasets"]:
        if cand and (Path(cand) / "lspet" / "joints.mat").is_file():
            return Path(cand)
    sys.exit("LSPet not found: pass --data DIR (containing lspet/) or set CPM_LAB_DATA")


def loader_rate(ds, workers: int, batch: int, epochs: int = 1) -> float:
    """images/s over the LAST of ``epochs`` passes (earlier passes warm caches / workers)."""
    dl = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=workers,
                    persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0))
    rate = 0.0
    for _ in range(epochs):
        t, n = time.perf_counter(), 0
        for b in dl:
            n += len(b["image"])
        rate = n / (time.perf_counter() - t)
    return rate


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def augment_rate(batch: dict, device, steps: int = 10) -> float:
    aug = Augment()
    b = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    g = torch.Generator().manual_seed(0)
    aug(b, g)
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        aug(b, g)
    sync(device)
    return steps * len(batch["image"]) / (time.perf_counter() - t)


def train_rate(batch: dict, device, steps: int = 5) -> float:
    model = CPM.from_preset("tiny").to(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    x = batch["image"].to(device)
    targets, weights = encode(batch["keypoints"].to(device), model.codec)

    def step():
        loss = sum((((b - targets) ** 2).mean((2, 3)) * weights).mean() for b in model(x))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    return steps * len(x) / (time.perf_counter() - t)


def render_grid(ds, path: str, n: int = 6, seed: int = 0):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from cpm_lab.viz.pose import draw_skeleton, image_hwc
    batch = default_collate([ds[i] for i in range(n)])
    aug, g = Augment(), torch.Generator().manual_seed(seed)
    rows = [("original", batch, None)]
    for r in range(3):
        p = aug.sample(n, g, tuple(batch["image"].shape[-2:]))
        rows.append((f"aug {r + 1}", aug.apply(batch, p), p))
    fig, axes = plt.subplots(len(rows), n, figsize=(2.5 * n, 2.7 * len(rows)))
    for r, (name, b, p) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(image_hwc(b["image"][c]))
            draw_skeleton(ax, b["keypoints"][c])
            for j, t in ((6, "R"), (11, "L")):  # right / left wrist
                if b["keypoints"][c, j, 2] > 0:
                    ax.text(b["keypoints"][c, j, 0] + 4, b["keypoints"][c, j, 1], t, color="yellow",
                            fontsize=11, weight="bold")
            cx, cy = b["center"][c].tolist()
            s = float(b["scale"][c]) * 200
            ax.add_patch(plt.Rectangle((cx - s / 2, cy - s / 2), s, s, fill=False, ec="yellow", ls="--", lw=1))
            title = name if p is None else (f"zoom {p.zoom[c]:.2f}, {p.angle[c]:+.0f}°"
                                            + (", flipped" if p.flip[c] else ""))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("LSPet crops and Augment(): person's right red, left blue; R/L mark the wrists; "
                 "dashed = person box (scale * 200)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    print(f"wrote {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder containing lspet/ (default ../shared/datasets)")
    ap.add_argument("--n", type=int, default=256, help="LSPet images to load per pass")
    ap.add_argument("--size", type=int, default=128, help="crop side (tiny preset: 128)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="auto", help="device for augmentation and the training step")
    ap.add_argument("--grid", default=None, help="also render an augmentation grid PNG here")
    args = ap.parse_args(argv)
    data = find_data(args.data)
    device = resolve_device(args.device)
    root = data / "lspet"
    print(f"LSPet images 1..{args.n}, crops {args.size}px, batch {args.batch}, device {device}, "
          f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    rows = []
    for workers in (0, 2):
        plain = LSP(root, args.size, 1, args.n, metadata=False)
        rows.append((f"loader, {workers} workers, no cache", loader_rate(plain, workers, args.batch)))
        cached = LSP(root, args.size, 1, args.n, metadata=False, cache=True)
        rows.append((f"loader, {workers} workers, cache cold", loader_rate(cached, workers, args.batch)))
        rows.append((f"loader, {workers} workers, cache warm", loader_rate(cached, workers, args.batch)))
    ds = LSP(root, args.size, 1, args.n, metadata=False)
    batch = default_collate([ds[i] for i in range(args.batch)])
    rows.append((f"Augment() on {device}", augment_rate(batch, device)))
    rows.append((f"train step, tiny CPM fwd+bwd on {device}", train_rate(batch, device)))
    width = max(len(r[0]) for r in rows)
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:9.1f} images/s")
    if args.grid:
        render_grid(ds, args.grid)


if __name__ == "__main__":
    main()
