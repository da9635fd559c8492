"""Pose models: the Convolutional Pose Machine and (in ``pose_machine``) the classical Pose Machine."""
from .cpm import CPM, CPMConfig, PRESETS, preset_config

__all__ = ["CPM", "CPMConfig", "PRESETS", "preset_config"]
