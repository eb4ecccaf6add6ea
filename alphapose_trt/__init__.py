"""alphapose-trt: fast AlphaPose multi-person pose estimation."""

__version__ = "0.1.0"
