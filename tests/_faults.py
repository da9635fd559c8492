"""Helpers of the fault tests (``test_faults.py``, ``test_faults_inputs.py``): running the CLI in
this process, one-line error checks, and small real-data folders with chosen defects."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image

from cpm_lab.cli import main
from cpm_lab.train import read_checkpoint
from cpm_lab.train.distributed import ResumableSampler

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "cpm_lab.cli"]
#: A tiny, fast run: 32 px synthetic images, one thread, no bar, small batches and evaluations.
FAST = ["--threads", "1", "--no-progress", "--batch-size", "2", "--eval-size", "4", "--model", "input_size=32"]
TRAIN = ["train", "--data", "synthetic:easy", *FAST]

def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    """The single non-empty stderr line of a failed command (warnings excluded)."""
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("cpm-lab: warning:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def assert_fails(code, err, status, *needles) -> str:
    assert code == status, err
    line = one_line(err)
    for needle in needles:
        assert needle in line, line
    return line


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def weights(path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


# ------------------------------------------------------------------------------------------------
# Small real-data folders
# ------------------------------------------------------------------------------------------------
#: A standing figure in a 90 x 110 image, LSP-14 order (0-based x, y pixels).
TEMPLATE = np.array([[35, 100], [37, 80], [38, 60], [52, 60], [53, 80], [55, 100], [25, 60], [28, 45],
                     [35, 30], [55, 30], [62, 45], [65, 60], [45, 25], [45, 10]], dtype=float)


def noise_jpeg(path: Path, seed: int) -> None:
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (110, 90, 3), dtype=np.uint8)).save(path)


def write_mpii(folder: Path, n: int = 12, edit=None) -> Path:
    """An MPII JSON of ``n`` people (each its own 90 x 110 JPEG); ``edit(i, record)`` may change one."""
    folder.mkdir(parents=True, exist_ok=True)
    t = TEMPLATE
    mpii = np.concatenate([t[:6], [(t[2] + t[3]) / 2, (t[8] + t[9]) / 2, t[12], t[13]], t[6:12]])
    records = []
    for i in range(n):
        name = f"{i:09d}.jpg"
        noise_jpeg(folder / name, i)
        joints = mpii + np.random.default_rng(i).normal(0, 2, mpii.shape)
        rec = {"image": name, "joints": (joints + 1).tolist(), "joints_vis": [1] * 16,
               "center": [46.0, 56.0], "scale": 0.6}
        if edit is not None:
            edit(i, rec)
        records.append(rec)
    path = folder / "ann.json"
    path.write_text(json.dumps(records))
    return path


def write_lspet(root: Path, n: int = 5, edit=None) -> Path:
    """An LSPet folder of ``n`` images; ``edit(xy)`` may change the (n, 14, 2) 0-based joints."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    xy = TEMPLATE + np.zeros((n, 14, 2))
    if edit is not None:
        edit(xy)
    j = np.zeros((14, 3, n))
    j[:, :2] = (xy + 1).transpose(1, 2, 0)
    j[:, 2] = 1
    scipy.io.savemat(root / "joints.mat", {"joints": j})
    for i in range(n):
        noise_jpeg(root / "images" / f"im{i + 1:05d}.jpg", i)
    return root


def corrupt(path: Path) -> None:
    path.write_bytes(b"\xff\xd8\xff garbage, not a jpeg")


def bad_sample_at_step(n: int, step: int, batch: int = 2, avoid: int = 4) -> int:
    """The index of a sample the trainer first reads at ``step`` (seed 0 order), not among the
    first ``avoid`` (the held-out items the run evaluates)."""
    sampler = ResumableSampler(range(n), 1, 0, seed=0)
    sampler.set_position(0, 0)
    order = list(sampler)
    candidates = [i for i in order[(step - 1) * batch: step * batch] if i >= avoid]
    assert candidates, order
    return candidates[0]


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` seconds pass."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")

