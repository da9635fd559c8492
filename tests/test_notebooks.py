"""Every tutorial notebook runs top to bottom from a fresh kernel in its quick mode.

The first cell tagged ``parameters`` holds each notebook's knobs; like papermill, the runner
inserts a cell right after it that forces ``QUICK = True``. Executed notebooks (with outputs)
are written to ``test-artifacts/notebooks/`` for inspection; the stored ones stay output-free.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
OVERRIDES = "QUICK = True  # injected by tests/test_notebooks.py\n"


def test_notebooks_exist():
    assert NOTEBOOKS, "no tutorial notebooks found in notebooks/"


def test_notebooks_are_stored_clean_with_parameters_cell():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{path.name} has outputs"
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert tagged, f"{path.name} has no cell tagged 'parameters'"
        assert "QUICK" in tagged[0].source, f"{path.name}: parameters cell has no QUICK knob"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    idx = next(i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    nb.cells.insert(idx + 1, nbformat.v4.new_code_cell(OVERRIDES, metadata={"tags": ["injected-parameters"]}))
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / path.name)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
