"""Files the project ships in its top-level ``data/`` folder (trained weights, ablation results).

They live beside the package in a source checkout (``pip install -e .``, which ``make`` does).
"""
from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[1] / "data"

#: The tiny CPM trained on synthetic data (see data/README.md for the command that made it).
TINY_WEIGHTS = "weights/cpm_tiny_synthetic.pt"


def asset(name: str) -> Path:
    """Path of a shipped asset, e.g. ``asset("weights/cpm_tiny_synthetic.pt")``.

    Raises FileNotFoundError with the expected location when it is missing (e.g. a non-editable
    install, which does not carry ``data/``)."""
    path = DATA_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"shipped asset {name!r} not found at {path}; cpm_lab's data/ folder "
                                "comes with a source checkout (make install / pip install -e .)")
    return path
