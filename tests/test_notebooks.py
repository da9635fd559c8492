"""Every tutorial notebook runs top to bottom from a fresh kernel in its quick mode, tells a
story its numbers back, and draws text a reader can read.

The first cell tagged ``parameters`` holds each notebook's knobs; like papermill, the runner
inserts a cell right after it that forces ``QUICK = True`` and installs the font audit
(``tests/_figure_audit.py``), and a last cell that reports the notebook's claims
(``cpm_lab.claims``) and the smallest text of every figure it rendered. Each notebook must
record the claims listed in ``STORIES`` and every claim must hold.

Executed notebooks (with outputs) are written to ``test-artifacts/notebooks/``, and the image
output of each notebook's cell tagged ``key-figure`` to ``test-artifacts/figures/``; the stored
notebooks stay output-free.
"""
from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ARTIFACTS = ROOT / "test-artifacts" / "notebooks"
FIGURES = ROOT / "test-artifacts" / "figures"
OVERRIDES = (f"QUICK = True  # injected by tests/test_notebooks.py\n"
             f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
             "import _figure_audit; _figure_audit.install()\n")
REPORT = ("import json, _figure_audit; from cpm_lab.claims import recorded\n"
          "print('CPM_LAB_REPORT' + json.dumps(dict(claims=recorded(), fonts=_figure_audit.SMALLEST)))\n")
MIN_PT = 8.0

#: The claims each notebook's prose makes (keys of ``cpm_lab.claims.claim`` calls in it).
STORIES = {
    "00_quickstart": ("last_stage_beats_stage1", "fewer_side_swaps", "example_wrist_fixed"),
    "01_pose_machines": ("in_sample_too_good", "heldout_like_test", "example_stage1_both_wrists",
                         "example_stage1_peak_elsewhere", "stage1_wrong_side_often", "stage1_small_probabilities",
                         "stage1_legs_mirror", "stage1_wrist_vs_elbow", "stage1_head_clean", "context_elbow_peaks",
                         "context_elbow_ring", "context_majority", "context_from_all_parts",
                         "example_other_wrist_fades", "example_cross_right_side", "example_cross_reaches_wrist_last",
                         "swaps_fall", "swaps_level_off", "wrist_swaps_no_change", "mirror_boxes_lit", "pck02_rises",
                         "pck05_rises", "pck02_gain_at_stage2", "alpha01_under_half_cell", "pck01_no_change",
                         "wrists_below_mean", "wrists_no_change", "parts_2_to_3_within_noise",
                         "explorer_scales_to_peak"),
    "02_architecture_and_receptive_fields": ("image_resolution_dominates", "paper_stage2_covers_image",
                                             "tiny_stage1_local_stage2_whole", "effective_smaller_than_analytic",
                                             "effective_grows_then_levels"),
    "03_training_cpm": ("stage_losses_fall", "later_stages_below_stage1", "gradient_norms_comparable",
                        "resume_continues", "heldout_pck_climbs", "stage2_beats_stage1", "first_step_largest"),
    "04_belief_explorer": ("other_wrist_fades", "example_both_then_one", "example_estimate_moves_to_right_arm",
                           "hidden_pulled_closer", "hidden_not_recovered"),
    "05_intermediate_supervision": ("live_stage1_orders_below", "live_last_stage_alike", "live_early_losses_far_above",
                                    "final_loss_only_early_stages_near_zero", "toy_sweep_gap",
                                    "stage2_sees_whole_input"),
    "07_analysis_lab": ("syn_swaps_fall", "syn_good_rises", "roundtrip_parabola_exact", "roundtrip_argmax_quantised",
                        "stage1_ignores_centre", "uniform_collapses", "displaced_hurts", "follows_the_centre",
                        "stage1_cannot_choose", "early_exit_tiny_synthetic", "lsp_misses_fall", "lsp_swaps_not_fewer",
                        "lsp_argmax_costs", "lsp_soft_argmax_lowest", "lsp_dark_vs_parabola", "official_8432",
                        "observer_centric_higher", "early_exit_tiny_lsp", "sigma_narrow_worst",
                        "sigma_best_middle"),
    "06_real_data": ("final_stage_beats_baseline", "stage1_sides_above_chance", "fewer_side_swaps",
                     "wrist_wrong_side_falls", "hidden_wrist_recovered", "hidden_wrist_worse_than_visible"),
}
#: Notebooks whose claims need the real datasets (../shared/datasets): without them the
#: notebook skips those cells, so only the claims it did record must hold.
NEEDS_DATA = {"06_real_data", "07_analysis_lab"}


def _have_real_data() -> bool:
    from cpm_lab.data.specs import default_data_root

    root = default_data_root()
    return (root / "lspet" / "joints.mat").is_file() and (root / "lsp" / "joints.mat").is_file()


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
    nb.cells.append(nbformat.v4.new_code_cell(REPORT, metadata={"tags": ["injected-report"]}))
    stray = path.parent / "runs"      # outputs belong in runs/ at the repository root (assets.runs_dir)
    had_stray = stray.exists()
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, ARTIFACTS / path.name)
        _save_key_figure(nb, path.stem)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
    assert had_stray or not stray.exists(), f"{path.name} wrote {stray}; use cpm_lab.assets.runs_dir()"
    report = next(json.loads(o["text"].split("CPM_LAB_REPORT", 1)[1]) for o in nb.cells[-1].outputs
                  if o.get("name") == "stdout" and "CPM_LAB_REPORT" in o.get("text", ""))
    claims = {c["key"]: c for c in report["claims"]}
    missing = set(STORIES.get(path.stem, ())) - set(claims)
    if path.stem in NEEDS_DATA and not _have_real_data():
        missing = set()
    assert not missing, f"{path.name} no longer checks the claims {sorted(missing)}"
    broken = [f"{c['text']} ({c['evidence']})" for c in claims.values() if not c["holds"]]
    assert not broken, f"{path.name}: its prose says what its numbers do not: {broken}"
    small = [f for f in report["fonts"] if f["displayed_pt"] < MIN_PT]
    assert not small, (f"{path.name}: text under {MIN_PT} pt as displayed in "
                       f"{len(small)} figure(s), e.g. {small[:3]}")


def _save_key_figure(nb, stem: str) -> None:
    """Write the last image output of the cell tagged ``key-figure`` to test-artifacts/figures/."""
    for cell in nb.cells:
        if "key-figure" in cell.get("metadata", {}).get("tags", []):
            images = [o["data"]["image/png"] for o in cell.get("outputs", []) if "image/png" in o.get("data", {})]
            if images:
                FIGURES.mkdir(parents=True, exist_ok=True)
                (FIGURES / f"{stem}.png").write_bytes(base64.b64decode(images[-1]))


def test_markdown_has_no_accidental_email_links():
    """JupyterLab's markdown turns "PCK@0.2" into a mailto: link; "PCK\\@0.2" renders as text
    (the browser test checks the rendering)."""
    for path in NOTEBOOKS:
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                bad = re.findall(r"\w+(?<!\\)@\w[\w.]*", cell.source)
                assert not bad, f"{path.name}: {bad[:3]} render as e-mail links; write PCK\\@0.2"


def test_every_notebook_names_a_key_figure_and_a_story():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "key-figure" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{path.name}: tag exactly one cell 'key-figure' (has {len(tagged)})"
        for key in STORIES.get(path.stem, ()):
            assert any(f'"{key}"' in c.source for c in nb.cells if c.cell_type == "code"), \
                f"{path.name} does not check its claim {key!r}"
    assert set(STORIES) == {p.stem for p in NOTEBOOKS}
