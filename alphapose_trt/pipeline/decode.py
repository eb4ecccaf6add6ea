"""Heatmaps -> keypoints in image pixels, and the flip test, as AlphaPose decodes them.

Why it lives on the device: the pose engine's heatmaps (N, K, 64, 48) are the largest tensor
after the crops; decoding them where they are and copying back only (N, K, 2) coordinates and
(N, K) scores keeps the device-to-host traffic tiny. The fast functions are plain vectorised
torch (same code on CPU and CUDA); the `*_reference` functions are slow numpy loops written the
way AlphaPose writes them, kept to check the fast ones against.

AlphaPose's decode (`heatmap_to_coord_simple`):
- the argmax of each joint's heatmap (first maximum on ties) is the joint, its value the score;
  where the score is <= 0 the heatmap coordinates are zeroed;
- quarter-pixel refinement: when 1 < px < W-1 and 1 < py < H-1 the point moves 0.25 towards the
  larger neighbour in x and in y (the sign of the neighbour difference, so no move on a tie);
- back to the image through the crop box (x1, y1, x2, y2):
  x = cx + (x_hm - W/2) * w / W, y = cy + (y_hm - H/2) * h / H.
  (AlphaPose's affine uses w / W for both axes; the crop boxes have the heatmap's aspect ratio
  (192/256 = 48/64), so w / W == h / H and the two agree.)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from alphapose_trt.pipeline.fusion import fused
from alphapose_trt.pipeline.transfer import to_device

# Quarter-pixel step of the sub-pixel refinement.
REFINE_STEP = 0.25


def decode_heatmaps(heatmaps: Tensor, crop_boxes: Tensor, fused_ops: bool = False) -> tuple[Tensor, Tensor]:
    """Decode pose heatmaps to keypoints in image pixels (vectorised, any device).

    Args:
        heatmaps (Tensor[N, K, H, W]): pose network output, fp32 or fp16 (decoded in fp32 so
            fp16 engines give the same argmax and refinement as fp32 ones).
        crop_boxes (Tensor[N, 4]): the crop each heatmap was made from, x1, y1, x2, y2 in image
            pixels.
        fused_ops: run it as torch.compile'd kernels (pipeline/fusion.py).

    Returns:
        coords (Tensor[N, K, 2]) x, y in image pixels and scores (Tensor[N, K]) peak values,
        both fp32 on the heatmaps' device.
    """
    _check_decode_inputs(heatmaps, crop_boxes)
    return (_decode_fused if fused_ops else _decode)(heatmaps, crop_boxes)


def _decode(heatmaps: Tensor, crop_boxes: Tensor) -> tuple[Tensor, Tensor]:
    n, k, h, w = heatmaps.shape
    flat = heatmaps.float().reshape(n, k, h * w)
    idx = flat.argmax(dim=2, keepdim=True)
    scores = flat.gather(2, idx).squeeze(2)
    px = idx.squeeze(2) % w
    py = idx.squeeze(2) // w
    coords = torch.stack((px, py), dim=2).float()
    coords = coords + REFINE_STEP * _refine_signs(flat, idx, px, py, w, h)
    coords = coords * (scores > 0).unsqueeze(2)
    return _heatmap_to_image(coords, crop_boxes.to(coords), w, h), scores


_decode_fused = fused(_decode, row_args=(0, 1))


def _check_decode_inputs(heatmaps: Tensor, crop_boxes: Tensor) -> None:
    """Shape contract of `decode_heatmaps` (a programming error, so ValueError)."""
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {tuple(heatmaps.shape)}")
    if crop_boxes.shape != (heatmaps.shape[0], 4):
        raise ValueError(
            f"crop_boxes must be ({heatmaps.shape[0]}, 4) for {heatmaps.shape[0]} heatmaps, "
            f"got shape {tuple(crop_boxes.shape)}"
        )


def _refine_signs(flat: Tensor, idx: Tensor, px: Tensor, py: Tensor, w: int, h: int) -> Tensor:
    """Sign (-1, 0, 1) of the x and y neighbour differences at each peak, 0 off the interior.

    flat (N, K, H*W) fp32, idx (N, K, 1) flat peak index, px/py (N, K). Neighbour indices are
    clamped into range so the gathers never fail; the interior mask then discards them.
    """
    last = h * w - 1
    neighbours = torch.cat((idx + 1, idx - 1, idx + w, idx - w), dim=2).clamp(0, last)
    right, left, below, above = flat.gather(2, neighbours).unbind(2)
    signs = torch.stack((torch.sign(right - left), torch.sign(below - above)), dim=2)
    interior = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    return signs * interior.unsqueeze(2)


def _heatmap_to_image(coords: Tensor, crop_boxes: Tensor, w: int, h: int) -> Tensor:
    """Map heatmap coordinates (N, K, 2) back to image pixels through crop boxes (N, 4) xyxy."""
    size = crop_boxes[:, 2:] - crop_boxes[:, :2]
    centre = crop_boxes[:, :2] + size * 0.5
    x = centre[:, None, 0] + (coords[..., 0] - w / 2) * size[:, None, 0] / w
    y = centre[:, None, 1] + (coords[..., 1] - h / 2) * size[:, None, 1] / h
    return torch.stack((x, y), dim=2)


def decode_heatmaps_reference(
    hm: np.ndarray, crop_box: Sequence[float] | np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Slow reference decode of one person's heatmaps, written joint by joint like AlphaPose.

    Args:
        hm (ndarray[K, H, W]): heatmaps of one crop (any float dtype; read as float32).
        crop_box: x1, y1, x2, y2 of the crop in image pixels.

    Returns:
        coords (ndarray[K, 2]) float64 image pixels and scores (ndarray[K]) float32.
    """
    hm = np.asarray(hm, dtype=np.float32)
    num_joints, height, width = hm.shape
    x1, y1, x2, y2 = (float(v) for v in crop_box)
    box_w, box_h = x2 - x1, y2 - y1
    centre_x, centre_y = x1 + box_w * 0.5, y1 + box_h * 0.5
    coords = np.zeros((num_joints, 2), dtype=np.float64)
    scores = np.zeros(num_joints, dtype=np.float32)
    for j in range(num_joints):
        flat_idx = int(np.argmax(hm[j].reshape(-1)))
        scores[j] = hm[j].reshape(-1)[flat_idx]
        x, y = float(flat_idx % width), float(flat_idx // width)
        if scores[j] <= 0:
            x, y = 0.0, 0.0
        px, py = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if 1 < px < width - 1 and 1 < py < height - 1:
            x += REFINE_STEP * float(np.sign(hm[j, py, px + 1] - hm[j, py, px - 1]))
            y += REFINE_STEP * float(np.sign(hm[j, py + 1, px] - hm[j, py - 1, px]))
        coords[j, 0] = centre_x + (x - width / 2) * box_w / width
        coords[j, 1] = centre_y + (y - height / 2) * box_h / height
    return coords, scores


def flip_back(heatmaps: Tensor, flip_pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Turn heatmaps of mirrored crops back into heatmaps of the plain crops.

    Mirror along the width, swap each left/right joint pair, and shift one pixel to the right
    (column 0 keeps its value), as AlphaPose's flip test means to. AlphaPose does the shift as
    an in-place copy between overlapping slices, which recent PyTorch corrupts or refuses; here
    the whole operation is two index selects into a new tensor.

    Args:
        heatmaps (Tensor[N, K, H, W]): output of the pose network on horizontally flipped crops.
        flip_pairs: (left, right) joint index pairs, e.g. `alphapose_trt.skeleton.flip_pairs(K)`.

    Returns:
        Tensor[N, K, H, W], same dtype and device.
    """
    if heatmaps.dim() != 4:
        raise ValueError(f"heatmaps must be (N, K, H, W), got shape {tuple(heatmaps.shape)}")
    num_joints, width = heatmaps.shape[1], heatmaps.shape[3]
    channels = to_device(_swap_permutation(num_joints, flip_pairs), heatmaps.device)
    # Output column x reads flipped column x - 1, i.e. source column W - x; column 0 reads W - 1.
    columns = torch.arange(width, 0, -1, device=heatmaps.device)
    columns[0] = width - 1
    return heatmaps.index_select(1, channels).index_select(3, columns)


def average_flip(heatmaps: Tensor, heatmaps_flipped_back: Tensor) -> Tensor:
    """Flip-test average: (plain + flipped back) / 2, the heatmaps AlphaPose decodes."""
    if heatmaps.shape != heatmaps_flipped_back.shape:
        raise ValueError(
            f"flip test needs equal shapes, got {tuple(heatmaps.shape)} and "
            f"{tuple(heatmaps_flipped_back.shape)}"
        )
    return (heatmaps + heatmaps_flipped_back) / 2


def flip_back_reference(heatmaps: np.ndarray, flip_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Slow reference of `flip_back` on numpy (N, K, H, W): mirror, swap pairs, shift right.

    The shift walks the columns from the right so each column is read before it is overwritten,
    which is the in-place shift done correctly.
    """
    out = np.ascontiguousarray(heatmaps[..., ::-1])
    for left, right in flip_pairs:
        out[:, [left, right]] = out[:, [right, left]]
    for x in range(out.shape[-1] - 1, 0, -1):
        out[..., x] = out[..., x - 1]
    return out


def _swap_permutation(num_joints: int, flip_pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Channel order that swaps every flip pair: output channel c reads input channel perm[c]."""
    perm = list(range(num_joints))
    for left, right in flip_pairs:
        if not (0 <= left < num_joints and 0 <= right < num_joints):
            raise ValueError(f"flip pair ({left}, {right}) out of range for {num_joints} joints")
        perm[left], perm[right] = right, left
    return perm
