"""``cpm-lab predict``: the pose in your own photos (``cpm_lab.inference.predict_image``).

For each image it writes ``OUT/<name>.json`` (every stage's keypoints in the photo's pixels, with
a confidence each; ``PhotoPrediction.to_dict``) and ``OUT/<name>.png`` (the skeleton on the photo
per stage, with the colour key). Folders are searched (not recursively) for image files. A file
that cannot be read is reported in one line and the others still run; the exit status is then 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

from . import CLIError, command, ensure_writable_dir, float_list

#: File endings ``predict`` picks up in a folder.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _box(text: str) -> tuple[float, ...]:
    """argparse type: ``"x0,y0,x1,y1"`` -> a person box in pixels."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or not values[2] > values[0] or not values[3] > values[1]:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 in pixels with x1 > x0 and y1 > y0; got {text!r}")
    return values


def _arguments(p: argparse.ArgumentParser) -> None:
    from ..assets import DEFAULT_PHOTO_MODEL

    p.add_argument("images", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and/or folders of images")
    p.add_argument("--checkpoint", default=DEFAULT_PHOTO_MODEL,
                   help=f"checkpoint file or shipped model name (default: {DEFAULT_PHOTO_MODEL}, trained on LSP/LSPet)")
    p.add_argument("--box", type=_box, metavar="x0,y0,x1,y1",
                   help="the person's box in pixels of the (upright) photo, for every image given; default: "
                        "the image centre and height, as in the LSP test")
    p.add_argument("--scales", type=float_list, default=None,
                   help="scale-search multipliers (default: the official 0.7,0.8,...,1.3)")
    p.add_argument("--max-side", type=int, default=None, metavar="PX",
                   help="shrink larger photos to this longer side first, never below twice the input box "
                        "(default 1280; 0 = never; keypoints are always in the original pixels)")
    p.add_argument("--out", help="output folder (default: runs/predict)")
    p.add_argument("--device", default="auto", help="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")
    p.add_argument("--no-png", dest="png", action="store_false", help="write only the JSON files")


def image_files(inputs: list[str]) -> tuple[list[str], list[str]]:
    """(image files to run, one-line problems): folders expand to their image files, sorted."""
    files, problems = [], []
    for item in inputs:
        if os.path.isdir(item):
            found = sorted(os.path.join(item, n) for n in os.listdir(item)
                           if n.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(item, n)))
            if not found:
                problems.append(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {item}")
            files += found
        elif os.path.isfile(item):
            files.append(item)
        else:
            problems.append(f"image file not found: {item}")
    return files, problems


def output_names(files: list[str]) -> list[str]:
    """One output stem per file: its name without the ending, made unique (``a.jpg`` and
    ``a.png`` become ``a_jpg`` and ``a_png``; the same name in two folders gets ``-2``, ...)."""
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    names, used = [], set()
    for f, stem in zip(files, stems):
        name = stem if stems.count(stem) == 1 else os.path.basename(f).replace(".", "_")
        base, k = name, 2
        while name in used:
            name, k = f"{base}-{k}", k + 1
        used.add(name)
        names.append(name)
    return names


def _predict(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..assets import runs_dir
    from ..files import atomic_write, write_text
    from ..inference import LSP_SCALES, load_model, predict_image
    from ..inference.photo import MAX_SIDE
    from ..viz.pose import plot_photo_prediction

    out = ensure_writable_dir(args.out or str(runs_dir("predict")))
    files, problems = image_files(args.images)
    for problem in problems:
        print(f"cpm-lab predict: {problem}", file=sys.stderr)
    if not files:
        raise CLIError("cpm-lab predict: no images to run")
    if args.max_side is not None and args.max_side < 0:
        raise CLIError(f"--max-side must be >= 0 (0 = never shrink), got {args.max_side}")
    max_side = MAX_SIDE if args.max_side is None else (args.max_side or None)
    model = load_model(args.checkpoint, device=args.device)
    done = 0
    for path, name in zip(files, output_names(files)):
        try:
            pred = predict_image(model, path, box=args.box, scales=args.scales or LSP_SCALES, keep_beliefs=False,
                                 max_side=max_side)
        except (ValueError, OSError) as exc:
            problems.append(str(exc))
            print(f"cpm-lab predict: skipped {path}: {exc}", file=sys.stderr)
            continue
        record = pred.to_dict()
        record["checkpoint"] = os.fspath(args.checkpoint)
        write_text(os.path.join(out, f"{name}.json"), json.dumps(record, indent=1) + "\n")
        if args.png:
            fig = plot_photo_prediction(pred, title=os.path.basename(path))
            atomic_write(os.path.join(out, f"{name}.png"), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
            plt.close(fig)
        done += 1
        print(f"{path}: {pred.num_stages} stages, mean confidence of the last {pred.keypoints[-1][:, 2].mean():.2f}")
    print(f"wrote {done} of {done + len(problems)} image(s) to {out}"
          + (f"; {len(problems)} could not be read (above)" if problems else ""))
    return 2 if problems else 0


command("predict", "the pose in your own photos: a JSON and a PNG per image", _arguments)(_predict)
