"""Shared plumbing of the interactive explorers: one matplotlib figure per state, shown as a PNG
inside an ipywidgets panel, or as the PNG alone where no widget front end is present."""
from __future__ import annotations

import base64
import io


class FigurePanel:
    """Base class of :class:`BeliefExplorer` and :class:`ReceptiveFieldExplorer`.

    A subclass implements ``figure()`` (a matplotlib Figure of the current state),
    ``_build_widget()`` (the ipywidgets panel; it must set ``self._image_widget``, the
    ``ipywidgets.Image`` that shows the figure, and ``self.controls``, a dict of named controls)
    and ``_control_values()`` (the value each control must show for the current state), and sets
    ``self._widget = None`` in ``__init__``.

    The state is the one truth: every redraw first moves the controls to it, so a scripted
    ``update()`` and the widgets never disagree. Observers wrapped in ``_observer`` ignore those
    moves, so syncing never re-enters ``update()``.
    """

    #: Keyword arguments for ``Figure.savefig`` when rendering the PNG.
    savefig_kwargs: dict = {}

    _widget = None
    _image_widget = None
    controls: dict | None = None
    _syncing = False

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

    def _control_values(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sync_controls(self) -> None:
        """Move the controls (once built) to the current state without triggering their observers."""
        if not self.controls:
            return
        self._syncing = True
        try:
            for name, value in self._control_values().items():
                self.controls[name].value = value
        finally:
            self._syncing = False

    def _observer(self, handler):
        """``handler(change)`` for ``control.observe``, skipped while the controls are being synced."""
        def observe(change):
            if not self._syncing:
                handler(change)
        return observe

    def _redraw(self) -> None:
        self._sync_controls()
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
