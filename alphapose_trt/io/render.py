"""Drawing skeletons on frames (COCO-17 layout, colours from `alphapose_trt.skeleton`)."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from alphapose_trt.results import Person
from alphapose_trt.skeleton import COCO_LIMB_COLORS, COCO_LIMBS, NUM_COCO_KEYPOINTS

DEFAULT_KP_THRESHOLD = 0.05
_BOX_COLOR_RGB = (255, 255, 255)
# Sub-pixel drawing: cv2 takes fixed-point coordinates with this many fractional bits, so
# keypoints land where they were predicted instead of on the nearest integer pixel.
_SHIFT = 4
# Coordinates are clipped to this range before the fixed-point conversion (keeps int32 safe).
_COORD_LIMIT = 1.0e6


def _keypoint_colors() -> tuple[tuple[int, int, int], ...]:
    """RGB colour per joint: the colour of the first limb that touches it (side-coded)."""
    colors = []
    for joint in range(NUM_COCO_KEYPOINTS):
        bgr = next(color for limb, color in zip(COCO_LIMBS, COCO_LIMB_COLORS) if joint in limb)
        colors.append(bgr[::-1])
    return tuple(colors)


_KEYPOINT_COLORS_RGB = _keypoint_colors()
_LIMB_COLORS_RGB = tuple(color[::-1] for color in COCO_LIMB_COLORS)


def _fixed_point(points: np.ndarray) -> list[tuple[int, int]]:
    clipped = np.clip(np.nan_to_num(points), -_COORD_LIMIT, _COORD_LIMIT)
    return [(int(x), int(y)) for x, y in np.rint(clipped * (1 << _SHIFT))]


def draw_persons(image_rgb: np.ndarray, persons: Sequence[Person], show_box: bool = False,
                 kp_threshold: float = DEFAULT_KP_THRESHOLD) -> np.ndarray:
    """Return a copy of `image_rgb` (uint8 (H, W, 3)) with each person's skeleton drawn.

    A keypoint is drawn when its score exceeds `kp_threshold`, a limb when both its ends are;
    line width and dot size grow with the image so drawings stay visible on large frames.
    The input is never modified (it may still be queued for other sinks).
    """
    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(f"draw_persons needs an RGB uint8 (H, W, 3) image, got "
                         f"{image_rgb.dtype} {image_rgb.shape}")
    canvas = np.array(image_rgb, copy=True, order="C")
    thickness = max(1, round(min(canvas.shape[:2]) / 240))
    for person in persons:
        _draw_person(canvas, person, show_box, kp_threshold, thickness)
    return canvas


def _draw_person(canvas: np.ndarray, person: Person, show_box: bool, kp_threshold: float,
                 thickness: int) -> None:
    points = np.asarray(person.keypoints, dtype=np.float64)[:NUM_COCO_KEYPOINTS]
    scores = np.asarray(person.keypoint_scores, dtype=np.float64).reshape(-1)[:NUM_COCO_KEYPOINTS]
    visible = (scores > kp_threshold) & np.isfinite(points).all(axis=1)
    fixed = _fixed_point(points)
    if show_box:
        x, y, w, h = np.asarray(person.box, dtype=np.float64)
        corners = _fixed_point(np.array([[x, y], [x + w, y + h]]))
        cv2.rectangle(canvas, corners[0], corners[1], _BOX_COLOR_RGB, thickness, cv2.LINE_AA, _SHIFT)
    for (a, b), color in zip(COCO_LIMBS, _LIMB_COLORS_RGB):
        if a < len(visible) and b < len(visible) and visible[a] and visible[b]:
            cv2.line(canvas, fixed[a], fixed[b], color, thickness + 1, cv2.LINE_AA, _SHIFT)
    radius = (thickness + 2) << _SHIFT
    for joint in np.flatnonzero(visible):
        cv2.circle(canvas, fixed[joint], radius, _KEYPOINT_COLORS_RGB[joint], -1, cv2.LINE_AA, _SHIFT)
