"""Training throughput and peak memory of CPM presets: fp32 vs AMP, NCHW vs channels_last.

    python benchmarks/bench_train.py                     # tiny + paper on the current device
    python benchmarks/bench_train.py --presets tiny small --steps 10 --batch-size 16
    python benchmarks/bench_train.py --device cpu --threads 1

Each configuration runs in a FRESH subprocess (so memory peaks do not mix) through the real
``Trainer`` (targets encoded on the device, loss, backward, Adam step) on an in-memory dataset of
random images, so the numbers measure the training step, not data generation. images/s is the
global batch divided by the median step time, over the timed steps after ``--warmup`` steps.

Peak memory:
  * CUDA: ``torch.cuda.max_memory_allocated`` over the timed run (tensors only, after a reset).
  * CPU: the growth of the process's peak resident set size, i.e. ``ru_maxrss`` at the end minus
    the resident set size just before training (after imports, model and data are in memory). It
    includes allocator caching and is coarser than the CUDA figure; no tracemalloc (which would
    not see torch's allocations and slows everything down).

On CPU the paper preset (368 px, ~31 M parameters) is run at batch 1 for one warm-up and one
timed step, fp32 only, by default; it takes a minute or more per configuration on a small CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

# Sleeping (not spinning) OpenMP threads, as the cpm-lab CLI sets: on a CPU shared with other busy
# processes spinning threads make small-model steps several times slower. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODES = {  # name -> (amp, channels_last)
    "fp32/NCHW": (False, False),
    "fp32/channels_last": (False, True),
    "amp/NCHW": (True, False),
    "amp/channels_last": (True, True),
}


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def run_one(preset: str, mode: str, batch: int, warmup: int, steps: int, device: str, threads: int | None) -> dict:
    """One measurement in this process; returns a dict (printed as JSON by the child)."""
    import statistics

    import torch

    from cpm_lab.models.cpm import CPM
    from cpm_lab.train import TrainConfig, Trainer
    from cpm_lab.utils import resolve_device

    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    amp, channels_last = MODES[mode]
    torch.manual_seed(0)
    model = CPM.from_preset(preset)
    size = model.config.input_size

    class RandomPoses(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            self.images = torch.rand(n, 3, size, size, generator=g)
            kp = torch.rand(n, 14, 3, generator=g)
            kp[..., :2] = kp[..., :2] * (size - 1)
            kp[..., 2] = 1.0
            self.kp = kp

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return {"image": self.images[i], "keypoints": self.kp[i],
                    "center": torch.tensor([(size - 1) / 2, (size - 1) / 2])}

    data = RandomPoses(batch * (warmup + steps))
    cfg = TrainConfig(steps=warmup + steps, batch_size=batch, optimizer="adam", device=str(dev), amp=amp,
                      channels_last=channels_last, progress=False)
    trainer = Trainer(model, data, cfg)
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    history = trainer.fit()
    wall = time.perf_counter() - t0
    timed = history["images_per_s"].iloc[warmup:]
    ips = batch / statistics.median((batch / timed).tolist())
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda" else max(0, _max_rss_bytes() - rss0))
    amp_dtype = str(trainer.amp_dtype).replace("torch.", "") if trainer.use_amp else "-"
    return dict(preset=preset, mode=mode, amp_dtype=amp_dtype, device=str(dev), batch=batch, timed_steps=steps,
                images_per_s=round(ips, 2), peak_mem_mib=round(peak / 2**20, 1),
                peak_kind="cuda max_memory_allocated" if dev.type == "cuda" else "max RSS growth",
                threads=torch.get_num_threads(), wall_s=round(wall, 1),
                final_loss=round(float(history["loss"].iloc[-1]), 3))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=["tiny", "paper"])
    p.add_argument("--modes", nargs="+", choices=list(MODES),
                   help="default: all; for 'paper' on CPU only the fp32 modes (bf16 autocast is emulated "
                        "on CPUs without native bf16 and would take many minutes per step)")
    p.add_argument("--batch-size", type=int, default=16, help="batch for the small presets")
    p.add_argument("--paper-batch-size", type=int, help="batch for 'paper' (default 16 on CUDA, 1 on CPU)")
    p.add_argument("--steps", type=int, default=5, help="timed steps (paper on CPU: 1)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps (paper on CPU: 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--_child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args._child:  # inside the subprocess: one measurement, JSON on the last stdout line
        preset, mode, batch, warmup, steps = json.loads(args._child)
        print(json.dumps(run_one(preset, mode, batch, warmup, steps, args.device, args.threads)))
        return 0

    import torch

    from cpm_lab.utils import resolve_device

    dev = resolve_device(args.device)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine()
    print(f"device {dev} ({name}), "
          f"torch {torch.__version__}, {os.cpu_count()} CPUs, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
          f"load average {os.getloadavg()[0]:.2f}")
    rows = []
    for preset in args.presets:
        cpu_paper = preset == "paper" and dev.type != "cuda"
        batch = (args.paper_batch_size or (1 if cpu_paper else 16)) if preset == "paper" else args.batch_size
        steps, warmup = (1, 1) if cpu_paper else (args.steps, args.warmup)
        modes = args.modes or ([m for m in MODES if not MODES[m][0]] if cpu_paper else list(MODES))
        for mode in modes:
            child = json.dumps([preset, mode, batch, warmup, steps])
            cmd = [sys.executable, os.path.abspath(__file__), "--device", args.device, "--_child", child]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{preset:6} {mode:20} FAILED: {tail}")
                continue
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{preset:6} {mode:20} amp={row['amp_dtype']:9} batch {row['batch']:3}  "
                  f"{row['images_per_s']:9.2f} images/s  peak {row['peak_mem_mib']:9.1f} MiB ({row['peak_kind']})"
                  f"  threads {row['threads']}", flush=True)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
