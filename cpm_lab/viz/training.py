"""Training curves: a live view while ``Trainer.fit`` runs, and ``plot_history`` afterwards.

Both draw the same four panels from the trainer's history (one row per optimiser step):

- the loss of every stage (log y; one line per stage, stage 1..T, a running mean over the raw
  per-step values drawn faintly behind it);
- the learning rate;
- the L2 gradient norm of every stage's parameters, when a ``GradientTracker`` is given;
- the held-out PCK of every stage at each evaluation, when the history has ``pck@...`` columns
  (``Trainer(eval_set=..., config=TrainConfig(eval_every=...))``).

``LiveTrainingPlot`` redraws the figure every ``every`` optimiser steps and does nothing else
(no work in ``on_after_backward``; one append per step). In Jupyter it shows a PNG and replaces
it in place through an IPython display handle (``display(..., display_id=True)`` /
``handle.update``), the same mechanism as an ``Output`` widget with ``clear_output(wait=True)``
but without needing a widget manager: every front end updates it live, and the saved notebook
keeps the last figure. Outside IPython nothing is shown (``path=`` still writes the PNG).
"""
from __future__ import annotations

import io
import os
import re
import tempfile

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..callbacks import Callback
from .diagnostics import stage_colors

__all__ = ["LiveTrainingPlot", "plot_history", "draw_history"]

_LOSS = re.compile(r"^loss_stage(\d+)$")
_PCK = re.compile(r"^pck@([0-9.eE+-]+)_stage(\d+)$")


def _stage_columns(history: pd.DataFrame) -> dict[int, str]:
    cols = {int(m.group(1)): c for c in history.columns if (m := _LOSS.match(str(c)))}
    return dict(sorted(cols.items()))


def _pck_columns(history: pd.DataFrame) -> dict[float, dict[int, str]]:
    out: dict[float, dict[int, str]] = {}
    for c in history.columns:
        m = _PCK.match(str(c))
        if m:
            out.setdefault(float(m.group(1)), {})[int(m.group(2))] = c
    return out


def _as_history(history) -> pd.DataFrame:
    if isinstance(history, pd.DataFrame):
        df = history
    elif isinstance(history, (list, tuple)):
        df = pd.DataFrame(list(history))
    elif hasattr(history, "history") and isinstance(history.history, pd.DataFrame):
        df = history.history  # a Trainer
    else:
        raise TypeError(f"history must be a DataFrame (Trainer.fit's return value), a list of step records or a "
                        f"Trainer; got {type(history).__name__}")
    if len(df) and ("step" not in df.columns or not _stage_columns(df)):
        raise ValueError("history must have a 'step' column and per-stage loss columns 'loss_stage1', "
                         f"'loss_stage2', ...; got columns {list(df.columns)}")
    return df


def _running_mean(values: pd.Series, window: int) -> pd.Series:
    out = values.rolling(window, min_periods=1).mean()
    return out.where(values.notna())


def _plain_log(ax) -> None:
    """Log y axis labelled 20, 30, 0.001 rather than 2x10^1, 3x10^1, 10^-3."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(mticker.LogFormatter(labelOnlyBase=False))
    ax.yaxis.set_minor_formatter(mticker.LogFormatter(labelOnlyBase=False, minor_thresholds=(1.2, 0.6)))
    ax.tick_params(axis="y", which="minor", labelsize=8)


def _hint(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.35",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _phase_marks(ax, history: pd.DataFrame) -> None:
    """Dotted verticals where the training phase changes (stagewise strategies)."""
    if "phase" not in history.columns or history["phase"].nunique() < 2:
        return
    phase = history["phase"].to_numpy()
    steps = history["step"].to_numpy()
    for i in np.nonzero(phase[1:] != phase[:-1])[0]:
        ax.axvline(steps[i] + 0.5, color="0.5", ls=":", lw=0.9)


def _draw_loss(ax, df: pd.DataFrame, stages: dict[int, str], colors, smooth: int | None) -> None:
    """Loss panel: per stage a running mean (label ``stage t``) over its faint raw values."""
    steps = df["step"].to_numpy()
    n = max(stages)
    window = smooth if smooth is not None else int(np.clip(len(df) // 25, 1, 50))
    for t, col in stages.items():
        raw = df[col].astype(float)
        if window > 1:
            ax.plot(steps, raw, "-", color=colors[t - 1], lw=0.6, alpha=0.25)
        ax.plot(steps, _running_mean(raw, window), "-", color=colors[t - 1], lw=1.6, label=f"stage {t}")
    _plain_log(ax)
    ax.set_ylabel("loss per stage" + (f"\n(running mean of {window} steps)" if window > 1 else ""), fontsize=8)
    ax.set_title(f"loss f_t of each stage · step {int(steps[-1])}", fontsize=10)
    ax.legend(fontsize=8, frameon=False, ncol=2 if n > 3 else 1)
    ax.grid(alpha=0.3, which="both")
    _phase_marks(ax, df)


def _draw_lr(ax, df: pd.DataFrame) -> None:
    """Learning-rate panel (log y when it spans more than a factor of 5)."""
    if "lr" in df.columns:
        lr = df["lr"].astype(float)
        ax.plot(df["step"].to_numpy(), lr, color="0.25", lw=1.3)
        if (lr > 0).all() and lr.max() > 5 * lr.min():
            _plain_log(ax)
        ax.set_ylabel("learning rate", fontsize=8)
        ax.grid(alpha=0.3)
        _phase_marks(ax, df)
    else:
        _hint(ax, "no 'lr' column in the history")
    ax.set_xlabel("optimiser step", fontsize=8)


def _draw_gradients(ax, tracker, colors, n: int) -> None:
    """Gradient panel: the L2 norm of each stage's parameters from ``tracker.stage_norms``."""
    if tracker is None:
        _hint(ax, "gradient norms: pass tracker=GradientTracker(...)\nand give the same tracker to the Trainer")
    else:
        g = tracker.stage_norms
        if g.empty:
            _hint(ax, "no gradient records yet")
        else:
            for t, gg in g.groupby("stage"):
                ax.plot(gg["step"], gg["norm"].clip(lower=1e-30), "-", color=colors[int(t) - 1] if t <= n else None,
                        lw=1.4, marker="." if len(gg) < 30 else None, label=f"stage {int(t)}")
            _plain_log(ax)
            ax.set_xlabel("optimiser step", fontsize=8)
            ax.set_ylabel("gradient L2 norm", fontsize=8)
            ax.legend(fontsize=8, frameon=False)
            ax.grid(alpha=0.3, which="both")
    ax.set_title("gradient norm of each stage's parameters", fontsize=10)


def _draw_pck(ax, df: pd.DataFrame, colors, n: int, pck_threshold: float | None) -> None:
    """Held-out PCK panel: each stage's PCK at ``pck_threshold`` at every evaluation."""
    pcks = _pck_columns(df)
    if pcks:
        thr = pck_threshold if pck_threshold is not None else (0.2 if 0.2 in pcks else max(pcks))
        if thr not in pcks:
            raise ValueError(f"pck_threshold {thr} not in the history; logged thresholds: {sorted(pcks)}")
        for t, col in sorted(pcks[thr].items()):
            ev = df[["step", col]].dropna()
            ax.plot(ev["step"], ev[col], "o-", color=colors[t - 1] if t <= n else None, ms=3.5, lw=1.3,
                    label=f"stage {t}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("optimiser step", fontsize=8)
        ax.set_ylabel(f"held-out PCK@{thr:g}", fontsize=8)
        ax.legend(fontsize=8, frameon=False, loc="best")
        ax.grid(alpha=0.3)
    else:
        _hint(ax, "held-out PCK: give the Trainer an eval_set\nand set TrainConfig(eval_every=...)")
    ax.set_title("held-out accuracy of each stage", fontsize=10)


def draw_history(fig: Figure, history, tracker=None, smooth: int | None = None,
                 pck_threshold: float | None = None) -> Figure:
    """Draw the four training panels into ``fig`` (a fresh Figure) and return it.

    Args:
        history: the trainer history (DataFrame with ``step``, ``loss_stage{t}``, ``lr`` and
            optionally ``pck@{thr}_stage{t}`` and ``phase``), a list of its rows, or a Trainer.
        tracker: optional ``GradientTracker`` for the gradient panel.
        smooth: running-mean window (steps) of the loss lines; default ``len(history) // 25``
            (at least 1, at most 50).
        pck_threshold: which PCK threshold to plot; default 0.2 if logged, else the largest.
    """
    df = _as_history(history)
    # Fixed margins instead of a tight bounding box: rendering is ~2x faster (matters when live).
    gs = fig.add_gridspec(2, 2, height_ratios=[1.7, 1.0], hspace=0.45, wspace=0.3, left=0.085, right=0.985,
                          top=0.94, bottom=0.09)
    ax_loss, ax_grad = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
    ax_lr, ax_pck = fig.add_subplot(gs[1, 0], sharex=ax_loss), fig.add_subplot(gs[1, 1])
    if df.empty:
        _hint(ax_loss, "no steps yet")
        for ax in (ax_grad, ax_lr, ax_pck):
            ax.set_axis_off()
        return fig
    stages = _stage_columns(df)
    n = max(stages)
    colors = stage_colors(n)
    _draw_loss(ax_loss, df, stages, colors, smooth)
    _draw_lr(ax_lr, df)
    _draw_gradients(ax_grad, tracker, colors, n)
    _draw_pck(ax_pck, df, colors, n, pck_threshold)
    return fig


def plot_history(history, tracker=None, smooth: int | None = None, pck_threshold: float | None = None,
                 figsize: tuple[float, float] = (10.0, 5.6)):
    """The training curves after training (a pyplot Figure): per-stage loss, learning rate,
    per-stage gradient norms (with ``tracker``) and per-stage held-out PCK over steps (when the
    history has evaluation columns). See ``draw_history`` for the arguments."""
    fig = plt.figure(figsize=figsize)
    return draw_history(fig, history, tracker, smooth, pck_threshold)


def _in_ipython_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with the notebook extras
        return False
    ip = get_ipython()
    return ip is not None and getattr(ip, "kernel", None) is not None


class LiveTrainingPlot(Callback):
    """Trainer callback that redraws the training curves every ``every`` optimiser steps.

    Args:
        every: redraw period in optimiser steps (>= 1). Drawing costs a few tenths of a second
            on a CPU, so keep ``every`` at a few percent of the run.
        tracker: the ``GradientTracker`` you also pass to the Trainer, for the gradient panel.
        smooth, pck_threshold: see ``draw_history``.
        display: "auto" shows the figure when running in a Jupyter kernel; True / False force it.
        path: also write the PNG there at every redraw (atomically), e.g. for headless runs.
        figsize: inches.

    After ``on_train_start`` the callback holds the run's history so far (a resumed run starts
    from the checkpoint's history). ``redraws`` counts the periodic renders (``steps // every``
    for a run from step 1 that is shown or written somewhere; without a Jupyter kernel and
    without ``path`` nothing is rendered at all); ``on_train_end`` renders once more only if the
    last step was not drawn (``final_redraw``). ``figure()`` gives the current curves at any time.
    """

    def __init__(self, every: int = 25, tracker=None, smooth: int | None = None,
                 pck_threshold: float | None = None, display: bool | str = "auto",
                 path: str | os.PathLike | None = None, figsize: tuple[float, float] = (10.0, 5.6)):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer number of steps, got {every!r}")
        if display not in ("auto", True, False):
            raise ValueError(f"display must be 'auto', True or False, got {display!r}")
        self.every, self.tracker, self.smooth, self.pck_threshold = every, tracker, smooth, pck_threshold
        self.display, self.path, self.figsize = display, path, figsize
        self.records: list[dict] = []
        self.redraws = 0
        self.final_redraw = False
        self.last_drawn_step: int | None = None
        self._handle = None

    @property
    def history(self) -> pd.DataFrame:
        """The rows seen so far as a DataFrame."""
        return pd.DataFrame(self.records)

    def figure(self) -> Figure:
        """The current curves as a Figure (not attached to pyplot)."""
        fig = Figure(figsize=self.figsize, dpi=100)
        FigureCanvasAgg(fig)
        return draw_history(fig, self.records, self.tracker, self.smooth, self.pck_threshold)

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png")
        return buf.getvalue()

    # ---- hooks -------------------------------------------------------------------------------
    def on_train_start(self, trainer) -> None:
        past = getattr(trainer, "history", None)
        if isinstance(past, pd.DataFrame):  # a resumed run starts from the checkpoint's history
            self.records = past.to_dict("records")
        self.final_redraw = False
        show = _in_ipython_kernel() if self.display == "auto" else bool(self.display)
        self._handle = None  # every fit draws below the cell that runs it
        if show:
            from IPython.display import Markdown, display

            start = self.records[-1]["step"] if self.records else 0
            self._handle = display(Markdown(f"*LiveTrainingPlot: first figure after step "
                                            f"{start + self.every - start % self.every}...*"), display_id=True)

    def on_step_end(self, trainer, step: int, record: dict) -> None:
        self.records.append(dict(record))
        if step % self.every == 0:
            if self._draw():
                self.redraws += 1

    def on_train_end(self, trainer) -> None:
        if self.records and self.last_drawn_step != self.records[-1]["step"]:
            self.final_redraw = self._draw()

    def _draw(self) -> bool:
        """Render and show/write the figure; False (nothing rendered) when there is nowhere to
        show it (no Jupyter kernel and no ``path``)."""
        if self._handle is None and self.path is None:
            return False
        self.last_drawn_step = self.records[-1]["step"] if self.records else None
        png = self.png()
        if self._handle is not None:
            from IPython.display import Image

            self._handle.update(Image(data=png, format="png"))
        if self.path is not None:
            path = os.fspath(self.path)
            folder = os.path.dirname(os.path.abspath(path))
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".png", dir=folder)
            with os.fdopen(fd, "wb") as f:
                f.write(png)
            os.replace(tmp, path)
        return True

    def _repr_png_(self) -> bytes:
        return self.png()

    def __repr__(self) -> str:
        last = self.records[-1]["step"] if self.records else None
        return (f"LiveTrainingPlot(every={self.every}, steps seen={len(self.records)}, last step={last}, "
                f"redraws={self.redraws})")
