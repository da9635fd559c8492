"""``ReceptiveFieldExplorer``: where on the image can one belief cell of stage t look?

Pick a stage and an output cell. The explorer draws on the image

- the ANALYTIC receptive field of that cell for every stage up to the chosen one (squares from
  ``cpm_lab.diagnostics.receptive_fields``: everything outside a square cannot influence the
  cell), and
- the EMPIRICAL effective receptive field of the chosen stage (Luo et al., NIPS 2016; from
  ``cpm_lab.diagnostics.effective_receptive_field``): mean ``|d belief / d pixel|`` as a heat
  overlay, with the square around the cell that holds ``mass`` (default 95 %) of it.

The effective field is a gradient computation, so it is computed once per (stage, cell, part)
and cached; toggling overlays, cropping, or going back to a cell seen before only redraws.

In JupyterLab it is an ipywidgets panel (sliders for stage, output row and column); where no
widget front end is present (nbconvert, a static notebook viewer) the same object shows a PNG of
its current state, as ``BeliefExplorer`` does.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib import colormaps, patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import skeleton
from ..diagnostics.effective_rf import EffectiveRF, effective_receptive_field
from ..diagnostics.receptive_field import receptive_fields
from ..inference import model_device, stage_outputs
from ._panel import FigurePanel
from .diagnostics import stage_colors
from .pose import draw_skeleton, image_hwc, part_label

__all__ = ["ReceptiveFieldExplorer"]

_OUTLINE = [patheffects.withStroke(linewidth=3.2, foreground="black")]


def _as_images(dataset_or_image, n_images: int):
    """(shown-image source, ERF images (N, 3, H, W), keypoints or None per shown index)."""
    if isinstance(dataset_or_image, (torch.Tensor, np.ndarray)):
        x = torch.as_tensor(dataset_or_image, dtype=torch.float32)
        if x.ndim == 3:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError("dataset_or_image must be an image (3, H, W), a batch (N, 3, H, W) or a "
                             f"dataset of dicts with 'image'; got a tensor of shape {tuple(x.shape)}")
        return x, None
    if hasattr(dataset_or_image, "__getitem__") and hasattr(dataset_or_image, "__len__"):
        if len(dataset_or_image) == 0:
            raise ValueError("dataset_or_image is an empty dataset")
        return None, dataset_or_image
    raise TypeError("dataset_or_image must be an image tensor (3, H, W), a batch (N, 3, H, W) or a dataset "
                    f"whose items are dicts with 'image'; got {type(dataset_or_image).__name__}")


class ReceptiveFieldExplorer(FigurePanel):
    """Interactive view of analytic and effective receptive fields of one output cell.

    Args:
        model: a CPM (or any model ``cpm_lab.diagnostics.receptive_fields`` can analyse and that
            returns a list of per-stage belief maps ``(N, C, h, w)``).
        dataset_or_image: one image (3, H, W), a batch (N, 3, H, W), or a dataset whose items
            are dicts with ``image`` (3, H, W) and optionally ``keypoints`` (P, 3), drawn
            faintly for orientation. Images are floats in [0, 1].
        index: which image / dataset item to draw on.
        stage: initial stage (1-based; default the last).
        location: initial output cell ``(row, col)`` of the belief grid (default the centre).
        part: the belief channel whose gradient is measured: a part index or joint name, or
            None for the sum over all part channels (background excluded).
        n_images: the effective field is averaged over the first ``n_images`` images of the
            batch / dataset (Luo et al. average over images; a single image gives that image's
            own, noisier field).
        mass: gradient-mass fraction of the drawn effective square (0 < mass <= 1).
        show_analytic, show_effective: initial overlay switches.
        crop: True limits the view to the image; False (default) zooms out until the chosen
            stage's analytic square is whole, to show how far past the image it reaches.

    Geometry. Squares are drawn where the analysis puts them: the analytic field of output
    cell ``i`` is centred on input pixel ``start + jump * i``, which is ``8 i + 7`` for a CPM
    (three unpadded 3x3/2 pools), and the effective-field square is centred on the same point.
    The codec (``cpm_lab.targets``) places training targets at ``8 i + 3.5``, the centre of the
    8x8 block of pixels a cell covers; that block is outlined in red. The 3.5 px offset is
    absorbed by the learned "same"-padded kernels (see ``cpm_lab.diagnostics.receptive_field``).

    Attributes:
        analytic: the per-stage analytic table (``ReceptiveFields.stages``).
        erf_runs: number of effective-field computations so far (cached redraws don't count).
        state: the current view (stage, location, part, show_analytic, show_effective, crop,
            opacity); change it with ``update``.
    """

    savefig_kwargs = {"bbox_inches": "tight"}

    def __init__(self, model, dataset_or_image, *, index: int = 0, stage: int | None = None,
                 location: tuple[int, int] | None = None, part: int | str | None = None,
                 n_images: int = 8, mass: float = 0.95, show_analytic: bool = True,
                 show_effective: bool = True, crop: bool = False, opacity: float = 0.8,
                 figsize: tuple[float, float] = (9.6, 4.6)):
        if not isinstance(n_images, int) or n_images < 1:
            raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
        if not 0 < mass <= 1:
            raise ValueError(f"mass must be in (0, 1], got {mass}")
        self.model = model
        self.mass = float(mass)
        self.figsize = figsize
        self._tensor, self._dataset = _as_images(dataset_or_image, n_images)
        size = len(self._tensor) if self._tensor is not None else len(self._dataset)
        if not 0 <= int(index) < size:
            raise ValueError(f"index must be in 0..{size - 1}, got {index}")
        self.index = int(index)
        self.n_images = min(n_images, size)
        image = self._image()
        self.height, self.width = image.shape[-2:]
        self.rf = receptive_fields(model, input_size=int(self.width))
        self.analytic = self.rf.stages
        self.num_stages = len(self.analytic)
        self.grid = self._grid_shape(image)
        self.num_channels = self._num_channels
        self._cache: dict[tuple, EffectiveRF] = {}
        self.erf_runs = 0
        self.state = dict(stage=self.num_stages, location=(self.grid[0] // 2, self.grid[1] // 2), part=None,
                          show_analytic=bool(show_analytic), show_effective=bool(show_effective),
                          crop=bool(crop), opacity=float(opacity))
        self._validate(dict(stage=stage if stage is not None else self.num_stages,
                            location=location if location is not None else self.state["location"],
                            part=part))
        self.state.update(stage=int(stage or self.num_stages),
                          location=tuple(int(v) for v in (location or self.state["location"])),
                          part=self._part_index(part))
        self._widget = None

    # ---- data and model ----------------------------------------------------------------------
    def _image(self, i: int | None = None) -> torch.Tensor:
        i = self.index if i is None else i
        if self._tensor is not None:
            return self._tensor[i]
        item = self._dataset[i]
        img = item["image"] if isinstance(item, dict) else item
        return torch.as_tensor(img, dtype=torch.float32)

    def _keypoints(self):
        if self._dataset is None:
            return None
        item = self._dataset[self.index]
        return item.get("keypoints") if isinstance(item, dict) else None

    def _erf_images(self) -> torch.Tensor:
        if self._tensor is not None:
            return self._tensor[: self.n_images]
        return torch.stack([self._image(i) for i in range(self.n_images)])

    def _grid_shape(self, image: torch.Tensor) -> tuple[int, int]:
        """(rows, cols) of the belief grid, from one forward pass (also counts channels)."""
        outs = stage_outputs(self.model, image.unsqueeze(0).to(model_device(self.model), torch.float32))
        if len(outs) != self.num_stages:
            raise ValueError(f"the model returns {len(outs)} stage output(s) but its analysis has "
                             f"{self.num_stages} stage(s)")
        self._num_channels = outs[0].shape[1]
        return int(outs[0].shape[-2]), int(outs[0].shape[-1])

    def _part_index(self, part) -> int | None:
        """None (all parts) or a part index below the model's part count (names are looked up)."""
        if part is None:
            return None
        return skeleton.part_index(part, self.num_channels - 1 if self.num_channels > 1 else 1)

    def effective(self, stage: int | None = None, location: tuple[int, int] | None = None,
                  part: int | str | None = "current") -> EffectiveRF:
        """The effective receptive field of ``stage`` at output cell ``location`` (defaults: the
        current state), computed on first use and cached per (stage, location, part)."""
        s = self.state
        stage = int(stage if stage is not None else s["stage"])
        location = tuple(int(v) for v in (location if location is not None else s["location"]))
        part = s["part"] if isinstance(part, str) and part == "current" else self._part_index(part)
        self._validate(dict(stage=stage, location=location, part=part))
        key = (stage, location, part)
        if key not in self._cache:
            self._cache[key] = effective_receptive_field(
                self.model, self._erf_images(), part=part, location=location, stages=[stage],
                batch_size=self.n_images, mass=self.mass)
            self.erf_runs += 1
        return self._cache[key]

    # ---- state -------------------------------------------------------------------------------
    def _validate(self, changes: dict) -> None:
        unknown = set(changes) - set(self.state)
        if unknown:
            raise ValueError(f"unknown explorer setting(s) {sorted(unknown)}; valid: {sorted(self.state)}")
        if "stage" in changes:
            st = changes["stage"]
            if isinstance(st, bool) or not isinstance(st, (int, np.integer)) or not 1 <= st <= self.num_stages:
                raise ValueError(f"stage must be an integer in 1..{self.num_stages}, got {st!r}")
        if "location" in changes:
            loc = changes["location"]
            rows, cols = self.grid
            ok = isinstance(loc, (tuple, list)) and len(loc) == 2 and all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in loc)
            if not ok or not (0 <= loc[0] < rows and 0 <= loc[1] < cols):
                raise ValueError(f"location must be an output cell (row, col) with row in 0..{rows - 1} and "
                                 f"col in 0..{cols - 1} (the {rows}x{cols} belief grid); got {loc!r}")
        if "part" in changes:
            self._part_index(changes["part"])
        if "opacity" in changes and not 0 <= float(changes["opacity"]) <= 1:
            raise ValueError(f"opacity must be in [0, 1], got {changes['opacity']}")

    def update(self, **changes) -> "ReceptiveFieldExplorer":
        """Change the view (stage, location=(row, col), part, show_analytic, show_effective,
        crop, opacity) and redraw. Raises ValueError naming the setting for bad values."""
        self._validate(changes)
        if "location" in changes:
            changes["location"] = tuple(int(v) for v in changes["location"])
        if "part" in changes:
            changes["part"] = self._part_index(changes["part"])
        if "stage" in changes:
            changes["stage"] = int(changes["stage"])
        self.state.update(changes)
        self._redraw()
        return self

    # ---- geometry ----------------------------------------------------------------------------
    def analytic_center(self, stage: int, location: tuple[int, int] | None = None) -> tuple[float, float]:
        """(x, y) input pixel on which the analytic field of ``stage`` at ``location`` is centred."""
        row, col = location if location is not None else self.state["location"]
        r = self.analytic.set_index("stage").loc[stage]
        return float(r["start_px"] + r["jump_px"] * col), float(r["start_px"] + r["jump_px"] * row)

    def analytic_side(self, stage: int) -> float:
        """Side in input pixels of the analytic receptive field of ``stage``."""
        return float(self.analytic.set_index("stage").loc[stage, "rf_px"])

    # ---- drawing -----------------------------------------------------------------------------
    def figure(self) -> Figure:
        """A matplotlib Figure of the current state (not attached to pyplot)."""
        s = self.state
        t, (row, col) = s["stage"], s["location"]
        h, w = self.height, self.width
        fig = Figure(figsize=self.figsize, dpi=100)
        FigureCanvasAgg(fig)
        gs = fig.add_gridspec(1, 2, width_ratios=[1.35, 1.0], wspace=0.45)
        ax = fig.add_subplot(gs[0])
        img = image_hwc(self._image())
        if s["show_effective"]:
            # A dim grey copy of the image, so the coloured gradient heat stands out on it.
            img = np.repeat(0.12 + 0.45 * img.mean(-1, keepdims=True), 3, axis=-1)
        ax.imshow(img, extent=(-0.5, w - 0.5, h - 0.5, -0.5))
        ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, ec="0.3", lw=0.8, ls=":"))
        kp = self._keypoints()
        if kp is not None:
            draw_skeleton(ax, kp, alpha=0.35, linewidth=1.0, markersize=2)
        erf = None
        if s["show_effective"]:
            erf = self.effective()
            m = erf.maps[0]
            norm = m / m.max() if m.max() > 0 else m
            rgba = colormaps["hot"](0.3 + 0.7 * norm)
            rgba[..., 3] = np.clip(1.5 * np.sqrt(norm), 0, 1) * s["opacity"]  # sqrt: keep the faint tail visible
            ax.imshow(rgba, extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="nearest")
            row_ = erf.summary.iloc[0]
            side = float(row_["side_px"])
            if np.isfinite(side):
                ax.add_patch(Rectangle((row_["center_x"] - side / 2, row_["center_y"] - side / 2), side, side,
                                       fill=False, ec="white", lw=1.8, path_effects=_OUTLINE,
                                       label=f"effective, stage {t}: {erf.mass:.0%} of |grad| in {side:g} px"))
        colors = stage_colors(self.num_stages)
        half = 0.0
        if s["show_analytic"]:
            for k in range(1, t + 1):
                cx, cy = self.analytic_center(k)
                a = self.analytic_side(k)
                ax.add_patch(Rectangle((cx - a / 2, cy - a / 2), a, a, fill=False, ec=colors[k - 1],
                                       lw=2.2 if k == t else 1.3, ls="-" if k == t else "--",
                                       label=f"analytic, stage {k}: {a:g} px"))
                half = max(half, a / 2)
        cx, cy = self.analytic_center(t)
        stride = int(self.analytic["jump_px"].iloc[-1])
        ax.add_patch(Rectangle((stride * col - 0.5, stride * row - 0.5), stride, stride, fill=False, ec="red", lw=1.2,
                               label=f"cell (row {row}, col {col}): pixels it covers"))
        ax.plot([cx], [cy], "+", color="red", ms=9, mew=1.8, label=f"field centre x={cx:g}, y={cy:g}")
        if s["crop"] or half == 0:
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        else:
            pad = 0.04 * max(w, h, 2 * half)
            ax.set_xlim(min(-0.5, cx - half) - pad, max(w - 0.5, cx + half) + pad)
            ax.set_ylim(max(h - 0.5, cy + half) + pad, min(-0.5, cy - half) - pad)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=8)
        ax.set_xlabel("x (input pixels)", fontsize=8)
        ax.set_ylabel("y (input pixels)", fontsize=8)
        what = "all parts" if s["part"] is None else part_label(s["part"])
        ax.set_title(f"stage {t}/{self.num_stages} · cell (row {row}, col {col}) · {what}", fontsize=10)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, frameon=False, ncol=2)
        self._draw_sizes(fig.add_subplot(gs[1]), colors)
        return fig

    def _draw_sizes(self, ax, colors) -> None:
        """Field side per stage: analytic (all stages) and effective (stages computed so far for
        the current cell and part), against the image side."""
        s = self.state
        stages = self.analytic["stage"].to_numpy()
        ax.plot(stages, self.analytic["rf_px"], "-", color="0.55", lw=1.2, zorder=1)
        ax.scatter(stages, self.analytic["rf_px"], c=[colors[k - 1] for k in stages], s=36, zorder=2,
                   label="analytic field")
        eff = [(k, self._cache[(k, s["location"], s["part"])]) for k in stages
               if (k, s["location"], s["part"]) in self._cache]
        if eff:
            ks = [k for k, _ in eff]
            sides = [float(e.summary.iloc[0]["side_px"]) for _, e in eff]
            ax.plot(ks, sides, "s", mfc="white", mec="black", ms=7, mew=1.4, zorder=3,
                    label=f"effective ({self.mass:.0%} mass), computed")
        ax.axhline(self.width, color="0.3", ls=":", lw=1, label=f"image side ({self.width} px)")
        ax.axvline(s["stage"], color="tab:orange", lw=1.4, alpha=0.7)
        ax.set_xticks(stages)
        ax.set_xlabel("stage")
        ax.set_ylabel("side of the field (input pixels)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False, loc="upper left")
        ax.set_title("field size per stage", fontsize=10)


    # ---- widgets -----------------------------------------------------------------------------
    def _build_widget(self):
        import ipywidgets as W

        s = self.state
        rows, cols = self.grid
        self._image_widget = W.Image(format="png", value=self.png(),
                                     layout=W.Layout(width=f"{int(self.figsize[0] * 100)}px"))
        stage = W.IntSlider(value=s["stage"], min=1, max=self.num_stages, description="stage")
        # Cells trigger a gradient computation: update on release, not on every intermediate value.
        row = W.IntSlider(value=s["location"][0], min=0, max=rows - 1, description="output row",
                          continuous_update=False)
        col = W.IntSlider(value=s["location"][1], min=0, max=cols - 1, description="output col",
                          continuous_update=False)
        names = skeleton.JOINT_NAMES if self.num_channels - 1 == skeleton.NUM_JOINTS else \
            [f"part {i}" for i in range(max(self.num_channels - 1, 1))]
        part = W.Dropdown(options=[("all parts (sum)", None)] + [(n.replace("_", " "), i) for i, n in enumerate(names)],
                          value=s["part"], description="belief of")
        analytic = W.Checkbox(value=s["show_analytic"], description="analytic fields", indent=False)
        effective = W.Checkbox(value=s["show_effective"], description="effective field", indent=False)
        crop = W.Checkbox(value=s["crop"], description="crop to image", indent=False)
        self._status = W.Label(value="")
        self.controls = dict(stage=stage, row=row, col=col, part=part, analytic=analytic,
                             effective=effective, crop=crop)

        @self._observer
        def on_change(_=None):
            key = (stage.value, (row.value, col.value), part.value)
            if effective.value and key not in self._cache:
                self._status.value = "computing the effective field (one backward pass per image batch)..."
            self.update(stage=stage.value, location=(row.value, col.value), part=part.value,
                        show_analytic=analytic.value, show_effective=effective.value, crop=crop.value)
            self._status.value = f"effective fields computed: {self.erf_runs}"

        for c in self.controls.values():
            c.observe(on_change, names="value")
        left = W.VBox([stage, row, col, part])
        right = W.VBox([analytic, effective, crop, self._status])
        return W.VBox([W.HBox([left, right]), self._image_widget])

    def _control_values(self) -> dict:
        s = self.state
        return dict(stage=s["stage"], row=s["location"][0], col=s["location"][1], part=s["part"],
                    analytic=s["show_analytic"], effective=s["show_effective"], crop=s["crop"])

    def __repr__(self) -> str:
        s = self.state
        what = "all parts" if s["part"] is None else part_label(s["part"])
        return (f"ReceptiveFieldExplorer(stage={s['stage']}/{self.num_stages}, cell={s['location']}, "
                f"grid={self.grid[0]}x{self.grid[1]}, part={what}, effective fields computed={self.erf_runs})")
