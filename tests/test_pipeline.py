"""The fast pipeline against the AlphaPose-style reference, stage by stage and end to end.

Both run eager fp32 on the CPU here; the fast path's only differences are its batched crops
and letterbox (each at most 1/255 per pixel, see test_crop.py / test_detect.py). On the same
boxes keypoints agree exactly but where a tiny input difference flips a near-tied heatmap argmax;
end to end, boxes agree within one detector-input pixel and keypoints within a fraction of one.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.pipeline import runner
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline, ReferencePipeline
from conftest import assert_same_persons, make_frame

CONFIG = PipelineConfig(conf=0.1, max_persons=3, det_batch=2, pose_batch=4)


@pytest.fixture(scope="module")
def engines(detector_model, pose_model):
    return EagerEngine(detector_model, "cpu", "fp32", max_batch=2), EagerEngine(pose_model, "cpu", "fp32", max_batch=8)


@pytest.fixture(scope="module")
def frames():
    return [make_frame(120, 160, seed=1), make_frame(120, 160, seed=2)]


def run_both(engines, frames, config, detections=None):
    det, pose = engines
    fast = PosePipeline(det, pose, "cpu", config).process_batch(frames, detections)
    ref = ReferencePipeline(det, pose, config).process_batch(frames, detections)
    return fast, ref


def test_detector_stage_matches_reference(engines, frames):
    det, pose = engines
    fast = PosePipeline(det, pose, "cpu", CONFIG)
    ref = ReferencePipeline(det, pose, CONFIG)
    boxes = fast.detect(fast.upload(frames))
    for frame, got in zip(frames, boxes):
        want = ref.detect(frame)
        # letterboxes differ by at most 1/255 on a few pixels (test_detect.py): boxes move by
        # at most a quarter pixel, scores by about 1e-3
        assert got.shape == want.shape and len(want) > 0
        np.testing.assert_allclose(got.numpy()[:, :4], want[:, :4], atol=0.25)
        np.testing.assert_allclose(got.numpy()[:, 4], want[:, 4], atol=1e-3)


@pytest.mark.parametrize("flip", [False, True])
def test_end_to_end_matches_reference(engines, frames, flip):
    config = PipelineConfig(**{**CONFIG.__dict__, "flip": flip})
    fast, ref = run_both(engines, frames, config)
    assert sum(len(p) for p in fast) > 0
    # letterbox rounding moves boxes by a fraction of a detector-input pixel (1.25 image px here)
    assert_same_persons(fast, ref, box_atol=1.25, exact=False)


def test_given_detections_skip_the_detector(engines, frames):
    dets = [np.array([[10, 10, 60, 100, 0.9], [70, 20, 150, 110, 0.8]], np.float32), np.zeros((0, 5), np.float32)]
    fast, ref = run_both(engines, frames, CONFIG, detections=dets)
    assert len(fast[1]) == 0
    assert_same_persons(fast, ref, exact=True)
    for person in fast[0]:
        assert person.keypoints.shape == (17, 2) and person.keypoint_scores.shape == (17,)
        assert np.isfinite(person.score)


def test_zero_person_frame(engines, frames):
    det, pose = engines
    config = PipelineConfig(conf=0.999999)
    fast = PosePipeline(det, pose, "cpu", config).process_batch(frames)
    assert fast == [[], []]


def test_mixed_frame_sizes_keep_order(engines):
    det, pose = engines
    frames = [make_frame(120, 160, 5), make_frame(90, 200, 6), make_frame(120, 160, 7)]
    pipe = PosePipeline(det, pose, "cpu", CONFIG)
    together = pipe.process_batch(frames)
    alone = [pipe.process_batch([f])[0] for f in frames]
    for a, b in zip(together, alone):
        assert len(a) == len(b)
        for pa, pb in zip(a, b):
            np.testing.assert_allclose(pa.keypoints, pb.keypoints, atol=1e-4)


def test_pose_engine_batches_are_split(engines, frames):
    """pose_batch smaller than the crop count: chunks are re-joined in order."""
    det, pose = engines
    dets = [np.array([[10 + 5 * i, 10, 60 + 5 * i, 100, 0.9 - 0.01 * i] for i in range(5)], np.float32)] * 2
    small = PosePipeline(det, pose, "cpu", PipelineConfig(pose_batch=2)).estimate
    big = PosePipeline(det, pose, "cpu", PipelineConfig(pose_batch=16)).estimate
    pipe = PosePipeline(det, pose, "cpu", CONFIG)
    batch = pipe.upload(frames)
    boxes = [torch.from_numpy(d) for d in dets]
    with torch.inference_mode():
        a, b = small(batch, boxes), big(batch, boxes)
    assert a[0].shape == (10, 17, 2)
    for ta, tb in zip(a, b):
        torch.testing.assert_close(ta, tb, atol=1e-4, rtol=1e-4)


def test_stream_matches_batches_and_crowd_overflow(engines, frames, monkeypatch):
    """process_stream (three batches in flight) gives process_batch's results in order, and a
    frame with more candidates than are copied ahead is fetched whole with the same result."""
    det, pose = engines
    pipe = PosePipeline(det, pose, "cpu", CONFIG)
    batches = [[frames[0]], [frames[1], frames[0]], [frames[1]], [frames[0]]]
    alone = [pipe.process_batch(b) for b in batches]
    streamed = list(pipe.process_stream((i, b, None) for i, b in enumerate(batches)))
    assert [k for k, _ in streamed] == [0, 1, 2, 3]
    for (_, got), want in zip(streamed, alone):
        assert_same_persons(got, want, exact=True)
    monkeypatch.setattr(runner, "CANDIDATE_ROWS", 1)
    assert sum(len(p) for p in alone[1]) > 2
    assert_same_persons(pipe.process_batch(batches[1]), alone[1], exact=True)


def test_fused_ops_get_full_batches_of_frames(engines):
    """With fused ops, a batch with fewer frames than an earlier one of the same size is padded
    with blank frames (same memory layout) up to that count, per op, so the compiled kernels are
    not rebuilt for a stream's short last batch; without fused ops frames pass unchanged."""
    det, pose = engines
    fused = PosePipeline(det, pose, "cpu", PipelineConfig(det_batch=4, fuse=True))
    frames = torch.arange(4 * 3 * 6 * 8, dtype=torch.uint8).reshape(4, 6, 8, 3).permute(0, 3, 1, 2)
    assert fused._full_batch("crop", frames) is frames
    short = fused._full_batch("crop", frames[:3])
    assert short.shape == frames.shape and short.stride() == frames.stride()
    assert torch.equal(short[:3], frames[:3]) and not short[3].any()
    assert fused._full_batch("letterbox", frames[:3]).shape[0] == 3  # each op its own count: 3 so far
    assert fused._full_batch("crop", frames[:2, :, :4]).shape[0] == 2  # another frame size, its own count
    plain = PosePipeline(det, pose, "cpu", PipelineConfig(det_batch=4, fuse=False))
    plain._full_batch("crop", frames)
    assert plain._full_batch("crop", frames[:3]).shape[0] == 3
