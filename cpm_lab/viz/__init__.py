"""Plots (matplotlib) and interactive explorers (ipywidgets) of poses, beliefs and diagnostics."""
from .explorer import BeliefExplorer, Occluder
from .pose import draw_skeleton, overlay_beliefs, plot_stage_beliefs, sample_grid, show_pose

__all__ = ["BeliefExplorer", "Occluder", "draw_skeleton", "overlay_beliefs", "plot_stage_beliefs",
           "sample_grid", "show_pose"]
