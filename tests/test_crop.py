"""Pose crops: the batched gather against AlphaPose's cv2.warpAffine way, and the box geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.pipeline.crop import (
    DEFAULT_PIXEL_MEAN,
    box_to_center_scale,
    center_scale_to_box,
    crop,
    crop_reference,
)

# Measured over 300 random boxes: max |fast - reference| is exactly one uint8 level (1/255) on
# about 0.006 % of the pixels (samples within float error of a rounding edge); all others equal.
PIXEL_TOL = 1 / 255 + 1e-6
MAX_DIFFERING_FRACTION = 1e-3

# x1, y1, x2, y2 on a 97 x 131 (h x w) frame.
BOXES = [
    [30.0, 20.0, 70.0, 90.0],  # inside, tall
    [10.25, 30.5, 120.75, 60.125],  # inside, wide, fractional corners
    [0.0, 0.0, 131.0, 97.0],  # the whole frame, on the border
    [100.0, 70.0, 131.0, 97.0],  # touching the bottom-right corner
    [-25.0, -10.0, 40.0, 50.0],  # partly outside the top-left
    [90.5, 60.0, 170.0, 140.0],  # partly outside the bottom-right
    [64.0, 48.0, 65.5, 50.0],  # tiny: 1.5 x 2 px
    [-200.0, -150.0, 330.0, 250.0],  # huge: four times the frame
]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, (2, 97, 131, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, 131, dtype=np.float32)[None, :, None]
    noise[1] = (0.5 * noise[1] + 0.5 * ramp).astype(np.uint8)  # a different, smoother second frame
    return noise


def _frames(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2)


@pytest.mark.parametrize("out_hw", [(256, 192), (64, 48)])
def test_crop_matches_reference(images: np.ndarray, out_hw: tuple[int, int]) -> None:
    boxes = torch.tensor(BOXES)
    frame_index = torch.arange(len(BOXES)) % 2
    crops, crop_boxes = crop(_frames(images), frame_index, boxes, out_hw)
    assert crops.shape == (len(BOXES), 3, *out_hw) and crops.dtype == torch.float32
    center, scale = box_to_center_scale(boxes, out_hw[1] / out_hw[0])
    assert torch.equal(crop_boxes, center_scale_to_box(center, scale))
    differing = 0
    for i in range(len(BOXES)):
        ref = crop_reference(images[frame_index[i]], center[i].numpy(), scale[i].numpy(), out_hw)
        diff = np.abs(crops[i].numpy() - ref)
        assert diff.max() <= PIXEL_TOL, f"box {BOXES[i]}"
        differing += int((diff > 1e-6).sum())
    assert differing <= MAX_DIFFERING_FRACTION * crops.numel()


def test_crop_outside_the_frame_is_zero_before_the_mean(images: np.ndarray) -> None:
    box = torch.tensor([[-25.0, -10.0, 40.0, 50.0]])
    crops, _ = crop(_frames(images[:1]), torch.tensor([0]), box, (64, 48))
    mean = torch.tensor(DEFAULT_PIXEL_MEAN).view(3, 1, 1)
    assert torch.allclose(crops[0, :, 0, 0:4], -mean.view(3, 1).expand(3, 4))  # top-left corner: padding
    assert not torch.allclose(crops[0, :, -1, -1], -mean.view(3))  # bottom-right: image


def test_crop_half_precision_and_custom_mean(images: np.ndarray) -> None:
    boxes, index = torch.tensor(BOXES[:3]), torch.tensor([0, 1, 0])
    full, _ = crop(_frames(images), index, boxes, (64, 48), mean=(0.5, 0.5, 0.5))
    half, _ = crop(_frames(images), index, boxes, (64, 48), mean=(0.5, 0.5, 0.5), dtype=torch.float16)
    assert half.dtype == torch.float16 and half.is_contiguous()
    assert torch.equal(half, full.half())
    center, scale = box_to_center_scale(boxes, 0.75)
    ref = crop_reference(images[1], center[1].numpy(), scale[1].numpy(), (64, 48), (0.5, 0.5, 0.5))
    assert np.abs(full[1].numpy() - ref).max() <= PIXEL_TOL


def test_crop_of_no_boxes(images: np.ndarray) -> None:
    crops, crop_boxes = crop(_frames(images), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    assert crops.shape == (0, 3, 256, 192) and crop_boxes.shape == (0, 4)


def test_box_to_center_scale_grows_the_short_side() -> None:
    boxes = torch.tensor(
        [
            [0.0, 0.0, 30.0, 100.0],  # tall: width grows to 0.75 * 100
            [10.0, 20.0, 110.0, 40.0],  # wide: height grows to 100 / 0.75
            [5.0, 5.0, 80.0, 105.0],  # already 0.75
        ]
    )
    center, scale = box_to_center_scale(boxes, 0.75)
    assert center.dtype == scale.dtype == torch.float32
    torch.testing.assert_close(center, torch.tensor([[15.0, 50.0], [60.0, 30.0], [42.5, 55.0]]))
    expected = torch.tensor([[75.0, 100.0], [100.0, 100.0 / 0.75], [75.0, 100.0]]) * 1.25
    torch.testing.assert_close(scale, expected)
    torch.testing.assert_close(box_to_center_scale(boxes, 0.75, scale_mult=1.0)[1], expected / 1.25)


def test_center_scale_to_box() -> None:
    boxes = center_scale_to_box(torch.tensor([[15.0, 50.0]]), torch.tensor([[93.75, 125.0]]))
    torch.testing.assert_close(boxes, torch.tensor([[-31.875, -12.5, 61.875, 112.5]]))


FRAME = torch.zeros(1, 3, 8, 8, dtype=torch.uint8)


@pytest.mark.parametrize(
    "frames, index, message",
    [
        (FRAME.float(), torch.tensor([0]), "uint8"),
        (FRAME.permute(0, 2, 3, 1), torch.tensor([0]), r"\(B, 3, H, W\)"),
        (FRAME, torch.tensor([0, 0]), "frame_index"),
        (FRAME, torch.tensor([1]), r"\[0, 1\)"),
        (FRAME, torch.tensor([0.0]), "integer"),
    ],
)
def test_crop_rejects_bad_input(frames: torch.Tensor, index: torch.Tensor, message: str) -> None:
    with pytest.raises(AlphaPoseTrtError, match=message):
        crop(frames, index, torch.zeros(1, 4))
