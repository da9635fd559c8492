"""Prediction time per image on the CPU: torch (eager) and onnxruntime, batch 1.

    python benchmarks/bench_predict.py                                   # tiny-synthetic, 1 thread
    python benchmarks/bench_predict.py --checkpoint runs/x/checkpoint.pt --threads 4
    python benchmarks/bench_predict.py --preset paper                    # random weights, 368 px

Rows, each in milliseconds per image (median over the timed repeats, after one warm-up call):

* torch forward: one ``model(image, center_map)`` at the model's input size (eval, inference mode).
* onnxruntime forward: the same on the file ``cpm_lab.export.export_onnx`` writes (CPU provider,
  ``--threads`` intra-op threads); needs the ``onnx`` extra, otherwise the row is skipped.
* torch LSP protocol, 1 / 4 / 7 scales: ``inference.predict_person`` on one random
  ``--image`` (H x W) image, the person at the image centre and height: the official test with
  one scale (1.0), four (0.7, 0.9, 1.1, 1.3) and the official seven (0.7-1.3), all scales in one
  forward pass, beliefs taken back to the image and arg-maxed.

Each row repeats until ``--repeats`` timings or ``--budget`` seconds (at least 3 timings).
"CPU ms" is the process's CPU time per image (all threads together): on a machine shared with
other busy processes it stays near the work done while the wall-clock time grows. Nothing is
asserted.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

# Sleeping (not spinning) OpenMP threads, as the cpm-lab CLI sets. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from cpm_lab.inference import LSP_SCALES, center_maps, load_model, locate_person, predict_person  # noqa: E402
from cpm_lab.models.cpm import CPM, PRESETS  # noqa: E402


def cpu_model() -> str:
    """The CPU's name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def median_ms(fn, repeats: int, budget: float) -> tuple[float, float, int]:
    """Median wall-clock and process-CPU milliseconds of ``fn()``, and the number of timings,
    after one untimed warm-up call."""
    fn()
    wall: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    while len(wall) < repeats and (len(wall) < 3 or time.perf_counter() - start < budget):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu), len(wall)


def onnx_row(model, x, cmap, threads: int):
    """A callable running the exported model under onnxruntime, or None without the onnx extra."""
    try:
        from cpm_lab.export import export_onnx, onnx_session
        with tempfile.TemporaryDirectory(prefix="bench-onnx-") as folder:  # the session keeps the graph
            session = onnx_session(export_onnx(model, os.path.join(folder, "cpm.onnx")), threads=threads)
    except ModuleNotFoundError as exc:
        print(f"onnxruntime row skipped: {exc}")
        return None, None
    import onnxruntime

    feed = {"image": x.numpy(), "center_map": cmap.numpy()}
    return (lambda: session.run(None, feed)), onnxruntime.__version__


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="tiny-synthetic", help="a checkpoint file or a shipped model name")
    p.add_argument("--preset", choices=sorted(PRESETS), help="time a randomly initialised preset instead")
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime intra-op threads (default 1)")
    p.add_argument("--image", default="240x160", help="H x W of the image for the protocol rows (default 240x160)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--budget", type=float, default=10.0, help="seconds of timing per row at most (>= 3 timings)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.preset:
        torch.manual_seed(0)
        model, name = CPM.from_preset(args.preset).eval(), f"preset {args.preset} (random weights)"
    else:
        model, name = load_model(args.checkpoint, device="cpu"), args.checkpoint
    c = model.config
    s = c.input_size
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, s, s, generator=gen)
    cmap = center_maps(c.codec, None, 1, s, s)
    h, w = (int(v) for v in args.image.lower().split("x"))
    image = torch.rand(3, h, w, generator=gen)
    person = locate_person((h, w))

    run_onnx, ort_version = onnx_row(model, x, cmap, args.threads)
    rows = []
    with torch.inference_mode():
        rows.append(("torch forward", f"{s}x{s}", *median_ms(lambda: model(x, cmap), args.repeats, args.budget)))
        if run_onnx is not None:
            rows.append(("onnxruntime forward", f"{s}x{s}", *median_ms(run_onnx, args.repeats, args.budget)))
        for label, scales in (("1 scale", (1.0,)), ("4 scales", (0.7, 0.9, 1.1, 1.3)),
                              (f"{len(LSP_SCALES)} scales (official)", LSP_SCALES)):
            timing = median_ms(lambda: predict_person(model, image, *person, scales=scales), args.repeats, args.budget)
            rows.append((f"torch LSP protocol, {label}", f"image {h}x{w}", *timing))

    params = sum(t.numel() for t in model.parameters())
    print(f"{name}: {c.name} config, {c.num_stages} stages, input {s}, {params:,} parameters")
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, onnxruntime {ort_version or '-'}, "
          f"{args.threads} thread(s), batch 1")
    print(f"{'':40s} {'input':>14s} {'ms/image':>10s} {'CPU ms':>10s} {'timings':>8s}")
    for label, size, ms, cpu, n in rows:
        print(f"{label:40s} {size:>14s} {ms:10.1f} {cpu:10.1f} {n:8d}")


if __name__ == "__main__":
    main()
