"""Per-person and per-frame results: plain containers that import no model code."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Person:
    """One detected person after pose NMS.

    box: (4,) float x, y, w, h in image pixels (the detector box).
    keypoints: (K, 2) float x, y in image pixels; keypoint_scores: (K,) heatmap peaks.
    score: AlphaPose's person score (mean + box score + 1.25 * max of keypoint scores).
    """

    box: np.ndarray
    box_score: float
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    score: float
    idx: int = 0


@dataclass
class FrameResult:
    """All persons of one image or video frame. `image_id` is the file name or frame index."""

    image_id: str | int
    persons: list[Person] = field(default_factory=list)
    height: int = 0
    width: int = 0
