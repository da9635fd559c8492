"""CPU/GPU forward time of every CPM preset at its own input size.

    python benchmarks/bench_model.py [--device auto] [--batch 1] [--repeats 5] [--threads N]

Prints one row per preset: parameters, input size, median forward time per batch (ms) and
images/s, in eval mode under torch.inference_mode.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from cpm_lab.models import CPM, PRESETS
from cpm_lab.utils import resolve_device


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device={device} torch={torch.__version__} threads={torch.get_num_threads()} batch={args.batch}")
    print(f"{'preset':8s} {'params':>11s} {'input':>6s} {'ms/batch':>10s} {'img/s':>8s}")
    for name in PRESETS:
        model = CPM.from_preset(name).to(device).eval()
        s = model.config.input_size
        x = torch.rand(args.batch, 3, s, s, device=device)
        times = []
        with torch.inference_mode():
            model(x)  # warm-up
            for _ in range(args.repeats):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        n = sum(p.numel() for p in model.parameters())
        print(f"{name:8s} {n:11,d} {s:6d} {med * 1e3:10.1f} {args.batch / med:8.1f}")


if __name__ == "__main__":
    main()
