"""Plots of the ablation tables of ``cpm_lab.experiments`` (the paper's Fig. 5, 6b and 6c).

Every function takes the tidy DataFrames of an ``AblationResult`` (``pck``, ``gradients``,
``histograms``; also readable from CSV with ``cpm_lab.experiments.load_results``) and returns a
matplotlib Figure. Error bars are the sample standard deviation over seeds.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ..diagnostics.gradients import DEFAULT_BIN_EDGES
from ..train.phases import STRATEGY_LABELS
from .diagnostics import plot_gradient_histograms, stage_colors

__all__ = ["STRATEGY_COLORS", "plot_strategy_pck", "plot_stages_pck",
           "plot_supervision_histograms", "plot_supervision_gradients", "plot_normalisation"]

#: Fixed colours of the strategies (their display names are ``train.STRATEGY_LABELS``).
STRATEGY_COLORS = {"end_to_end": "C0", "stagewise_finetune": "C2", "stagewise": "C1", "no_intermediate": "C3"}
SUPERVISION_LABELS = {"end_to_end": "with intermediate supervision", "no_intermediate": "final-stage loss only"}


def _preset_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of an ablation table from runs under the preset's own recipe: the figures of the
    paper's experiments leave out the BatchNorm / Adam runs of the normalisation contrast."""
    from ..experiments.results import of_setting  # lazy: experiments.report imports this module

    return of_setting(table)


def _pck_summary(pck: pd.DataFrame, experiment: str, part: str = "mean") -> pd.DataFrame:
    pck = _preset_runs(pck)
    sub = pck[(pck["experiment"] == experiment) & (pck["metric"] == "pck") & (pck["part"] == part)]
    if sub.empty:
        raise ValueError(f"no PCK rows for experiment {experiment!r} (part {part!r}) in the table")
    g = sub.groupby(["strategy", "num_stages", "stage", "threshold"])["value"]
    return g.agg(mean="mean", std="std", n="count").reset_index()


def _seeds_note(pck: pd.DataFrame, experiment: str) -> str:
    n = pck.loc[pck["experiment"] == experiment, "seed"].nunique()
    return f"mean ± std over {n} seeds" if n > 1 else "1 seed (no error bars)"


def plot_strategy_pck(pck: pd.DataFrame, thresholds: Sequence[float] = (0.1, 0.2), part: str = "mean",
                      subtitle: str | None = None):
    """Paper Fig. 6b: held-out PCK at every stage, one line per training strategy.

    One panel per threshold; x = stage of the (same-size) CPM, y = PCK (torso) of that stage's
    beliefs; error bars = std over seeds. Lines are shifted sideways a little so bars do not hide
    each other.
    """
    s = _pck_summary(pck, "strategies", part)
    strategies = [k for k in STRATEGY_LABELS if k in set(s["strategy"])] + sorted(
        set(s["strategy"]) - set(STRATEGY_LABELS))
    fig, axes = plt.subplots(1, len(thresholds), figsize=(5.0 * len(thresholds), 4.2), squeeze=False)
    width = 0.06
    for ax, thr in zip(axes[0], thresholds):
        sub = s[np.isclose(s["threshold"], thr)]
        if sub.empty:
            raise ValueError(f"no PCK@{thr:g} rows; thresholds in the table: {sorted(s['threshold'].unique())}")
        for i, strat in enumerate(strategies):
            g = sub[sub["strategy"] == strat].sort_values("stage")
            x = g["stage"].to_numpy() + (i - (len(strategies) - 1) / 2) * width
            ax.errorbar(x, g["mean"], yerr=g["std"].fillna(0), marker="o", ms=4, capsize=3, lw=1.6,
                        color=STRATEGY_COLORS.get(strat), label=STRATEGY_LABELS.get(strat, strat))
        stages = sorted(sub["stage"].unique())
        ax.set_xticks(stages)
        ax.set_xlabel("stage")
        ax.set_ylabel(f"PCK@{thr:g} (torso), held-out")
        ax.set_title(f"PCK@{thr:g} at each stage", fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    t = int(s["num_stages"].max())
    fig.suptitle(f"Training strategies on a {t}-stage CPM (paper Fig. 6b), {_seeds_note(pck, 'strategies')}"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def plot_stages_pck(pck: pd.DataFrame, thresholds: Sequence[float] | None = None, highlight: float = 0.2,
                    part: str = "mean", subtitle: str | None = None):
    """Paper Fig. 6c: accuracy against the number of stages (end-to-end with intermediate
    supervision, same number of steps for every model).

    Left: the final stage's PCK of a T-stage CPM against T, one line per threshold. Right: PCK@
    ``highlight`` at every stage t of each T-stage model (one line per T), showing where the
    gain of later stages comes from and where it stops.
    """
    s = _pck_summary(pck, "stages", part)
    thresholds = sorted(s["threshold"].unique()) if thresholds is None else list(thresholds)
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.9))
    final = s[s["stage"] == s["num_stages"]]
    cmap = plt.get_cmap("plasma")
    for i, thr in enumerate(thresholds):
        g = final[np.isclose(final["threshold"], thr)].sort_values("num_stages")
        ax.errorbar(g["num_stages"], g["mean"], yerr=g["std"].fillna(0), marker="o", ms=4, capsize=3,
                    color=cmap(0.8 * i / max(len(thresholds) - 1, 1)), label=f"PCK@{thr:g}")
    ax.set_xticks(sorted(final["num_stages"].unique()))
    ax.set_xlabel("number of stages T")
    ax.set_ylabel("PCK of the final stage (torso), held-out")
    ax.set_title("Final-stage accuracy vs number of stages", fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.3)

    sub = s[np.isclose(s["threshold"], highlight)]
    ts = sorted(sub["num_stages"].unique())
    colors = stage_colors(max(ts))
    for t in ts:
        g = sub[sub["num_stages"] == t].sort_values("stage")
        ax2.plot(g["stage"], g["mean"], "o-", ms=3.5, color=colors[t - 1], label=f"{t}-stage model")
        if g["std"].notna().any():
            ax2.fill_between(g["stage"], g["mean"] - g["std"].fillna(0), g["mean"] + g["std"].fillna(0),
                             color=colors[t - 1], alpha=0.12, lw=0)
    ax2.set_xticks(range(1, max(ts) + 1))
    ax2.set_xlabel("stage t")
    ax2.set_ylabel(f"PCK@{highlight:g} of stage t")
    ax2.set_title(f"Every stage of every model (PCK@{highlight:g})", fontsize=10)
    ax2.legend(fontsize=8, frameon=False, ncol=2)
    ax2.grid(alpha=0.3)
    fig.suptitle(f"Number of stages (paper Fig. 6c), end-to-end with intermediate supervision, "
                 f"{_seeds_note(pck, 'stages')}" + (f"\n{subtitle}" if subtitle else ""), fontsize=10)
    fig.tight_layout()
    return fig


def _pick_stages(histograms: pd.DataFrame, strategies: Sequence[str], num_stages: int | None) -> int:
    if num_stages is not None:
        return int(num_stages)
    both = histograms[histograms["strategy"].isin(strategies)].groupby("num_stages")["strategy"].nunique()
    if both.empty or both.max() < len(strategies):
        raise ValueError(f"the table has no runs of all of {list(strategies)} with the same number of stages")
    return int(both.idxmax())


def _bins(edges: np.ndarray, bin_left: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The len(edges) + 1 bins of ``edges`` (the underflow bin [0, edges[0]), one bin per pair
    of edges, the overflow bin [edges[-1], inf)) as (left, right) edge arrays, and the index of
    the bin whose left edge each of ``bin_left`` is (up to float rounding)."""
    left, right = np.concatenate([[0.0], edges]), np.concatenate([edges, [np.inf]])
    return left, right, np.clip(np.searchsorted(left, bin_left * (1 - 1e-6)), 0, len(left) - 1)


def _bin_edges(h: pd.DataFrame) -> np.ndarray:
    """The magnitude edges the stored histograms ``h`` were counted with: DEFAULT_BIN_EDGES if
    every stored bin is one of its bins, else (custom edges, or an older default) the edges
    found in the table, where a run of left-out empty bins merges into one."""
    left_obs = h["bin_left"].to_numpy(dtype=float)
    right_obs = h["bin_right"].to_numpy(dtype=float)
    edges = np.asarray(DEFAULT_BIN_EDGES, dtype=float)
    left, right, pos = _bins(edges, left_obs)
    if (np.allclose(left[pos], left_obs, rtol=1e-3, atol=0)
            and np.allclose(right[pos], right_obs, rtol=1e-3, atol=0)):   # inf matches inf
        return edges
    return np.unique(np.concatenate([left_obs[left_obs > 0], right_obs[np.isfinite(right_obs)]]))


def _full_bins(h: pd.DataFrame, edges: np.ndarray) -> pd.DataFrame:
    """Re-insert the zero-count bins left out of the stored histograms ``h`` (counted with
    ``edges``, see :func:`_bin_edges`): every (step, layer) gets all len(edges) + 1 bins."""
    left, right, pos = _bins(edges, h["bin_left"].to_numpy(dtype=float))
    h = h.assign(_bin=pos)
    frames = []
    for (step, layer), g in h.groupby(["step", "layer"], sort=True):
        counts = np.zeros(len(left), dtype=np.int64)
        np.add.at(counts, g["_bin"].to_numpy(), g["count"].to_numpy().astype(np.int64))
        frames.append(pd.DataFrame(dict(step=step, layer=layer, bin_left=left, bin_right=right, count=counts)))
    return pd.concat(frames, ignore_index=True)


def plot_supervision_histograms(histograms: pd.DataFrame,
                                strategies: Sequence[str] = ("end_to_end", "no_intermediate"),
                                num_stages: int | None = None, steps: Sequence[int] | None = None):
    """Paper Fig. 5: per-weight gradient magnitudes at layers of increasing depth (rows), with and
    without intermediate supervision (columns), at several points of training (light = early,
    dark = late). Counts are pooled over seeds, of the runs under the preset's own recipe.
    """
    h = _preset_runs(histograms)
    h = h[h["strategy"].isin(strategies)]
    t = _pick_stages(h, strategies, num_stages)
    h = h[h["num_stages"] == t]
    depth = h.drop_duplicates("layer").set_index("layer")["depth"]
    layers = list(depth.sort_values().index)
    edges = _bin_edges(h)   # shared by the columns
    runs = {}
    for strat in strategies:
        g = h[h["strategy"] == strat].groupby(["step", "layer", "bin_left"], as_index=False).agg(
            bin_right=("bin_right", "first"), count=("count", "sum"))
        full = _full_bins(g, edges)
        runs[SUPERVISION_LABELS.get(strat, strat)] = SimpleNamespace(histograms=full, bin_edges=edges)
    fig = plot_gradient_histograms(runs, layers=layers, steps=steps)
    # Mark the median magnitude of the last drawn step in every panel, so the columns can be
    # compared at a glance (the grid is row-major: layer r, run c).
    ncols = len(runs)
    for k, ax in enumerate(fig.axes[:len(layers) * ncols]):
        r, c = divmod(k, ncols)
        title = ax.get_title()
        if pd.notna(depth.get(layers[r])):
            ax.set_title(f"{title} (depth {int(depth[layers[r]])})", fontsize=8.5)
        hist = list(runs.values())[c].histograms
        hist = hist[hist["layer"] == layers[r]]
        if hist.empty:
            continue
        last = hist[hist["step"] == (max(steps) if steps else hist["step"].max())]
        if last.empty:
            last = hist[hist["step"] == hist["step"].max()]
        cum = np.cumsum(last["count"].to_numpy()) / max(last["count"].sum(), 1)
        i = int(np.searchsorted(cum, 0.5))
        lo, hi = last["bin_left"].iloc[i], last["bin_right"].iloc[i]
        if lo > 0 and np.isfinite(hi):
            x = 0.5 * (np.log10(lo) + np.log10(hi))
            ax.axvline(x, color="black", ls="--", lw=0.9, label=f"median, last step: $10^{{{x:.1f}}}$")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.8)  # headroom: the legend sits above the histograms
            ax.legend(fontsize=8, frameon=False, loc="upper left")
    n = h["seed"].nunique()
    fig.suptitle(f"Gradient magnitude per weight, {t}-stage CPM (paper Fig. 5); rows: shallow to deep layers; "
                 f"pooled over {n} seed{'s' if n > 1 else ''}", fontsize=9)
    fig.tight_layout()
    return fig


def plot_supervision_gradients(gradients: pd.DataFrame,
                               strategies: Sequence[str] = ("end_to_end", "no_intermediate"),
                               num_stages: int | None = None):
    """Gradient norms with (solid) and without (dashed) intermediate supervision.

    Left: each stage's gradient L2 norm over training (geometric mean over seeds). Right: each
    conv layer's norm against its depth (geometric mean over the recorded steps after step 1 and
    over seeds); layers on the image -> final-output path are joined, side branches (the shared
    trunk, each stage's feature conv) are hollow markers. The paper's claim: without
    intermediate supervision the early layers receive much smaller gradients. Runs under the
    preset's own recipe only (not the normalisation contrast's).
    """
    g = _preset_runs(gradients)
    g = g[g["strategy"].isin(strategies)]
    t = _pick_stages(g, strategies, num_stages)
    g = g[g["num_stages"] == t].copy()
    g["logn"] = np.log(g["norm"].clip(lower=1e-30))
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 4.6))
    colors = stage_colors(t)
    styles = ["-", "--", ":", "-."]
    stage_rows = g[g["layer"].str.fullmatch(r"stage\d+")]
    for k, strat in enumerate(strategies):
        sr = stage_rows[stage_rows["strategy"] == strat]
        for s_, gg in sr.groupby("stage"):
            m = gg.groupby("step")["logn"].mean()
            ax.plot(m.index, np.exp(m.to_numpy()), styles[k % 4], color=colors[int(s_) - 1])
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("gradient L2 norm of the stage's parameters")
    ax.set_title("Per-stage gradient norm during training", fontsize=10)
    # one key for the colours (stages) and one for the line styles (runs), below the axes
    keys = [Line2D([], [], color=colors[s_ - 1], lw=2, label=f"stage {s_}") for s_ in range(1, t + 1)]
    keys += [Line2D([], [], color="k", ls=styles[k % 4], label=SUPERVISION_LABELS.get(strat, strat))
             for k, strat in enumerate(strategies)]
    ax.legend(handles=keys, fontsize=8, frameon=False, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.16))

    layers = g[~g["layer"].str.fullmatch(r"stage\d+") & (g["step"] > 1)]
    for k, strat in enumerate(strategies):
        ly = layers[layers["strategy"] == strat]
        per_seed = ly.groupby(["seed", "layer", "depth", "stage", "main_path"], as_index=False)["logn"].mean()
        m = per_seed.groupby(["layer", "depth", "stage", "main_path"], as_index=False)["logn"].mean()
        m = m.sort_values("depth")
        main = m[m["main_path"].astype(bool)]
        side = m[~m["main_path"].astype(bool)]
        c = "C0" if k == 0 else "C3" if k == 1 else f"C{k + 2}"
        ax2.plot(main["depth"], np.exp(main["logn"]), styles[k % 4] + "o", ms=3.5, color=c,
                 label=SUPERVISION_LABELS.get(strat, strat))
        if len(side):
            ax2.plot(side["depth"], np.exp(side["logn"]), "o", mfc="none", ms=5, color=c,
                     label="side branches (trunk, feature convs)" if k == len(strategies) - 1 else None)
    main_all = layers[layers["main_path"].astype(bool)].drop_duplicates("layer")
    for s_, d in main_all.groupby("stage")["depth"]:
        lo, hi = d.min(), d.max()
        if s_ > 1:
            ax2.axvline(lo - 0.5, color="grey", ls=":", lw=0.8)
        ax2.text((lo + hi) / 2, 1.0, f"stage {int(s_)}", transform=ax2.get_xaxis_transform(), ha="center",
                 va="bottom", fontsize=8)
    ax2.set_yscale("log")
    ax2.set_xlabel("layer depth (convs on the longest path from the image)")
    ax2.set_ylabel("gradient L2 norm per conv layer")
    ax2.set_title("Gradient norm vs depth (typical over training)", fontsize=10, pad=14)
    ax2.legend(fontsize=8, frameon=False)
    n = g["seed"].nunique()
    fig.suptitle(f"Gradient flow with and without intermediate supervision, {t}-stage CPM, geometric mean over "
                 f"{n} seed{'s' if n > 1 else ''}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_normalisation(table: pd.DataFrame, threshold: float = 0.2):
    """The contrast experiment (``experiments.normalisation_table``): what intermediate
    supervision buys under each setting.

    Left: the paired benefit (end-to-end − final-stage loss only, final-stage PCK at
    ``threshold``) per setting, with its interval; bars whose interval lies above zero are
    solid, others hatched ("not established"). Right: the first conv layer's gradient-norm
    ratio with / without intermediate supervision (log scale) with its interval; 1 = no
    difference.
    """
    if table.empty:
        raise ValueError("no normalisation rows in the table (run the 'normalisation' experiment)")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    y = np.arange(len(table))[::-1]
    labels = [f"{r.setting}\n({'BatchNorm' if r.batch_norm else 'no BatchNorm'}, {r.optimizer})"
              for r in table.itertuples()]
    for yi, r in zip(y, table.itertuples()):
        ok = r.benefit_verdict == "reproduced"
        ax.barh(yi, r.benefit, color="C0", alpha=0.8 if ok else 0.35, hatch=None if ok else "//", edgecolor="C0")
        if np.isfinite(r.benefit_low):
            ax.plot([r.benefit_low, r.benefit_high], [yi, yi], color="k", lw=1.5)
        ax2.plot([r.first_layer_ratio], [yi], "o", color="C3")
        if np.isfinite(r.ratio_low):
            ax2.plot([r.ratio_low, r.ratio_high], [yi, yi], color="C3", lw=1.5)
    ax.axvline(0, color="grey", lw=0.8)
    ax.locator_params(axis="x", nbins=5)  # signed tick labels are wide
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel(f"end-to-end − final-loss-only, final-stage PCK@{threshold:g}")
    ax.set_title("What intermediate supervision buys (paired by seed)", fontsize=10)
    ax2.axvline(1, color="grey", lw=0.8)
    ax2.set_xscale("log")
    ax2.set_yticks(y, [""] * len(y))
    ax2.set_xlabel("first conv layer's gradient norm, with / without")
    ax2.set_title("Gradient reaching the first layer", fontsize=10)
    n = int(table["n"].max())
    fig.suptitle(f"Intermediate supervision under modern normalisation and optimisers ({n} seeds; "
                 "lines: 95% intervals; hatched: not established)", fontsize=10)
    fig.tight_layout()
    return fig
