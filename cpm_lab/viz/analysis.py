"""Figures of the analysis lab (notebook 07): each draws one tidy table, computes nothing.

Error taxonomy (``analysis.error_taxonomy``), decoders (``analysis.decoder_table``), the centre
map (``inference.centre_map_ablation``), metric conventions (``metrics.convention_table``), early
exit (``diagnostics.early_exit``) and the part sigma (``experiments.sigma_sweep``).
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..analysis import ERROR_KINDS

#: One colour per error class, good (green) to miss (grey).
KIND_COLORS = {"good": "#2ca02c", "jitter": "#98df8a", "inversion": "#ff7f0e", "swap": "#d62728",
               "miss": "#7f7f7f"}


def plot_error_taxonomy(tables: Mapping[str, pd.DataFrame], part: str = "all", size: float = 3.6):
    """Stacked bars per stage of the share of each error class, one panel per table (e.g. per
    model and dataset), for ``part`` (a short joint name, or "all")."""
    fig, axes = plt.subplots(1, len(tables), figsize=(min(10, size * len(tables) + 1.6), 3.6), squeeze=False)
    for ax, (label, table) in zip(axes[0], tables.items()):
        shares = table[table["part"] == part].pivot(index="stage", columns="kind", values="share")[list(ERROR_KINDS)]
        bottom = np.zeros(len(shares))
        for kind in ERROR_KINDS:
            ax.bar(shares.index, shares[kind], bottom=bottom, color=KIND_COLORS[kind], label=kind, width=0.7)
            bottom += shares[kind].to_numpy()
        ax.set_xticks(shares.index)
        ax.set_xlabel("stage", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_title(label, fontsize=9.5)
        ax.tick_params(labelsize=8.5)
    axes[0, 0].set_ylabel(f"share of {'all joints' if part == 'all' else part}", fontsize=9)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles[::-1], labels[::-1], loc="center right", fontsize=8.5, frameon=False)
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    return fig


def plot_decoders(table: pd.DataFrame, title: str | None = None):
    """Grouped bars: PCK of each decoder (``method``) at each threshold."""
    wide = table.pivot(index="method", columns="threshold", values="value").loc[list(dict.fromkeys(table["method"]))]
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(wide.columns)
    for k, thr in enumerate(wide.columns):
        ax.bar(np.arange(len(wide)) + (k - (len(wide.columns) - 1) / 2) * width, wide[thr], width,
               label=f"PCK@{thr:g}", color=plt.cm.viridis(0.2 + 0.6 * k / max(1, len(wide.columns) - 1)))
    ax.set_xticks(np.arange(len(wide)), wide.index, fontsize=9)
    ax.set_ylabel("PCK (torso)", fontsize=9)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=8.5)
    ax.legend(fontsize=8.5, frameon=False, ncol=len(wide.columns), loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9.5)
    fig.tight_layout()
    return fig


def plot_centre_map(table: pd.DataFrame, threshold: float = 0.2, title: str | None = None):
    """PCK per stage under each centre-map condition (``inference.centre_map_ablation``)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    rows = table[table["threshold"] == threshold]
    for (condition, shift), g in rows.groupby(["condition", "shift"], dropna=False, sort=False):
        label = condition if pd.isna(shift) else f"{condition} by {shift:g} x person size"
        style = "o-" if condition == "on the person" else ("s--" if condition != "displaced" else "^:")
        ax.plot(g["stage"], g["value"], style, label=label, lw=2 if condition == "on the person" else 1.3)
    ax.set_xticks(sorted(rows["stage"].unique()))
    ax.set_xlabel("stage", fontsize=9)
    ax.set_ylabel(f"PCK@{threshold:g} (torso)", fontsize=9)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=8.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
    ax.set_title(title or "the centre map, as trained and changed", fontsize=9.5)
    fig.tight_layout()
    return fig


def plot_conventions(table: pd.DataFrame, threshold: float = 0.2, title: str | None = None):
    """Horizontal bars: the same predictions' PCK at ``threshold`` under each convention
    (``metrics.convention_table``); the first row (the benchmark's own) is drawn darker."""
    rows = table[table["threshold"] == threshold].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(8, 0.42 * len(rows) + 1.0))
    colors = ["tab:blue"] + ["tab:gray"] * (len(rows) - 1)
    ax.barh(np.arange(len(rows)), 100 * rows["value"], color=colors)
    for k, v in enumerate(rows["value"]):
        ax.text(100 * v + 0.5, k, f"{100 * v:.2f}", va="center", fontsize=8.5)
    ax.set_yticks(np.arange(len(rows)), rows["convention"], fontsize=8.5)
    ax.invert_yaxis()
    ax.set_xlim(0, 105)
    ax.set_xlabel(f"PCK@{threshold:g} (%)", fontsize=9)
    ax.tick_params(labelsize=8.5)
    ax.set_title(title or "one set of predictions, several conventions", fontsize=9.5)
    fig.tight_layout()
    return fig


def plot_early_exit(tables: Mapping[str, pd.DataFrame]):
    """PCK of each stage against the measured time of stopping there (``diagnostics.early_exit``),
    one line per model, each point labelled with its stage and cumulative GMACs."""
    fig, ax = plt.subplots(figsize=(6.8, 3.8))
    for label, t in tables.items():
        line, = ax.plot(t["ms"], t["pck"], "o-", label=label)
        for r in t.itertuples():
            ax.annotate(f"stage {r.stage}\n{r.gmacs:.2f} GMACs", (r.ms, r.pck), textcoords="offset points",
                        xytext=(4, -18), fontsize=8, color=line.get_color())
    ax.set_xlabel("forward pass stopping after the stage (ms, batch 1, this CPU)", fontsize=9)
    ax.set_ylabel("PCK (torso)", fontsize=9)
    ax.set_ylim(0, 1)
    ax.tick_params(labelsize=8.5)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, frameon=False, loc="lower right")
    fig.tight_layout()
    return fig


def plot_sigma_sweep(table: pd.DataFrame, stage: int | None = None):
    """Last-stage (or ``stage``) PCK against the part sigma, and the training throughput."""
    stage = int(table["stage"].max()) if stage is None else stage
    rows = table[table["stage"] == stage].sort_values("sigma_px")
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for col in [c for c in rows.columns if c.startswith("pck@")]:
        ax.plot(rows["sigma_px"], rows[col], "o-", label=col.replace("pck", "PCK"))
    ax.set_xlabel("part sigma (input px)", fontsize=9)
    ax.set_ylabel(f"stage {stage} PCK (torso)", fontsize=9)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8.5, frameon=False)
    ax.grid(alpha=0.3)
    ax2.plot(rows["sigma_px"], rows["images_per_s"], "o-", color="tab:gray")
    ax2.set_xlabel("part sigma (input px)", fontsize=9)
    ax2.set_ylabel("training images / s", fontsize=9)
    ax2.set_ylim(bottom=0)
    ax2.grid(alpha=0.3)
    for a in (ax, ax2):
        a.tick_params(labelsize=8.5)
    fig.tight_layout()
    return fig
