"""Heatmap decode and flip test: vectorised torch paths against the numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alphapose_trt.pipeline.decode import (
    average_flip,
    decode_heatmaps,
    decode_heatmaps_reference,
    flip_back,
    flip_back_reference,
)
from alphapose_trt.skeleton import flip_pairs

K, H, W = 17, 64, 48
# A crop box whose image pixels are the heatmap pixels: x = 24 + (x_hm - 24) * 48 / 48.
IDENTITY_BOX = (0.0, 0.0, float(W), float(H))
# fp32 (fast) against float64 (reference) image coordinates of up to ~2000 px.
IMAGE_ATOL = 1e-3

# Person 0's planted peaks (x, y) by channel; None: channel left without a positive peak.
PLANTED = {
    0: (20, 30),  # interior: refined
    1: (1, 10),  # x = 1: not refined (needs 1 < px)
    2: (W - 1, 20),  # right border: not refined
    3: (10, 1),  # y = 1: not refined
    4: (30, H - 1),  # bottom border: not refined
    5: (0, 0),  # corner
    6: (2, 2),  # smallest refined position
    7: (W - 2, H - 2),  # largest refined position
    8: (15, 40),  # interior, equal x neighbours: no x move
    9: None,  # all negative: score < 0, coordinates zeroed
    10: None,  # peak value exactly 0 away from (0, 0): coordinates zeroed too
}


def _planted_heatmaps(seed: int) -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    """Two persons' heatmaps (2, K, H, W) float32 with one clear peak per channel.

    Person 0 follows PLANTED (channels 11..16 interior at random); person 1 has peaks anywhere.
    Background noise makes every neighbour difference random in sign.
    """
    rng = np.random.default_rng(seed)
    hm = rng.uniform(-0.05, 0.5, (2, K, H, W)).astype(np.float32)
    peaks = dict(PLANTED)
    for c in range(11, K):
        peaks[c] = (int(rng.integers(2, W - 2)), int(rng.integers(2, H - 2)))
    for c, peak in peaks.items():
        if peak is not None:
            hm[0, c, peak[1], peak[0]] = 0.9 + 0.05 * rng.random()
    x8, y8 = PLANTED[8]
    hm[0, 8, y8, x8 - 1] = hm[0, 8, y8, x8 + 1] = 0.3
    hm[0, 9] = -rng.uniform(0.01, 1.0, (H, W))
    hm[0, 10] = -rng.uniform(0.01, 1.0, (H, W))
    hm[0, 10, 30, 20] = 0.0
    for c in range(K):
        hm[1, c, rng.integers(0, H), rng.integers(0, W)] = 0.95
    return hm, peaks


def _reference(hm: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Stack the per-person reference decode."""
    pairs = [decode_heatmaps_reference(hm[i], boxes[i]) for i in range(len(hm))]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, dict[int, tuple[int, int]]]:
    return _planted_heatmaps(seed=0)


def test_decode_matches_reference_exactly_in_heatmap_pixels(planted) -> None:
    hm, _ = planted
    boxes = np.array([IDENTITY_BOX, IDENTITY_BOX])
    coords, scores = decode_heatmaps(torch.from_numpy(hm), torch.tensor(boxes))
    ref_coords, ref_scores = _reference(hm, boxes)
    np.testing.assert_array_equal(coords.numpy(), ref_coords)
    np.testing.assert_array_equal(scores.numpy(), ref_scores)


def test_decode_planted_cases_by_hand(planted) -> None:
    hm, peaks = planted
    coords, scores = decode_heatmaps(torch.from_numpy(hm), torch.tensor([IDENTITY_BOX] * 2))
    coords, scores = coords.numpy()[0], scores.numpy()[0]
    for c in (1, 2, 3, 4, 5):  # border peaks are returned unrefined
        assert tuple(coords[c]) == peaks[c]
    for c in (0, 6, 7, 11, 12, 13, 14, 15, 16):  # interior peaks move a quarter pixel
        x, y = peaks[c]
        sx = np.sign(hm[0, c, y, x + 1] - hm[0, c, y, x - 1])
        sy = np.sign(hm[0, c, y + 1, x] - hm[0, c, y - 1, x])
        assert tuple(coords[c]) == (x + 0.25 * sx, y + 0.25 * sy)
        assert scores[c] == hm[0, c, y, x]
    assert coords[8, 0] == PLANTED[8][0]  # equal neighbours: no move in x
    assert scores[9] < 0 and scores[10] == 0
    np.testing.assert_array_equal(coords[9:11], np.zeros((2, 2)))


def test_decode_random_crop_boxes_match_reference(planted) -> None:
    hm, _ = planted
    rng = np.random.default_rng(1)
    centre = rng.uniform(0, 1500, (2, 2))
    size = rng.uniform(20, 600, (2, 1)) * np.array([[0.75, 1.0]])  # crops keep the 3:4 aspect
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    coords, scores = decode_heatmaps(torch.from_numpy(hm), torch.tensor(boxes, dtype=torch.float32))
    ref_coords, ref_scores = _reference(hm, boxes.astype(np.float32))
    np.testing.assert_allclose(coords.numpy(), ref_coords, rtol=0, atol=IMAGE_ATOL)
    np.testing.assert_array_equal(scores.numpy(), ref_scores)


def test_decode_fp16_heatmaps_decoded_in_fp32(planted) -> None:
    hm16 = planted[0].astype(np.float16)
    boxes = np.array([IDENTITY_BOX, IDENTITY_BOX])
    coords, scores = decode_heatmaps(torch.from_numpy(hm16), torch.tensor(boxes))
    assert coords.dtype == torch.float32 and scores.dtype == torch.float32
    ref_coords, ref_scores = _reference(hm16, boxes)
    np.testing.assert_array_equal(coords.numpy(), ref_coords)
    np.testing.assert_array_equal(scores.numpy(), ref_scores)


def test_decode_known_answer_maps_to_image_point() -> None:
    hm = torch.zeros(1, K, H, W)
    hm[0, 5, 40, 12] = 0.8  # peak at x_hm=12, y_hm=40
    hm[0, 5, 40, 13] = 0.5  # right neighbour larger than left: +0.25 in x
    hm[0, 5, 39, 12] = 0.4  # upper neighbour larger than lower: -0.25 in y
    box = torch.tensor([[100.0, 50.0, 196.0, 178.0]])  # centre (148, 114), 2 px per heatmap px
    coords, scores = decode_heatmaps(hm, box)
    # x = 148 + (12.25 - 24) * 96 / 48 = 124.5, y = 114 + (39.75 - 32) * 128 / 64 = 129.5
    assert coords[0, 5].tolist() == [124.5, 129.5]
    assert scores[0, 5].item() == pytest.approx(0.8)
    # Joints without a positive peak sit at heatmap (0, 0), the crop box's top-left corner.
    assert coords[0, 0].tolist() == [100.0, 50.0] and scores[0, 0].item() == 0.0


def test_decode_empty_batch() -> None:
    coords, scores = decode_heatmaps(torch.zeros(0, K, H, W), torch.zeros(0, 4))
    assert coords.shape == (0, K, 2) and scores.shape == (0, K)


@pytest.mark.parametrize(
    ("hm_shape", "box_shape"), [((K, H, W), (1, 4)), ((2, K, H, W), (1, 4)), ((2, K, H, W), (2, 5))]
)
def test_decode_rejects_bad_shapes(hm_shape, box_shape) -> None:
    with pytest.raises(ValueError, match="must be"):
        decode_heatmaps(torch.zeros(hm_shape), torch.zeros(box_shape))


def _arange_heatmaps(height: int = 4, width: int = 5) -> torch.Tensor:
    """(1, K, height, width) with value 20 * channel + 5 * row + column (distinct, readable)."""
    return torch.arange(K * height * width, dtype=torch.float32).reshape(1, K, height, width)


def test_flip_back_matches_reference_and_hand_computed() -> None:
    hm = _arange_heatmaps()
    out = flip_back(hm, flip_pairs(K))
    np.testing.assert_array_equal(out.numpy(), flip_back_reference(hm.numpy(), flip_pairs(K)))
    # Nose (0) is not swapped: row 0 is 0..4 mirrored (4 3 2 1 0), shifted right keeping col 0.
    assert out[0, 0, 0].tolist() == [4, 4, 3, 2, 1]
    # Left eye (1) reads right eye (2, values 40..44), mirrored and shifted the same way.
    assert out[0, 1, 0].tolist() == [44, 44, 43, 42, 41]
    assert out[0, 2, 3].tolist() == [20 + 19, 20 + 19, 20 + 18, 20 + 17, 20 + 16]


def test_flip_back_moves_a_peak_to_the_mirrored_joint() -> None:
    hm = torch.zeros(1, K, H, W)
    hm[0, 1, 5, 10] = 1.0  # left eye at x=10 in the mirrored crop
    out = flip_back(hm, flip_pairs(K))
    # Right eye, at the mirrored column W - 1 - 10 = 37 shifted one right: 38.
    assert torch.nonzero(out).tolist() == [[0, 2, 5, 38]]


def test_flip_back_keeps_dtype_and_batch_matches_reference() -> None:
    hm = torch.rand(2, K, H, W, generator=torch.Generator().manual_seed(0)).half()
    out = flip_back(hm, flip_pairs(K))
    assert out.dtype == torch.float16 and out.shape == hm.shape
    np.testing.assert_array_equal(out.numpy(), flip_back_reference(hm.numpy(), flip_pairs(K)))


def test_average_flip_is_the_mean() -> None:
    a, b = torch.full((1, K, 2, 3), 0.2), torch.full((1, K, 2, 3), 0.6)
    assert torch.allclose(average_flip(a, b), torch.full((1, K, 2, 3), 0.4))
    with pytest.raises(ValueError, match="equal shapes"):
        average_flip(a, b[:, :, :1])


def test_flip_back_rejects_out_of_range_pairs() -> None:
    with pytest.raises(ValueError, match="out of range"):
        flip_back(torch.zeros(1, 5, 4, 4), flip_pairs(K))
