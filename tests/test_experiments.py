"""Ablation sweep (cpm_lab.experiments): planning, output structure, resume, CLI errors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from cpm_lab import cli
from cpm_lab import experiments as ex
from cpm_lab.experiments import (
    GRADIENT_COLUMNS,
    HISTOGRAM_COLUMNS,
    PCK_COLUMNS,
    RUN_COLUMNS,
    THRESHOLDS,
    gradient_summary,
    load_results,
    plan_runs,
    run_ablation,
    summarize,
)

# A sweep that trains in seconds: 3 runs (end_to_end with 2 stages is shared by both experiments).
TINY = dict(preset="tiny", data="synthetic:easy", strategies=("end_to_end", "no_intermediate"), stages=(1, 2),
            seeds=(0,), steps=4, batch_size=2, strategy_stages=2, eval_size=4, device="cpu", jobs=1,
            progress=False, grad_every=1, checkpoint_every=2, threads=1)


pytestmark = pytest.mark.usefixtures("restore_threads")  # conftest: commands set torch's thread count


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation")
    return out, run_ablation(out, figures=True, **TINY)


# ------------------------------------------------------------------------------------------------ planning
def test_default_plan_shares_the_end_to_end_run_and_orders_by_seed():
    runs = plan_runs()
    ids = [r.run_id for r in runs]
    assert len(runs) == 3 * (4 + 5)  # 4 strategies + stages 1..6 (3 is shared) per seed
    assert len(set(ids)) == len(ids)
    shared = [r for r in runs if r.experiments == ("strategies", "stages")]
    assert [(r.strategy, r.num_stages) for r in shared] == [("end_to_end", 3)] * 3
    assert "stages-end_to_end-s3-seed0" not in ids and "strategies-end_to_end-s3-seed0" in ids
    assert [r.seed for r in runs] == sorted(r.seed for r in runs)
    assert {r.steps for r in runs} == {runs[0].steps}  # same step budget for every run
    assert {r.num_stages for r in runs if "stages" in r.experiments} == {1, 2, 3, 4, 5, 6}


def test_normalisation_plan_runs_each_setting_with_and_without_intermediate_supervision():
    runs = plan_runs("ablation", experiments=("strategies", "normalisation"), seeds=(0, 1), strategy_stages=6,
                     model_overrides={"input_size": 64}, train_overrides={"lr": 5e-4})
    ids = [r.run_id for r in runs]
    assert len(ids) == len(set(ids)) == 2 * (4 + 3 * 2)  # 4 strategies (2 shared) + 3 settings x 2
    by_id = {r.run_id: r for r in runs}
    shared = by_id["strategies-end_to_end-s6-seed0"]
    assert shared.experiments == ("strategies", "normalisation") and shared.setting == "preset"
    bn_adam = by_id["normalisation-batchnorm+adam-no_intermediate-s6-seed1"]
    assert dict(bn_adam.model_overrides) == {"input_size": 64, "batch_norm": True}
    assert dict(bn_adam.train_overrides)["optimizer"] == "adam" and dict(bn_adam.train_overrides)["lr"] == 1e-3
    assert dict(by_id["normalisation-batchnorm-end_to_end-s6-seed0"].train_overrides) == {"lr": 5e-4}
    # the label is not part of the identity; the overrides are
    assert "setting" not in shared.settings() and bn_adam.settings() != by_id[
        "normalisation-adam-no_intermediate-s6-seed1"].settings()
    # the default sweep of a preset: its own stages for the strategies, 5 seeds for "ablation"
    default = ex.ablation_plan("ablation")
    assert {r.num_stages for r in default if "strategies" in r.experiments} == {6}
    assert {r.seed for r in default} == {0, 1, 2, 3, 4} and not [r for r in default if r.setting != "preset"]


def test_named_budgets_and_the_default_preset():
    # the default sweep is the ablation preset's 15-minute budget; "full" differs only in length
    default, full = ex.ablation_plan(), ex.ablation_plan(budget="full")
    assert {r.preset for r in default} == {"ablation"} and ex.DEFAULT_PRESET == "ablation"
    assert {r.steps for r in default} == {500} and {r.steps for r in full} == {3000}
    assert [r.run_id for r in default] == [r.run_id for r in full]
    quick = ex.ablation_plan(budget="quick")
    assert {r.seed for r in quick} == {0} and {r.steps for r in quick} == {60}
    assert {r.num_stages for r in quick if "stages" in r.experiments} == {1, 2, 3}
    # a preset without a full budget uses its default; explicit arguments win over any budget
    assert ex.budget_settings("tiny", "full") == ex.budget_settings("tiny", "default")
    assert {r.steps for r in ex.ablation_plan(budget="full", steps=40, seeds=(3,))} == {40}
    with pytest.raises(ValueError, match="unknown budget 'huge'; choose one of quick, default, full"):
        ex.ablation_plan(budget="huge")


def test_normalisation_settings_can_be_chosen_and_always_keep_their_baseline():
    runs = ex.ablation_plan(experiments=("normalisation",), normalisation_settings=("adam",), seeds=(0,))
    assert sorted({r.setting for r in runs}) == ["adam", "preset"] and len(runs) == 4
    with pytest.raises(ValueError, match="unknown normalisation setting 'layernorm'"):
        ex.ablation_plan(experiments=("normalisation",), normalisation_settings=("layernorm",))


@pytest.mark.parametrize("kwargs, needle", [
    (dict(strategies=("end_to_end", "nope")), "unknown strategy 'nope'"),
    (dict(stages=(0, 1)), "stages must be integers >= 1"),
    (dict(seeds=()), "seeds must not be empty"),
    (dict(seeds=(0, 0)), "duplicates"),
    (dict(steps=2), "too few"),
    (dict(steps=0), "steps must be a positive integer"),
    (dict(experiments=("fig7",)), "experiments must be"),
    (dict(preset="huge"), "unknown preset"),
])
def test_plan_rejects_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("(", r"\(")):
        plan_runs(**kwargs)


# ------------------------------------------------------------------------------------------------ outputs
def test_sweep_writes_tidy_tables_one_row_per_run(sweep):
    out, res = sweep
    runs = res.runs
    assert list(runs.columns) == RUN_COLUMNS
    assert sorted(runs["run_id"]) == ["stages-end_to_end-s1-seed0", "strategies-end_to_end-s2-seed0",
                                      "strategies-no_intermediate-s2-seed0"]
    assert (runs["status"] == "done").all() and runs["trained_now"].all()
    assert (runs["preset"] == "tiny").all() and runs["batch_norm"].all()  # the tiny preset has BatchNorm
    assert (runs["wall_s"] > 0).all() and runs["pck@0.2"].between(0, 1).all()
    assert runs.set_index("run_id").loc["strategies-end_to_end-s2-seed0", "experiments"] == "strategies;stages"

    pck = res.pck
    assert list(pck.columns) == PCK_COLUMNS
    assert set(pck["experiment"]) == {"strategies", "stages"}
    strat = pck[pck["experiment"] == "strategies"]
    assert set(strat["strategy"]) == {"end_to_end", "no_intermediate"} and set(strat["num_stages"]) == {2}
    stages = pck[pck["experiment"] == "stages"]
    assert set(stages["strategy"]) == {"end_to_end"} and set(stages["num_stages"]) == {1, 2}
    for (_, t), g in pck.groupby(["experiment", "num_stages"]):
        assert sorted(g["stage"].unique()) == list(range(1, t + 1))  # every stage of every model
    p = pck[pck["metric"] == "pck"]
    assert sorted(p["threshold"].unique()) == list(THRESHOLDS)
    assert "mean" in set(p["part"]) and p["part"].nunique() == 15  # 14 joints + pooled
    assert p["value"].between(0, 1).all()
    # The shared run's rows are identical under both experiment names.
    a = pck[(pck["experiment"] == "strategies") & (pck["strategy"] == "end_to_end")].drop(columns="experiment")
    b = pck[(pck["experiment"] == "stages") & (pck["num_stages"] == 2)].drop(columns="experiment")
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))

    g = res.gradients
    assert list(g.columns) == GRADIENT_COLUMNS
    assert sorted(g["step"].unique()) == [1, 2, 3, 4]  # grad_every=1
    e2e = g[(g["strategy"] == "end_to_end") & (g["num_stages"] == 2)]
    assert set(e2e.loc[e2e["layer"].str.fullmatch(r"stage\d+"), "layer"]) == {"stage1", "stage2"}
    assert (e2e["norm"] >= 0).all() and e2e["depth"].notna().sum() > 0
    h = res.histograms
    assert list(h.columns) == HISTOGRAM_COLUMNS and len(h) and (h["count"] > 0).all()
    # Each (run, step, layer) histogram counts every weight of that layer exactly once.
    totals = h.groupby(["strategy", "num_stages", "step", "layer"])["count"].sum()
    assert totals.groupby(["strategy", "num_stages", "layer"]).nunique().eq(1).all()

    s = res.summary
    assert set(s.columns) == {"experiment", "setting", "strategy", "num_stages", "stage", "threshold", "mean", "std",
                              "n"}
    assert set(s["setting"]) == set(pck["setting"]) == set(g["setting"]) == {"preset"}
    assert (s["n"] == 1).all() and s["std"].isna().all()  # one seed: no spread
    assert len(res.final_stage(0.2)) == 4  # strategies: 2 strategies x s2; stages: s1, s2
    for name in ("pck.csv", "gradients.csv", "histograms.csv", "runs.csv", "summary.csv", "summary.md",
                 "MANIFEST.json", "fig6b_strategies.png", "fig6c_stages.png", "fig5_gradient_histograms.png",
                 "gradient_norms.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [n for n in os.listdir(out) if n.startswith(".tmp-")]  # atomic writes leave nothing behind
    for rid in runs["run_id"]:
        files = set(os.listdir(out / "runs" / rid))
        assert {"config.json", "result.json", "pck.csv", "gradients.csv", "histograms.csv", "history.csv",
                "checkpoint.pt"} <= files
        assert not {"partial.json", "gradients.partial.csv"} & files


def test_manifest_records_command_versions_and_wall_time(sweep):
    out, res = sweep
    m = json.loads((out / "MANIFEST.json").read_text())
    assert m["runs_total"] == 3 and m["runs_trained_now"] == 3 and m["wall_s"] > 0
    assert m["settings"]["steps"] == 4 and m["settings"]["seeds"] == [0] and m["settings"]["stages"] == [1, 2]
    assert {"python", "torch", "numpy", "cpm_lab", "git"} <= set(m["versions"])
    assert m["versions"]["torch"] == torch.__version__
    assert "cpu_count" in m["machine"] and m["command"].startswith("cpm_lab.experiments.run_ablation(")
    md = (out / "summary.md").read_text()
    assert "Training strategies" in md and "Number of stages" in md and "Gradient norms" in md


def test_load_results_reads_back_the_same_tables(sweep):
    out, res = sweep
    back = load_results(out)
    pd.testing.assert_frame_equal(back.pck.reset_index(drop=True), res.pck.reset_index(drop=True),
                                  check_dtype=False, atol=1e-5)
    assert len(back.runs) == 3 and set(back.figures) >= {"fig6b_strategies", "fig6c_stages"}
    with pytest.raises(FileNotFoundError, match="no ablation results"):
        load_results(out / "nowhere")


# ------------------------------------------------------------------------------------------------ resume
def test_finished_runs_are_never_trained_again(sweep, monkeypatch):
    out, res = sweep
    calls = []
    real = ex.train_run

    def counting(spec, run_dir, **kw):
        calls.append(spec.run_id)
        return real(spec, run_dir, **kw)

    monkeypatch.setattr(ex.runner, "train_run", counting)
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    again = run_ablation(out, figures=False, **TINY)
    assert calls == []
    assert not again.runs["trained_now"].any()
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")} == mtimes
    pd.testing.assert_frame_equal(again.pck, res.pck)

    # A sweep that asks for other settings in the same folder stops instead of mixing results.
    with pytest.raises(ValueError, match="different settings.*steps=4"):
        run_ablation(out, figures=False, **{**TINY, "steps": 6})
    assert calls == []


def test_only_unfinished_runs_are_trained(tmp_path, monkeypatch):
    kw = {**TINY, "experiments": ("stages",), "stages": (1,), "seeds": (0, 1)}
    run_ablation(tmp_path, figures=False, **kw)
    os.unlink(tmp_path / "runs" / "stages-end_to_end-s1-seed1" / "result.json")  # as if killed before the end
    calls = []
    real = ex.train_run
    monkeypatch.setattr(ex.runner, "train_run", lambda spec, d, **k: calls.append(spec.run_id) or real(spec, d, **k))
    res = run_ablation(tmp_path, figures=False, **kw)
    assert calls == ["stages-end_to_end-s1-seed1"]
    assert res.runs.set_index("run_id")["trained_now"].to_dict() == {
        "stages-end_to_end-s1-seed0": False, "stages-end_to_end-s1-seed1": True}


def test_interrupted_run_continues_from_its_checkpoint(tmp_path, monkeypatch):
    from cpm_lab.train import Trainer

    torch.set_num_threads(1)
    spec = plan_runs(**{k: v for k, v in TINY.items() if k not in ("jobs", "progress", "threads")},
                     experiments=("stages",))[0]
    straight = ex.train_run(spec, str(tmp_path / "straight"))

    real_step = Trainer._train_step

    def crash_at_3(self, step, batch):
        if step == 3:
            raise KeyboardInterrupt
        return real_step(self, step, batch)

    monkeypatch.setattr(Trainer, "_train_step", crash_at_3)
    with pytest.raises(KeyboardInterrupt):
        ex.train_run(spec, str(tmp_path / "resumed"))
    assert not (tmp_path / "resumed" / "result.json").exists()
    monkeypatch.setattr(Trainer, "_train_step", real_step)
    resumed = ex.train_run(spec, str(tmp_path / "resumed"))
    assert resumed["resumed_from_step"] == 2 and straight["resumed_from_step"] == 0
    g = pd.read_csv(tmp_path / "resumed" / "gradients.csv")
    assert sorted(g["step"].unique()) == [1, 2, 3, 4] and not g.duplicated(["step", "layer"]).any()
    a = pd.read_csv(tmp_path / "straight" / "pck.csv")
    b = pd.read_csv(tmp_path / "resumed" / "pck.csv")
    pd.testing.assert_frame_equal(a, b)  # the resumed run ends exactly where the straight one did
    ga = pd.read_csv(tmp_path / "straight" / "gradients.csv")
    np.testing.assert_allclose(g.sort_values(["step", "layer"])["norm"], ga.sort_values(["step", "layer"])["norm"],
                               rtol=1e-5)


# ------------------------------------------------------------------------------------------------ summaries
def test_summarize_gives_mean_and_sample_std_over_seeds():
    rows = [dict(experiment="stages", strategy="end_to_end", num_stages=1, seed=s, stage=1, part="mean",
                 metric="pck", normalize="torso", threshold=0.2, value=v, count=10)
            for s, v in enumerate([0.2, 0.4, 0.6])]
    s = summarize(pd.DataFrame(rows))
    assert len(s) == 1
    assert s["mean"].iloc[0] == pytest.approx(0.4) and s["std"].iloc[0] == pytest.approx(0.2)
    assert s["n"].iloc[0] == 3


def test_gradient_summary_ratio_is_with_over_without():
    rows = []
    for strat, scale in (("end_to_end", 10.0), ("no_intermediate", 0.1)):
        for seed in (0, 1):
            for step in (1, 2, 3):
                rows.append(dict(strategy=strat, num_stages=2, seed=seed, step=step, stage=1, layer="stage1.conv1",
                                 depth=1, main_path=True, norm=scale * step))
                rows.append(dict(strategy=strat, num_stages=2, seed=seed, step=step, stage=1, layer="stage1",
                                 depth=np.nan, main_path=np.nan, norm=1.0))
    gs = gradient_summary(pd.DataFrame(rows)).set_index("layer")
    assert gs.loc["stage1.conv1", "ratio"] == pytest.approx(100.0)
    assert gs.loc["stage1.conv1", "end_to_end"] == pytest.approx(10 * np.sqrt(6))  # geomean of 20, 30
    assert gs.loc["stage1", "ratio"] == pytest.approx(1.0)
    assert list(gs.index) == ["stage1", "stage1.conv1"]  # stage totals first


# ------------------------------------------------------------------------------------------------ CLI
@pytest.fixture
def ablate_cli():
    assert "ablate" in cli.COMMANDS
    return cli.main


def _run(main, capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, needle", [
    (["--seeds", "a,b"], "--seeds"),
    (["--stages", "3-1"], "--stages"),
    (["--stages", "0"], "stages must be integers >= 1"),
    (["--strategies", "end_to_end,bogus"], "unknown strategy 'bogus'"),
    (["--steps", "0"], "--steps"),
    (["--jobs", "many"], "--jobs"),
    (["--experiments", "fig7"], "--experiments"),
    (["--data", "imagenet"], "unknown dataset 'imagenet'"),
    (["--preset", "huge"], "--preset"),
    (["--lr", "-1"], "--lr"),
    (["--optimizer", "rmsprop"], "--optimizer"),
    (["--budget", "huge"], "--budget"),
    (["--settings", "adam,layernorm"], "unknown setting 'layernorm'"),
])
def test_cli_bad_arguments_give_one_line_and_nonzero_exit(ablate_cli, capsys, tmp_path, argv, needle):
    out = tmp_path / "never"
    code, stdout, err = _run(ablate_cli, capsys, "ablate", "--out", out, *argv)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert needle in lines[0], lines[0]
    assert not out.exists()  # nothing was created


def test_cli_runs_a_small_sweep(ablate_cli, capsys, tmp_path):
    code, stdout, err = _run(ablate_cli, capsys, "ablate", "--out", tmp_path, "--experiments", "stages",
                             "--stages", "1", "--seeds", "0", "--steps", 2, "--batch-size", 2, "--eval-size", 4,
                             "--data", "synthetic:easy", "--device", "cpu", "--jobs", 1, "--no-figures",
                             "--no-progress", "--threads", 1, "--budget", "full")
    assert code == 0, err
    assert "Number of stages" in stdout and "wrote" in stdout
    runs = pd.read_csv(tmp_path / "runs.csv")
    assert runs["run_id"].tolist() == ["stages-end_to_end-s1-seed0"] and runs["status"].tolist() == ["done"]
    # the default preset; explicit --steps win over the full budget's 3000
    assert runs["preset"].tolist() == ["ablation"] and runs["steps"].tolist() == [2]
    assert json.loads((tmp_path / "MANIFEST.json").read_text())["command"].startswith("cpm-lab ablate")


@pytest.mark.slow
def test_parallel_jobs_give_the_same_runs(tmp_path):
    kw = {**TINY, "experiments": ("stages",), "stages": (1, 2), "jobs": 2, "threads": 1}
    res = run_ablation(tmp_path, figures=False, **kw)
    assert (res.runs["status"] == "done").all() and len(res.runs) == 2
    assert set(res.pck["num_stages"]) == {1, 2}


def test_a_diverging_run_is_recorded_and_not_retried(tmp_path, monkeypatch):
    kw = {**TINY, "experiments": ("stages",), "stages": (1,), "train_overrides": {"lr": 1e30}}
    res = run_ablation(tmp_path, figures=False, **kw)
    row = res.runs.iloc[0]
    assert row["status"] == "diverged" and "non-finite" in row["error"]
    assert len(res.pck) == 0 and len(res.gradients) > 0  # gradients up to the blow-up are kept
    calls = []
    monkeypatch.setattr(ex.runner, "train_run", lambda *a, **k: calls.append(1))
    again = run_ablation(tmp_path, figures=False, **kw)
    assert calls == [] and again.runs["status"].tolist() == ["diverged"]


@pytest.mark.parametrize("edges", [None, np.logspace(-10, 1, 45)], ids=["default", "older-default"])
def test_histogram_bins_are_rebuilt_on_the_edges_they_were_counted_with(edges):
    """Stored histograms drop zero-count bins; the plot re-inserts them. A table counted with
    other edges (e.g. the older default, whose overflow bin starts at 10) must keep its own
    bins, the overflow bin above all: its count may not be drawn as if it were [10, 17.8)."""
    from cpm_lab.diagnostics import DEFAULT_BIN_EDGES
    from cpm_lab.viz.ablation import _bin_edges, _full_bins
    e = DEFAULT_BIN_EDGES if edges is None else edges
    left, right = np.concatenate([[0.0], e]), np.concatenate([e, [np.inf]])
    keep = [0, 5, 6, 20, len(left) - 1]                       # underflow, a few bins, overflow
    table = pd.DataFrame(dict(step=1, layer="stage1.conv1", bin_left=left[keep], bin_right=right[keep],
                              count=[3, 1, 2, 4, 7]))
    got = _bin_edges(table)
    full = _full_bins(table, got)
    assert full["count"].sum() == 17
    assert full.iloc[-1]["bin_right"] == np.inf and full.iloc[-1]["count"] == 7
    np.testing.assert_allclose(full.iloc[-1]["bin_left"], e[-1])
    if edges is None:
        np.testing.assert_allclose(got, DEFAULT_BIN_EDGES)   # the full regular grid
    nonzero = full[full["count"] > 0]
    np.testing.assert_allclose(nonzero["bin_left"], left[keep])
    np.testing.assert_allclose(nonzero["bin_right"], right[keep])


def _hand_made_result(e2e, others, ratios=(20.0, 1.0)):
    """An AblationResult with final-stage PCK@0.2 per seed for each strategy (3-stage models) and
    gradient norms whose first/last-layer ratios (with / without) are ``ratios`` in every seed
    (times 1.1 and 0.9 in alternate seeds, so the seeds are not identical)."""
    rows = []
    for strategy, values in {"end_to_end": e2e, **others}.items():
        for seed, v in enumerate(values):
            rows.append(dict(experiment="strategies", strategy=strategy, num_stages=3, seed=seed, stage=3, part="mean",
                             metric="pck", normalize="torso", threshold=0.2, value=v, count=100))
    pck = pd.DataFrame(rows, columns=PCK_COLUMNS)
    grads = []
    for strategy, with_is in (("end_to_end", True), ("no_intermediate", False)):
        for seed in range(len(e2e)):
            wobble = 1.1 if seed % 2 else 0.9
            for step in (2, 3):
                for layer, depth, r in (("stage1.conv1", 1, ratios[0]), ("stage3.conv5", 9, ratios[1])):
                    grads.append(dict(strategy=strategy, num_stages=3, seed=seed, step=step, stage=1, layer=layer,
                                      depth=depth, main_path=True, norm=1.0 if with_is else 1.0 / (r * wobble)))
    grads = pd.DataFrame(grads, columns=GRADIENT_COLUMNS)
    return ex.AblationResult(pck=pck, gradients=grads, histograms=pd.DataFrame(columns=HISTOGRAM_COLUMNS),
                             runs=pd.DataFrame(columns=RUN_COLUMNS), summary=ex.summarize(pck), out_dir="")


def test_normalisation_sweep_writes_a_setting_column_table_and_figure(tmp_path):
    kw = {**TINY, "preset": "ablation", "experiments": ("normalisation",), "seeds": (0, 1),
          "model_overrides": {"input_size": 64}}
    res = run_ablation(tmp_path, figures=True, **kw)
    runs = res.runs.set_index("run_id")
    assert len(runs) == 2 * 4 * 2 and (runs["status"] == "done").all()
    assert runs.loc["normalisation-batchnorm-end_to_end-s2-seed0", "batch_norm"] == True  # noqa: E712
    assert runs.loc["normalisation-end_to_end-s2-seed0", "batch_norm"] == False  # noqa: E712
    for table in (res.pck, res.gradients, res.histograms):
        assert set(table["setting"]) == {"preset", "batchnorm", "adam", "batchnorm+adam"}
    t = ex.normalisation_table(res)
    assert t["setting"].tolist() == ["preset", "batchnorm", "adam", "batchnorm+adam"] and (t["n"] == 2).all()
    assert t["optimizer"].tolist() == ["sgd", "sgd", "adam", "adam"]
    assert (tmp_path / "normalisation.png").stat().st_size > 0 and "normalisation" in res.figures
    manifest = json.loads((tmp_path / "MANIFEST.json").read_text())["settings"]
    assert manifest["experiments"] == ["normalisation"] and len(manifest["normalisation_settings"]) == 4
    back = load_results(tmp_path)
    pd.testing.assert_frame_equal(ex.normalisation_table(back), t, check_dtype=False, rtol=1e-3)  # CSV: 4 digits
    # the paper's figures draw the preset's own runs, not the BatchNorm / Adam ones
    from cpm_lab.viz.ablation import plot_supervision_gradients

    def drawn(gradients):
        fig = plot_supervision_gradients(gradients)
        data = [np.asarray(line.get_ydata(), dtype=float).round(6).tolist() for ax in fig.axes for line in ax.lines]
        plt.close(fig)
        return data
    assert drawn(res.gradients) == drawn(ex.of_setting(res.gradients, "preset"))


def _normalisation_result(benefits: dict[str, list[float]], ratios: dict[str, float]) -> ex.AblationResult:
    """Hand-made results of the normalisation experiment: final-stage PCK@0.2 0.6 without
    intermediate supervision and 0.6 + benefit with it, per seed; first-layer gradient norm
    1 with and 1 / ratio without (x 1.1 / 0.9 in alternate seeds)."""
    rows, grads = [], []
    for setting, values in benefits.items():
        for seed, b in enumerate(values):
            for strategy, v in (("end_to_end", 0.6 + b), ("no_intermediate", 0.6)):
                rows.append(dict(experiment="normalisation", setting=setting, strategy=strategy, num_stages=6,
                                 seed=seed, stage=6, part="mean", metric="pck", normalize="torso", threshold=0.2,
                                 value=v, count=100))
                wobble = 1.1 if seed % 2 else 0.9
                for layer, depth in (("stage1.conv1", 1), ("stage6.conv5", 30)):
                    hit = strategy == "no_intermediate" and layer == "stage1.conv1"
                    norm = 1 / (ratios[setting] * wobble) if hit else 1.0
                    grads.append(dict(setting=setting, strategy=strategy, num_stages=6, seed=seed, step=2, stage=1,
                                      layer=layer, depth=depth, main_path=True, norm=norm))
    pck = pd.DataFrame(rows, columns=PCK_COLUMNS)
    runs = pd.DataFrame([dict(run_id=f"normalisation-{s}", setting=s, preset="ablation", status="done",
                              batch_norm=s.startswith("batchnorm")) for s in benefits], columns=RUN_COLUMNS)
    return ex.AblationResult(pck=pck, gradients=pd.DataFrame(grads, columns=GRADIENT_COLUMNS),
                             histograms=pd.DataFrame(columns=HISTOGRAM_COLUMNS), runs=runs,
                             summary=ex.summarize(pck), out_dir="")


def test_normalisation_table_measures_the_benefit_and_its_shrinking():
    result = _normalisation_result({"preset": [0.10, 0.12, 0.09, 0.11, 0.10],
                                    "batchnorm": [0.01, -0.01, 0.02, 0.00, 0.01],
                                    "adam": [0.10, 0.11, 0.08, 0.12, 0.10]},
                                   {"preset": 1000.0, "batchnorm": 2.0, "adam": 50.0})
    t = ex.normalisation_table(result).set_index("setting")
    assert list(t.index) == ["preset", "batchnorm", "adam"]
    assert t.loc["preset", "batch_norm"] == False and t.loc["batchnorm", "batch_norm"] == True  # noqa: E712
    assert t.loc["preset", "optimizer"] == "sgd" and t.loc["adam", "optimizer"] == "adam"
    assert t.loc["preset", "benefit_verdict"] == "reproduced" and t.loc["batchnorm", "benefit_verdict"] != "reproduced"
    assert t.loc["preset", "benefit"] == pytest.approx(0.104) and t.loc["preset", "with"] == pytest.approx(0.704)
    # BatchNorm shrinks the benefit measurably; Adam does not (a tie is not established)
    assert t.loc["batchnorm", "shrink_verdict"] == "reproduced" and t.loc["batchnorm", "shrink"] == pytest.approx(0.098)
    assert t.loc["adam", "shrink_verdict"] == "not established" and np.isnan(t.loc["preset", "shrink"])
    assert t.loc["preset", "first_layer_ratio"] == pytest.approx(1000, rel=0.05)
    assert t.loc["batchnorm", "ratio_low"] < 2 < t.loc["batchnorm", "ratio_high"]
    md = ex.summary_markdown(result)
    assert "Normalisation and optimiser contrast" in md and "| batchnorm | yes | sgd |" in md
    # the explanation is stated only where the numbers show it
    findings = dict(zip(t.index, ex.normalisation_findings(ex.normalisation_table(result))))
    assert "BatchNorm re-scales" in findings["batchnorm"] and ", measurably less than" in findings["batchnorm"]
    assert "not measurably less" in findings["adam"] and "Adam divides" not in findings["adam"]
    assert findings["batchnorm"] in md and "## The paper's claims, checked" in md
    adam = _normalisation_result({"preset": [0.10, 0.12, 0.09, 0.11, 0.10], "adam": [0.01, 0.0, 0.02, -0.01, 0.0]},
                                 {"preset": 1000.0, "adam": 800.0})
    adam_says = ex.normalisation_findings(ex.normalisation_table(adam))[1]
    assert "the gradient still vanishes, yet the benefit shrinks" in adam_says
    assert "BatchNorm re-scales" not in adam_says
    # Fig. 5 is checked on the preset's own runs, whichever experiment made them; no Fig. 6 rows
    claims = ex.check_claims(result)
    assert set(claims["figure"]) == {"Fig. 5"}
    assert claims.iloc[0]["measured"].startswith("stage1.conv1 (depth 1): 975.2x smaller without")


def test_check_claims_on_hand_made_results():
    result = _hand_made_result([0.80, 0.82, 0.81, 0.79, 0.83],
                               {"no_intermediate": [0.70, 0.71, 0.69, 0.70, 0.72],
                                "stagewise": [0.50, 0.52, 0.51, 0.49, 0.53],
                                "stagewise_finetune": [0.79, 0.81, 0.80, 0.79, 0.82]})
    claims = ex.check_claims(result, close=0.75, far=10.0).set_index("claim")
    beats = claims.loc["end-to-end with intermediate supervision beats final-loss-only"]
    assert beats["holds"] and beats["verdict"] == "reproduced" and "(95% t interval, 5/5 seeds)" in beats["measured"]
    close = claims.loc["stage-wise + fine-tune comes close to end-to-end"]
    assert close["holds"] and "stage-wise gap +0.300" in close["measured"]
    assert claims.loc["stage-wise training alone is the worst", "verdict"] == "reproduced"
    early = claims.loc["the first layer's gradient is at least 10x smaller without intermediate supervision"]
    assert early["holds"] and "19.5x smaller" in early["measured"]  # geometric mean of 3 x 18x and 2 x 22x
    assert claims.loc["near the output, both runs get similar gradients (within 2x)", "holds"]
    assert set(claims["verdict"]) <= {"reproduced", "not established"}


def test_check_claims_calls_a_tie_not_established():
    result = _hand_made_result([0.80, 0.70, 0.75, 0.72, 0.78], {"no_intermediate": [0.70, 0.80, 0.75, 0.78, 0.72]},
                               ratios=(10.5, 1.0))
    claims = ex.check_claims(result, far=10.0).set_index("claim")
    tie = claims.loc["end-to-end with intermediate supervision beats final-loss-only"]
    assert not tie["holds"] and tie["verdict"] == "not established" and "includes zero" in tie["why"]
    # a 10.2x mean ratio whose interval (about 8.9x-11.7x) reaches below 10x is not established either
    early = claims.loc["the first layer's gradient is at least 10x smaller without intermediate supervision"]
    assert early["verdict"] == "not established" and "10.2x smaller" in early["measured"]
    few = ex.check_claims(_hand_made_result([0.8, 0.82, 0.81], {"no_intermediate": [0.7, 0.71, 0.69]}))
    assert few.set_index("claim").loc["end-to-end with intermediate supervision beats final-loss-only",
                                      "why"].startswith("only 3 paired seed(s)")


# ------------------------------------------------------------------------------------------------ shipped
def test_shipped_results_say_what_their_files_show():
    """data/results/README.md and the README state the verdicts check_claims computes from the
    shipped tables (the default budget, and the full one in full/), and the contrast's findings.
    Regenerating the results without updating the prose fails here."""
    from cpm_lab.assets import ROOT, asset

    shipped, full = load_results(asset("results")), load_results(asset("results") / "full")
    results_readme = (asset("results") / "README.md").read_text()
    readme = (ROOT / "README.md").read_text()
    verdicts = {}
    for name, result in (("default", shipped), ("full", full)):
        settings = result.manifest["settings"]
        assert settings["preset"] == "ablation" and len(settings["seeds"]) >= 5
        summary = (Path(result.out_dir) / "summary.md").read_text()
        claims = ex.check_claims(result)
        assert len(claims) == 9
        for c in claims.itertuples():
            row = f"| {c.figure} | {c.claim} | {c.measured} | **{c.verdict}**"
            assert row in results_readme and row in summary, row
        verdicts[name] = claims["verdict"].tolist()
    assert {r.steps for r in full.runs.itertuples()} == {6 * s for s in set(shipped.runs["steps"])}
    # "Both budgets give the same verdicts"; the README's table is the default budget's
    assert verdicts["default"] == verdicts["full"] and "Both budgets give the same verdicts" in results_readme
    for c in ex.check_claims(shipped).itertuples():
        assert f"| {c.figure} | {c.claim} | **{c.verdict}** |" in readme, c.claim
    findings = ex.normalisation_findings(ex.normalisation_table(shipped))
    assert len(findings) == 4
    for line in findings:
        assert line in results_readme and line in readme, line
    # the full budget's contrast, and the README's sentence about BatchNorm there
    table = ex.normalisation_table(full).set_index("setting")
    for line in ex.normalisation_findings(table.reset_index()):
        assert line in results_readme, line
    bn, preset = table.loc["batchnorm"], table.loc["preset"]
    assert bn["shrink_verdict"] == "reproduced"
    assert (f"BatchNorm's benefit is measurably smaller than the preset's: {bn['benefit']:+.3f} against "
            f"{preset['benefit']:+.3f}, difference {bn['shrink']:+.3f} [{bn['shrink_low']:+.3f}, "
            f"{bn['shrink_high']:+.3f}]") in readme


def test_shipped_results_readme_numbers_hold():
    """The numbers data/results/README.md states in prose, recomputed from the shipped tables."""
    from cpm_lab.assets import asset
    from cpm_lab.experiments.results import of_setting

    text = (asset("results") / "README.md").read_text()
    full = load_results(asset("results") / "full")
    final = of_setting(full.final_stage(0.2)).set_index(["experiment", "strategy", "num_stages"])["mean"]
    stages = [final[("stages", "end_to_end", t)] for t in range(1, 7)]
    gains = ", ".join(f"{b - a:+.3f}" for a, b in zip(stages, stages[1:]))
    assert gains in " ".join(text.split())
    runs = of_setting(full.runs)
    per_seed = runs[runs["experiments"].str.startswith("strategies")].pivot_table(
        index="seed", columns="strategy", values="pck@0.2")
    gap = per_seed["end_to_end"] - per_seed["no_intermediate"]
    assert (gap > 0).all() and f"by {gap.min():.3f} to {gap.max():.3f}" in text.replace("\n", " ")
    e2e, sw, ft = (final[("strategies", s, 6)] for s in ("end_to_end", "stagewise", "stagewise_finetune"))
    assert round((ft - sw) / (e2e - sw), 1) == 0.6 and "recovers only about 60% of the gap" in text.replace("\n", " ")


def test_sigma_sweep_trains_one_model_per_sigma(monkeypatch):
    from cpm_lab.experiments import sigma_sweep
    from cpm_lab.models import CPM

    built = []
    original = CPM.from_preset.__func__
    monkeypatch.setattr(CPM, "from_preset", classmethod(lambda cls, *a, **k: built.append(original(cls, *a, **k))
                                                        or built[-1]))
    table = sigma_sweep((3, 12), steps=3, batch_size=2, eval_size=4, device="cpu")
    assert [m.codec.sigma for m in built] == [3.0, 12.0]           # each run's targets used its sigma
    assert list(table.columns) == ["sigma_px", "stage", "pck@0.1", "pck@0.2", "images_per_s", "train_s", "loss_end"]
    assert list(zip(table["sigma_px"], table["stage"])) == [(s, t) for s in (3.0, 12.0) for t in (1, 2, 3)]
    assert table["pck@0.2"].between(0, 1).all() and (table["images_per_s"] > 0).all() and (table["train_s"] > 0).all()
