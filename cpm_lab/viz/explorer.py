"""``BeliefExplorer``: look at a pose model's beliefs stage by stage and part by part.

The explorer runs the model once per (sample, occluder) and caches the beliefs, so moving the
stage slider, changing the part or the opacity only redraws. Moving the occluder re-runs the
model, so a learner can hide a joint and watch later stages recover it from context.

In JupyterLab it is an ipywidgets panel; where no widget front end is present (nbconvert, a
static notebook viewer) the same object shows a static figure of its current state instead.
"""
from __future__ import annotations

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import skeleton
from ..inference import Occluder, Prediction, predict
from ..targets import labelled_mask
from ._panel import FigurePanel
from .pose import draw_skeleton, overlay_beliefs, part_key, part_label, to_numpy


class BeliefExplorer(FigurePanel):
    """Interactive view of a model's beliefs on a dataset.

    Args:
        model: a ``CPM`` or ``PoseMachine`` (anything with ``codec`` and
            ``model(images, center_maps) -> list of (N, P+1, h, w)``).
        dataset: indexable, items are dicts with ``image`` (3×H×W), ``keypoints`` (P, 3) and
            optionally ``center`` (2,).
        index, stage, part: the initial sample, stage (1-based) and part: an index, a joint name
            from ``cpm_lab.skeleton.JOINT_NAMES``, or "all" (or None) for the colour composite.
        scale_to_peak: colour each map from 0 to its own peak instead of 0..1. None (the default)
            decides from the first sample: on when its last-stage beliefs peak below
            ``FAINT_PEAK`` (e.g. a PoseMachine's class probabilities, or a model unsure of a
            photo), off for a CPM whose peaks approach 1.

    The controls of ``widget`` and ``update()`` share one state: a scripted ``update()`` moves
    the controls to what it draws, and touching a control changes only its own setting.
    """

    #: Peak belief below which ``scale_to_peak=None`` turns peak scaling on.
    FAINT_PEAK = 0.5

    def __init__(self, model, dataset, index: int = 0, stage: int | None = None,
                 part: int | str = "all", opacity: float = 0.6, scale_to_peak: bool | None = None,
                 figsize: tuple[float, float] = (8.4, 5.4)):
        self.model, self.dataset = model, dataset
        self.codec = model.codec
        self.figsize = figsize
        self._cache: dict[tuple, Prediction] = {}
        self.runs = 0  # model forward passes so far (cached redraws don't count)
        self.state = dict(index=int(index), part=self._check_part(part), opacity=float(opacity), show_truth=True,
                          show_prediction=True, show_path=False, scale_to_peak=False, occluder=None)
        beliefs = self._beliefs()[0]
        self.num_stages = len(beliefs)
        if scale_to_peak is None:
            scale_to_peak = float(beliefs[-1][: self.codec.num_parts].max()) < self.FAINT_PEAK
        self.state["scale_to_peak"] = bool(scale_to_peak)
        self.state["stage"] = int(stage or self.num_stages)
        self._widget = None

    # ---- model and cache -------------------------------------------------------------------
    def _sample(self):
        return self.dataset[self.state["index"]]

    def _image(self) -> torch.Tensor:
        image = torch.as_tensor(self._sample()["image"]).float()
        occ = self.state["occluder"]
        return occ.apply(image) if occ is not None else image

    @property
    def prediction(self) -> Prediction:
        """The model's ``inference.Prediction`` for the current sample and occluder (one image:
        beliefs (1, P + 1, h, w) and keypoints (1, P, 3) per stage), computed once per state."""
        key = (self.state["index"], self.state["occluder"])
        if key not in self._cache:
            self._cache[key] = predict(self.model, self._image(), self._sample().get("center"))
            self.runs += 1
        return self._cache[key]

    def _beliefs(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(per-stage beliefs (P + 1, h, w), decoded keypoints (T, P, 3)) as numpy arrays."""
        pred = self.prediction
        return [b[0].numpy() for b in pred.beliefs], torch.stack([k[0] for k in pred.keypoints]).numpy()

    def update(self, **changes) -> "BeliefExplorer":
        """Change state programmatically (index, stage, part, opacity, show_truth,
        show_prediction, show_path, occluder=Occluder(...) or None) and redraw."""
        unknown = set(changes) - set(self.state)
        if unknown:
            raise ValueError(f"unknown explorer setting(s) {sorted(unknown)}; valid: {sorted(self.state)}")
        if "stage" in changes and not 1 <= int(changes["stage"]) <= self.num_stages:
            raise ValueError(f"stage must be in 1..{self.num_stages}, got {changes['stage']}")
        if "index" in changes and not 0 <= int(changes["index"]) < len(self.dataset):
            raise ValueError(f"index must be in 0..{len(self.dataset) - 1}, got {changes['index']}")
        if "part" in changes:
            changes["part"] = self._check_part(changes["part"])
        self.state.update(changes)
        self._redraw()
        return self

    def _check_part(self, part) -> int | str:
        """"all" (also for None) or a part index in 0..P-1 (joint names are looked up)."""
        return "all" if part is None or part == "all" else skeleton.part_index(part, self.codec.num_parts)

    # ---- drawing ---------------------------------------------------------------------------
    def figure(self) -> Figure:
        """A matplotlib Figure of the current state (not attached to pyplot)."""
        s = self.state
        beliefs, decoded = self._beliefs()
        t = s["stage"] - 1
        sample = self._sample()
        truth = to_numpy(sample["keypoints"])
        fig = Figure(figsize=self.figsize, dpi=100)
        FigureCanvasAgg(fig)
        key_in = 0.8 if s["part"] == "all" else 0.0   # room for the colour key of the composite
        gs = fig.add_gridspec(1, 2, width_ratios=[1.25, 1.0], wspace=0.28, bottom=(key_in + 0.45) / self.figsize[1],
                              top=1 - 0.4 / self.figsize[1], left=0.03, right=0.97)
        ax = fig.add_subplot(gs[0])
        overlay_beliefs(ax, self._image(), beliefs[t], part=s["part"], stride=self.codec.stride,
                        alpha=s["opacity"], vmax=None if s["scale_to_peak"] else 1.0)
        part = s["part"]
        parts = range(len(truth)) if part == "all" else [int(part)]
        if s["show_truth"]:
            draw_skeleton(ax, truth, alpha=0.5, linewidth=1.2, markersize=2.5)
        if s["show_prediction"]:
            pred = decoded[t].copy()
            pred[:, 2] = 1
            if part == "all":
                draw_skeleton(ax, pred, linestyle="--", linewidth=1.6)
            else:
                ax.plot(pred[int(part), 0], pred[int(part), 1], "x", color="cyan", ms=9, mew=2.2,
                        label=f"stage {s['stage']} prediction")
        if s["show_path"]:
            for p in parts:
                path = decoded[: t + 1, p, :2]
                colour = skeleton.JOINT_COLORS[p % len(skeleton.JOINT_COLORS)]
                ax.plot(path[:, 0], path[:, 1], "-", color=colour, lw=1.2, alpha=0.9)
                ax.plot(path[:, 0], path[:, 1], "o", color=colour, ms=2.5)
        occ = s["occluder"]
        if occ is not None:
            ax.add_patch(Rectangle((occ.x - occ.size / 2, occ.y - occ.size / 2), occ.size, occ.size,
                                   fill=False, ec="white", lw=1.2, ls=":"))
        ax.set_title(f"sample {s['index']} · stage {s['stage']}/{self.num_stages} · {part_label(part)}",
                     fontsize=10)
        self._draw_stage_panel(fig.add_subplot(gs[1]), decoded, truth, parts)
        if key_in:
            part_key(fig, num_parts=self.codec.num_parts, fontsize=9)
        return fig

    def _draw_stage_panel(self, ax, decoded: np.ndarray, truth: np.ndarray, parts) -> None:
        """Per-stage error of the shown part(s) against the ground truth, in input pixels; for a
        sample without any ground truth (a photo), their per-stage confidence (peak belief)."""
        stages = np.arange(1, len(decoded) + 1)
        vis = labelled_mask(truth)
        shown = [p for p in parts if vis[p]]
        if shown:
            err = np.linalg.norm(decoded[:, shown, :2] - truth[None, shown, :2], axis=-1)
            ax.plot(stages, err.mean(1), "o-", color="0.2", label="mean over shown parts" if len(shown) > 1 else None)
            if len(shown) == 1:
                ax.set_ylabel("distance to ground truth (px)")
            else:
                ax.set_ylabel("mean distance to ground truth (px)")
            ax.set_ylim(bottom=0)
        elif not vis.any():  # a photo: no ground truth, so the model's own confidence instead
            ax.plot(stages, decoded[:, list(parts), 2].mean(1), "o-", color="0.2")
            ax.set_ylabel("peak belief" + (" (mean over shown parts)" if len(parts) > 1 else ""))
            ax.set_ylim(0, 1)
        else:
            ax.text(0.5, 0.5, "part not annotated\nin this sample", ha="center", va="center",
                    transform=ax.transAxes, color="0.4")
        ax.axvline(self.state["stage"], color="tab:orange", lw=1.5, alpha=0.7)
        ax.set_xticks(stages)
        ax.set_xlabel("stage")
        ax.set_title("error per stage" if vis.any() else "confidence per stage (no ground truth)", fontsize=10)
        ax.grid(alpha=0.3)


    # ---- widgets ---------------------------------------------------------------------------
    def _build_widget(self):
        import ipywidgets as W

        s = self.state
        h, w = torch.as_tensor(self._sample()["image"]).shape[-2:]
        self._image_widget = W.Image(format="png", value=self.png(),
                                     layout=W.Layout(width=f"{int(self.figsize[0] * 100)}px"))
        sample = W.BoundedIntText(value=s["index"], min=0, max=len(self.dataset) - 1, description="sample")
        stage = W.IntSlider(value=s["stage"], min=1, max=self.num_stages, description="stage",
                            continuous_update=True)
        play = W.Play(value=s["stage"], min=1, max=self.num_stages, interval=700, description="play stages")
        W.jslink((play, "value"), (stage, "value"))
        names = skeleton.JOINT_NAMES[: self.codec.num_parts]
        part_options = [("all parts", "all")] + [(n.replace("_", " "), i) for i, n in enumerate(names)]
        if self.codec.num_parts != skeleton.NUM_JOINTS:
            part_options = [("all parts", "all")] + [(f"part {i}", i) for i in range(self.codec.num_parts)]
        part = W.Dropdown(options=part_options, value=s["part"], description="part")
        opacity = W.FloatSlider(value=s["opacity"], min=0.0, max=1.0, step=0.05, description="opacity")
        truth = W.Checkbox(value=s["show_truth"], description="ground truth", indent=False)
        pred = W.Checkbox(value=s["show_prediction"], description="prediction", indent=False)
        path = W.Checkbox(value=s["show_path"], description="argmax path over stages", indent=False)
        peak = W.Checkbox(value=s["scale_to_peak"], description="scale colours to peak", indent=False)
        occ_on = W.ToggleButton(value=False, description="occluder", icon="square")
        occ_x = W.IntSlider(value=int(w) // 2, min=0, max=int(w) - 1, description="occluder x")
        occ_y = W.IntSlider(value=int(h) // 2, min=0, max=int(h) - 1, description="occluder y")
        occ_size = W.IntSlider(value=max(8, int(w) // 6), min=4, max=int(w) // 2, description="size")
        self.controls = dict(sample=sample, stage=stage, play=play, part=part, opacity=opacity,
                             truth=truth, prediction=pred, path=path, scale_to_peak=peak, occluder=occ_on,
                             occluder_x=occ_x, occluder_y=occ_y, occluder_size=occ_size)
        self._sync_controls()

        def setting(key):
            return self._observer(lambda change: self.update(**{key: change["new"]}))

        @self._observer
        def occluder(_):
            self.update(occluder=Occluder(occ_x.value, occ_y.value, occ_size.value) if occ_on.value else None)

        for key, c in (("index", sample), ("stage", stage), ("part", part), ("opacity", opacity),
                       ("show_truth", truth), ("show_prediction", pred), ("show_path", path),
                       ("scale_to_peak", peak)):
            c.observe(setting(key), names="value")
        for c in (occ_on, occ_x, occ_y, occ_size):
            c.observe(occluder, names="value")
        left = W.VBox([sample, W.HBox([play, stage]), part, opacity, W.HBox([truth, pred]), path, peak])
        right = W.VBox([occ_on, occ_x, occ_y, occ_size])
        return W.VBox([W.HBox([left, right]), self._image_widget])

    def _control_values(self) -> dict:
        s, occ = self.state, self.state["occluder"]
        values = dict(sample=s["index"], stage=s["stage"], play=s["stage"], part=s["part"], opacity=s["opacity"],
                      truth=s["show_truth"], prediction=s["show_prediction"], path=s["show_path"],
                      scale_to_peak=s["scale_to_peak"], occluder=occ is not None)
        if occ is not None:   # the sliders show the square's pixel (they clamp to the image)
            values.update(occluder_x=round(occ.x), occluder_y=round(occ.y), occluder_size=round(occ.size))
        return values

    def __repr__(self) -> str:
        s = self.state
        return (f"BeliefExplorer(sample={s['index']}, stage={s['stage']}/{self.num_stages}, "
                f"part={part_label(s['part'])}, model runs={self.runs})")
