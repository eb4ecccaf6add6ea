"""Detector pre- and post-processing: letterbox the frames, then filter, NMS and un-letterbox boxes.

AlphaPose's YOLO path (detector/yolo/preprocess.py, detector/yolo_api.py), reproduced exactly:

- letterbox: s = min(S/w, S/h); bicubic resize to (int(s*w), int(s*h)); paste at the integer
  offset ((S - new_w) // 2, (S - new_h) // 2) on a canvas of 128; RGB / 255, no mean or std.
- keep a candidate when objectness > conf, its best class is person (0) and that class score is
  non-zero; the box score is the objectness.
- NMS per image on the letterboxed boxes with AlphaPose's +1 pixel areas; an image with more than
  100 survivors is redone at the threshold minus 0.05 (AlphaPose counts survivors over its whole
  detection batch; we count per image so a frame's boxes do not depend on its batch-mates).
- map back with AlphaPose's float offset (S - s*w) / 2 (not the integer paste offset: a sub-pixel
  mismatch AlphaPose has and we keep, to give its boxes), divide by s, clamp to [0, w] x [0, h].
- unlike AlphaPose, drop boxes that clamping left under 1 px wide or high: they lie in the
  letterbox padding, hold no person, and AlphaPose would still crop and pose them.

The fast functions work on batches of device tensors; the `*_reference` functions do the same
with cv2/numpy on one image, the way AlphaPose does, and serve as the tests' oracle.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import nms as torchvision_nms

from alphapose_trt.errors import AlphaPoseTrtError
from alphapose_trt.pipeline.fusion import fused

DEFAULT_INPUT_SIZE = 608
CONF_THRESHOLD = 0.1
NMS_THRESHOLD = 0.6
# AlphaPose redoes NMS at `nms - 0.05` (0.55 by default) when more than 100 boxes survive.
NMS_RETRY_STEP = 0.05
NMS_RETRY_COUNT = 100
# Candidates per image up to which NMS compares all pairs at once (see _nms_keep).
NMS_MATRIX_ROWS = 96
PERSON_CLASS = 0
LETTERBOX_FILL = 128
MIN_BOX_SIDE = 1.0


@dataclass(frozen=True)
class LetterboxInfo:
    """Where a frame of `image_hw` (h, w) sits inside the square detector input of `input_size`.

    `scale` and `resized_hw` are what the resize used (AlphaPose's python float and int()
    rounding); `pad_xy` is the integer paste offset of the resized image on the canvas.
    """

    input_size: int
    image_hw: tuple[int, int]
    scale: float
    resized_hw: tuple[int, int]
    pad_xy: tuple[int, int]

    @classmethod
    def for_image(
        cls, image_hw: tuple[int, int], input_size: int = DEFAULT_INPUT_SIZE
    ) -> LetterboxInfo:
        """The letterbox geometry of one frame size, computed as AlphaPose's letterbox_image does."""
        h, w = int(image_hw[0]), int(image_hw[1])
        if h < 1 or w < 1:
            raise AlphaPoseTrtError(f"cannot letterbox an empty image of size {w}x{h}")
        size = int(input_size)
        if size < 1:
            raise AlphaPoseTrtError(
                f"detector input size must be a positive integer, got {input_size}"
            )
        scale = min(size / w, size / h)
        new_w, new_h = int(w * scale), int(h * scale)
        if new_w < 1 or new_h < 1:
            raise AlphaPoseTrtError(
                f"image of size {w}x{h} is too elongated to letterbox into {size}x{size}"
            )
        pad = ((size - new_w) // 2, (size - new_h) // 2)
        return cls(size, (h, w), scale, (new_h, new_w), pad)


def letterbox_reference(
    img: np.ndarray, size: int = DEFAULT_INPUT_SIZE
) -> tuple[np.ndarray, float, tuple[int, int]]:
    """AlphaPose's letterbox of one RGB uint8 HxWx3 image: (3, S, S) float32 in [0, 1], scale, pad.

    cv2 INTER_CUBIC resize pasted on a 128 canvas, then / 255: the oracle for `letterbox`.
    """
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise AlphaPoseTrtError(
            f"letterbox_reference needs an HxWx3 uint8 image, got {img.dtype} {img.shape}"
        )
    info = LetterboxInfo.for_image(img.shape[:2], size)
    new_h, new_w = info.resized_hw
    pad_x, pad_y = info.pad_xy
    resized = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((info.input_size, info.input_size, 3), LETTERBOX_FILL, dtype=np.uint8)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas.transpose(2, 0, 1).astype(np.float32) / np.float32(255), info.scale, info.pad_xy


def letterbox(
    frames: Tensor, size: int = DEFAULT_INPUT_SIZE, dtype: torch.dtype = torch.float32,
    fused_ops: bool = False,
) -> tuple[Tensor, LetterboxInfo]:
    """Letterbox a batch of same-size RGB frames on their device, as AlphaPose does per image.

    Args:
        frames (Tensor[B, 3, H, W] uint8): RGB frames.
        size: side S of the square detector input.
        dtype: output dtype (float16 for a half-precision engine).
        fused_ops: run the arithmetic as one torch.compile'd kernel (pipeline/fusion.py).

    Returns:
        (Tensor[B, 3, S, S] of `dtype` in [0, 1], LetterboxInfo). The bicubic resize (A = -0.75,
        half-pixel centres, edge replication: cv2's INTER_CUBIC) is rounded and clamped to uint8
        values before / 255 like cv2's uint8 output, so it matches `letterbox_reference` to 1/255.
    """
    if frames.ndim != 4 or frames.shape[1] != 3 or frames.dtype != torch.uint8:
        raise AlphaPoseTrtError(
            "letterbox needs frames as a (B, 3, H, W) uint8 tensor, "
            f"got {frames.dtype} {tuple(frames.shape)}"
        )
    info = LetterboxInfo.for_image(frames.shape[-2:], size)
    new_h, new_w = info.resized_hw
    pad_x, pad_y = info.pad_xy
    padding = (pad_x, info.input_size - new_w - pad_x, pad_y, info.input_size - new_h - pad_y)
    resize_pad = _resize_pad_fused if fused_ops else _resize_pad
    return resize_pad(frames, new_h, new_w, padding, dtype), info


def _resize_pad(frames: Tensor, new_h: int, new_w: int, padding: tuple[int, int, int, int],
                dtype: torch.dtype) -> Tensor:
    resized = F.interpolate(frames.float(), size=(new_h, new_w), mode="bicubic", align_corners=False)
    resized = resized.round_().clamp_(0, 255)
    canvas = F.pad(resized, padding, mode="constant", value=float(LETTERBOX_FILL))
    return canvas.div_(255).to(dtype)


_resize_pad_fused = fused(_resize_pad)


def postprocess(
    raw: Tensor,
    info: LetterboxInfo,
    conf: float = CONF_THRESHOLD,
    nms: float = NMS_THRESHOLD,
    max_persons: int | None = None,
    min_box_area: float = 0.0,
) -> list[Tensor]:
    """Person boxes of every image from the decoded YOLO output: `candidates`, then `select`.

    Args:
        raw (Tensor[B, N, 5 + C]): cx, cy, w, h (letterboxed pixels), objectness, C class scores.
        info: the LetterboxInfo of the batch (all frames share one size).
        conf: objectness threshold (kept when strictly above).
        nms: IoU threshold; a lower-scored box is suppressed at IoU >= nms (AlphaPose's areas).
        max_persons: keep at most this many boxes per image, highest scores first.
        min_box_area: drop smaller boxes (square image pixels).

    Returns:
        B tensors (Tensor[M, 5] float32): x1, y1, x2, y2 in image pixels and the score, sorted by
        decreasing score.
    """
    boxes, counts = candidates(raw, conf)
    return select(boxes, counts, info, nms, max_persons, min_box_area)


def candidates(raw: Tensor, conf: float = CONF_THRESHOLD) -> tuple[Tensor, Tensor]:
    """Every image's rows that AlphaPose keeps before NMS, best first, in fixed-size tensors.

    Fixed shapes need no host sync (unlike `nonzero`): the fast pipeline queues this right after
    the detector and copies only the top rows to the host, where NMS on a few boxes is cheap.
    A candidate has objectness > conf, person (0) as its best class, and a non-zero class score
    (an fp16 engine can underflow every class score to 0, and argmax would then say person).

    Returns:
        (Tensor[B, N, 5] float32: x1, y1, x2, y2 (letterboxed pixels), objectness, sorted by
        decreasing objectness with ties in anchor order; rows from counts[i] on are not
        candidates, Tensor[B] int64: candidates per image).
    """
    _check_candidates_args(raw, conf)
    head = raw[..., :5].float()
    objectness = head[..., 4]
    best_score, best_class = raw[..., 5:].max(dim=-1)
    keep = (objectness > conf) & (best_class == PERSON_CLASS) & (best_score != 0)
    ranked = torch.where(keep, objectness, -1.0)  # objectness is a probability: rejects sort last
    order = torch.sort(ranked, dim=1, descending=True, stable=True).indices
    rows = head.gather(1, order[..., None].expand(-1, -1, 5))
    centre, size = rows[..., 0:2], rows[..., 2:4]
    boxes = torch.cat([centre - size / 2, centre + size / 2, rows[..., 4:5]], dim=-1)
    return boxes, keep.sum(dim=1)


def select(
    boxes: Tensor,
    counts: Tensor,
    info: LetterboxInfo,
    nms: float = NMS_THRESHOLD,
    max_persons: int | None = None,
    min_box_area: float = 0.0,
) -> list[Tensor]:
    """NMS, un-letterbox and limits on the output of `candidates` (or its first rows), on the host.

    In numpy over the whole batch (NMS: `_nms_keep`): these are a few hundred boxes, and each
    torch op on them cost more in dispatch than in work. The torch version, one NMS over all the
    batch's boxes, took the pipeline thread 1.3-1.4 ms per batch of 8 frames on the H100 host,
    and 6.7-9.4 ms at ~195 candidates per frame.

    Args:
        boxes (Tensor[B, K, 5]): `candidates` rows; K may be cut to at least max(counts).
        counts (Tensor[B]): candidates per image.

    Returns: as `postprocess`, on the device of `boxes`.
    """
    _check_select_args(nms, max_persons)
    per_image = np.asarray(counts.tolist(), dtype=np.int64)
    most = int(per_image.max(initial=0))
    if most > boxes.shape[1]:
        raise ValueError(f"{most} candidates in an image but only {boxes.shape[1]} rows given")
    rows = boxes[:, :most].detach().float().cpu().numpy()
    keep = _nms_keep(rows[..., :4], per_image, nms)
    crowded = keep.sum(axis=1) > NMS_RETRY_COUNT
    if crowded.any():
        keep[crowded] = _nms_keep(rows[crowded, :, :4], per_image[crowded], nms - NMS_RETRY_STEP)
    dets = np.concatenate([_to_image_coords(rows[..., :4], info), rows[..., 4:5]], axis=-1)
    keep &= _large_enough(dets[..., :4], min_box_area)
    return [torch.from_numpy(d[k][:max_persons]).to(boxes.device) for d, k in zip(dets, keep)]


def row_owners(counts: Sequence[int]) -> Tensor:
    """(sum(counts),) int64 CPU tensor holding i counts[i] times: the image (or frame) of each
    row of a concatenation of per-image rows.

    numpy, not torch.repeat_interleave: on the CPU that op starts an OpenMP parallel region (ms of
    thread wake-ups per call, measured) and leaves the threads spinning over the video decoder's
    cores.
    """
    return torch.from_numpy(np.repeat(np.arange(len(counts)), counts))


def _check_candidates_args(raw: Tensor, conf: float) -> None:
    if raw.ndim != 3 or raw.shape[2] < 6:
        raise AlphaPoseTrtError(
            "detector output must be (B, N, 5 + classes) with at least one class, "
            f"got {tuple(raw.shape)}"
        )
    if not 0.0 <= conf < 1.0:
        raise AlphaPoseTrtError(f"detection confidence threshold must be in [0, 1), got {conf}")


def _check_select_args(nms: float, max_persons: int | None) -> None:
    if not NMS_RETRY_STEP < nms <= 1.0:
        raise AlphaPoseTrtError(f"NMS IoU threshold must be in ({NMS_RETRY_STEP}, 1], got {nms}")
    if max_persons is not None and max_persons < 1:
        raise AlphaPoseTrtError(
            f"max_persons must be at least 1 (or None for no limit), got {max_persons}"
        )


def _nms_keep(boxes: np.ndarray, counts: np.ndarray, threshold: float) -> np.ndarray:
    """(B, K) bool: the boxes (B, K, 4, score-sorted, the first counts[i] valid) that greedy NMS
    keeps in each image, with AlphaPose's +1 pixel areas and its "drop at IoU >= threshold".

    Two ways to the same boxes, whichever is cheaper: up to NMS_MATRIX_ROWS rows, every image's
    pairwise suppressions at once (`_suppression`, `_greedy_keep`); beyond, where that work grows
    with K^2, torchvision's C++ NMS per image, which compares only the kept boxes with the rest
    but costs ~0.1 ms per call (2-core CI host, benchmarks/README.md, session 10).
    """
    if boxes.shape[1] <= NMS_MATRIX_ROWS:
        return _greedy_keep(_suppression(boxes, threshold), np.arange(boxes.shape[1]) < counts[:, None])
    # The scores are the rows' ranks, so ties keep the reference's row order; in float64 the +1
    # is exact, and the largest float64 below `threshold` turns torchvision's "IoU > t" into ">= t".
    corners = torch.from_numpy(boxes.astype(np.float64))
    corners[..., 2:] += 1
    rank = -torch.arange(boxes.shape[1], dtype=torch.float64)
    below = float(np.nextafter(threshold, -np.inf))
    keep = np.zeros(boxes.shape[:2], dtype=bool)
    for i, n in enumerate(counts.tolist()):
        keep[i, torchvision_nms(corners[i, :n], rank[:n], below).numpy()] = True
    return keep


def _suppression(boxes: np.ndarray, threshold: float) -> np.ndarray:
    """(B, K, K) bool: box i outranks box j (i < j) and their IoU is >= threshold, computed with
    `_nms_reference`'s float32 expressions term for term."""
    one = np.float32(1)
    x1, y1, x2, y2 = (boxes[..., c] for c in range(4))
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    inter_w = np.minimum(x2[..., :, None], x2[..., None, :]) - np.maximum(x1[..., :, None], x1[..., None, :]) + one
    inter_h = np.minimum(y2[..., :, None], y2[..., None, :]) - np.maximum(y1[..., :, None], y1[..., None, :]) + one
    inter = np.maximum(inter_w, np.float32(0)) * np.maximum(inter_h, np.float32(0))
    iou = inter / (areas[..., :, None] + areas[..., None, :] - inter)
    return np.triu(iou >= np.float32(threshold), k=1)


def _greedy_keep(suppresses: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Greedy NMS from its suppression matrix: keep[j] = valid[j] and no kept i < j suppresses j.

    Iterated from keep = valid: each round settles at least the next box in score order (a box
    depends only on higher-ranked ones), and a round that changes nothing has reached the one
    fixed point, which is the greedy result. Overlap chains are short, so this takes a few
    rounds of one batched product instead of a Python loop over the boxes.
    """
    weights = suppresses.astype(np.float32)
    keep = valid.copy()
    while True:
        settled = valid & ~(np.matmul(keep.astype(np.float32)[..., None, :], weights)[..., 0, :] > 0)
        if np.array_equal(settled, keep):
            return keep
        keep = settled


def _to_image_coords(boxes: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Undo the letterbox with AlphaPose's float32 formula, then clamp to [0, w] x [0, h]."""
    h, w = info.image_hw
    image_wh = np.array([w, h], dtype=np.float32)
    scale = (np.float32(info.input_size) / image_wh).min()
    offset = np.tile((np.float32(info.input_size) - scale * image_wh) / np.float32(2), 2)
    mapped = (boxes - offset) / scale
    return np.minimum(np.maximum(mapped, np.float32(0)), np.tile(image_wh, 2))


def _large_enough(boxes: np.ndarray, min_box_area: float) -> np.ndarray:
    """Rows at least 1 px wide and high and of at least `min_box_area` square pixels."""
    width, height = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    return (width >= MIN_BOX_SIDE) & (height >= MIN_BOX_SIDE) & (width * height >= min_box_area)


def postprocess_reference(
    raw_one_image: np.ndarray,
    scale: float,
    image_hw: tuple[int, int],
    input_size: int = DEFAULT_INPUT_SIZE,
    conf: float = CONF_THRESHOLD,
    nms: float = NMS_THRESHOLD,
    max_persons: int | None = None,
    min_box_area: float = 0.0,
) -> np.ndarray:
    """AlphaPose's post-processing of one image in numpy float32: the oracle for `postprocess`.

    Args:
        raw_one_image (ndarray[N, 5 + C]): one image's decoded YOLO rows (letterboxed pixels).
        scale: the letterbox scale min(S/w, S/h); image_hw: the original (h, w).

    Returns:
        ndarray[M, 5] float32: x1, y1, x2, y2, score in image pixels, by decreasing score.
    """
    raw = np.asarray(raw_one_image, dtype=np.float32)
    classes = raw[:, 5:]
    keep = (raw[:, 4] > conf) & (classes.argmax(axis=1) == PERSON_CLASS) & (classes.max(axis=1) != 0)
    rows = raw[keep]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    half = rows[:, 2:4] / np.float32(2)
    boxes = np.concatenate([rows[:, 0:2] - half, rows[:, 0:2] + half], axis=1)
    kept = _nms_reference(boxes, nms)
    if len(kept) > NMS_RETRY_COUNT:
        kept = _nms_reference(boxes, nms - NMS_RETRY_STEP)
    mapped = _unletterbox_reference(boxes[kept], scale, image_hw, input_size)
    dets = np.concatenate([mapped, rows[kept, 4:5]], axis=1)
    width, height = dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1]
    dets = dets[(width >= MIN_BOX_SIDE) & (height >= MIN_BOX_SIDE) & (width * height >= min_box_area)]
    return dets[:max_persons]


def _nms_reference(boxes: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS of score-sorted boxes as AlphaPose's nms_cpu: +1 areas, drop at IoU >= t."""
    thr = np.float32(threshold)
    one = np.float32(1)
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + one) * (y2 - y1 + one)
    suppressed = np.zeros(len(boxes), dtype=bool)
    kept = []
    for i in range(len(boxes)):
        if suppressed[i]:
            continue
        kept.append(i)
        rest = np.arange(i + 1, len(boxes))
        inter_w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + one
        inter_h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + one
        inter = np.maximum(inter_w, np.float32(0)) * np.maximum(inter_h, np.float32(0))
        suppressed[rest[inter / (areas[i] + areas[rest] - inter) >= thr]] = True
    return kept


def _unletterbox_reference(
    boxes: np.ndarray, scale: float, image_hw: tuple[int, int], input_size: int
) -> np.ndarray:
    """AlphaPose's map back in float32: subtract (S - s*w) / 2, divide by s, clamp to the image."""
    h, w = image_hw
    s, size = np.float32(scale), np.float32(input_size)
    image_wh = np.array([w, h], dtype=np.float32)
    offset = np.tile((size - s * image_wh) / np.float32(2), 2)
    mapped = (boxes - offset) / s
    return np.minimum(np.maximum(mapped, np.float32(0)), np.tile(image_wh, 2))
