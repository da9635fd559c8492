"""Shared plumbing of the interactive explorers: one matplotlib figure per state, shown as a PNG
inside an ipywidgets panel, or as the PNG alone where no widget front end is present."""
from __future__ import annotations

import base64
import io


class FigurePanel:
    """Base class of :class:`BeliefExplorer` and :class:`ReceptiveFieldExplorer`.

    A subclass implements ``figure()`` (a matplotlib Figure of the current state) and
    ``_build_widget()`` (the ipywidgets panel; it must set ``self._image_widget``, the
    ``ipywidgets.Image`` that shows the figure), and sets ``self._widget = None`` in ``__init__``.
    """

    #: Keyword arguments for ``Figure.savefig`` when rendering the PNG.
    savefig_kwargs: dict = {}

    _widget = None
    _image_widget = None

    def figure(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _build_widget(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def png(self) -> bytes:
        """The current state rendered as PNG bytes."""
        buf = io.BytesIO()
        self.figure().savefig(buf, format="png", **self.savefig_kwargs)
        return buf.getvalue()

    @property
    def widget(self):
        """The ipywidgets panel (built on first use)."""
        if self._widget is None:
            self._widget = self._build_widget()
        return self._widget

    def _redraw(self) -> None:
        if self._widget is not None:
            self._image_widget.value = self.png()

    def _repr_mimebundle_(self, include=None, exclude=None):
        # The widget view for front ends that render widgets, and a PNG of the same state for
        # those that do not (nbconvert, static viewers): nothing fails without a widget manager.
        bundle = self.widget._repr_mimebundle_(include=include, exclude=exclude) or {}
        data = bundle[0] if isinstance(bundle, tuple) else bundle
        data = dict(data)
        data["image/png"] = base64.b64encode(self.png()).decode("ascii")
        data["text/plain"] = repr(self)
        return data
