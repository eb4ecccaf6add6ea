"""Detector pre/post-processing: the batched torch path against AlphaPose's cv2/numpy way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.pipeline import detect
from alphapose_trt.pipeline.detect import (
    LETTERBOX_FILL,
    LetterboxInfo,
    candidates,
    letterbox,
    letterbox_reference,
    postprocess,
    postprocess_reference,
    select,
)

# Measured max |fast - reference| over these cases: exactly 1/255 (about 0.01 % to 0.4 % of the
# pixels of random-noise images differ by one uint8 level; cv2 and torch bicubic round apart).
LETTERBOX_TOL = 1 / 255 + 1e-6
COORD_TOL = 1e-4


def _frames(rng: np.random.Generator, batch: int, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


@pytest.mark.parametrize(
    "h, w, size",
    [
        (120, 160, 608),  # wide, upscaled, padded top and bottom
        (90, 50, 64),  # tall, downscaled, padded left and right
        (37, 53, 96),  # odd sizes, upscaled by a non-integer factor
        (200, 130, 64),  # tall, downscaled by about 3
        (64, 64, 64),  # no resize, no padding
    ],
)
def test_letterbox_matches_reference(h: int, w: int, size: int) -> None:
    images = _frames(np.random.default_rng(h * w), 2, h, w)
    fast, info = letterbox(_to_tensor(images), size)
    assert fast.shape == (2, 3, size, size) and fast.dtype == torch.float32
    for i in range(2):
        ref, scale, pad = letterbox_reference(images[i], size)
        assert scale == info.scale and pad == info.pad_xy
        assert np.abs(fast[i].numpy() - ref).max() <= LETTERBOX_TOL
    new_h, new_w = info.resized_hw
    pad_x, pad_y = info.pad_xy
    inside = torch.zeros(size, size, dtype=torch.bool)
    inside[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = True
    assert torch.all(fast[:, :, ~inside] == LETTERBOX_FILL / 255)


def test_letterbox_geometry_is_alphapose_int_rounding() -> None:
    info = LetterboxInfo.for_image((480, 641), 608)
    assert info.scale == min(608 / 641, 608 / 480)
    assert info.resized_hw == (int(480 * info.scale), int(641 * info.scale)) == (455, 608)
    assert info.pad_xy == (0, (608 - 455) // 2)


def test_letterbox_half_precision_output() -> None:
    frames = _to_tensor(_frames(np.random.default_rng(3), 1, 40, 30))
    full, _ = letterbox(frames, 64)
    half, _ = letterbox(frames, 64, dtype=torch.float16)
    assert half.dtype == torch.float16
    assert torch.equal(half, full.half())


def test_letterbox_rejects_bad_frames() -> None:
    with pytest.raises(AlphaPoseTrtError, match="uint8"):
        letterbox(torch.zeros(1, 3, 8, 8), 32)
    with pytest.raises(AlphaPoseTrtError, match="too elongated"):
        letterbox(torch.zeros(1, 3, 1, 100, dtype=torch.uint8), 32)


def _random_raw(rng: np.random.Generator, n: int, num_classes: int = 80, size: int = 608) -> np.ndarray:
    """Decoded YOLO rows clustered around a few people so that many boxes overlap."""
    people = rng.uniform([-20, -20, 20, 40], [size + 20, size + 20, 200, 300], (6, 4))
    rows = people[rng.integers(0, len(people), n)] * rng.uniform(0.9, 1.1, (n, 4))
    objectness = rng.uniform(0, 1, (n, 1))
    classes = rng.uniform(0, 0.5, (n, num_classes))
    person = rng.uniform(size=n) < 0.7
    classes[person, 0] = rng.uniform(0.5, 1, person.sum())
    return np.concatenate([rows, objectness, classes], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def random_batch() -> tuple[np.ndarray, LetterboxInfo]:
    rng = np.random.default_rng(11)
    # 479 x 641: AlphaPose maps back with the float offset 76.83 but pastes at 77.
    return np.stack([_random_raw(rng, 600), _random_raw(rng, 600)]), LetterboxInfo.for_image((479, 641))


def _assert_same_boxes(fast: torch.Tensor, ref: np.ndarray) -> None:
    assert fast.shape == ref.shape
    assert np.array_equal(fast[:, 4].numpy(), ref[:, 4])  # same boxes kept, same order
    assert np.abs(fast[:, :4].numpy() - ref[:, :4]).max(initial=0) <= COORD_TOL


def test_postprocess_matches_reference_on_a_batch(random_batch) -> None:
    raw, info = random_batch
    fast = postprocess(torch.from_numpy(raw), info)
    assert len(fast) == 2
    for i in range(2):
        ref = postprocess_reference(raw[i], info.scale, info.image_hw)
        assert 5 < len(ref) < 100  # NMS removed many overlapping boxes but not all
        _assert_same_boxes(fast[i], ref)
        h, w = info.image_hw
        assert fast[i][:, [0, 2]].max() <= w and fast[i][:, [1, 3]].max() <= h and fast[i].min() >= 0
    assert not torch.equal(fast[0], fast[1])


def test_postprocess_top_k_and_min_area(random_batch) -> None:
    raw, info = random_batch
    everything = postprocess(torch.from_numpy(raw), info)
    top3 = postprocess(torch.from_numpy(raw), info, max_persons=3)
    large = postprocess(torch.from_numpy(raw), info, min_box_area=8000.0)
    for i in range(2):
        assert torch.equal(top3[i], everything[i][:3])
        boxes = everything[i]
        areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        assert 0 < len(large[i]) < len(boxes)
        assert torch.equal(large[i], boxes[areas >= 8000.0])
        limits = {"max_persons": 3, "min_box_area": 8000.0}
        ref = postprocess_reference(raw[i], info.scale, info.image_hw, **limits)
        _assert_same_boxes(postprocess(torch.from_numpy(raw[i : i + 1]), info, **limits)[0], ref)


def test_candidates_are_fixed_size_and_their_top_rows_suffice(random_batch) -> None:
    """The fast pipeline copies only the first rows of `candidates` to the host: any cut that
    keeps every image's count gives `postprocess`'s boxes, and the ranking is score-then-anchor."""
    raw, info = random_batch
    boxes, counts = candidates(torch.from_numpy(raw))
    assert boxes.shape == (2, raw.shape[1], 5) and counts.shape == (2,)
    for i in range(2):
        n = int(counts[i])
        scores = boxes[i, :n, 4]
        classes = raw[i, :, 5:]
        kept = (raw[i, :, 4] > 0.1) & (classes.argmax(axis=1) == 0) & (classes.max(axis=1) != 0)
        assert n == kept.sum() > 0
        assert bool((scores[:-1] >= scores[1:]).all())
        np.testing.assert_array_equal(scores.numpy(), np.sort(raw[i, kept, 4])[::-1])
    cut = select(boxes[:, : int(counts.max())], counts, info)
    for got, want in zip(cut, postprocess(torch.from_numpy(raw), info)):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="candidates"):
        select(boxes[:, : int(counts.max()) - 1], counts, info)


def _pairs_raw(num_pairs: int) -> np.ndarray:
    """Pairs of 20x20 px (+1 convention) boxes shifted 5.4 px: IoU 0.575, between 0.55 and 0.6."""
    rows = []
    for k in range(num_pairs):
        cx, cy = 30 + 45 * (k % 12), 30 + 50 * (k // 12)
        score = 0.9 - 0.003 * k
        rows.append([cx, cy, 19, 19, score, 0.9, 0.1])
        rows.append([cx + 5.4, cy, 19, 19, score - 0.001, 0.9, 0.1])
    return np.array(rows, dtype=np.float32)


def test_postprocess_retries_crowded_images_only() -> None:
    info = LetterboxInfo.for_image((608, 608))
    crowded, sparse = _pairs_raw(120), _pairs_raw(10)
    sparse = np.concatenate([sparse, np.zeros((len(crowded) - len(sparse), 7), np.float32)])
    fast = postprocess(torch.from_numpy(np.stack([crowded, sparse])), info)
    assert len(fast[0]) == 120  # 240 survive at 0.6, the retry at 0.55 keeps one box per pair
    assert len(fast[1]) == 20  # 20 survivors: no retry, both boxes of each pair stay
    for i, raw in enumerate((crowded, sparse)):
        _assert_same_boxes(fast[i], postprocess_reference(raw, info.scale, info.image_hw))


@pytest.fixture(params=["pairwise", "per-image"])
def nms_path(request, monkeypatch):
    """Each of `_nms_keep`'s two ways: all pairs at once, or torchvision's NMS per image."""
    monkeypatch.setattr(detect, "NMS_MATRIX_ROWS", 10**4 if request.param == "pairwise" else 0)
    return request.param


def test_both_nms_paths_give_the_reference_boxes(random_batch, nms_path) -> None:
    raw, info = random_batch
    for i, got in enumerate(postprocess(torch.from_numpy(raw), info)):
        _assert_same_boxes(got, postprocess_reference(raw[i], info.scale, info.image_hw))
    crowded = _pairs_raw(120)  # the retry at 0.55 runs
    got = postprocess(torch.from_numpy(crowded[None]), LetterboxInfo.for_image((608, 608)))[0]
    assert len(got) == 120
    _assert_same_boxes(got, postprocess_reference(crowded, 1.0, (608, 608)))


def test_nms_drops_at_iou_equal_to_the_threshold_and_keeps_the_first_of_tied_scores(nms_path) -> None:
    """AlphaPose drops a box at IoU >= t; among equal scores the earlier row (anchor) ranks first."""
    info = LetterboxInfo.for_image((608, 608))  # scale 1: boxes stay where they are
    raw = np.array(
        [
            [104.5, 104.5, 9, 9, 0.9, 0.9],  # 0..9 +100 (10 px with the +1 convention)
            [107.0, 104.5, 9, 9, 0.8, 0.9],  # 7.5 px of overlap: IoU 75 / 125 = 0.6 exactly
            [304.5, 304.5, 9, 9, 0.7, 0.9],  # tied score, first row: kept
            [305.5, 304.5, 9, 9, 0.7, 0.9],  # tied score, overlaps the row before: dropped
        ],
        dtype=np.float32,
    )
    got = postprocess(torch.from_numpy(raw[None]), info, nms=0.6)[0]
    np.testing.assert_allclose(got.numpy(), [[100, 100, 109, 109, 0.9], [300, 300, 309, 309, 0.7]])
    _assert_same_boxes(got, postprocess_reference(raw, info.scale, info.image_hw, nms=0.6))


def test_postprocess_confidence_and_class_filter() -> None:
    info = LetterboxInfo.for_image((608, 608))
    raw = np.array(
        [
            [100, 100, 50, 80, 0.9, 0.8, 0.1],  # kept
            [300, 100, 50, 80, 0.1, 0.8, 0.1],  # objectness not above 0.1
            [100, 300, 50, 80, 0.5, 0.2, 0.7],  # best class is not person
            [300, 300, 50, 80, 0.5, 0.0, 0.0],  # every class score underflowed to 0
            [500, 500, 50, 80, 0.3, 0.5, 0.5],  # tie: argmax picks person, kept
        ],
        dtype=np.float32,
    )
    fast = postprocess(torch.from_numpy(raw[None]), info)[0]
    expected = np.array([[75, 60, 125, 140, 0.9], [475, 460, 525, 540, 0.3]], dtype=np.float32)
    np.testing.assert_allclose(fast.numpy(), expected, atol=1e-6)
    _assert_same_boxes(fast, postprocess_reference(raw, info.scale, info.image_hw))


def test_postprocess_clamps_and_drops_collapsed_boxes() -> None:
    info = LetterboxInfo.for_image((304, 608))  # scale 1, 152 px of padding above and below
    raw = np.array(
        [
            [40, 300, 120, 100, 0.9, 0.9],  # left edge outside: x1 clamps to 0
            [300, 480, 100, 60, 0.8, 0.9],  # bottom beyond the image: y2 clamps to 304
            [400, 50, 60, 40, 0.7, 0.9],  # wholly in the top padding: clamps to zero height, dropped
            [627.5, 300, 40, 40, 0.6, 0.9],  # only 0.5 px wide after clamping to x <= 608: dropped
        ],
        dtype=np.float32,
    )
    fast = postprocess(torch.from_numpy(raw[None]), info)[0]
    expected = np.array([[0, 98, 100, 198, 0.9], [250, 298, 350, 304, 0.8]], dtype=np.float32)
    np.testing.assert_allclose(fast.numpy(), expected, atol=1e-6)
    _assert_same_boxes(fast, postprocess_reference(raw, info.scale, info.image_hw))


def test_postprocess_without_candidates_gives_empty_tensors() -> None:
    raw = torch.zeros(3, 10, 85)
    out = postprocess(raw, LetterboxInfo.for_image((100, 100)))
    assert [tuple(d.shape) for d in out] == [(0, 5)] * 3


@pytest.mark.parametrize(
    "raw, kwargs, message",
    [
        (torch.zeros(10, 85), {}, "B, N, 5"),
        (torch.zeros(1, 10, 5), {}, "at least one class"),
        (torch.zeros(1, 10, 85), {"conf": 1.5}, "confidence"),
        (torch.zeros(1, 10, 85), {"nms": 0.0}, "NMS"),
        (torch.zeros(1, 10, 85), {"max_persons": 0}, "max_persons"),
    ],
)
def test_postprocess_rejects_bad_arguments(raw: torch.Tensor, kwargs: dict, message: str) -> None:
    with pytest.raises(AlphaPoseTrtError, match=message):
        postprocess(raw, LetterboxInfo.for_image((100, 100)), **kwargs)
