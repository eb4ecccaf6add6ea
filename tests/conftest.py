"""Shared session fixtures: synthetic weights written once, models loaded once, tiny frames.

Model fixtures are session-scoped because loading and calibrating the two networks dominates the
CPU time of the suite; the detector runs at a small input size to keep forwards cheap.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from alphapose_trt.models.load import LoadedModel, load_detector, load_pose

SHARED = Path(__file__).resolve().parents[2] / "shared"
REFERENCE = SHARED / "reference"
TEST_DETECTOR_SIZE = 128  # detector input used by tests (608 in production)


def pytest_configure(config: pytest.Config) -> None:
    torch.set_num_threads(2)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests need CUDA; without it they are deselected, and the run says so."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if "gpu" in item.keywords]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if "gpu" not in item.keywords]


@pytest.fixture(scope="session")
def synthetic_weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic YOLOv3-SPP `.weights` and FastPose `.pth`, in the real formats."""
    from alphapose_trt.models.synthetic import write_synthetic_weights

    return write_synthetic_weights(tmp_path_factory.mktemp("weights"), seed=0)


@pytest.fixture(scope="session")
def detector_model(synthetic_weights: dict[str, Path]) -> LoadedModel:
    return load_detector(synthetic_weights["detector"], img_size=TEST_DETECTOR_SIZE)


@pytest.fixture(scope="session")
def pose_model(synthetic_weights: dict[str, Path]) -> LoadedModel:
    return load_pose(synthetic_weights["pose"])


def make_frame(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth random RGB uint8 frame (structure, not white noise)."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
    import cv2

    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)
    noise = rng.integers(-12, 13, (height, width, 3))
    return np.clip(smooth.astype(np.int32) + noise, 0, 255).astype(np.uint8)


def assert_same_persons(fast, ref, box_atol: float = 1e-3, exact: bool = True):
    """Same persons in the same order with boxes within `box_atol` pixels.

    exact (same input boxes): every keypoint either at the same place, or moved between two
    heatmap peaks of nearly equal height (an argmax flip on a near tie, which random synthetic
    heatmaps have and trained ones rarely do). Otherwise (boxes from two detector paths differ
    slightly, so the crops do): box scores within 0.01 and the typical keypoint moves by well
    under a pixel.
    """
    assert [len(p) for p in fast] == [len(p) for p in ref]
    moved, tied, dist = [], [], []
    for pf, pr in zip(fast, ref):
        for a, b in zip(pf, pr):
            np.testing.assert_allclose(a.box, b.box, atol=box_atol)
            assert a.box_score == pytest.approx(b.box_score, abs=1e-3 if exact else 1e-2)
            dist.append(np.linalg.norm(a.keypoints - b.keypoints, axis=1))
            moved.append(dist[-1] > 1e-2)
            tied.append(np.abs(a.keypoint_scores - b.keypoint_scores) <= 1e-2 * np.abs(b.keypoint_scores))
    moved, tied, dist = np.concatenate(moved), np.concatenate(tied), np.concatenate(dist)
    if exact:
        assert np.all(~moved | tied), "a keypoint moved although its heatmap peak was not a near tie"
        assert moved.mean() <= 0.05, f"{moved.mean():.1%} of keypoints moved"
    else:
        assert np.median(dist) < 0.5, f"median keypoint difference {np.median(dist):.2f} px"
