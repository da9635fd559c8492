"""``PhotoPanel``: a pose model on your own photo, with a person box you can adjust.

Each change of the box re-runs ``inference.predict_image`` (the LSP protocol's scale search,
about a tenth of a second per photo for the small shipped models on a CPU) and redraws every
stage's skeleton on the photo. ``item()`` hands the framed person to ``BeliefExplorer``, whose
occluder then works on the photo.

In JupyterLab it is an ipywidgets panel (a "person box" toggle and two range sliders); without a
widget front end it shows the static figure of its current state.
"""
from __future__ import annotations

from typing import Sequence

from ..inference import PhotoPrediction, person_item, predict_image, read_photo
from ._panel import FigurePanel
from .pose import plot_photo_prediction


class PhotoPanel(FigurePanel):
    """Per-stage predictions on one photo.

    Args:
        model: a CPM (``inference.load_model``).
        image: a file path or anything ``inference.as_image`` reads.
        box: the person box (x0, y0, x1, y1) in the photo's pixels, or None for the LSP default
            (the image centre and height).
        stages: the stages to draw (1-based); default all.
        size: the height of one panel in inches.
    """

    def __init__(self, model, image, box: Sequence[float] | None = None, stages: Sequence[int] | None = None,
                 size: float = 3.0):
        self.model = model
        self.image, self.source = read_photo(image)
        self.stages, self.size = stages, size
        self.box = None if box is None else tuple(float(v) for v in box)
        self.runs = 0
        self._prediction: PhotoPrediction | None = None
        self._widget = None

    @property
    def prediction(self) -> PhotoPrediction:
        """The prediction for the current box (computed once per box)."""
        if self._prediction is None or self._prediction.box != self.box:
            self._prediction = predict_image(self.model, self.image, box=self.box)
            self._prediction.source = self.source
            self.runs += 1
        return self._prediction

    def update(self, box: Sequence[float] | None = None) -> "PhotoPanel":
        """Set the person box (None: image centre and height) and redraw."""
        self.box = None if box is None else tuple(float(v) for v in box)
        self._redraw()
        return self

    def item(self) -> dict:
        """The person in the current box as a ``BeliefExplorer`` dataset item (``person_item``)."""
        return person_item(self.model, self.image, self.box)

    def figure(self):
        import os

        title = os.path.basename(self.source) if self.source else None
        return plot_photo_prediction(self.prediction, stages=self.stages, size=self.size, title=title)

    def _build_widget(self):
        import ipywidgets as W

        h, w = self.image.shape[-2:]
        x0, y0, x1, y1 = self.box or (0, 0, w - 1, h - 1)
        self._image_widget = W.Image(format="png", value=self.png())
        use = W.ToggleButton(value=self.box is not None, description="person box", icon="square-o")
        xs = W.IntRangeSlider(value=(int(x0), int(x1)), min=0, max=int(w) - 1, description="box x",
                              continuous_update=False)
        ys = W.IntRangeSlider(value=(int(y0), int(y1)), min=0, max=int(h) - 1, description="box y",
                              continuous_update=False)
        self.controls = dict(box=use, x=xs, y=ys)

        @self._observer
        def on_change(_=None):
            (a, b), (c, d) = xs.value, ys.value
            self.update((a, c, max(b, a + 1), max(d, c + 1)) if use.value else None)

        for c in (use, xs, ys):
            c.observe(on_change, names="value")
        return W.VBox([W.HBox([use, xs, ys]), self._image_widget])

    def _control_values(self) -> dict:
        if self.box is None:
            return dict(box=False)
        x0, y0, x1, y1 = self.box
        return dict(box=True, x=(round(x0), round(x1)), y=(round(y0), round(y1)))

    def __repr__(self) -> str:
        where = "image centre and height" if self.box is None else f"box {tuple(round(v) for v in self.box)}"
        return f"PhotoPanel({self.source or 'array'}, {where}, model runs={self.runs})"
