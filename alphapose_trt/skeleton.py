"""COCO-17 keypoint layout: names, flip pairs, limbs, colours and OKS sigmas.

The one place these live: the decoder (flip test), the renderer, the OpenPose writer and the
COCO evaluator all import them from here so a layout change cannot drift between them.
"""

from __future__ import annotations

COCO_KEYPOINTS: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
    "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
NUM_COCO_KEYPOINTS = len(COCO_KEYPOINTS)

# Left/right joint pairs swapped when a crop is mirrored (flip test).
COCO_FLIP_PAIRS: tuple[tuple[int, int], ...] = tuple((i, i + 1) for i in range(1, 17, 2))

# Halpe-26 adds head (17), neck (18), hip (19) and six foot points (20..25).
HALPE26_FLIP_PAIRS: tuple[tuple[int, int], ...] = COCO_FLIP_PAIRS + ((20, 21), (22, 23), (24, 25))


def flip_pairs(num_joints: int) -> tuple[tuple[int, int], ...]:
    """Flip pairs for a keypoint layout, chosen by its joint count (17 COCO, 26 Halpe)."""
    if num_joints == 17:
        return COCO_FLIP_PAIRS
    if num_joints == 26:
        return HALPE26_FLIP_PAIRS
    raise ValueError(f"no flip pairs known for {num_joints} joints (known: 17 COCO, 26 Halpe-26)")


# Limbs drawn by the renderer (0-based joint indices; COCO's own skeleton).
COCO_LIMBS: tuple[tuple[int, int], ...] = (
    (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
    (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
)

# BGR colours per limb: left side warm, right side cool, centre green.
_LEFT, _RIGHT, _CENTRE = (0, 140, 255), (255, 120, 0), (60, 200, 60)
COCO_LIMB_COLORS: tuple[tuple[int, int, int], ...] = tuple(
    _CENTRE if (a % 2 == 0) != (b % 2 == 0) or 0 in (a, b) else (_LEFT if a % 2 == 1 else _RIGHT)
    for a, b in COCO_LIMBS
)

# Per-keypoint OKS sigmas used by COCO keypoint evaluation.
COCO_OKS_SIGMAS: tuple[float, ...] = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
    0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)

# OpenPose BODY_18 order as COCO indices; "neck" is the mean of the two shoulders.
OPENPOSE18_FROM_COCO: tuple[int | str, ...] = (
    0, "neck", 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3,
)
