"""Parametric pose NMS: hand-made cases on both paths, and fast == reference on random scenes."""

from __future__ import annotations

import numpy as np
import pytest

from alphapose_trt.pipeline.pose_nms import (
    SCORE_THRESHOLD,
    ZERO_SCORE,
    PoseNmsResult,
    pose_nms,
    pose_nms_frames,
    pose_nms_reference,
)

K = 17
# A pose whose extent is 64 x 128 px (area term 2.25 * 64 * 128 = 18432).
BASE = np.stack([100.0 + 4 * np.arange(K), 200.0 + 8 * np.arange(K)], axis=1)
# Box 100 x 150: ref_dist 15, so PCK matches within 7 px and merges within 15 px.
BOX = np.array([90.0, 190.0, 190.0, 340.0])
# Tolerance between the fast and the reference merge (different summation order).
MERGE_TOL = 1e-6

BOTH = pytest.mark.parametrize("nms", [pose_nms, pose_nms_reference], ids=["fast", "reference"])


def _scene(*poses: tuple[np.ndarray, float], boxes: list[np.ndarray] | None = None,
           box_scores: list[float] | None = None) -> tuple[np.ndarray, ...]:
    """Inputs for N poses given as (coords (K, 2), score or (K,) scores)."""
    n = len(poses)
    coords = np.stack([p[0] for p in poses])
    scores = np.stack([np.broadcast_to(np.asarray(p[1], dtype=float), (K,)) for p in poses])
    boxes_arr = np.stack(boxes) if boxes is not None else np.tile(BOX, (n, 1))
    box_scores_arr = np.array(box_scores) if box_scores is not None else np.full(n, 0.5)
    return boxes_arr, box_scores_arr, coords, scores


@BOTH
def test_near_duplicates_merge_into_weighted_mean(nms) -> None:
    weak, strong = (BASE + [1.0, 0.0], 0.6), (BASE, 0.9)
    result = nms(*_scene(weak, strong, box_scores=[0.7, 0.4]))
    assert result.source.tolist() == [1]  # the higher mean score is picked
    # Weights 0.9 / 1.5 and 0.6 / 1.5: x moves 0.6 / 1.5 * 1.0 = 0.4 px towards the weak pose.
    np.testing.assert_allclose(result.keypoints[0], BASE + [0.4, 0.0], atol=1e-12)
    # Merged score (0.9^2 + 0.6^2) / 1.5 = 0.78; person score 0.78 + 0.4 + 1.25 * 0.78.
    np.testing.assert_allclose(result.keypoint_scores[0], np.full(K, 0.78), atol=1e-12)
    assert result.scores[0] == pytest.approx(0.78 + 0.4 + 1.25 * 0.78, abs=1e-12)
    np.testing.assert_array_equal(result.boxes[0], BOX)
    assert result.box_scores[0] == 0.4


@BOTH
def test_two_distinct_persons_both_kept_in_score_order(nms) -> None:
    left, right = (BASE, 0.8), (BASE + [300.0, 0.0], 0.95)
    result = nms(*_scene(left, right))
    assert result.source.tolist() == [1, 0]
    np.testing.assert_array_equal(result.keypoints, np.stack([BASE + [300.0, 0.0], BASE]))
    np.testing.assert_allclose(result.keypoint_scores, [[0.95] * K, [0.8] * K], atol=1e-12)


@BOTH
@pytest.mark.parametrize(("distance", "score", "merged"), [
    (0.5, 0.9, True),  # 17 tanh(0.9)^2 + 1.7 * 17 exp(-0.5 / 2.65) = 32.6
    (1.0, 0.9, True),  # d <= 1 still counts the score term: 8.7 + 19.8 = 28.5
    (1.5, 0.9, False),  # d > 1: only 1.7 * 17 exp(-1.5 / 2.65) = 16.4
    (0.8, 0.31, True),  # 17 tanh(0.31)^2 + 28.9 exp(-0.8 / 2.65) = 1.54 + 21.36 = 22.90
    (0.9, 0.31, False),  # 1.54 + 20.58 = 22.12, just under GAMMA 22.48
])
def test_similarity_rule_when_pck_cannot_match(nms, distance, score, merged) -> None:
    # A 4 px box: ref_dist 0.4 px, so no joint matches by PCK; the similarity alone decides.
    tiny = np.array([0.0, 0.0, 4.0, 4.0])
    pair = _scene((BASE, score), (BASE + [distance, 0.0], score - 0.001), boxes=[tiny, tiny])
    assert nms(*pair).source.tolist() == ([0] if merged else [0, 1])


SMALL_BOX = np.array([0.0, 0.0, 40.0, 50.0])  # ref_dist 0.1 * 50 = 5 px


@BOTH
@pytest.mark.parametrize(("matching", "offset", "box", "merged"), [
    (5, 3.0, BOX, True),
    (4, 3.0, BOX, False),  # too few matching joints
    (5, 8.0, BOX, False),  # ref_dist 15 is capped at 7 px for matching
    (5, 4.5, SMALL_BOX, True),
    (5, 6.0, SMALL_BOX, False),  # beyond ref_dist 5
])
def test_pck_rule_needs_five_matching_joints(nms, matching, offset, box, merged) -> None:
    # `matching` joints `offset` px away, the rest 100 px away; the similarity stays small (no
    # joint within 1 px): at most 1.7 * 5 exp(-3 / 2.65) = 2.7.
    other = BASE + [100.0, 0.0]
    other[:matching] = BASE[:matching] + [offset, 0.0]
    result = nms(*_scene((BASE, 0.9), (other, 0.8), boxes=[box, box]))
    assert result.source.tolist() == ([0] if merged else [0, 1])


@BOTH
def test_merge_radius_is_capped_at_15_px(nms) -> None:
    # ref_dist 15: joint 0 (10 px away) is merged, joint 1 (20 px away) keeps the pick's value.
    other = BASE + [1.0, 0.0]
    other[0], other[1] = BASE[0] + [10.0, 0.0], BASE[1] + [20.0, 0.0]
    result = nms(*_scene((BASE, 0.9), (other, 0.6)))
    assert result.source.tolist() == [0]
    np.testing.assert_allclose(result.keypoints[0, 0], BASE[0] + [4.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(result.keypoints[0, 1], BASE[1], atol=1e-12)
    assert result.keypoint_scores[0, 1] == pytest.approx(0.9, abs=1e-12)


@BOTH
def test_pick_always_leaves_the_pool(nms) -> None:
    # With 4 joints and zero-size boxes a pose matches neither itself (0 / 0 PCK) nor, by
    # similarity, GAMMA (4 tanh(0.9)^2 + 1.7 * 4 = 8.9); it must still leave the pool once.
    coords = np.stack([np.full((4, 2), 10.0), np.full((4, 2), 300.0)])
    result = nms(np.zeros((2, 4)), np.array([0.5, 0.5]), coords, np.array([[0.9] * 4, [0.8] * 4]))
    assert result.source.tolist() == [0, 1]


@BOTH
def test_weak_pose_dropped_below_score_threshold(nms) -> None:
    weak = (BASE + [500.0, 0.0], np.full(K, SCORE_THRESHOLD - 0.01))
    result = nms(*_scene((BASE, 0.9), weak))
    assert result.source.tolist() == [0]


@BOTH
def test_merged_pose_dropped_when_merge_lowers_max_score(nms) -> None:
    # The pick passes (0.31) but merging with a 0.05 duplicate gives (0.31^2 + 0.05^2) / 0.36.
    result = nms(*_scene((BASE, 0.31), (BASE + [1.0, 0.0], 0.05)))
    assert len(result) == 0


@BOTH
@pytest.mark.parametrize(("area_threshold", "kept"), [(0.0, True), (18000.0, True),
                                                      (19000.0, False)])
def test_merged_pose_area_threshold(nms, area_threshold, kept) -> None:
    # Merged extent 64 x 128: 2.25 * 64 * 128 = 18432.
    result = nms(*_scene((BASE, 0.9), (BASE + [1.0, 0.0], 0.6)), area_threshold=area_threshold)
    assert len(result) == int(kept)


@BOTH
def test_zero_scores_become_tiny_weights(nms) -> None:
    scores_a, scores_b = np.full(K, 0.9), np.full(K, 0.6)
    scores_a[3] = scores_b[3] = 0.0
    inputs = _scene((BASE, scores_a), (BASE + [2.0, 0.0], scores_b))
    original = inputs[3].copy()
    result = nms(*inputs)
    np.testing.assert_array_equal(inputs[3], original)  # the caller's array is not modified
    # Joint 3: equal weights 1e-5 each, so the plain mean position and score 1e-5 (no 0 / 0).
    np.testing.assert_allclose(result.keypoints[0, 3], BASE[3] + [1.0, 0.0], atol=1e-9)
    assert result.keypoint_scores[0, 3] == pytest.approx(ZERO_SCORE, rel=1e-9)
    assert np.isfinite(result.keypoints).all()


@BOTH
def test_equal_scores_pick_the_first_index(nms) -> None:
    result = nms(*_scene((BASE, 0.7), (BASE, 0.7), (BASE + [400.0, 0.0], 0.7)))
    assert result.source.tolist() == [0, 2]


@BOTH
def test_empty_input(nms) -> None:
    result = nms(np.zeros((0, 4)), np.zeros(0), np.zeros((0, K, 2)), np.zeros((0, K)))
    assert len(result) == 0 and result.keypoints.shape == (0, K, 2)


@BOTH
def test_bad_shapes_rejected(nms) -> None:
    boxes, box_scores, coords, scores = _scene((BASE, 0.9))
    with pytest.raises(ValueError, match="scores must be"):
        nms(boxes, box_scores, coords, scores[:, :5])
    with pytest.raises(ValueError, match="coords must be"):
        nms(boxes, box_scores, coords[..., :1], scores)


def _random_scene(rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Several persons, each seen in several boxes with jitter from sub-pixel to far.

    Scores come from a few levels (including 0 and values below the threshold) so that ties,
    zero replacement and both drop rules all occur.
    """
    people, copies = int(rng.integers(1, 12)), int(rng.integers(1, 6))
    centres = rng.uniform(0, 600, (people, 1, 2)) + rng.normal(0, 40, (people, K, 2))
    who = rng.integers(0, people, people * copies)
    jitter = rng.choice([0.2, 1.0, 3.0, 8.0, 30.0], size=len(who))[:, None, None]
    coords = centres[who] + rng.normal(0, 1, (len(who), K, 2)) * jitter
    scores = rng.choice([0.0, 0.1, 0.25, 0.4, 0.6, 0.9], size=(len(who), K))
    corner = rng.uniform(0, 600, (len(who), 2))
    boxes = np.concatenate([corner, corner + rng.uniform(5, 300, (len(who), 2))], axis=1)
    return boxes, rng.uniform(0.05, 1.0, len(who)), coords, scores


def _assert_same(fast: PoseNmsResult, ref: PoseNmsResult) -> None:
    np.testing.assert_array_equal(fast.source, ref.source)
    np.testing.assert_array_equal(fast.boxes, ref.boxes)
    np.testing.assert_array_equal(fast.box_scores, ref.box_scores)
    for name in ("keypoints", "keypoint_scores", "scores"):
        np.testing.assert_allclose(getattr(fast, name), getattr(ref, name), rtol=0,
                                   atol=MERGE_TOL, err_msg=name)


def test_fast_equals_reference_on_random_scenes() -> None:
    merged = dropped = 0
    for seed in range(60):
        rng = np.random.default_rng(seed)
        inputs = _random_scene(rng)
        area_threshold = float(rng.choice([0.0, 2000.0, 40000.0]))
        ref = pose_nms_reference(*inputs, area_threshold=area_threshold)
        _assert_same(pose_nms(*inputs, area_threshold=area_threshold), ref)
        merged += int(np.any(ref.keypoints != inputs[2][ref.source]))
        dropped += len(inputs[0]) - len(ref)
    # The scenes must exercise merging and dropping, or the comparison proves little.
    assert merged > 20 and dropped > 100


def test_fast_equals_reference_on_a_crowd() -> None:
    """Enough poses (150) that the fast path splits its pairwise arrays into several blocks."""
    rng = np.random.default_rng(123)
    people = 50
    centres = rng.uniform(0, 1000, (people, 1, 2)) + rng.normal(0, 40, (people, K, 2))
    who = rng.integers(0, people, 3 * people)
    coords = centres[who] + rng.normal(0, 2.0, (len(who), K, 2))
    scores = rng.uniform(0.0, 1.0, (len(who), K))
    boxes = np.concatenate([coords.min(axis=1), coords.max(axis=1)], axis=1)
    inputs = (boxes, rng.uniform(0.05, 1.0, len(who)), coords, scores)
    ref = pose_nms_reference(*inputs)
    _assert_same(pose_nms(*inputs), ref)
    assert people // 2 < len(ref) < len(who)


def test_frames_at_once_equal_each_frame_alone() -> None:
    """pose_nms_frames over a batch gives exactly pose_nms of each frame: no cluster crosses
    frames even where poses of two frames coincide, and every frame keeps its own pick order."""
    rng = np.random.default_rng(7)
    frames, sizes = [], [5, 0, 7, 3]
    base = rng.uniform(0, 200, (7, 17, 2))
    for f, n in enumerate(sizes):
        xy = rng.uniform(0, 300, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(40, 120, (n, 2))], axis=1)
        # frames 0 and 2 share near-identical poses, which would merge within one frame
        coords = base[:n] + rng.normal(0, 0.5, (n, 17, 2)) if f in (0, 2) else rng.uniform(0, 300, (n, 17, 2))
        frames.append((boxes, rng.uniform(0.2, 1, n), coords, rng.uniform(0, 1, (n, 17))))
    index = np.concatenate([np.full(n, f) for f, n in enumerate(sizes)])
    stacked = [np.concatenate([fr[i] for fr in frames]) for i in range(4)]
    together = pose_nms_frames(index, len(sizes), *stacked, area_threshold=10.0)
    assert len(together) == len(sizes)
    offsets = np.cumsum([0] + sizes[:-1])
    for fr, got, offset in zip(frames, together, offsets):
        want = pose_nms(*fr, area_threshold=10.0)
        assert len(got) == len(want)
        for field in ("boxes", "box_scores", "keypoints", "keypoint_scores", "scores"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
        np.testing.assert_array_equal(got.source - offset, want.source)
    # in one frame, the coinciding poses of frames 0 and 2 would merge: the frame mask matters
    assert len(pose_nms(*stacked, area_threshold=10.0)) < sum(len(r) for r in together)


def test_frames_after_the_last_pose_get_empty_results_and_bad_indices_fail() -> None:
    rng = np.random.default_rng(3)
    boxes = np.array([[0.0, 0.0, 50.0, 100.0], [200.0, 0.0, 260.0, 90.0]])
    args = (boxes, np.array([0.9, 0.8]), rng.uniform(0, 100, (2, 17, 2)), rng.uniform(0.5, 1, (2, 17)))
    results = pose_nms_frames(np.array([1, 1]), 4, *args)
    assert [len(r) for r in results] == [0, 2, 0, 0]
    assert results[3].keypoints.shape == (0, 17, 2)
    with pytest.raises(ValueError, match=r"frame_index values must be in \[0, 2\)"):
        pose_nms_frames(np.array([0, 2]), 2, *args)
