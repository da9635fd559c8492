"""Font sizes of every figure a notebook renders, at the size a reader sees it.

``install()`` wraps matplotlib's ``FigureCanvasBase.print_figure``, the one call behind both the
inline backend's figures and ``savefig`` (the explorers' PNGs), and records, per rendered figure,
its smallest visible text at the displayed size: a PNG of ``width_in × dpi`` pixels is shown at
its own pixel width, shrunk to fit an output area of ``DISPLAY_WIDTH_PX`` CSS pixels when wider;
a CSS pixel is 1/96 inch, so a font of ``s`` pt rendered at ``dpi`` and shrunk by ``scale`` reads
as ``s × dpi × scale / 96`` pt. (The width before ``bbox_inches="tight"`` trimming is used, which
errs towards calling text smaller than it is.)
"""
from __future__ import annotations

DISPLAY_WIDTH_PX = 1000   # JupyterLab's output area in a ~1280-1400 px wide window
MIN_PT = 8.0
SMALLEST: list[dict] = []


def _figure_name(fig) -> str:
    if fig._suptitle is not None and fig._suptitle.get_text():
        return fig._suptitle.get_text()
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    return titles[0] if titles else f"untitled figure with {len(fig.axes)} axes"


def record(fig, dpi=None) -> dict | None:
    import matplotlib
    from matplotlib.text import Text

    dpi = dpi or matplotlib.rcParams["savefig.dpi"]
    dpi = fig.dpi if dpi == "figure" else float(dpi)
    scale = min(1.0, DISPLAY_WIDTH_PX / (fig.get_size_inches()[0] * dpi))
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()
             and (t.axes is None or t.axes.get_visible())]
    if not texts:
        return None
    small = min(texts, key=lambda t: t.get_fontsize())
    entry = dict(figure=_figure_name(fig), text=small.get_text()[:40], fontsize=small.get_fontsize(),
                 displayed_pt=round(small.get_fontsize() * dpi * scale / 96, 2))
    SMALLEST.append(entry)
    return entry


def install() -> None:
    from matplotlib.backend_bases import FigureCanvasBase

    original = FigureCanvasBase.print_figure
    if getattr(original, "_audited", False):
        return

    def print_figure(self, *args, **kwargs):
        record(self.figure, kwargs.get("dpi"))
        return original(self, *args, **kwargs)

    print_figure._audited = True
    FigureCanvasBase.print_figure = print_figure
