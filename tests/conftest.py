"""Shared test fixtures: the location of the real datasets beside the project, and one torch thread."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

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
def one_thread():
    """Tiny models on a shared CPU run far faster on one thread (no OpenMP barrier stalls)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
