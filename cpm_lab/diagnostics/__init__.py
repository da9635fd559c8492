"""Instruments that let a learner check the CPM paper's claims.

- ``receptive_fields``: analytic receptive field of every layer and stage (167, 407, ... px for
  the paper model) and ``effective_receptive_field``: the empirical, gradient-based one.
- ``GradientTracker``: per-layer / per-stage gradient norms and magnitude histograms during
  training (the paper's Fig. 5: intermediate supervision keeps early gradients alive).
- ``model_cost``: parameters, MACs and FLOPs per layer and per stage; ``early_exit``: per stage,
  accuracy against cumulative MACs and measured milliseconds (is a stage worth its cost?).

Plots for all of these live in ``cpm_lab.viz.diagnostics``.
"""
from .cost import ModelCost, model_cost
from .early_exit import early_exit
from .effective_rf import EffectiveRF, effective_receptive_field
from .gradients import DEFAULT_BIN_EDGES, GradientTracker, SupervisionComparison, compare_supervision, tracked_layers
from .receptive_field import LayerGraph, Node, ReceptiveFields, layer_graph, receptive_fields

__all__ = ["ModelCost", "model_cost", "early_exit", "DEFAULT_BIN_EDGES", "GradientTracker", "compare_supervision",
           "SupervisionComparison",
           "tracked_layers", "EffectiveRF", "LayerGraph", "Node", "ReceptiveFields",
           "effective_receptive_field", "layer_graph", "receptive_fields"]
