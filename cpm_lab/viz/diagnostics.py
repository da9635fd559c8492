"""Plots of the diagnostics in ``cpm_lab.diagnostics``: receptive fields, gradient flow, cost.

Every function draws with matplotlib and returns the Figure (or draws into ``ax`` when given).
"""
from __future__ import annotations

from typing import Mapping

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Rectangle

from ..diagnostics.cost import ModelCost
from ..diagnostics.effective_rf import EffectiveRF
from ..diagnostics.gradients import GradientTracker
from ..diagnostics.receptive_field import ReceptiveFields, receptive_fields
from ..targets import cell_center
from .pose import image_hwc

__all__ = ["stage_colors", "plot_receptive_fields", "plot_effective_receptive_field",
           "plot_erf_mass", "plot_gradient_norms", "plot_gradient_norm_by_depth",
           "plot_gradient_histograms", "plot_cost"]

_LINESTYLES = ["-", "--", ":", "-."]


def stage_colors(n: int) -> list:
    """One colour per stage (stage 1 first), from matplotlib's 'viridis' without the pale end."""
    cmap = plt.get_cmap("viridis")
    return [cmap(0.85 * i / max(n - 1, 1)) for i in range(n)]


def _new_ax(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


# --------------------------------------------------------------------------------------------
# Receptive fields
# --------------------------------------------------------------------------------------------
def plot_receptive_fields(model_or_rf, image=None, location: tuple[int, int] | None = None,
                          input_size: int | None = None, crop: bool = False, ax=None,
                          title: str | None = None):
    """Each stage's analytic receptive field as a square on the image around one output cell.

    Args:
        model_or_rf: a CPM / Sequential, or the ``ReceptiveFields`` of one.
        image: 3xH×W or H×W×3 in [0, 1]; default a grey canvas of ``input_size``.
        location: (row, col) output cell; default the centre cell. Its centre in input pixels
            follows the codec convention ``s*i + (s - 1)/2``.
        input_size: image side when ``image`` is None (default the model's input size).
        crop: limit the view to the image (large fields then run off the axes) instead of
            showing every square whole.
    """
    rf = model_or_rf if isinstance(model_or_rf, ReceptiveFields) else receptive_fields(model_or_rf)
    if image is not None:
        img = image_hwc(image)
        h, w = img.shape[:2]
    else:
        size = input_size or rf.input_size
        if size is None:
            raise ValueError("pass image or input_size: the model has no config.input_size")
        h = w = int(size)
        img = np.full((h, w, 3), 0.85, dtype=np.float32)
    stride = int(rf.stages["jump_px"].iloc[-1])
    if location is None:
        location = ((h // stride) // 2, (w // stride) // 2)
    cy, cx = cell_center(location[0], stride), cell_center(location[1], stride)
    fig, ax = _new_ax(ax, (7.5, 5.2))
    ax.imshow(img, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
    ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, ec="black", lw=1, ls=":"))
    colors = stage_colors(len(rf.stages))
    half = 0.5
    for (_, row), colour in zip(rf.stages.iterrows(), colors):
        side = float(row["rf_px"])
        ax.add_patch(Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False, ec=colour,
                               lw=2, label=f"stage {int(row['stage'])}: {side:g} px"))
        half = max(half, side / 2)
    ax.plot([cx], [cy], "+", color="red", ms=10, mew=2,
            label=f"output cell row {location[0]}, col {location[1]}\n(centre x={cx:g}, y={cy:g})")
    ax.add_patch(Rectangle((cx - stride / 2, cy - stride / 2), stride, stride, fill=True, fc="red",
                           alpha=0.5, ec="none"))
    pad = 0.03 * max(h, w) if crop else 10
    if crop:
        half = 0
    ax.set_xlim(min(-0.5, cx - half) - pad, max(w - 0.5, cx + half) + pad)
    ax.set_ylim(max(h - 0.5, cy + half) + pad, min(-0.5, cy - half) - pad)
    ax.set_aspect("equal")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    ax.set_xlabel("x (input pixels)")
    ax.set_ylabel("y (input pixels)")
    ax.set_title(title or f"Analytic receptive field per stage (image {w}x{h}, dotted)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_effective_receptive_field(erf: EffectiveRF, ncols: int | None = None, size: float = 2.6,
                                   title: str | None = None):
    """Heatmap of mean |d unit / d input| per stage, with the analytic field (dashed square) and
    the square holding ``erf.mass`` of the gradient (solid), plus the cumulative-mass curves.

    Each heatmap is normalised to its own maximum (stages differ by orders of magnitude).
    """
    n = len(erf.stages)
    ncols = ncols or n + 1
    nrows = -(-(n + 1) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), squeeze=False)
    summ = erf.summary.set_index("stage")
    h, w = erf.maps.shape[1:]
    for k, s in enumerate(erf.stages):
        ax = axes.flat[k]
        m = erf.maps[k]
        ax.imshow(m / m.max() if m.max() > 0 else m, cmap="magma", vmin=0, vmax=1,
                  extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        cx, cy = summ.loc[s, "center_x"], summ.loc[s, "center_y"]
        a = summ.loc[s, "analytic_rf_px"]
        if np.isfinite(a):
            ax.add_patch(Rectangle((cx - a / 2, cy - a / 2), a, a, fill=False, ec="cyan", lw=1.2, ls="--"))
        side = summ.loc[s, "side_px"]
        if np.isfinite(side):
            ax.add_patch(Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False, ec="white", lw=1.2))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(f"stage {s}: {erf.mass:.0%} in {side:g} px\n(analytic {a:g} px)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    plot_erf_mass(erf, ax=axes.flat[n])
    for ax in list(axes.flat)[n + 1:]:
        ax.set_axis_off()
    fig.suptitle(title or f"Effective receptive field of output cell (row, col) = {erf.location}: "
                 f"|d belief / d pixel| averaged over {erf.n_images} images\n"
                 f"white square: {erf.mass:.0%} of the gradient mass; cyan dashed: analytic field "
                 "(may exceed the image)", fontsize=9)
    fig.tight_layout()
    return fig


def plot_erf_mass(erfs, ax=None, mass: float | None = None):
    """Cumulative gradient mass vs Chebyshev radius around the unit, per stage.

    ``erfs``: one ``EffectiveRF`` or a dict label -> EffectiveRF (e.g. {"random init": ...,
    "trained": ...}); labels get line styles, stages get colours. Dotted verticals mark the
    analytic half-field (rf/2) of each stage.
    """
    if isinstance(erfs, EffectiveRF):
        erfs = {"": erfs}
    own = ax is None
    fig, ax = _new_ax(ax, (5, 3.5))
    n = max(max(e.stages) for e in erfs.values())
    colors = stage_colors(n)
    marked = set()
    for li, (label, e) in enumerate(erfs.items()):
        for s in e.stages:
            c = e.cumulative[e.cumulative["stage"] == s]
            lab = f"stage {s}" + (f", {label}" if label else "")
            ax.plot(c["radius_px"], c["mass_fraction"], _LINESTYLES[li % 4], color=colors[s - 1], label=lab)
            a = e.summary.set_index("stage").loc[s, "analytic_rf_px"]
            if np.isfinite(a) and s not in marked:
                ax.axvline(a / 2, color=colors[s - 1], ls=":", lw=0.8)
                marked.add(s)
    level = mass if mass is not None else next(iter(erfs.values())).mass
    ax.axhline(level, color="grey", lw=0.8)
    ax.set_xlabel("half-side of square around unit (px)")
    ax.set_ylabel("fraction of gradient mass")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Cumulative gradient mass\n(dotted: analytic rf / 2)", fontsize=9)
    if own:
        fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Gradient flow
# --------------------------------------------------------------------------------------------
def _as_runs(trackers) -> dict[str, GradientTracker]:
    if isinstance(trackers, GradientTracker):
        return {"": trackers}
    if isinstance(trackers, Mapping):
        return dict(trackers)
    raise TypeError(f"expected a GradientTracker or a dict label -> GradientTracker, got {type(trackers).__name__}")


def plot_gradient_norms(trackers, ax=None, title: str | None = None):
    """Per-stage L2 gradient norm over training steps (log y).

    ``trackers``: a GradientTracker or a dict label -> tracker (e.g. "with intermediate
    supervision" / "final loss only"); stages get colours, runs get line styles.
    """
    runs = _as_runs(trackers)
    fig, ax = _new_ax(ax, (6, 3.8))
    n = max(int(t.stage_norms["stage"].max()) for t in runs.values() if len(t.stage_norms))
    colors = stage_colors(n)
    for li, (label, t) in enumerate(runs.items()):
        df = t.stage_norms
        for s, g in df.groupby("stage"):
            lab = f"stage {s}" + (f", {label}" if label else "")
            ax.plot(g["step"], g["norm"].clip(lower=1e-30), _LINESTYLES[li % 4], color=colors[int(s) - 1],
                    label=lab, marker="." if len(g) < 30 else None)
    ax.set_yscale("log")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("gradient L2 norm of the stage's parameters")
    ax.legend(fontsize=8, frameon=False, ncol=2 if len(runs) > 1 else 1)
    ax.set_title(title or "Gradient norm per stage", fontsize=10)
    fig.tight_layout()
    return fig


def plot_gradient_norm_by_depth(trackers, step: int | None = None, last: int = 1, ax=None):
    """Per-conv-layer gradient norm against layer depth (convs from the image), one colour per run.

    Uses the mean over the ``last`` recorded steps up to ``step`` (default: the last step).
    Layers on the longest image -> final-output path are joined by a line; side branches (the
    shared trunk, each stage's feature conv) are hollow markers at their own depth. Dotted
    verticals separate the stages along the main path. The paper's claim: without intermediate
    supervision the line drops toward the shallow end.
    """
    runs = _as_runs(trackers)
    fig, ax = _new_ax(ax, (6.5, 3.8))
    bounds = {}
    for li, (label, t) in enumerate(runs.items()):
        df = t.layer_norms
        main = {lay.name: lay.main_path for lay in t.layers}
        steps = sorted(df["step"].unique())
        if step is not None:
            steps = [s for s in steps if s <= step]
        use = steps[-last:]
        g = df[df["step"].isin(use)].groupby(["layer", "depth", "stage"], as_index=False)["norm"].mean()
        g["main"] = g["layer"].map(main).fillna(True).astype(bool)
        g = g.sort_values("depth")
        colour = f"C{li}"
        on = g[g["main"]]
        ax.plot(on["depth"], on["norm"].clip(lower=1e-30), _LINESTYLES[li % 4] + "o", ms=3.5,
                color=colour, label=(label or "main path") + (f" (step {use[-1]})" if use else ""))
        off = g[~g["main"]]
        if len(off):
            ax.plot(off["depth"], off["norm"].clip(lower=1e-30), "o", mfc="none", ms=5, color=colour,
                    label="side branches (trunk, feature convs)" if li == len(runs) - 1 else None)
        for s_, d in on.groupby("stage")["depth"]:
            lo, hi = bounds.get(int(s_), (1e9, 0))
            bounds[int(s_)] = (min(d.min(), lo), max(d.max(), hi))
    ax.set_yscale("log")
    for s_, (lo, hi) in sorted(bounds.items()):
        if s_ > 1:
            ax.axvline(lo - 0.5, color="grey", ls=":", lw=0.8)
        ax.text((lo + hi) / 2, 1.0, f"stage {s_}", transform=ax.get_xaxis_transform(), ha="center",
                va="bottom", fontsize=8)
    ax.set_xlabel("layer depth (convs on the longest path from the image)")
    ax.set_ylabel("gradient L2 norm per conv layer")
    ax.legend(fontsize=8, frameon=False)
    ax.set_title("Gradient norm vs depth", fontsize=10, pad=14)
    fig.tight_layout()
    return fig


def _percent(p: float) -> str:
    """A share as a whole percentage; a share that is not zero never reads as "0%"."""
    return "<1%" if 0 < p < 0.005 else f"{p:.0%}"


def plot_gradient_histograms(trackers, layers=None, steps=None, size: tuple[float, float] = (3.6, 2.4)):
    """Histograms of per-weight gradient magnitude (the paper's Fig. 5).

    A grid: one row per layer (shallow to deep), one column per run (e.g. with / without
    intermediate supervision); each panel overlays the histograms of several recorded steps,
    coloured from early (light) to late (dark). x is log10 |gradient|; y the fraction of the
    layer's weights. Weights whose gradient is below the first bin edge (exact zeros, e.g.
    behind dead ReLUs) or above the last one are not drawn; the legend gives their shares.
    """
    runs = _as_runs(trackers)
    first = next(iter(runs.values()))
    hist0 = first.histograms
    if hist0.empty:
        raise ValueError("the tracker has no histograms: record some steps with histogram_layers set")
    if layers is None:
        layers = list(dict.fromkeys(hist0["layer"]))
    all_steps = sorted(hist0["step"].unique())
    if steps is None:
        idx = np.unique(np.linspace(0, len(all_steps) - 1, min(4, len(all_steps))).round().astype(int))
        steps = [all_steps[i] for i in idx]
    if any(len(t.bin_edges) < 2 for t in runs.values()):
        raise ValueError("plotting needs trackers with at least two bin_edges")
    cmap = plt.get_cmap("Blues")
    nrows, ncols = len(layers), len(runs)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False,
                             sharex=True)
    used = []   # log10 range of the non-empty bins, one bin wider on each side
    for c, (label, t) in enumerate(runs.items()):
        h, edges = t.histograms, t.bin_edges
        x_edges = np.log10(edges)
        for r, layer in enumerate(layers):
            ax = axes[r, c]
            for k, s in enumerate(steps):
                g = h[(h["layer"] == layer) & (h["step"] == s)]
                if g.empty:
                    continue
                counts = g["count"].to_numpy()
                frac = counts / counts.sum()
                inner = frac[1:-1]   # between the edges; frac[0] is below them, frac[-1] above
                nz = np.nonzero(inner)[0]
                if len(nz):
                    used += [x_edges[max(nz.min() - 1, 0)], x_edges[min(nz.max() + 2, len(x_edges) - 1)]]
                shares = f"{_percent(frac[0])} below {edges[0]:.0e}"
                if frac[-1] > 0:
                    shares += f", {_percent(frac[-1])} above {edges[-1]:.0e}"
                ax.stairs(inner, x_edges, color=cmap(0.35 + 0.65 * k / max(len(steps) - 1, 1)), lw=1.5,
                          label=f"step {s} ({shares})")
            ax.set_title(f"{label + ': ' if label else ''}{layer}", fontsize=9)
            if c == 0:
                ax.set_ylabel("fraction of weights", fontsize=8)
            if r == nrows - 1:
                ax.set_xlabel("log10 |gradient|", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.legend(fontsize=8, frameon=False, loc="upper left")
    if used:
        ax.set_xlim(min(used), max(used))
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Cost
# --------------------------------------------------------------------------------------------
def plot_cost(cost: ModelCost, title: str | None = None):
    """Bars of parameters and GMACs per stage (the shared trunk counts in stage 2)."""
    st = cost.stages
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    colors = stage_colors(len(st))
    labels = [str(s) for s in st["stage"]]
    axes[0].bar(labels, st["params"] / 1e6, color=colors)
    axes[0].set_ylabel("parameters (millions)")
    axes[1].bar(labels, st["gmacs"], color=colors)
    axes[1].set_ylabel("GMACs per image")
    for ax in axes:
        ax.set_xlabel("stage")
    t = cost.totals
    fig.suptitle(title or f"Cost at {t['input_size']}x{t['input_size']}: {t['params'] / 1e6:.2f} M params, "
                 f"{t['gmacs']:.2f} GMACs/image (the shared trunk counts in stage 2)", fontsize=10)
    fig.tight_layout()
    return fig
