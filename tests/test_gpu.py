"""GPU checks (marker `gpu`, run on the lent H100; CI has no GPU and deselects them).

Every fast engine against eager fp32 on the same GPU: fp32 backends within 1e-3 relative error,
fp16 within 1e-2, on heatmaps and on decoded detector boxes; and the fast pipeline against the
reference pipeline on CUDA.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.pipeline import crop as crop_ops
from alphapose_trt.pipeline import detect as detect_ops
from alphapose_trt.pipeline import runner
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline, ReferencePipeline
from conftest import assert_same_persons, make_frame

pytestmark = pytest.mark.gpu
MAX_BATCH = 8
TOLERANCE = {"fp32": 1e-3, "fp16": 1e-2}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


@pytest.fixture(scope="module")
def gpu_detector(synthetic_weights):
    from alphapose_trt.models.load import load_detector

    return load_detector(synthetic_weights["detector"], img_size=608)


@pytest.fixture(scope="module", params=["detector", "pose"])
def case(request, gpu_detector, pose_model):
    model = gpu_detector if request.param == "detector" else pose_model
    return model, EagerEngine(model, "cuda", "fp32", max_batch=MAX_BATCH, channels_last=False)


def natural_inputs(model, n: int, seed: int) -> torch.Tensor:
    from alphapose_trt.models.synthetic import random_images

    h, w = model.input_hw
    return random_images(torch.Generator().manual_seed(seed), n, h, w).cuda()


def compare_outputs(model, out: torch.Tensor, ref: torch.Tensor, tol: float) -> None:
    assert out.shape == ref.shape
    assert torch.isfinite(out).all()
    if model.kind == "pose":
        assert rel_err(out, ref) < tol
        return
    # detector: box geometry and scores of the candidates the pipeline would keep
    keep = ref[..., 4] > detect_ops.CONF_THRESHOLD
    assert keep.any()
    assert rel_err(out[keep][:, :5], ref[keep][:, :5]) < tol


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("backend", ["eager", "eager+graphs", "compiled"])
def test_engine_matches_eager_fp32(case, backend, precision):
    model, reference = case
    if backend == "eager":
        engine = EagerEngine(model, "cuda", precision, max_batch=MAX_BATCH)
    elif backend == "eager+graphs":
        engine = EagerEngine(model, "cuda", precision, max_batch=MAX_BATCH, cuda_graphs=True)
    else:
        engine = CompiledEngine(model, "cuda", precision, max_batch=MAX_BATCH, mode="reduce-overhead",
                                batch_sizes=(1, MAX_BATCH))
    for n in (1, 7, MAX_BATCH):
        x = natural_inputs(model, n, seed=n)
        compare_outputs(model, engine(x), reference(x), TOLERANCE[precision])


def test_fast_pipeline_matches_reference_on_cuda(gpu_detector, pose_model):
    config = PipelineConfig(max_persons=8)
    frames = [make_frame(1080, 1920, seed=s) for s in range(2)]
    det32 = EagerEngine(gpu_detector, "cuda", "fp32", channels_last=False)
    pose32 = EagerEngine(pose_model, "cuda", "fp32", channels_last=False)
    ref_pipe = ReferencePipeline(det32, pose32, config)
    fast_pipe = PosePipeline(det32, pose32, "cuda", config)
    # a CUDA pipeline runs its host side on one torch and one OpenCV thread (process-wide)
    assert (torch.get_num_threads(), cv2.getNumThreads()) == (runner.HOST_TORCH_THREADS, runner.HOST_CV_THREADS) == (1, 1)
    # detector stage: letterbox rounding moves boxes by up to two detector-input pixels (1920 / 608
    # image px each) and objectness by < 0.01
    ref_boxes = []
    with torch.inference_mode():
        fast_boxes = fast_pipe.detect(fast_pipe.upload(frames))
    for frame, got in zip(frames, fast_boxes):
        want = ref_pipe.detect(frame)
        got = got.cpu().numpy()
        assert got.shape == want.shape and len(want) > 0
        # boxes of near-equal score may swap places: match each reference box to its nearest
        gap = np.abs(want[:, None, :4] - got[None, :, :4]).max(axis=2)
        match = gap.argmin(axis=1)
        assert sorted(match) == list(range(len(want)))
        assert gap.min(axis=1).max() <= 2 * 1920 / 608
        np.testing.assert_allclose(got[match, 4], want[:, 4], atol=1e-2)
        ref_boxes.append(want)
    # crops, pose and decode on the same boxes (pose NMS is exact on the host, test_pose_nms.py).
    # The CUDA crops equal cv2.warpAffine's to 1/255; with random weights such a difference still
    # moves a few keypoints to another peak (random heatmaps have no dominant one), so at least
    # 95 % must be identical. End-to-end keypoints are not compared for the same reason.
    with torch.inference_mode():
        batch = fast_pipe.upload(frames)
        coords, scores = fast_pipe.estimate(batch, ref_boxes)
        crops, _ = crop_ops.crop(batch, torch.zeros(len(ref_boxes[0]), dtype=torch.long, device="cuda"),
                                 torch.from_numpy(ref_boxes[0][:, :4]).cuda(), fast_pipe.pose_hw, fast_pipe.mean)
    for i, det in enumerate(ref_boxes[0]):
        center, scale = (t[0].numpy() for t in crop_ops.box_to_center_scale(torch.from_numpy(det[None, :4])))
        want_crop = crop_ops.crop_reference(frames[0], center, scale, fast_pipe.pose_hw, fast_pipe.mean)
        assert np.abs(crops[i].cpu().numpy() - want_crop).max() <= 1 / 255 + 1e-5
    want = [ref_pipe.estimate(frame, boxes) for frame, boxes in zip(frames, ref_boxes)]
    want_coords = np.concatenate([c for c, _ in want])
    moved = np.linalg.norm(coords.cpu().numpy() - want_coords, axis=2) > 1e-2
    assert moved.mean() <= 0.05, f"{moved.mean():.1%} of keypoints moved"


def test_fused_ops_match_eager_ops_on_cuda(gpu_detector, pose_model):
    """Letterbox, crops and decode as Triton kernels (config.fuse) against the eager ops, on the
    same fp32 engines, and process_stream against process_batch: boxes within 1e-2 px (a fused
    letterbox may round a pixel one level apart), keypoints identical but for near-tie flips."""
    frames = [make_frame(1080, 1920, seed=s) for s in range(4)]
    det32 = EagerEngine(gpu_detector, "cuda", "fp32", channels_last=False)
    pose32 = EagerEngine(pose_model, "cuda", "fp32", channels_last=False)
    eager = PosePipeline(det32, pose32, "cuda", PipelineConfig(max_persons=8, det_batch=2, fuse=False))
    fused = PosePipeline(det32, pose32, "cuda", PipelineConfig(max_persons=8, det_batch=2, fuse=True))
    want = eager.process_batch(frames)
    got = [r for _, results in fused.process_stream((i, frames[i : i + 2], None) for i in (0, 2)) for r in results]
    assert sum(len(p) for p in want) > 0
    assert_same_persons(got, want, box_atol=1e-2, exact=False)


def test_frame_uploader_reuses_a_few_pinned_buffers_and_sends_every_batch_intact():
    from alphapose_trt.pipeline import transfer

    uploader = transfer.FrameUploader(torch.device("cuda"))
    rng = np.random.default_rng(0)
    batches = [[rng.integers(0, 256, (270, 480, 3), np.uint8) for _ in range(4)] for _ in range(12)]
    sent = [uploader.stage(frames).send() for frames in batches]  # as fast as the host can: all in transfer
    buffers = {id(buffer) for buffer, _ in uploader._free}
    assert uploader._buffers <= transfer.STAGING_BUFFERS and len(buffers) == uploader._buffers
    for frames, batch in zip(batches, sent):
        assert torch.equal(batch.permute(0, 2, 3, 1).cpu(), torch.from_numpy(np.stack(frames)))
    uploader.stage([batches[0][0][:100]]).send()  # a new frame size starts a new set of buffers
    assert uploader._buffers == 1


def test_detector_stage_replayed_as_one_cuda_graph_matches_op_by_op(gpu_detector, pose_model):
    """An engine that runs in CUDA graphs lends its forward to the pipeline, which replays
    letterbox + detector + ranking as one graph per frame size (a partial batch replays the full
    batch's graph): the boxes equal those of the same steps op by op within 1e-2 px, and a third
    frame size runs op by op instead of adding a graph."""
    det_graphs = EagerEngine(gpu_detector, "cuda", "fp32", max_batch=4, channels_last=False, cuda_graphs=True)
    det_plain = EagerEngine(gpu_detector, "cuda", "fp32", max_batch=4, channels_last=False)
    pose = EagerEngine(pose_model, "cuda", "fp32", channels_last=False)
    config = PipelineConfig(max_persons=8, det_batch=4, fuse=True)
    graphed, plain = PosePipeline(det_graphs, pose, "cuda", config), PosePipeline(det_plain, pose, "cuda", config)
    assert det_graphs.capturable() is not None and det_plain.capturable() is None
    for height, width, count in ((1080, 1920, 3), (720, 1280, 4), (480, 640, 2), (1080, 1920, 4)):
        frames = [make_frame(height, width, seed=s) for s in range(count)]
        with torch.inference_mode():
            got, want = graphed.detect(graphed.upload(frames)), plain.detect(plain.upload(frames))
        assert sum(len(w) for w in want) > 0
        for g, w in zip(got, want):
            assert g.shape == w.shape
            torch.testing.assert_close(g, w, atol=1e-2, rtol=0)  # px: fp32 conv algorithms may differ
    assert len(graphed._detect_graphs.graphs) == runner.DETECT_GRAPHS == 2  # 1080p, 720p; 480p op by op
