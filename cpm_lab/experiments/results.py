"""The tidy tables of an ablation: ``AblationResult``, reading run folders (``collect``) and
result folders (``load_results``) back, and the summaries over seeds."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from ..models.cpm import preset_config
from .plan import RunSpec

RESULT_FILE = "result.json"
FINISHED = ("done", "diverged")  # a run in one of these states is never trained again

PCK_COLUMNS = ["experiment", "setting", "strategy", "num_stages", "seed", "stage", "part", "metric", "normalize",
               "joints", "threshold", "value", "count"]
GRADIENT_COLUMNS = ["setting", "strategy", "num_stages", "seed", "step", "stage", "layer", "depth", "main_path",
                    "norm"]
HISTOGRAM_COLUMNS = ["setting", "strategy", "num_stages", "seed", "step", "layer", "depth", "bin_left", "bin_right",
                     "count"]
RUN_COLUMNS = ["run_id", "experiments", "setting", "strategy", "num_stages", "seed", "steps", "batch_size", "preset",
               "batch_norm", "data", "device", "status", "wall_s", "cpu_s", "train_s", "eval_s", "resumed_from_step",
               "trained_now", "final_loss", "pck@0.1", "pck@0.2", "error", "path"]
SUMMARY_COLUMNS = ["experiment", "setting", "strategy", "num_stages", "stage", "threshold", "mean", "std", "n"]


@dataclass
class AblationResult:
    """What ``run_ablation`` returns (and ``load_results`` reads back from ``out_dir``).

    Every table has a ``setting`` column: the ``NORMALISATION_SETTINGS`` entry of the run
    ("preset" = the preset's own recipe; the strategies and stages experiments only use that).

    Attributes:
        pck: experiment, setting, strategy, num_stages, seed, stage, part, metric ("pck", "auc",
            "epe"), normalize, threshold, value, count: the held-out metrics of every stage of
            every finished run (a run shared by several experiments appears under each).
        gradients: setting, strategy, num_stages, seed, step, stage, layer, depth, main_path,
            norm: L2 gradient norms per conv layer and per stage (``layer == "stage{t}"``, depth
            <NA>).
        histograms: setting, strategy, num_stages, seed, step, layer, depth, bin_left, bin_right, count:
            per-weight gradient-magnitude histograms (zero-count bins left out; bin [0, 1e-10)
            holds exact zeros) of the runs of the "strategies" experiment (the material of
            Fig. 5; of all runs when that experiment was not run). Every run directory has its own.
        runs: one row per run (``RUN_COLUMNS``): its model preset and whether that model has
            BatchNorm, status ("done", "diverged", "failed"), wall time and CPU time of the run's
            process (s), whether it was trained by this call,
            final-stage PCK@0.1/0.2, error.
        summary: experiment, setting, strategy, num_stages, stage, threshold, mean, std, n: PCK (part
            "mean") of every stage, mean and sample std over seeds (``summarize``).
        out_dir: where the files are; figures: name -> PNG path; manifest: MANIFEST.json content.
    """

    pck: pd.DataFrame
    gradients: pd.DataFrame
    histograms: pd.DataFrame
    runs: pd.DataFrame
    summary: pd.DataFrame
    out_dir: str
    figures: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def final_stage(self, threshold: float = 0.2):
        """Final-stage PCK rows of ``summary`` at ``threshold`` (one row per experiment, setting
        and model)."""
        s = self.summary
        return s[(s["stage"] == s["num_stages"]) & (s["threshold"] == float(threshold))].reset_index(drop=True)


def _read_csv(path: str, columns: list[str]):
    """A table of ``columns``; one written before the ``setting`` column existed gets "preset"."""
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return pd.DataFrame(columns=columns)
    df = pd.read_csv(path)
    if not len(df.columns):
        return pd.DataFrame(columns=columns)
    if "setting" in columns and "setting" not in df.columns:
        df.insert(0, "setting", "preset")
    return df


def _concat(frames, columns: list[str]):
    """Concatenate the non-empty frames (reindexed to ``columns``); an empty frame if none."""
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).reindex(columns=columns)


def collect(specs: Sequence[RunSpec], runs_dir: str, results: dict | None = None) -> AblationResult:
    """Read the files of ``specs``' run directories into one ``AblationResult`` (no figures)."""
    results = results or {}
    pcks, grads, hists, rows = [], [], [], []
    for spec in specs:
        run_dir = os.path.join(runs_dir, spec.run_id)
        res = results.get(spec.run_id)
        if res is None:
            try:
                with open(os.path.join(run_dir, RESULT_FILE)) as f:
                    res = {**json.load(f), "trained_now": False}
            except (OSError, json.JSONDecodeError):
                res = {"status": "missing"}
        status = res.get("status", "missing")
        rows.append({"run_id": spec.run_id, "experiments": ";".join(spec.experiments), "setting": spec.setting,
                     "strategy": spec.strategy,
                     "num_stages": spec.num_stages, "seed": spec.seed, "steps": spec.steps,
                     "batch_size": spec.batch_size, "preset": spec.preset,
                     "batch_norm": preset_config(spec.preset, **dict(spec.model_overrides)).batch_norm,
                     "data": spec.data, "device": res.get("device", spec.device), "status": status,
                     "wall_s": res.get("wall_s"), "cpu_s": res.get("cpu_s"),
                     "train_s": res.get("train_s"), "eval_s": res.get("eval_s"),
                     "resumed_from_step": res.get("resumed_from_step", 0), "trained_now": res.get("trained_now", False),
                     "final_loss": res.get("final_loss"), "pck@0.1": res.get("pck@0.1"), "pck@0.2": res.get("pck@0.2"),
                     "error": res.get("error", ""), "path": run_dir})
        if status not in FINISHED:
            continue
        table = _read_csv(os.path.join(run_dir, "pck.csv"), PCK_COLUMNS[1:])
        if len(table):
            for exp in spec.experiments:
                pcks.append(table.assign(experiment=exp))
        grads.append(_read_csv(os.path.join(run_dir, "gradients.csv"), GRADIENT_COLUMNS))
        if ("strategies" in spec.experiments or "normalisation" in spec.experiments
                or not any("strategies" in s.experiments for s in specs)):
            hists.append(_read_csv(os.path.join(run_dir, "histograms.csv"), HISTOGRAM_COLUMNS))

    pck = _concat(pcks, PCK_COLUMNS)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    return AblationResult(pck=pck, gradients=_concat(grads, GRADIENT_COLUMNS),
                          histograms=_concat(hists, HISTOGRAM_COLUMNS),
                          runs=runs, summary=summarize(pck), out_dir=runs_dir)


def load_results(out_dir: str | os.PathLike = "data/results") -> AblationResult:
    """Read the aggregate files an ablation wrote to ``out_dir`` (e.g. the shipped data/results)."""
    out_dir = os.fspath(out_dir)
    path = os.path.join(out_dir, "pck.csv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no ablation results in {out_dir!r} (expected {path}); run cpm-lab ablate first")
    manifest = {}
    if os.path.isfile(os.path.join(out_dir, "MANIFEST.json")):
        with open(os.path.join(out_dir, "MANIFEST.json")) as f:
            manifest = json.load(f)
    figures = {os.path.splitext(n)[0]: os.path.join(out_dir, n) for n in sorted(os.listdir(out_dir))
               if n.endswith(".png")}
    return AblationResult(**stored_tables(out_dir), out_dir=out_dir, figures=figures, manifest=manifest)


def stored_tables(out_dir: str) -> dict:
    """The tables of ``out_dir`` as stored (pck, gradients, histograms, runs; each empty when its
    file is missing) and the summary computed from them."""
    tables = {name: _read_csv(os.path.join(out_dir, f"{name}.csv"), columns) for name, columns in
              (("pck", PCK_COLUMNS), ("gradients", GRADIENT_COLUMNS), ("histograms", HISTOGRAM_COLUMNS),
               ("runs", RUN_COLUMNS))}
    return {**tables, "summary": summarize(tables["pck"])}


def summarize(pck, part: str = "mean", metric: str = "pck"):
    """Mean and sample std over seeds of ``metric`` (part ``part``) for every experiment,
    setting, strategy, number of stages, stage and threshold; columns ``SUMMARY_COLUMNS`` (std
    is NaN for a single seed)."""
    if len(pck) == 0:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    sub = pck[(pck["metric"] == metric) & (pck["part"] == part)]
    if "setting" not in sub.columns:  # a table made by hand or before settings existed
        sub = sub.assign(setting="preset")
    if metric != "pck":
        sub = sub.assign(threshold=sub["threshold"].fillna(-1))
    g = sub.groupby(["experiment", "setting", "strategy", "num_stages", "stage", "threshold"], sort=True)["value"]
    out = g.agg(mean="mean", std="std", n="count").reset_index()
    return out.reindex(columns=SUMMARY_COLUMNS)


def geomean(x) -> float:
    """Geometric mean of the finite positive values of x (nan if none)."""
    x = np.asarray(x, dtype=float)
    x = x[np.isfinite(x) & (x > 0)]
    return float(np.exp(np.log(x).mean())) if len(x) else float("nan")


def of_setting(table: pd.DataFrame, setting: str = "preset") -> pd.DataFrame:
    """The rows of ``table`` (pck, gradients, histograms, runs or summary) from runs under
    ``setting`` (a table without a ``setting`` column, or rows with none, count as "preset")."""
    if "setting" not in table.columns:
        return table if setting == "preset" else table.iloc[:0]
    return table[table["setting"].astype(object).fillna("preset") == setting]


def gradient_summary(gradients, strategies: Sequence[str] = ("end_to_end", "no_intermediate"),
                     num_stages: int | None = None, skip_first: bool = True, setting: str = "preset"):
    """Typical gradient norm per layer and per stage for each strategy, and their ratio, for the
    runs under ``setting``.

    For every (strategy, seed, layer) the geometric mean of the norm over the recorded steps
    (without step 1 when ``skip_first``: the freshly initialised network); then the geometric
    mean over seeds. Returns a DataFrame: layer, stage, depth, main_path, one column per
    strategy, and ``ratio`` = first strategy / second strategy (e.g. with / without
    intermediate supervision). Rows: per-stage totals first (layer "stage{t}"), then conv layers
    by depth. ``num_stages`` defaults to the most common number of stages of these strategies.
    """
    g = of_setting(gradients, setting)
    g = g[g["strategy"].isin(strategies)]
    if len(g) == 0:
        return pd.DataFrame(columns=["layer", "stage", "depth", "main_path", *strategies, "ratio"])
    if num_stages is None:
        num_stages = int(g.groupby("num_stages")["strategy"].nunique().idxmax())
    g = g[g["num_stages"] == num_stages]
    if skip_first:
        g = g[g["step"] > 1]
    per_seed = g.groupby(["strategy", "seed", "layer"], sort=False)["norm"].apply(geomean).reset_index()
    typical = per_seed.groupby(["strategy", "layer"])["norm"].apply(geomean).unstack("strategy")
    meta = g.drop_duplicates("layer").set_index("layer")[["stage", "depth", "main_path"]]
    out = meta.join(typical, how="left").reset_index()
    for s in strategies:
        if s not in out.columns:
            out[s] = float("nan")
    if len(strategies) >= 2:
        out["ratio"] = out[strategies[0]] / out[strategies[1]]
    out["is_stage"] = out["layer"].str.fullmatch(r"stage\d+")
    out["_d"] = pd.to_numeric(out["depth"], errors="coerce")
    out = out.sort_values(["is_stage", "stage", "_d"], ascending=[False, True, True])
    return out.drop(columns=["is_stage", "_d"]).reset_index(drop=True)
