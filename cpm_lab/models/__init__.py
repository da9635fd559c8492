"""Pose models: the Convolutional Pose Machine and the classical Pose Machine."""
from .cpm import CPM, PRESETS, Block, CPMConfig, preset_config
from .pose_machine import PoseMachine, PoseMachineConfig

__all__ = ["Block", "CPM", "CPMConfig", "PRESETS", "PoseMachine", "PoseMachineConfig", "preset_config"]
