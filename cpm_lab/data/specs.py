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

Bad samples: by default a real dataset refuses bad annotations when it is built and a bad image
when it is first read (``cpm_lab.data.crop.PersonCrops``); ``skip_bad=True`` opens and decodes
every image up front and leaves the bad samples out with a warning that counts them.
``validation_sets(spec)`` builds every file a spec names, whole, that way, for ``cpm-lab validate``.
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
                 cache: bool = False, skip_bad: bool = False):
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
        skip_bad: real data only: check every image up front and leave out the bad samples
            (unreadable images, annotations that cannot be right) with a warning.

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
        return _combined(spec, parts, image_size, split, seed, length, cache, skip_bad)
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
        return _real_dataset(spec, kind, args, image_size, split, length, cache, skip_bad)
    raise ValueError(f"bad data spec {spec!r}: unknown dataset {kind!r}; expected {SPEC_HELP}")


def dataset_parts(dataset) -> int:
    """The number P of body parts in a dataset's (P, 3) keypoints (of its first item when the
    dataset does not say)."""
    if hasattr(dataset, "num_parts"):
        return int(dataset.num_parts)
    if isinstance(dataset, torch.utils.data.Subset):
        return dataset_parts(dataset.dataset)
    if isinstance(dataset, torch.utils.data.ConcatDataset):
        return dataset_parts(dataset.datasets[0])
    return int(torch.as_tensor(dataset[0]["keypoints"]).shape[0])


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
              cache: bool, skip_bad: bool):
    """Train: the union of every part's train split; val/test: the last part's split."""
    if split != "train":
        ds = make_dataset(parts[-1], image_size, split, seed, length, cache, skip_bad)
        ds.split_description = f"{ds.split_description}, the {split} split of {spec}"
        return ds
    sets = [make_dataset(p, image_size, "train", seed, None, cache, skip_bad) for p in parts]
    ds = Combined(sets)
    if length is not None:
        ds = torch.utils.data.Subset(ds, range(min(int(length), len(ds))))
    ds.split_description = " + ".join(d.split_description for d in sets)
    return ds


def _real_dataset(spec: str, kind: str, args: list[str], image_size: int, split: str, length: int | None,
                  cache: bool = False, skip_bad: bool = False):
    """LSP/LSPet/MPII/COCO person crops for ``split`` (see the module docstring)."""
    import warnings

    from .coco import COCOKeypoints
    from .lsp import LSP
    from .mpii import MPII

    bad = dict(on_error="skip", validate_images=True) if skip_bad else {}
    if kind in ("lspet", "lsp"):
        root = _real_root(spec, kind, args)
        total = _lsp_total(root, kind)  # how many images this copy's joints.mat holds (layout checked)
        if kind == "lsp":
            start, end = (1, 1000) if split == "train" else (1001, 2000)
            if total < end:
                raise ValueError(f"data spec {spec!r}: {root}/joints.mat holds {total} images; the LSP "
                                 f"{split} split needs images {start}-{end} (the 2000-image LSP release)")
            ds = LSP(root, image_size, start, end, cache=cache, **bad)
            described = f"LSP images {start}-{end}"
        else:
            ranges = {"train": (1, 8000), "val": (8001, 9000), "test": (9001, 10000)}
            start, end = ranges[split]
            if split == "test" and ranges["val"][0] <= total < end:
                warnings.warn(f"{spec!r}: LSPet test images 9001-10000 are not in {root} (kept aside "
                              f"as an unseen test set); using the validation images 8001-9000", stacklevel=3)
                start, end = ranges["val"]
            if total < start:
                raise ValueError(f"data spec {spec!r}: {root}/joints.mat holds {total} images, but the LSPet "
                                 f"{split} split is images {start}-{end} (train 1-8000, val 8001-9000 of the "
                                 f"10000-image release)")
            end = min(end, total)
            ds = LSP(root, image_size, start, end, cache=cache, **bad)
            described = f"LSPet images {start}-{end}"
    else:
        ann, images = _annotation_file(spec, kind, args, split)
        ds = (MPII if kind == "mpii" else COCOKeypoints)(ann, images, image_size, cache=cache, **bad)
        described = f"{kind.upper()} {ann.name}"
    if length is not None:
        if int(length) < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        ds = ds.select(range(min(int(length), len(ds))))
    ds.split_description = described
    return ds


def _real_root(spec: str, kind: str, args: list[str]):
    """The folder (LSP, LSPet) or file (MPII, COCO) a real spec names, or None for the default."""
    from pathlib import Path

    if len(args) > 1:
        raise ValueError(f"bad data spec {spec!r}: expected {kind}[:PATH] (one path, no extra ':')")
    arg = Path(args[0]).expanduser() if args and args[0] else None
    if arg is None and kind in ("lspet", "lsp"):
        return default_data_root() / kind
    return arg


def _annotation_file(spec: str, kind: str, args: list[str], split: str):
    """(annotation file, image folder) of an MPII or COCO spec's ``split``."""
    arg, data = _real_root(spec, kind, args), default_data_root()
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
    return ann, images


def validation_sets(spec: str, image_size: int = 32) -> list:
    """Every real dataset ``spec`` names, whole (all images of an LSP/LSPet joints.mat; the train
    and test annotation files of MPII/COCO), each built with every image opened and decoded and
    its bad samples set aside in ``skipped_reasons`` (a dataset whose every sample is bad gives
    a ``PoseDataError`` with ``reasons`` in the list instead). Synthetic parts are left out:
    they are generated, with nothing to check. For ``cpm-lab validate``."""
    import warnings

    from .coco import COCOKeypoints
    from .crop import PoseDataError
    from .lsp import LSP
    from .mpii import MPII

    out, seen = [], set()
    for part in split_spec(spec):
        kind, args = parse_spec(part)
        if kind == "synthetic":
            make_dataset(part, image_size, length=1)  # still refuse a bad difficulty
            continue
        if kind not in REAL_KINDS:
            raise ValueError(f"bad data spec {part!r}: unknown dataset {kind!r}; expected {SPEC_HELP}")
        if kind in ("lspet", "lsp"):
            root = _real_root(part, kind, args)
            _lsp_total(root, kind)
            builders = [(str(root), lambda root=root: LSP(root, image_size, **_CHECK_ALL))]
        else:
            loader = MPII if kind == "mpii" else COCOKeypoints
            files = [_annotation_file(part, kind, args, split) for split in ("train", "test")]
            builders = [(str(a), lambda a=a, i=i: loader(a, i, image_size, **_CHECK_ALL)) for a, i in files]
        for key, build in builders:
            if key in seen:
                continue
            seen.add(key)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the caller lists the skipped samples itself
                try:
                    out.append(build())
                except PoseDataError as exc:
                    if not hasattr(exc, "reasons"):
                        raise
                    out.append(exc)
    return out


_CHECK_ALL = dict(on_error="skip", validate_images=True, metadata=False)


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
