"""Files the project ships in its top-level ``data/`` folder (trained weights, ablation results),
and the ``runs/`` folder where every notebook and command writes by default.

They live beside the package in a source checkout (``pip install -e .``, which ``make`` does).
"""
from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

#: The repository root of a source checkout (the folder holding ``data/``, ``notebooks/``, ``runs/``).
ROOT = DATA_DIR.parent

#: The tiny CPM trained on synthetic data (see data/README.md for the command that made it).
TINY_WEIGHTS = "weights/cpm_tiny_synthetic.pt"

#: A small CPM trained on real people (LSPet 1-9000 + LSP 1-1000) on a CPU; see data/README.md.
LSP_WEIGHTS = "weights/cpm_tiny_lsp.pt"

#: Models shipped in ``data/``, by the name ``inference.load_model`` accepts.
SHIPPED_MODELS: dict[str, str] = {"tiny-synthetic": TINY_WEIGHTS, "tiny-lsp": LSP_WEIGHTS}

#: The model ``cpm-lab predict`` and the photo notebook use by default.
DEFAULT_PHOTO_MODEL = "tiny-lsp"


def asset(name: str) -> Path:
    """Path of a shipped asset, e.g. ``asset("weights/cpm_tiny_synthetic.pt")``.

    Raises FileNotFoundError with the expected location when it is missing (e.g. a non-editable
    install, which does not carry ``data/``)."""
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"shipped asset {name!r} not found at {path}; cpm_lab's data/ folder "
                                "comes with a source checkout (make install / pip install -e .)")
    return path


def runs_dir(name: str = "") -> Path:
    """``ROOT/runs/name``: the one untracked output folder of the repository (not created here)."""
    return ROOT / "runs" / name if name else ROOT / "runs"
