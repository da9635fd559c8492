"""Throughput of SyntheticPoses on ONE CPU core: images per second for each difficulty and size.

    python benchmarks/bench_synthetic.py            # 2000 items at 128 px, fewer at 256 / 368
    python benchmarks/bench_synthetic.py --n 500 --sizes 128

Items 0..n-1 are fetched one at a time (``ds[i]``, as a ``DataLoader`` does). Reports
wall-clock and process-CPU rates over all items, and the best CPU rate of five equal chunks
(like timeit's best-of-N, the least disturbed by other processes). On a shared machine the CPU
rates are the fairer ones, and the "reference loop" line shows how fast this core is right now
(sum(range(1000)) takes about 8-10 us on an idle modern x86 core); scale the figures by that
ratio to compare machines. The rasteriser is compiled (or loaded from numba's cache) before
timing starts.
"""
from __future__ import annotations

import argparse
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import time  # noqa: E402
import timeit  # noqa: E402

import torch  # noqa: E402

from cpm_lab.data import DIFFICULTIES, SyntheticPoses  # noqa: E402


def rate(ds: SyntheticPoses, n: int, chunks: int = 5) -> tuple[float, float, float]:
    """Images/s over items 0..n-1: wall-clock, process CPU time, and best CPU chunk."""
    ds[n]   # warm the per-size caches (and the compiled rasteriser)
    per = n // chunks
    wall = cpu = 0.0
    best = float("inf")
    for c in range(chunks):
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(c * per, (c + 1) * per):
            ds[i]
        dc = time.process_time() - c0
        wall += time.perf_counter() - w0
        cpu += dc
        best = min(best, dc)
    m = per * chunks
    return m / wall, m / cpu, per / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="items at 128 px (scaled down for larger sizes)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 368])
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6
    print(f"reference loop sum(range(1000)): {ref:.1f} us   (idle modern x86 core: ~8-10 us)")
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())}   cores: {os.cpu_count()}")
    print()
    print(f"{'size':>5} {'difficulty':>10} {'items':>6} {'img/s wall':>11} {'img/s cpu':>10} "
          f"{'best chunk':>11} {'ms/img cpu':>11}")
    for size in args.sizes:
        n = max(50, int(args.n * (128 / size) ** 2)) // 5 * 5
        for difficulty in DIFFICULTIES:
            ds = SyntheticPoses(length=n + 1, image_size=size, difficulty=difficulty, seed=0)
            wall, cpu, best = rate(ds, n)
            print(f"{size:>5} {difficulty:>10} {n:>6} {wall:>11.0f} {cpu:>10.0f} {best:>11.0f} {1000 / cpu:>11.2f}")


if __name__ == "__main__":
    main()
