"""Shared test fixtures: the location of the real datasets beside the project, one torch thread, and the
run folders and defective datasets of the fault tests (helpers in ``_faults.py``)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from _faults import TRAIN, bad_sample_at_step, corrupt, write_mpii

from cpm_lab.cli import main

ROOT = Path(__file__).resolve().parents[1]


def shared_datasets() -> Path | None:
    """``$CPM_LAB_DATA`` or ``../shared/datasets`` next to the repo, when present."""
    env = os.environ.get("CPM_LAB_DATA")
    for cand in ([Path(env)] if env else []) + [ROOT.parent / "shared" / "datasets"]:
        if cand.is_dir():
            return cand
    return None


@pytest.fixture(scope="session")
def datasets_root() -> Path:
    root = shared_datasets()
    if root is None:
        pytest.skip("real datasets not found: set CPM_LAB_DATA or place them at ../shared/datasets")
    return root


@pytest.fixture
def restore_threads():
    """Put torch's thread count back after a test whose commands set it (``--threads``)."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture
def one_thread():
    """Tiny models on a shared CPU run far faster on one thread (no OpenMP barrier stalls)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ------------------------------------------------------------------------------------------------ fault tests
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 2-step run folder (copied by ``run_copy``)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main([*TRAIN, "--steps", "2", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished_run, out)
    return out


@pytest.fixture
def mpii_bad_image(tmp_path):
    """An MPII file of 12 people whose image read at step 3 is corrupt (not a held-out one)."""
    ann = write_mpii(tmp_path / "mpii")
    bad = bad_sample_at_step(12, step=3)
    corrupt(ann.parent / f"{bad:09d}.jpg")
    return ann, bad
