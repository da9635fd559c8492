"""Atomic file writes: every file cpm_lab writes (checkpoints, tables, figures, manifests) appears
whole or not at all.

Each writer goes to a temporary file in the destination folder, is flushed to disk, given normal
permissions (``mkstemp`` makes owner-only files) and moved onto the destination with
``os.replace``; a failure removes the temporary file and leaves any previous file untouched.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Call ``write(tmp_path)``, then move the temporary file onto ``path`` (same folder, created
    if needed); returns ``path``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> str:
    """Atomically write ``text`` (UTF-8)."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return atomic_write(path, write)


def _json_default(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def write_json(path: str | os.PathLike, obj) -> str:
    """Atomically write ``obj`` as indented JSON (numpy/torch scalars as numbers)."""
    return write_text(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def write_csv(path: str | os.PathLike, frame, float_format: str | None = "%.6g") -> str:
    """Atomically write a DataFrame as CSV without its index."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False, float_format=float_format))


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> str:
    """Atomically save a matplotlib figure as PNG and close it."""
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    plt.close(fig)
    return os.fspath(path)
