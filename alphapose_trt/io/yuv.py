"""YUV 4:2:0 -> RGB on any torch device, bit-exact to OpenCV's conversions.

Why here: decoders hand out YUV 4:2:0 (NVDEC as NV12, FFmpeg through PyAV as I420), half the
bytes of an RGB frame. Converting on the GPU keeps that work off the host's cores and halves the
bytes crossing PCIe; matching cv2.cvtColor bit for bit keeps the frames those of OpenCV's own
conversion, so keypoints do not depend on the decoder beyond its chroma upsampling.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from alphapose_trt.io.sources import upright
from alphapose_trt.pipeline.fusion import fused

# OpenCV's fixed-point ITU-R BT.601 coefficients for limited-range YUV -> RGB (imgproc
# color_yuv): value = (max(Y - 16, 0) * CY + C(U, V) + 2^19) >> 20, clamped to 0..255.
_SHIFT = 20
_CY, _CVR, _CVG, _CUG, _CUB = 1220542, 1673527, -852492, -409993, 2116026


def _split_420(image: Tensor, layout: str) -> tuple[int, int, tuple[int, ...]]:
    rows, width = image.shape[-2:]
    if rows % 3 or width % 2:  # rows = 3/2 x height: the height is even too
        raise ValueError(f"not an {layout} image: {rows} x {width} (need rows = 3/2 x an even height, and an even width)")
    return rows * 2 // 3, width, image.shape[:-2]


def _rgb(image: Tensor, height: int, width: int, lead: tuple[int, ...], u: Tensor, v: Tensor) -> Tensor:
    """RGB from the luma rows of `image` and one (U, V) sample per 2x2 block, both broadcast as
    (..., H/2, 1, W/2, 1): each block's chroma is used where it stands instead of being upsampled
    into a full-size copy."""
    luma = (image[..., :height, :].int() - 16).clamp_(min=0).mul_(_CY).view(*lead, height // 2, 2, width // 2, 2)
    half = 1 << (_SHIFT - 1)
    planes = [((luma + c) >> _SHIFT).clamp_(0, 255) for c in (_CVR * v + half, _CVG * v + _CUG * u + half, _CUB * u + half)]
    return torch.stack(planes, dim=-1).to(torch.uint8).view(*lead, height, width, 3)


def nv12_to_rgb(nv12: Tensor) -> Tensor:
    """(..., H * 3 / 2, W) uint8 NV12 (the Y plane, then U and V interleaved) -> (..., H, W, 3)
    uint8 RGB, bit-exact to cv2.cvtColor(COLOR_YUV2RGB_NV12) (nearest chroma, integer arithmetic)."""
    height, width, lead = _split_420(nv12, "NV12")
    chroma = nv12[..., height:, :].int().view(*lead, height // 2, 1, width // 2, 2) - 128  # [U, V] per block
    return _rgb(nv12, height, width, lead, chroma[..., :1], chroma[..., 1:])


def i420_to_rgb(i420: Tensor) -> Tensor:
    """(..., H * 3 / 2, W) uint8 I420 (the Y plane, then the whole U plane, then V) -> (..., H, W, 3)
    uint8 RGB, bit-exact to cv2.cvtColor(COLOR_YUV2RGB_I420)."""
    height, width, lead = _split_420(i420, "I420")
    chroma = i420[..., height:, :].int().reshape(*lead, 2, height // 2, 1, width // 2, 1) - 128
    return _rgb(i420, height, width, lead, chroma.select(-5, 0), chroma.select(-5, 1))


# Compiled for the GPU sources (eager, NV12 for a batch of 8 1080p frames took 2.05 ms of GPU time
# on the H100 beside the pipeline's ~8 ms), the frame count dynamic so a short last batch does not
# rebuild them.
nv12_to_rgb_fused = fused(nv12_to_rgb, row_args=(0,))
i420_to_rgb_fused = fused(i420_to_rgb, row_args=(0,))


def rgb_on(stream: torch.cuda.Stream, convert: Callable[[Tensor], Tensor], planes: Tensor, turns: int = 0) -> Tensor:
    """A GPU source's frames: `planes` (pinned host memory goes up first) converted and turned
    `turns` quarter turns upright (`sources.upright`) on the source's own `stream`, complete on
    return, so the decoder's buffers can be reused at once and the frames read on any stream."""
    with torch.cuda.device(stream.device), torch.cuda.stream(stream):
        rgb = upright(convert(planes.to(stream.device, non_blocking=True)), turns)
    stream.synchronize()
    return rgb
