"""Pose models: the Convolutional Pose Machine and the classical Pose Machine."""
from .cpm import CPM, PRESETS, CPMConfig, preset_config
from .pose_machine import PoseMachine, PoseMachineConfig

__all__ = ["CPM", "CPMConfig", "PRESETS", "PoseMachine", "PoseMachineConfig", "preset_config"]
