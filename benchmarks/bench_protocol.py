"""Where the time of the official LSP test goes: decoding, the model, and the protocol around it.

    python benchmarks/bench_protocol.py                                  # tiny-synthetic, 50 LSP test images
    python benchmarks/bench_protocol.py --model paper --images 10        # the paper preset (random weights)
    python benchmarks/bench_protocol.py --device cuda --images 200 --batch-size 64

For the first ``--images`` LSP test images (``--data``, default ``lsp``) it times, per image:
decoding the JPEG (``load_image``), the whole ``predict_person`` (7 scales, every stage's beliefs
taken back to the image and arg-maxed), and the model's forward pass alone on the same 7 x 3 x
box x box input, so that the difference is the protocol's own cost (building the inputs, the
per-axis operators, the back-mapping). Then ``predict_protocol`` over the same images, which
batches several images per forward pass (``--batch-size`` network inputs). Times are medians
over images, in milliseconds; on CUDA each timed call is synchronised. Nothing is asserted.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

# Sleeping (not spinning) OpenMP threads, as the cpm-lab CLI sets. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from cpm_lab.data.specs import make_dataset  # noqa: E402
from cpm_lab.inference import (  # noqa: E402
    LSP_SCALES,
    load_image,
    load_model,
    locate_person,
    predict_person,
    predict_protocol,
    stage_outputs,
)
from cpm_lab.models.cpm import CPM  # noqa: E402
from cpm_lab.targets import center_map  # noqa: E402
from cpm_lab.utils import resolve_device  # noqa: E402


def timed(fn, device: torch.device):
    """(result, seconds) of ``fn()``, synchronising CUDA around it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-synthetic", help="a checkpoint, a shipped model, or a preset name")
    p.add_argument("--data", default="lsp")
    p.add_argument("--images", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32, help="network inputs per forward in predict_protocol")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.model in ("paper", "small", "tiny"):
        model = CPM.from_preset(args.model).to(device).eval()
    else:
        model = load_model(args.model, device=device)
    box = model.codec.input_size
    data = make_dataset(args.data, box, "test", length=args.images)
    print(f"{args.model}: box {box}, {model.config.num_stages} stages, {len(data)} images of {data.split_description}, "
          f"{device}, {torch.get_num_threads()} threads")

    predict_person(model, load_image(data.paths[0], exif_transpose=False), *locate_person((100, 80)))  # warm-up
    cmaps = center_map(torch.full((len(LSP_SCALES), 2), (box - 1) / 2, device=device), model.codec, box, box)
    x = torch.rand(len(LSP_SCALES), 3, box, box, device=device)
    decode, whole, forward = [], [], []
    for path in data.paths:
        image, t = timed(lambda: load_image(path, exif_transpose=False), device)
        decode.append(t)
        image = image.to(device)
        whole.append(timed(lambda: predict_person(model, image, *locate_person(image.shape[-2:])), device)[1])
        forward.append(timed(lambda: stage_outputs(model, x, cmaps), device)[1])
    ms = {k: 1000 * statistics.median(v) for k, v in (("decode", decode), ("predict_person", whole),
                                                       ("forward", forward))}
    print(f"per image (median ms): decode {ms['decode']:.1f}, predict_person {ms['predict_person']:.1f} "
          f"= forward {ms['forward']:.1f} + protocol {ms['predict_person'] - ms['forward']:.1f}")
    _, t = timed(lambda: predict_protocol(model, data, batch_size=args.batch_size, device=device), device)
    print(f"predict_protocol over {len(data)} images: {t:.2f} s ({1000 * t / len(data):.1f} ms per image, "
          f"decoding included, {max(1, args.batch_size // len(LSP_SCALES))} images per forward pass)")


if __name__ == "__main__":
    main()
