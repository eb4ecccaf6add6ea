"""Person crops for the pose network: AlphaPose's SimpleTransform.test_transform, batched.

AlphaPose (alphapose/utils/presets/simple_transform.py, utils/transforms.py) turns a box
(x1, y1, x2, y2) into x, y, w, h = x1, y1, x2 - x1, y2 - y1; centre (x + w/2, y + h/2); grows the
short side to the input aspect (w/h = 192/256); scale = (w, h) * 1.25. It warps the RGB uint8
image with cv2.warpAffine (bilinear, border 0) through the affine that cv2.getAffineTransform
builds from three float32 points (the centre, the centre moved up by scale_w / 2, and a third
point perpendicular to them), then divides by 255 and subtracts the RGB means. The crop box
reported back is centre -/+ scale / 2. Both axes use scale_w / out_w as the pixel step.

`crop` does all crops of a batch at once on the frames' device; `crop_reference` is the cv2 path
on one crop, the tests' oracle.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch
from torch import Tensor

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.pipeline.fusion import fused
from alphapose_trt.pipeline.transfer import to_device

DEFAULT_INPUT_HW = (256, 192)
SCALE_MULT = 1.25
DEFAULT_PIXEL_MEAN = (0.406, 0.457, 0.480)


def aspect_ratio(out_hw: Sequence[int]) -> float:
    """Crop width / height (0.75 for 256x192): boxes are grown to this aspect before cropping."""
    return out_hw[1] / out_hw[0]


def box_to_center_scale(
    boxes_xyxy: Tensor, aspect: float = aspect_ratio(DEFAULT_INPUT_HW), scale_mult: float = SCALE_MULT
) -> tuple[Tensor, Tensor]:
    """Centres and crop sizes of boxes, in float32 as AlphaPose computes them.

    Args:
        boxes_xyxy (Tensor[N, 4]): x1, y1, x2, y2 in image pixels.
        aspect: crop width / height; the short side of each box is grown to it.
        scale_mult: enlargement of the aspect-corrected box (context around the person).

    Returns:
        (center Tensor[N, 2], scale Tensor[N, 2]): x, y and width, height, float32.
    """
    boxes = boxes_xyxy.float()
    x, y = boxes[:, 0], boxes[:, 1]
    w, h = boxes[:, 2] - x, boxes[:, 3] - y
    center = torch.stack([x + w * 0.5, y + h * 0.5], dim=1)
    too_wide, too_tall = w > aspect * h, w < aspect * h
    new_w = torch.where(too_tall, h * aspect, w)
    new_h = torch.where(too_wide, w / aspect, h)
    return center, torch.stack([new_w, new_h], dim=1) * scale_mult


def center_scale_to_box(center: Tensor, scale: Tensor) -> Tensor:
    """Crop boxes (Tensor[N, 4] x1, y1, x2, y2) of centres and sizes, as AlphaPose writes them."""
    top_left = center - scale * 0.5
    return torch.cat([top_left, top_left + scale], dim=1)


def crop_reference(
    img: np.ndarray,
    center: np.ndarray,
    scale: np.ndarray,
    out_hw: Sequence[int] = DEFAULT_INPUT_HW,
    mean: Sequence[float] = DEFAULT_PIXEL_MEAN,
) -> np.ndarray:
    """One crop the way AlphaPose makes it: ndarray[3, H, W] float32, RGB / 255 minus `mean`.

    (AlphaPose skips the / 255 when a crop's maximum is at most 1, i.e. an all-black crop; we don't.)
    """
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    src = _three_points(np.asarray(center, np.float32), np.float32(scale[0]))
    dst = _three_points(np.array([out_w * 0.5, out_h * 0.5], np.float32), np.float32(out_w))
    affine = cv2.getAffineTransform(src, dst)
    warped = cv2.warpAffine(img, affine, (out_w, out_h), flags=cv2.INTER_LINEAR)
    chw = warped.transpose(2, 0, 1).astype(np.float32) / np.float32(255)
    return chw - np.asarray(mean, np.float32)[:, None, None]


def _three_points(center: np.ndarray, width: np.float32) -> np.ndarray:
    """get_affine_transform's float32 points for rotation 0: centre, up by width/2, then left."""
    points = np.zeros((3, 2), dtype=np.float32)
    points[0] = center
    points[1] = center + np.array([0, width * np.float32(-0.5)], np.float32)
    direct = points[0] - points[1]
    points[2] = points[1] + np.array([-direct[1], direct[0]], np.float32)
    return points


def crop(
    frames: Tensor,
    frame_index: Tensor,
    boxes_xyxy: Tensor,
    out_hw: Sequence[int] = DEFAULT_INPUT_HW,
    mean: Sequence[float] = DEFAULT_PIXEL_MEAN,
    dtype: torch.dtype = torch.float32,
    scale_mult: float = SCALE_MULT,
    fused_ops: bool = False,
) -> tuple[Tensor, Tensor]:
    """All pose crops of a batch of frames in one gather, on the frames' device.

    Args:
        frames (Tensor[B, 3, H, W] uint8): RGB frames (channels-last memory avoids a copy).
        frame_index (Tensor[N] int): the frame each box belongs to (range-checked when on the CPU).
        boxes_xyxy (Tensor[N, 4]): x1, y1, x2, y2 in image pixels.
        out_hw: crop (height, width), the pose network input; its aspect shapes the boxes.
        mean: RGB means subtracted after / 255 (the pose model's pixel_mean).
        dtype: output dtype (float16 for a half-precision engine).
        scale_mult: box enlargement (the pose model's crop_scale).
        fused_ops: run the arithmetic as torch.compile'd kernels (pipeline/fusion.py).

    Returns:
        (crops Tensor[N, 3, h, w] of `dtype`, crop_boxes Tensor[N, 4] float32 x1, y1, x2, y2).
        Bilinear sampling with pixel centres at integer coordinates and zeros outside the image,
        rounded to uint8 values like cv2.warpAffine's output: equal to `crop_reference` but for
        samples that land within float error of a rounding edge (at most 1/255).
    """
    _check_crop_args(frames, frame_index, boxes_xyxy, out_hw, mean)
    mean_t = to_device(mean, frames.device, torch.float32)
    sample = _crop_fused if fused_ops else _crop
    return sample(frames, frame_index.long(), boxes_xyxy.float(), mean_t, int(out_hw[0]), int(out_hw[1]), scale_mult, dtype)


def _crop(frames: Tensor, frame_index: Tensor, boxes: Tensor, mean: Tensor, out_h: int, out_w: int,
          scale_mult: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    center, scale = box_to_center_scale(boxes, out_w / out_h, scale_mult)
    src_x, src_y = _sampling_grid(center, scale, out_h, out_w)
    sampled = _bilinear_gather(frames, frame_index, src_x, src_y)
    crops = sampled.round_().div_(255).sub_(mean).permute(0, 3, 1, 2)
    return crops.to(dtype, memory_format=torch.contiguous_format), center_scale_to_box(center, scale)


_crop_fused = fused(_crop, row_args=(1, 2))


def _check_crop_args(
    frames: Tensor, frame_index: Tensor, boxes: Tensor, out_hw: Sequence[int], mean: Sequence[float]
) -> None:
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8:
        raise AlphaPoseTrtError(
            "crop needs frames as a (B, 3, H, W) uint8 tensor, "
            f"got {frames.dtype} {tuple(frames.shape)}"
        )
    if boxes.ndim != 2 or boxes.shape[1] != 4 or frame_index.shape != boxes.shape[:1]:
        raise AlphaPoseTrtError(
            "crop needs boxes (N, 4) and frame_index (N,), "
            f"got {tuple(boxes.shape)} and {tuple(frame_index.shape)}"
        )
    batch = frames.shape[0]
    if frame_index.is_floating_point():
        raise AlphaPoseTrtError("crop frame_index must hold integer frame numbers")
    # range-checked on the host only: reading a device tensor here would wait for the GPU queue
    if frame_index.device.type == "cpu" and bool(((frame_index < 0) | (frame_index >= batch)).any()):
        raise AlphaPoseTrtError(f"crop frame_index must hold integer frame numbers in [0, {batch})")
    if len(out_hw) != 2 or min(int(s) for s in out_hw) < 1:
        raise AlphaPoseTrtError(f"crop size must be two positive integers (h, w), got {tuple(out_hw)}")
    if len(mean) != 3:
        raise AlphaPoseTrtError(f"pixel mean must have 3 values (R, G, B), got {tuple(mean)}")


def _sampling_grid(center: Tensor, scale: Tensor, out_h: int, out_w: int) -> tuple[Tensor, Tensor]:
    """Source x of every output column (Tensor[N, w]) and source y of every row (Tensor[N, h]).

    The inverse of the affine through AlphaPose's three float32 points. They are rebuilt with the
    same float32 rounding (top = cy - sw/2, left = cx - (cy - top)) because the warp samples at
    their exact positions; the map is then evaluated in float64. Output pixel (u, v) samples
    (cx + (u - out_w/2) * step_x, cy + (v - out_h/2) * step_y), both steps close to sw / out_w.
    """
    cx, cy = center[:, 0], center[:, 1]
    top = cy - scale[:, 0] * 0.5
    left = cx - (cy - top)
    half_out_w = out_w * 0.5
    step_x = (cx.double() - left.double()) / half_out_w
    step_y = (cy.double() - top.double()) / half_out_w
    u = torch.arange(out_w, dtype=torch.float64, device=center.device) - half_out_w
    v = torch.arange(out_h, dtype=torch.float64, device=center.device) - out_h * 0.5
    return cx.double()[:, None] + step_x[:, None] * u, cy.double()[:, None] + step_y[:, None] * v


def _bilinear_gather(frames: Tensor, frame_index: Tensor, src_x: Tensor, src_y: Tensor) -> Tensor:
    """Bilinear samples (Tensor[N, h, w, 3] float32, 0..255) of the frames at a separable grid.

    Neighbours outside the frame count as 0 (cv2's BORDER_CONSTANT). Gathering from the uint8
    frames reads only the sampled pixels, instead of converting whole frames to float or
    copying one frame per crop as grid_sample would need.
    """
    _, _, height, width = frames.shape
    pixels = frames.permute(0, 2, 3, 1).reshape(-1, 3)
    rows, row_weights = _taps(src_y, height)
    cols, col_weights = _taps(src_x, width)
    out = torch.zeros(*src_y.shape, src_x.shape[1], 3, dtype=torch.float32, device=frames.device)
    for row, row_weight in zip(rows, row_weights):
        flat_row = (frame_index[:, None] * height + row) * width
        for col, col_weight in zip(cols, col_weights):
            weight = (row_weight[:, :, None] * col_weight[:, None, :])[..., None]
            out.add_(pixels[flat_row[:, :, None] + col[:, None, :]].float() * weight)
    return out


def _taps(coord: Tensor, size: int) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The two neighbours of each coordinate (clamped into the frame) and their weights (0 outside)."""
    low = coord.floor()
    frac = (coord - low).float()
    low = low.long()
    high = low + 1
    low_weight = (1 - frac) * ((low >= 0) & (low < size))
    high_weight = frac * ((high >= 0) & (high < size))
    return (low.clamp(0, size - 1), high.clamp(0, size - 1)), (low_weight, high_weight)
