"""Gradient flow per layer and per stage: the instrument behind the paper's Fig. 5.

Wei et al. (Sec. 3.3, Fig. 5) show that without intermediate supervision the gradients reaching
the early layers of a deep CPM collapse toward zero, while a loss on every stage keeps them
alive. ``GradientTracker`` records what is needed to see this during any training run: the L2
gradient norm of every conv layer and of every stage, and histograms of per-weight gradient
magnitudes at chosen layers.

It is cheap enough to leave on: all norms come from one ``torch._foreach_norm`` over the
parameters, histograms from ``torch.bucketize`` + ``bincount`` on the device, and each record
costs a single device-to-host copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from ..callbacks import Callback
from .receptive_field import layer_graph, unwrap_model

__all__ = ["GradientTracker", "TrackedLayer", "tracked_layers", "DEFAULT_BIN_EDGES", "compare_supervision",
           "SupervisionComparison"]

#: Log-spaced gradient-magnitude bin edges: 4 per decade from 1e-10 to 1e3 (the last conv of a
#: stage sees per-weight gradients above 10 early in training). Histograms add an underflow bin
#: [0, 1e-10) (exact zeros land there) and an overflow bin [1e3, inf).
DEFAULT_BIN_EDGES = np.logspace(-10, 3, 53)


@dataclass(frozen=True)
class TrackedLayer:
    """A conv layer reported by ``GradientTracker``: readable name, owning stage, depth (convs on
    the longest path from the image, inclusive), whether it lies on that longest path to the
    final output (``main_path``; False for side branches such as the shared trunk and the
    stages' feature convs), and the module."""

    name: str
    stage: int
    depth: int
    main_path: bool
    module: nn.Module = field(repr=False, compare=False)


def tracked_layers(model: nn.Module) -> list[TrackedLayer]:
    """The conv layers a ``GradientTracker`` reports, with their readable names.

    For a CPM (or an ``nn.Sequential``) layers are named as in ``layer_graph``
    (``"stage1.conv3"``, ``"trunk.conv1"``, ``"stage4.conv2"``) and ``depth`` is the number of
    conv layers on the longest path from the image to the layer, inclusive (stage1.conv1 is 1;
    stage 2's refinement convs come after all of stage 1). Other models fall back to every
    ``nn.Conv2d`` named by its module path, stage 1, depth = its order of registration.
    """
    model = unwrap_model(model)
    try:
        graph = layer_graph(model)
    except TypeError:
        convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        return [TrackedLayer(n, 1, i + 1, True, m) for i, (n, m) in enumerate(convs)]
    depth: dict[str, int] = {}
    for n in graph.nodes:
        depth[n.name] = max((depth[i] for i in n.inputs), default=0) + (n.kind == "conv")
    # Walk back from the final output along the deepest inputs to mark the main path.
    by_name = {n.name: n for n in graph.nodes}
    main, todo = set(), [graph.outputs[max(graph.outputs)]]
    while todo:
        name = todo.pop()
        if name in main:
            continue
        main.add(name)
        ins = by_name[name].inputs
        if ins:
            deepest = max(depth[i] for i in ins)
            todo += [i for i in ins if depth[i] == deepest]
    return [TrackedLayer(n.name, n.stage, depth[n.name], n.name in main, n.module)
            for n in graph.nodes if n.kind == "conv"]


def _stage_params(model: nn.Module) -> dict[int, list[nn.Parameter]]:
    if hasattr(model, "stage_modules") and hasattr(model, "config"):
        out = {}
        for t in range(1, model.config.num_stages + 1):
            out[t] = [p for m in model.stage_modules(t) for p in m.parameters()]
        return out
    return {1: list(model.parameters())}


class GradientTracker(Callback):
    """Records gradient norms and magnitude histograms every ``every`` optimiser steps.

    Use it as a trainer callback (it acts in ``on_after_backward``), or call
    ``record(model, step)`` yourself after ``loss.backward()``. Steps recorded: step 1 and every
    multiple of ``every``.

    Args:
        every: record period in optimiser steps (>= 1).
        histogram_layers: layer names (see ``tracked_layers``) whose per-weight gradient
            magnitudes are histogrammed; ``"default"`` = the first conv of stage 1, a conv in
            the middle of the network and the last conv of the last stage (the paper's
            "layers of different depth"); ``"all"``; or None / ``()`` for none.
        bin_edges: increasing positive magnitude edges (default ``DEFAULT_BIN_EDGES``).

    Results (pandas DataFrames, built on access):
        ``norms``: step, stage, layer, depth, norm: one row per conv layer (L2 norm of weight
        and bias gradients together) and one per stage with ``layer == "stage{t}"`` and
        ``depth`` <NA> (L2 norm over all of ``CPM.stage_modules(t)``'s parameters; the shared
        trunk counts in stage 2). A parameter without a gradient counts as zero.
        ``layer_norms`` / ``stage_norms``: the two halves of ``norms``.
        ``histograms``: step, layer, bin_left, bin_right, count; counts of a (step, layer) sum
        to the layer's number of weights (bias excluded).
    """

    def __init__(self, every: int = 10, histogram_layers="default", bin_edges=None):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer number of steps, got {every!r}")
        edges = np.asarray(DEFAULT_BIN_EDGES if bin_edges is None else bin_edges, dtype=np.float64)
        if edges.ndim != 1 or len(edges) < 1 or np.any(edges <= 0) or np.any(np.diff(edges) <= 0):
            raise ValueError("bin_edges must be a 1-D increasing array of positive magnitudes")
        self.every = every
        self.histogram_layers = histogram_layers
        self.bin_edges = edges
        self._model_id = None
        self._records: list[tuple[int, np.ndarray, np.ndarray]] = []
        self._cache: dict[str, pd.DataFrame] = {}

    # ---------------------------------------------------------------- setup
    def _setup(self, model: nn.Module) -> None:
        layers = tracked_layers(model)
        stages = _stage_params(model)
        params: list[nn.Parameter] = []
        index: dict[int, int] = {}

        def pos(p):
            if id(p) not in index:
                index[id(p)] = len(params)
                params.append(p)
            return index[id(p)]

        # (group, param position) pairs; groups are layers first, then stages.
        groups, members = [], []
        for g, layer in enumerate(layers):
            for p in layer.module.parameters():
                groups.append(g)
                members.append(pos(p))
        for s, (t, ps) in enumerate(sorted(stages.items())):
            for p in ps:
                groups.append(len(layers) + s)
                members.append(pos(p))
        names = [lay.name for lay in layers]
        hl = self.histogram_layers
        if hl is None or hl == ():
            hist = []
        elif hl == "all":
            hist = list(layers)
        elif hl == "default":
            if not layers:
                hist = []
            else:
                picks = [layers[0], self._middle(layers), layers[-1]]
                hist = list({lay.name: lay for lay in picks}.values())
        else:
            wanted = [hl] if isinstance(hl, str) else list(hl)
            unknown = [w for w in wanted if w not in names]
            if unknown:
                raise ValueError(f"histogram_layers {unknown} not found; layers are {names}")
            hist = [layers[names.index(w)] for w in wanted]
        self._layers = layers
        self._stages = sorted(stages)
        self._params = params
        self._groups = torch.tensor(groups, dtype=torch.long)
        self._members = torch.tensor(members, dtype=torch.long)
        self._hist = hist
        self._device_cache: dict = {}
        self._model_id = id(model)

    @staticmethod
    def _middle(layers: list[TrackedLayer]) -> TrackedLayer:
        # The first refinement conv of the middle stage of a CPM, else the median-depth conv.
        stages = sorted({lay.stage for lay in layers})
        if len(stages) > 1:
            mid = stages[max(1, (len(stages) - 1) // 2)]
            name = f"stage{mid}.conv2"
            for lay in layers:
                if lay.name == name:
                    return lay
        return sorted(layers, key=lambda x: x.depth)[len(layers) // 2]

    # ---------------------------------------------------------------- hooks
    def on_after_backward(self, trainer, step: int) -> None:
        if step == 1 or step % self.every == 0:
            self.record(trainer.model, step)

    @torch.no_grad()
    def record(self, model: nn.Module, step: int) -> None:
        """Record gradient norms and histograms of ``model``'s current ``.grad`` as ``step``."""
        model = unwrap_model(model)
        if self._model_id != id(model):
            if self._records:
                raise ValueError("this GradientTracker already holds records of another model; "
                                 "call reset() or use a new tracker")
            self._setup(model)
        present = [(i, p.grad) for i, p in enumerate(self._params) if p.grad is not None]
        if not present:
            return
        device = present[0][1].device
        if device not in self._device_cache:
            self._device_cache[device] = (
                self._groups.to(device), self._members.to(device),
                torch.as_tensor(self.bin_edges, device=device, dtype=torch.float32))
        groups, members, edges = self._device_cache[device]
        grads = [g for _, g in present]
        try:  # float32 accumulation also for half-precision gradients
            pnorm = torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32))
        except (AttributeError, TypeError, RuntimeError):  # pragma: no cover - older torch
            pnorm = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads])
        sq = torch.zeros(len(self._params), device=device, dtype=torch.float32)
        sq[torch.tensor([i for i, _ in present], device=device)] = pnorm.square()
        n_groups = len(self._layers) + len(self._stages)
        norms = torch.zeros(n_groups, device=device).index_add_(0, groups, sq[members]).sqrt()

        nb = len(self.bin_edges) + 1
        counts = []
        for lay in self._hist:
            g = lay.module.weight.grad
            if g is None:
                c = torch.zeros(nb, dtype=torch.long, device=device)
                c[0] = lay.module.weight.numel()
            else:
                idx = torch.bucketize(g.detach().abs().flatten().float(), edges, right=True)
                c = torch.bincount(idx, minlength=nb)
            counts.append(c.to(device))
        # One host transfer: the float32 norms travel bit-cast inside the int64 counts tensor.
        packed = torch.cat([norms.view(torch.int32).to(torch.int64)] + counts).cpu()
        n = norms.numel()
        norms_np = packed[:n].to(torch.int32).view(torch.float32).numpy().copy()
        counts_np = packed[n:].numpy().reshape(len(self._hist), nb).copy()
        self._records.append((int(step), norms_np, counts_np))
        self._cache.clear()

    def reset(self) -> None:
        """Forget all records (and the model they belong to)."""
        self._records.clear()
        self._cache.clear()
        self._model_id = None

    # ---------------------------------------------------------------- results
    @property
    def layers(self) -> list[TrackedLayer]:
        """The tracked conv layers (empty before the first record)."""
        return list(getattr(self, "_layers", []))

    @property
    def steps(self) -> list[int]:
        return [r[0] for r in self._records]

    @property
    def norms(self) -> pd.DataFrame:
        if "norms" not in self._cache:
            cols = ["step", "stage", "layer", "depth", "norm"]
            if not self._records:
                self._cache["norms"] = pd.DataFrame(columns=cols)
            else:
                names = [lay.name for lay in self._layers] + [f"stage{t}" for t in self._stages]
                stages = [lay.stage for lay in self._layers] + list(self._stages)
                depths = [lay.depth for lay in self._layers] + [pd.NA] * len(self._stages)
                k = len(names)
                steps = np.repeat([r[0] for r in self._records], k)
                df = pd.DataFrame(dict(step=steps, stage=np.tile(stages, len(self._records)),
                                       layer=np.tile(np.array(names, dtype=object), len(self._records)),
                                       depth=pd.array(depths * len(self._records), dtype="Int64"),
                                       norm=np.concatenate([r[1] for r in self._records]).astype(np.float64)))
                self._cache["norms"] = df
        return self._cache["norms"]

    @property
    def layer_norms(self) -> pd.DataFrame:
        """Per conv layer rows of ``norms``."""
        df = self.norms
        return df[df["depth"].notna()].reset_index(drop=True)

    @property
    def stage_norms(self) -> pd.DataFrame:
        """Per stage rows of ``norms`` (columns step, stage, norm)."""
        df = self.norms
        return df[df["depth"].isna()][["step", "stage", "norm"]].reset_index(drop=True)

    @property
    def histograms(self) -> pd.DataFrame:
        if "hist" not in self._cache:
            cols = ["step", "layer", "bin_left", "bin_right", "count"]
            if not self._records or not self._hist:
                self._cache["hist"] = pd.DataFrame(columns=cols)
            else:
                left = np.concatenate([[0.0], self.bin_edges])
                right = np.concatenate([self.bin_edges, [np.inf]])
                nb, nl = len(left), len(self._hist)
                names = np.array([lay.name for lay in self._hist], dtype=object)
                steps = np.repeat([r[0] for r in self._records], nl * nb)
                self._cache["hist"] = pd.DataFrame(dict(
                    step=steps, layer=np.tile(np.repeat(names, nb), len(self._records)),
                    bin_left=np.tile(left, nl * len(self._records)),
                    bin_right=np.tile(right, nl * len(self._records)),
                    count=np.concatenate([r[2].ravel() for r in self._records])))
        return self._cache["hist"]

    def __repr__(self):
        return (f"GradientTracker(every={self.every}, records={len(self._records)}, "
                f"histogram_layers={[lay.name for lay in getattr(self, '_hist', [])] or self.histogram_layers})")


@dataclass
class SupervisionComparison:
    """Result of ``compare_supervision``.

    Attributes:
        trackers: run label -> ``GradientTracker`` (feed to the ``cpm_lab.viz.diagnostics`` plots).
        histories: run label -> the trainer's history DataFrame.
        summary: run, layer, stage, depth, norm_start, norm_end: gradient L2 norms of the
            histogram layers and of every stage (``layer == "stage{t}"``, depth <NA>), averaged
            over the first / last ``window`` records.
        losses: run, stage, loss_end: each stage's loss averaged over the last tenth of the steps
            (logged for every stage, supervised or not).
        models: run label -> the trained CPM.
    """

    trackers: dict
    histories: dict
    summary: pd.DataFrame
    losses: pd.DataFrame
    models: dict


RUN_LABELS = ("intermediate supervision", "final-stage loss only")


def compare_supervision(preset: str = "tiny", steps: int = 200, *, batch_size: int = 8,
                        every: int = 5, num_stages: int | None = None, dataset=None,
                        difficulty: str = "easy", seed: int = 0, device: str = "auto",
                        window: int = 5, progress: bool = False, **train_overrides) -> SupervisionComparison:
    """Train the same CPM twice from the same initial weights, with a loss on every stage and
    with a loss on the final stage only, tracking gradients (the paper's Fig. 5 experiment).

    Args:
        preset, num_stages: the model (``CPM.from_preset(preset, num_stages=...)``).
        steps, batch_size, seed, device, **train_overrides: ``cpm_lab.train.TrainConfig`` fields.
        dataset: training set; default ``SyntheticPoses(steps * batch_size, input_size,
            difficulty, seed)``.
        every: tracker record period in steps; window: records averaged in the summary.

    Returns:
        ``SupervisionComparison``; plot with ``plot_gradient_norms(result.trackers)``,
        ``plot_gradient_norm_by_depth(result.trackers)`` and
        ``plot_gradient_histograms(result.trackers)``.
    """
    from ..models import CPM
    from ..train import TrainConfig, Trainer
    from ..utils import seed_everything

    overrides = {} if num_stages is None else {"num_stages": num_stages}
    trackers, histories, models = {}, {}, {}
    for label, supervise_all in zip(RUN_LABELS, (True, False)):
        seed_everything(seed)
        model = CPM.from_preset(preset, **overrides)
        data = dataset
        if data is None:
            from ..data.synthetic import SyntheticPoses
            data = SyntheticPoses(steps * batch_size, image_size=model.config.input_size,
                                  difficulty=difficulty, seed=seed)
        tracker = GradientTracker(every=every)
        cfg = TrainConfig(steps=steps, batch_size=batch_size, seed=seed, device=device,
                          intermediate_supervision=supervise_all, progress=progress, **train_overrides)
        trainer = Trainer(model, data, cfg, callbacks=[tracker])
        histories[label] = trainer.fit()
        trackers[label] = tracker
        models[label] = model

    rows = []
    for label, tr in trackers.items():
        wanted = {lay.name for lay in tr._hist}
        df = tr.norms
        df = df[df["layer"].isin(wanted) | df["depth"].isna()]
        steps_rec = sorted(df["step"].unique())
        first, last = steps_rec[:window], steps_rec[-window:]
        for (layer, stage), g in df.groupby(["layer", "stage"], sort=False):
            rows.append(dict(run=label, layer=layer, stage=int(stage), depth=g["depth"].iloc[0],
                             norm_start=g[g["step"].isin(first)]["norm"].mean(),
                             norm_end=g[g["step"].isin(last)]["norm"].mean()))
    summary = pd.DataFrame(rows)
    summary["depth"] = summary["depth"].astype("Int64")
    loss_rows = []
    for label, h in histories.items():
        tail = h.iloc[-max(1, len(h) // 10):]
        for c in [c for c in h.columns if c.startswith("loss_stage")]:
            loss_rows.append(dict(run=label, stage=int(c[len("loss_stage"):]), loss_end=tail[c].mean()))
    return SupervisionComparison(trackers, histories, summary, pd.DataFrame(loss_rows), models)
