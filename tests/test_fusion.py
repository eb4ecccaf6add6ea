"""The torch.compile'd pre/post-processing equals the eager functions it is built from.

On the CPU here (Inductor's C++ backend); the GPU run of test_gpu.py checks the Triton kernels.
The eager functions are themselves checked against cv2/numpy in test_detect/test_crop/test_decode.
"""

from __future__ import annotations

import torch

from alphapose_trt.pipeline.crop import crop
from alphapose_trt.pipeline.decode import decode_heatmaps
from alphapose_trt.pipeline.detect import letterbox
from conftest import make_frame


def _frames() -> torch.Tensor:
    return torch.stack([torch.from_numpy(make_frame(60, 80, seed=s)) for s in (1, 2)]).permute(0, 3, 1, 2)


def test_fused_letterbox_and_crop_match_eager() -> None:
    frames = _frames()
    eager, info = letterbox(frames, 64)
    fast, fast_info = letterbox(frames, 64, fused_ops=True)
    assert fast_info == info and fast.dtype == eager.dtype
    # both round to uint8 levels: a float rounding edge may flip one level (1/255), rarely
    assert (fast - eager).abs().max() <= 1 / 255 + 1e-6
    assert (fast != eager).float().mean() < 1e-3
    index = torch.tensor([0, 1, 1])
    boxes = torch.tensor([[5.0, 4.0, 40.0, 50.0], [20.5, 10.2, 70.0, 58.0], [-5.0, -3.0, 30.0, 20.0]])
    want, want_boxes = crop(frames, index, boxes, (32, 24))
    got, got_boxes = crop(frames, index, boxes, (32, 24), fused_ops=True)
    torch.testing.assert_close(got_boxes, want_boxes)
    assert (got - want).abs().max() <= 1 / 255 + 1e-6
    assert (got != want).float().mean() < 1e-2
    # another box count runs the same (dynamic) build
    with torch._dynamo.config.patch(error_on_recompile=True):
        got, _ = crop(frames, index[:2], boxes[:2], (32, 24), fused_ops=True)
    assert (got - want[:2]).abs().max() <= 1 / 255 + 1e-6


def test_fused_decode_matches_eager() -> None:
    heatmaps = torch.rand(3, 17, 16, 12, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[0.0, 0.0, 48.0, 64.0], [10.0, 20.0, 34.0, 52.0], [5.5, 6.5, 17.5, 22.5]])
    want = decode_heatmaps(heatmaps, boxes)
    for n in (3, 1):
        got = decode_heatmaps(heatmaps[:n], boxes[:n], fused_ops=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w[:n], atol=1e-5, rtol=1e-5)


def test_fused_decode_builds_once_for_all_row_counts() -> None:
    """No rebuild when the row count changes, even where it first equals a heatmap side (64 rows
    of 64x48 heatmaps: torch's duck sizing tied the two and rebuilt decode for the 63-row batch)."""
    heatmaps = torch.rand(64, 3, 64, 48, generator=torch.Generator().manual_seed(1))
    boxes = torch.tensor([[10.0, 20.0, 58.0, 84.0]]).repeat(64, 1)
    decode_heatmaps(heatmaps, boxes, fused_ops=True)
    with torch._dynamo.config.patch(error_on_recompile=True):
        for n in (63, 17, 64):
            got = decode_heatmaps(heatmaps[:n].clone(), boxes[:n], fused_ops=True)
            for g, w in zip(got, decode_heatmaps(heatmaps[:n], boxes[:n])):
                torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
