"""cpm_lab: Convolutional Pose Machines to learn from and experiment with."""
__version__ = "0.1.0"
