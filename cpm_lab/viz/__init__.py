"""Plots (matplotlib) and interactive explorers (ipywidgets) of poses, beliefs and diagnostics."""
from .analysis import (
    plot_centre_map,
    plot_conventions,
    plot_decoders,
    plot_early_exit,
    plot_error_taxonomy,
    plot_sigma_sweep,
)
from .diagnostics import (
    plot_cost,
    plot_effective_receptive_field,
    plot_erf_mass,
    plot_gradient_histograms,
    plot_gradient_norm_by_depth,
    plot_gradient_norms,
    plot_receptive_fields,
)
from .explorer import BeliefExplorer, Occluder
from .photo import PhotoPanel
from .pose import (
    draw_skeleton,
    overlay_beliefs,
    part_handles,
    part_key,
    plot_photo_prediction,
    plot_stage_beliefs,
    sample_grid,
    show_pose,
    side_handles,
    side_key,
)
from .pose_machine import plot_feature_importance, plot_part_confusion, plot_stage_comparison
from .pose_machine_features import plot_context_features, plot_feature_grid
from .receptive import ReceptiveFieldExplorer
from .training import LiveTrainingPlot, draw_history, plot_history

__all__ = ["plot_centre_map", "plot_conventions", "plot_decoders", "plot_early_exit", "plot_error_taxonomy",
           "plot_sigma_sweep", "BeliefExplorer", "Occluder", "PhotoPanel", "plot_photo_prediction", "side_handles",
           "side_key",
           "part_handles", "part_key",
           "draw_skeleton", "overlay_beliefs", "plot_cost",
           "plot_effective_receptive_field", "plot_erf_mass", "plot_gradient_histograms",
           "plot_gradient_norm_by_depth", "plot_gradient_norms", "plot_receptive_fields",
           "plot_stage_beliefs", "sample_grid", "show_pose", "plot_context_features", "plot_feature_grid",
           "plot_feature_importance", "plot_part_confusion", "plot_stage_comparison",
           "ReceptiveFieldExplorer", "LiveTrainingPlot", "draw_history", "plot_history"]
