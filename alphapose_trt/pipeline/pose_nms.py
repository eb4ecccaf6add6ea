"""Parametric pose NMS (AlphaPose's pPose_nms): merge the poses of one person found in
several detector boxes, and drop weak ones.

Algorithm (per image, N candidate poses of K joints, scores of exactly 0 read as 1e-5):
- ref_dist = ALPHA * max(box width, box height); the human score is the mean joint score.
- Greedy: pick the highest human score (first index on ties) among the poses left. With d_k the
  distance between joint k of the pick and of a candidate,
  simi = sum_k tanh(s_pick,k / DELTA1) * tanh(s_k / DELTA1) * [d_k <= 1]
         + MU * sum_k exp(-d_k / DELTA2)
  and num_match = #{k : d_k / min(ref_dist_pick, 7) <= 1}. Every pose left with
  simi > GAMMA or num_match >= MATCH_THRESHOLD joins the pick's cluster and leaves the pool (the
  pick always does).
- Each pick: dropped if its max joint score < SCORE_THRESHOLD; otherwise its cluster is merged
  joint by joint over members within min(ref_dist_pick, 15) pixels, weights s / sum(s): position
  and score are weighted means. Dropped if the merged max score < SCORE_THRESHOLD or
  2.25 * x-extent * y-extent of the merged pose < area_threshold.
- Person score = mean(merged scores) + box score + 1.25 * max(merged scores).

`pose_nms_reference` is that, written pick by pick in numpy; `pose_nms` / `pose_nms_frames` (the
pipeline's, all frames of a batch at once) compute every pairwise distance and similarity once
as (N, N, K) arrays, so the greedy loop only does index work, and merge all clusters in one
batched step. Both share the per-pair helpers,
so their threshold decisions are identical. Both run in float64 on the CPU (AlphaPose uses
float32 torch; the difference is far below a pixel): N is a few boxes to a few hundred, too
small for the device to gain anything, and the keypoints are copied back for output anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

DELTA1 = 1.0
MU = 1.7
DELTA2 = 2.65
GAMMA = 22.48
SCORE_THRESHOLD = 0.3
MATCH_THRESHOLD = 5
ALPHA = 0.1
# Caps on ref_dist (pixels) for the PCK match and for the merge radius.
MATCH_REF_CAP = 7.0
MERGE_REF_CAP = 15.0
# Joint scores of exactly 0 are replaced by this, so a cluster's weights never sum to 0.
ZERO_SCORE = 1e-5
# Area of the merged pose's extent is scaled by 1.5 ** 2 before the area threshold.
AREA_SCALE = 1.5**2
# Person score = mean + box score + MAX_WEIGHT * max of the merged joint scores.
MAX_WEIGHT = 1.25
# Pair-joint elements per block of the fast path's pairwise arrays (32 Ki float64 = 256 KiB).
_BLOCK_ELEMENTS = 1 << 15


@dataclass
class PoseNmsResult:
    """The M poses kept by pose NMS, in pick order (highest human score first).

    boxes (M, 4) x1, y1, x2, y2 and box_scores (M,) of the picked pose's detector box;
    keypoints (M, K, 2) and keypoint_scores (M, K) merged over the pick's cluster;
    scores (M,) person scores; source (M,) int64 index of the picked pose in the input.
    """

    boxes: np.ndarray
    box_scores: np.ndarray
    keypoints: np.ndarray
    keypoint_scores: np.ndarray
    scores: np.ndarray
    source: np.ndarray

    def __len__(self) -> int:
        return len(self.source)


@dataclass
class _Poses:
    """Validated float64 copies of the inputs, zero scores replaced, ref distances computed."""

    boxes: np.ndarray
    box_scores: np.ndarray
    coords: np.ndarray
    scores: np.ndarray
    ref_dists: np.ndarray
    human_scores: np.ndarray
    tanh_scores: np.ndarray


def _prepare(boxes: ArrayLike, box_scores: ArrayLike, coords: ArrayLike, scores: ArrayLike
             ) -> _Poses:
    """Check shapes, copy to float64, replace zero scores, compute ref_dist and human scores."""
    boxes = np.array(boxes, dtype=np.float64)
    box_scores = np.array(box_scores, dtype=np.float64).reshape(-1)
    coords = np.array(coords, dtype=np.float64)
    scores = np.array(scores, dtype=np.float64)
    n = boxes.shape[0]
    if boxes.shape != (n, 4) or box_scores.shape != (n,):
        raise ValueError(f"boxes must be (N, 4) and box_scores (N,), got {boxes.shape} and "
                         f"{box_scores.shape}")
    if coords.ndim != 3 or coords.shape[0] != n or coords.shape[2] != 2:
        raise ValueError(f"coords must be ({n}, K, 2), got {coords.shape}")
    if scores.shape != coords.shape[:2]:
        raise ValueError(f"scores must be {coords.shape[:2]}, got {scores.shape}")
    scores[scores == 0] = ZERO_SCORE
    size = boxes[:, 2:] - boxes[:, :2]
    ref_dists = ALPHA * np.maximum(size[:, 0], size[:, 1])
    return _Poses(boxes, box_scores, coords, scores, ref_dists, scores.mean(axis=1),
                  np.tanh(scores / DELTA1))


def _joint_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance per joint between broadcastable (..., K, 2) arrays.

    Written with in-place ops: the (N, N, K) arrays of the fast path are megabytes, and fresh
    temporaries of that size cost more in page faults than the arithmetic.
    """
    dist = np.subtract(a[..., 0], b[..., 0])
    dist *= dist
    dy = np.subtract(a[..., 1], b[..., 1])
    dy *= dy
    dist += dy
    return np.sqrt(dist, out=dist)


def _similarity(dist: np.ndarray, tanh_a: np.ndarray, tanh_b: np.ndarray) -> np.ndarray:
    """Parametric pose similarity, summed over the last (joint) axis of `dist`.

    tanh_a, tanh_b: tanh(score / DELTA1) of the two sides, broadcasting to dist's shape.
    """
    term = tanh_a * tanh_b
    term *= dist <= 1
    score_part = np.sum(term, axis=-1)
    np.divide(dist, -DELTA2, out=term)
    np.exp(term, out=term)
    return score_part + MU * np.sum(term, axis=-1)


def _num_match(dist: np.ndarray, ref_dist: np.ndarray) -> np.ndarray:
    """PCK match count over the last (joint) axis; ref_dist broadcasts against dist[..., 0]."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = dist / np.minimum(ref_dist, MATCH_REF_CAP)[..., None]
    return np.sum(ratio <= 1, axis=-1)


def _joins_cluster(dist: np.ndarray, tanh_pick: np.ndarray, tanh_other: np.ndarray,
                   ref_dist_pick: np.ndarray) -> np.ndarray:
    """Whether each other pose joins the pick's cluster: simi > GAMMA or enough PCK matches."""
    simi = _similarity(dist, tanh_pick, tanh_other)
    return (simi > GAMMA) | (_num_match(dist, ref_dist_pick) >= MATCH_THRESHOLD)


def _result(poses: _Poses, picks: ArrayLike, keypoints: ArrayLike, keypoint_scores: ArrayLike
            ) -> PoseNmsResult:
    """Assemble the kept poses; keypoints/keypoint_scores are the merged values of `picks`."""
    k = poses.coords.shape[1]
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(len(picks), k, 2)
    keypoint_scores = np.asarray(keypoint_scores, dtype=np.float64).reshape(len(picks), k)
    idx = np.asarray(picks, dtype=np.int64)
    score = (keypoint_scores.mean(axis=1) + poses.box_scores[idx]
             + MAX_WEIGHT * keypoint_scores.max(axis=1))
    return PoseNmsResult(poses.boxes[idx], poses.box_scores[idx], keypoints, keypoint_scores,
                         score, idx)


def _passes_area(merged_coords: np.ndarray, area_threshold: float) -> np.ndarray:
    """AlphaPose's area filter on the extent of merged poses (..., K, 2) -> bool (...)."""
    extent = merged_coords.max(axis=-2) - merged_coords.min(axis=-2)
    return ~(AREA_SCALE * extent[..., 0] * extent[..., 1] < area_threshold)


def pose_nms_reference(boxes: ArrayLike, box_scores: ArrayLike, coords: ArrayLike,
                       scores: ArrayLike, area_threshold: float = 0.0) -> PoseNmsResult:
    """Parametric pose NMS written plainly, one pick at a time (the slow reference).

    Args:
        boxes (ndarray[N, 4]): detector boxes x1, y1, x2, y2.
        box_scores (ndarray[N]): detector scores.
        coords (ndarray[N, K, 2]): decoded keypoints in image pixels.
        scores (ndarray[N, K]): keypoint scores (heatmap peaks).
        area_threshold: minimum 2.25 * x-extent * y-extent of a kept merged pose.
    """
    poses = _prepare(boxes, box_scores, coords, scores)
    alive = np.ones(len(poses.boxes), dtype=bool)
    picks, clusters = [], []
    while alive.any():
        candidates = np.flatnonzero(alive)
        pick = candidates[np.argmax(poses.human_scores[candidates])]
        dist = _joint_distances(poses.coords[pick][None], poses.coords[candidates])
        remove = _joins_cluster(dist, poses.tanh_scores[pick][None], poses.tanh_scores[candidates],
                                poses.ref_dists[pick]) | (candidates == pick)
        picks.append(int(pick))
        clusters.append(candidates[remove])
        alive[candidates[remove]] = False

    kept, merged_coords, merged_scores = [], [], []
    for pick, cluster in zip(picks, clusters):
        if poses.scores[pick].max() < SCORE_THRESHOLD:
            continue
        dist = _joint_distances(poses.coords[pick][None], poses.coords[cluster])
        within = dist <= min(poses.ref_dists[pick], MERGE_REF_CAP)
        masked = poses.scores[cluster] * within
        weights = masked / np.sum(masked, axis=0)
        pose = np.sum(poses.coords[cluster] * weights[..., None], axis=0)
        pose_scores = np.sum(masked * weights, axis=0)
        if pose_scores.max() < SCORE_THRESHOLD or not _passes_area(pose, area_threshold):
            continue
        kept.append(pick)
        merged_coords.append(pose)
        merged_scores.append(pose_scores)
    return _result(poses, kept, merged_coords, merged_scores)


def pose_nms(boxes: ArrayLike, box_scores: ArrayLike, coords: ArrayLike, scores: ArrayLike,
             area_threshold: float = 0.0) -> PoseNmsResult:
    """Parametric pose NMS of one image, vectorised (same results as the reference).

    Arguments as `pose_nms_reference`; see `pose_nms_frames`, which this runs on one frame.
    """
    n = np.shape(boxes)[0]
    return pose_nms_frames(np.zeros(n, dtype=np.int64), 1, boxes, box_scores, coords, scores, area_threshold)[0]


def pose_nms_frames(frame_index: ArrayLike, num_frames: int, boxes: ArrayLike, box_scores: ArrayLike,
                    coords: ArrayLike, scores: ArrayLike, area_threshold: float = 0.0) -> list[PoseNmsResult]:
    """`pose_nms` of every frame of a batch in one pass (the pipeline's path).

    frame_index (ndarray[N]) names each pose's frame in [0, num_frames); other arguments as
    `pose_nms_reference`. Distances, similarities and match counts of every pair of poses of one
    frame are computed once (pairs across frames never are, so no cluster spans two frames); the
    greedy loop walks the poses in descending human score (a stable sort, so ties go to the lower
    index exactly like argmax, and each frame sees its own order) and only masks indices; all
    clusters are merged in one batched step. Per frame this is exactly `pose_nms`, at the numpy
    call overhead of one frame instead of one per frame.
    """
    poses = _prepare(boxes, box_scores, coords, scores)
    n = len(poses.boxes)
    frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
    if frame_index.shape != (n,):
        raise ValueError(f"frame_index must be ({n},), got {frame_index.shape}")
    if n and not 0 <= frame_index.min() <= frame_index.max() < num_frames:
        raise ValueError(f"frame_index values must be in [0, {num_frames}), got {frame_index.min()}..{frame_index.max()}")
    if n == 0:
        return [_result(poses, [], [], []) for _ in range(num_frames)]
    remove = _cluster_matrix(poses, frame_index)
    alive = np.ones(n, dtype=bool)
    picks, clusters = [], []
    for i in np.argsort(-poses.human_scores, kind="stable"):
        if alive[i]:
            picks.append(int(i))
            clusters.append(alive & remove[i])
            alive &= ~remove[i]

    picks_arr = np.asarray(picks, dtype=np.int64)
    strong = poses.scores[picks_arr].max(axis=1) >= SCORE_THRESHOLD
    picks_arr = picks_arr[strong]
    members = np.asarray(clusters, dtype=bool).reshape(-1, n)[strong]
    pose, pose_scores = _merge_batched(poses, picks_arr, members)
    keep = (pose_scores.max(axis=1) >= SCORE_THRESHOLD) & _passes_area(pose, area_threshold)
    everyone = _result(poses, picks_arr[keep], pose[keep], pose_scores[keep])
    return _split_frames(everyone, frame_index[everyone.source], num_frames)


def _split_frames(result: PoseNmsResult, frame_of: np.ndarray, num_frames: int) -> list[PoseNmsResult]:
    """One result per frame, each in `result`'s order: one stable sort by frame, then slices.

    Why: with a boolean mask per frame and field (8 x 6 gathers for a batch of 8 frames of 8
    persons), pose NMS and result objects cost the pipeline's host thread 1.11 ms per batch; with
    this, 0.96 ms (one CPU core of the CI machine, benchmarks/host_pose_nms.py; that thread is the
    limit when reading video).
    """
    order = np.argsort(frame_of, kind="stable")
    ends = np.cumsum(np.bincount(frame_of, minlength=num_frames)).tolist()
    fields = [field[order] for field in (
        result.boxes, result.box_scores, result.keypoints, result.keypoint_scores, result.scores, result.source)]
    return [PoseNmsResult(*(field[start:end] for field in fields)) for start, end in zip([0, *ends], ends)]


def _cluster_matrix(poses: _Poses, frame_index: np.ndarray) -> np.ndarray:
    """(N, N) bool: pose j joins pose i's cluster if i is picked while j is left (diagonal True).

    Only pairs within one frame are computed (a batch of 8 frames has 1/8 of all pairs), in
    blocks of pairs so the (pairs, K) temporaries stay around cache size: page faults and memory
    traffic of megabyte temporaries cost more than the arithmetic.
    """
    n, k = poses.scores.shape
    rows, cols = np.nonzero(frame_index[:, None] == frame_index[None, :])
    remove = np.zeros((n, n), dtype=bool)
    step = max(1, _BLOCK_ELEMENTS // k)
    for start in range(0, len(rows), step):
        i, j = rows[start : start + step], cols[start : start + step]
        dist = _joint_distances(poses.coords[i], poses.coords[j])
        remove[i, j] = _joins_cluster(dist, poses.tanh_scores[i], poses.tanh_scores[j], poses.ref_dists[i])
    np.fill_diagonal(remove, True)
    return remove


def _merge_batched(poses: _Poses, picks: np.ndarray, members: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Score-weighted merge of P clusters at once.

    picks (P,) pose indices, members (P, N) cluster membership. The (pick, member) pairs are
    listed row by row (each row holds at least its pick), so per-cluster sums are segment sums
    (`np.add.reduceat`) over contiguous runs, in the reference's member order. Returns merged
    coordinates (P, K, 2) and scores (P, K).
    """
    rows, cols = np.nonzero(members)
    starts = np.searchsorted(rows, np.arange(len(picks)))
    dist = _joint_distances(poses.coords[picks[rows]], poses.coords[cols])
    radius = np.minimum(poses.ref_dists[picks], MERGE_REF_CAP)[rows]
    masked = poses.scores[cols] * (dist <= radius[:, None])
    weights = masked / np.add.reduceat(masked, starts, axis=0)[rows]
    pose = np.add.reduceat(poses.coords[cols] * weights[..., None], starts, axis=0)
    return pose, np.add.reduceat(masked * weights, starts, axis=0)
