"""Dataset specs: one string names a dataset everywhere (CLI ``--data``, notebooks, benchmarks).

``make_dataset(spec, image_size, split=..., seed=...)`` is the ONE place that parses them.

==========================  =====================================================================
spec                        dataset
==========================  =====================================================================
``synthetic``               ``SyntheticPoses`` at the "standard" difficulty
``synthetic:DIFFICULTY``    ``SyntheticPoses`` at DIFFICULTY ("easy", "standard", "hard")
``lspet`` / ``lspet:DIR``   LSP-extended (``cpm_lab.data.LSP``) in DATA/lspet or DIR: train =
                            images 1-8000, val = 8001-9000, test = 9001-10000 when the file has
                            them (otherwise val, with a warning: they are kept aside)
``lsp`` / ``lsp:DIR``       original LSP in DATA/lsp or DIR: train = 1-1000, test = 1001-2000
                            (the paper's test images); val = test (LSP has no validation split).
                            A folder whose joints.mat has LSPet's layout is refused (and an LSPet
                            spec refuses LSP's layout).
``A+B`` (e.g. ``lspet+lsp``)  the train splits of A and B together (the paper's LSP model trained
                            on LSPet + LSP 1-1000); val and test come from the last one (B)
``mpii`` / ``mpii:JSON``    MPII (``cpm_lab.data.MPII``), LSP-14 joints: DATA/mpii/annot/
                            {train,valid}.json + DATA/mpii/images (test = valid: MPII test labels
                            are not public), or one JSON file with its images beside it (or in
                            ``images/`` beside it), used for every split
``coco`` / ``coco:JSON``    COCO person keypoints (``cpm_lab.data.COCOKeypoints``), LSP-14 joints:
                            DATA/coco/annotations/person_keypoints_{train,val}2017.json +
                            DATA/coco/{train,val}2017 (test = val), or one JSON as for mpii
==========================  =====================================================================

DATA is ``$CPM_LAB_DATA`` or ``../shared/datasets`` beside the project. For real datasets
``length`` keeps the first ``length`` items of the split, ``seed`` is unused and ``cache=True``
keeps every decoded crop in memory as uint8 (``cpm_lab.data.cache.CropCache``: N x S x S x 3
bytes, e.g. 8000 LSPet crops at 128 px = 0.39 GB), so epochs after the first decode no JPEG.

Splits of a synthetic dataset are the same generator with different seeds, so a held-out split
never shares an image with the training split: ``train`` uses ``seed``, ``val`` uses
``seed + 10_000_019`` and ``test`` uses ``seed + 20_000_003``.
"""
from __future__ import annotations

import torch

from .synthetic import DIFFICULTIES, SyntheticPoses

SPLITS = ("train", "val", "test")
SPLIT_SEED_OFFSET = {"train": 0, "val": 10_000_019, "test": 20_000_003}
#: Items per split when ``length`` is not given (synthetic items are generated on the fly).
DEFAULT_LENGTH = {"train": 20_000, "val": 256, "test": 512}
SPEC_HELP = "synthetic[:easy|standard|hard], lspet[:DIR], lsp[:DIR], mpii[:JSON] or coco[:JSON]"
REAL_KINDS = ("lspet", "lsp", "mpii", "coco")


def split_spec(spec: str) -> list[str]:
    """The datasets of a combined spec ``"A+B"`` (each a spec of its own); ``[spec]`` otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec must be a non-empty string like {SPEC_HELP!r}, got {spec!r}")
    parts = [p.strip() for p in spec.split("+")]
    if any(not p for p in parts):
        raise ValueError(f"bad data spec {spec!r}: expected datasets joined by '+', e.g. 'lspet+lsp'")
    return parts


def parse_spec(spec: str) -> tuple[str, list[str]]:
    """Split ``"kind:arg1:arg2"`` into ``("kind", ["arg1", "arg2"])``; ValueError if empty."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"data spec must be a non-empty string like {SPEC_HELP!r}, got {spec!r}")
    kind, *args = spec.strip().split(":")
    return kind.lower(), args


def is_real(spec: str) -> bool:
    """True when ``spec`` names real (photograph) datasets only, not the synthetic generator."""
    return all(parse_spec(part)[0] in REAL_KINDS for part in split_spec(spec))


def make_dataset(spec: str, image_size: int, split: str = "train", seed: int = 0, length: int | None = None,
                 cache: bool = False):
    """Build the dataset named by ``spec`` with square images of side ``image_size`` pixels.

    Args:
        spec: see the module docstring.
        image_size: side of the images (= the model's input size).
        split: "train", "val" or "test".
        seed: base seed (synthetic: the split's seed is derived from it).
        length: number of items; synthetic default ``DEFAULT_LENGTH[split]``, real data default
            the whole split (a given length keeps its first ``length`` items).
        cache: real data only: keep decoded crops in memory as uint8 (see the module
            docstring); ignored for synthetic data, which is generated on the fly.

    The dataset's ``split_description`` attribute names the images it serves, for titles:
    e.g. "synthetic standard test split (seed 20000003)", "LSPet images 8001-9000" (also when
    the test split fell back to them) or "MPII valid.json".

    Raises:
        ValueError naming the spec and what was expected.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    parts = split_spec(spec)
    if len(parts) > 1:
        return _combined(spec, parts, image_size, split, seed, length, cache)
    kind, args = parse_spec(spec)
    if kind == "synthetic":
        if len(args) > 1:
            raise ValueError(f"bad data spec {spec!r}: expected {SPEC_HELP}")
        difficulty = args[0] if args and args[0] else "standard"
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"bad data spec {spec!r}: unknown synthetic difficulty {difficulty!r}; "
                             f"choose one of {sorted(DIFFICULTIES)}")
        n = DEFAULT_LENGTH[split] if length is None else int(length)
        if n < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        ds = SyntheticPoses(n, image_size, difficulty, seed=int(seed) + SPLIT_SEED_OFFSET[split])
        ds.split_description = f"synthetic {difficulty} {split} split (seed {ds.seed})"
        return ds
    if kind in REAL_KINDS:
        return _real_dataset(spec, kind, args, image_size, split, length, cache)
    raise ValueError(f"bad data spec {spec!r}: unknown dataset {kind!r}; expected {SPEC_HELP}")


def default_data_root():
    """``$CPM_LAB_DATA`` if set, else ``../shared/datasets`` beside the project (a Path; it may
    not exist)."""
    import os
    from pathlib import Path

    from ..assets import ROOT
    env = os.environ.get("CPM_LAB_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "datasets"


class Combined(torch.utils.data.ConcatDataset):
    """The train splits of several datasets served as one (``make_dataset("lspet+lsp", ...)``);
    ``annotations()`` concatenates theirs, so the mean-pose baseline fits without decoding."""

    def annotations(self) -> dict:
        parts = [d.annotations() for d in self.datasets]
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _combined(spec: str, parts: list[str], image_size: int, split: str, seed: int, length: int | None,
              cache: bool):
    """Train: the union of every part's train split; val/test: the last part's split."""
    if split != "train":
        ds = make_dataset(parts[-1], image_size, split, seed, length, cache)
        ds.split_description = f"{ds.split_description}, the {split} split of {spec}"
        return ds
    sets = [make_dataset(p, image_size, "train", seed, None, cache) for p in parts]
    ds = Combined(sets)
    if length is not None:
        ds = torch.utils.data.Subset(ds, range(min(int(length), len(ds))))
    ds.split_description = " + ".join(d.split_description for d in sets)
    return ds


def _real_dataset(spec: str, kind: str, args: list[str], image_size: int, split: str, length: int | None,
                  cache: bool = False):
    """LSP/LSPet/MPII/COCO person crops for ``split`` (see the module docstring)."""
    import warnings
    from pathlib import Path

    from .coco import COCOKeypoints
    from .lsp import LSP
    from .mpii import MPII

    if len(args) > 1:
        raise ValueError(f"bad data spec {spec!r}: expected {kind}[:PATH] (one path, no extra ':')")
    arg = Path(args[0]).expanduser() if args and args[0] else None
    data = default_data_root()
    if kind in ("lspet", "lsp"):
        root = arg or data / kind
        total = _lsp_total(root, kind)  # how many images this copy's joints.mat holds (layout checked)
        if kind == "lsp":
            start, end = (1, 1000) if split == "train" else (1001, 2000)
            if total < end:
                raise ValueError(f"data spec {spec!r}: {root}/joints.mat holds {total} images; the LSP "
                                 f"{split} split needs images {start}-{end} (the 2000-image LSP release)")
            ds = LSP(root, image_size, start, end, cache=cache)
            described = f"LSP images {start}-{end}"
        else:
            ranges = {"train": (1, 8000), "val": (8001, 9000), "test": (9001, 10000)}
            start, end = ranges[split]
            if split == "test" and total < end:
                warnings.warn(f"{spec!r}: LSPet test images 9001-10000 are not in {root} (kept aside "
                              f"as an unseen test set); using the validation images 8001-9000", stacklevel=3)
                start, end = ranges["val"]
            end = min(end, total)
            ds = LSP(root, image_size, start, end, cache=cache)
            described = f"LSPet images {start}-{end}"
    else:
        if arg is not None:
            if not arg.is_file():
                raise FileNotFoundError(f"data spec {spec!r}: annotation file not found: {arg}")
            ann, images = arg, arg.parent / "images" if (arg.parent / "images").is_dir() else arg.parent
        elif kind == "mpii":
            ann = data / "mpii" / "annot" / ("train.json" if split == "train" else "valid.json")
            images = data / "mpii" / "images"
        else:
            sub = "train2017" if split == "train" else "val2017"
            ann, images = data / "coco" / "annotations" / f"person_keypoints_{sub}.json", data / "coco" / sub
        if not ann.is_file():
            raise FileNotFoundError(f"data spec {spec!r}: annotation file not found: {ann} (give the file "
                                    f"as {kind}:PATH.json or set CPM_LAB_DATA)")
        ds = (MPII if kind == "mpii" else COCOKeypoints)(ann, images, image_size, cache=cache)
        described = f"{kind.upper()} {ann.name}"
    if length is not None:
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        ds = ds.select(range(min(int(length), len(ds))))
    ds.split_description = described
    return ds


def _lsp_total(root, kind: str) -> int:
    """Images in ``root``'s joints.mat, refusing a file whose layout is not ``kind``'s."""
    from pathlib import Path

    from .lsp import read_joints
    if not Path(root).is_dir():
        raise FileNotFoundError(f"LSP root folder not found: {root} (give it as {kind}:DIR or set CPM_LAB_DATA)")
    kp, layout = read_joints(Path(root) / "joints.mat")
    if layout != kind:
        shapes = {"lsp": "(3, 14, N) with flag 0 = visible", "lspet": "(14, 3, N) with flag 1 = annotated"}
        raise ValueError(f"{kind}:{root}: joints.mat has the {layout.upper()} layout {shapes[layout]}, not "
                         f"{kind.upper()}'s {shapes[kind]}; use {layout}:{root}")
    return len(kp)
