"""GPU checks (marker `gpu`, run on the lent H100; CI has no GPU and deselects them).

Every fast engine against eager fp32 on the same GPU: fp32 backends within 1e-3 relative error,
fp16 within 1e-2, on heatmaps and on decoded detector boxes; and the fast pipeline against the
reference pipeline on CUDA.
"""

from __future__ import annotations

import multiprocessing

import cv2
import numpy as np
import pytest
import torch

from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.engines.padding import PaddedConv
from alphapose_trt.io import decode_process
from alphapose_trt.pipeline import crop as crop_ops
from alphapose_trt.pipeline import detect as detect_ops
from alphapose_trt.pipeline import runner
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline, ReferencePipeline
from conftest import assert_same_persons, make_frame

pytestmark = pytest.mark.gpu
NVDEC_CLIP_FRAMES = 96
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
                                batch_sizes=(1, MAX_BATCH), fuse_rgb=False)
        padded = sum(isinstance(m, PaddedConv) for m in engine.module.modules())
        assert padded == (4 if model.kind == "detector" else 2)  # the RGB input convs, 3 x 255 and 17 outputs
    for n in (1, 7, MAX_BATCH):
        x = natural_inputs(model, n, seed=n)
        compare_outputs(model, engine(x), reference(x), TOLERANCE[precision])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engines_with_their_rgb_convolution_as_one_kernel_match_eager_fp32(case, precision):
    """`fuse_rgb`: the first convolution with its BatchNorm and activation as the Triton kernel of
    engines/rgb_conv.py inside the compiled graph, the other convolutions padded as usual."""
    from alphapose_trt.engines.rgb_conv import RGBConv

    model, reference = case
    engine = CompiledEngine(model, "cuda", precision, max_batch=MAX_BATCH, mode="reduce-overhead",
                            batch_sizes=(1, MAX_BATCH), fuse_rgb=True)
    assert sum(isinstance(m, RGBConv) for m in engine.module.modules()) == 1
    padded = sum(isinstance(m, PaddedConv) for m in engine.module.modules())
    assert padded == (3 if model.kind == "detector" else 1)  # the 255-channel heads, the 17 heatmaps
    for n in (1, 7):
        x = natural_inputs(model, n, seed=n)
        compare_outputs(model, engine(x), reference(x), TOLERANCE[precision])


def test_engines_with_fused_cudnn_convolutions_match_eager_fp32(case):
    """`fuse_convs`: every other convolution with its BatchNorm, activation and residual join as one
    cuDNN frontend kernel inside the compiled graph (needs nvidia-cudnn-frontend: `.cfe/` on the H100)."""
    from alphapose_trt.engines.cudnn_fusion import ConvAct, JoinedShortcut, frontend

    assert frontend() is not None, "nvidia-cudnn-frontend is not importable"
    model, reference = case
    engine = CompiledEngine(model, "cuda", "fp16", max_batch=MAX_BATCH, mode="reduce-overhead",
                            batch_sizes=(1, MAX_BATCH), fuse_convs=True)
    modules = list(engine.module.modules())
    assert sum(isinstance(m, ConvAct) for m in modules) == (72 if model.kind == "detector" else 54)
    assert sum(isinstance(m, JoinedShortcut) for m in modules) == (23 if model.kind == "detector" else 0)
    for n in (1, 7):
        x = natural_inputs(model, n, seed=n)
        compare_outputs(model, engine(x), reference(x), TOLERANCE["fp16"])


def test_graph_replays_keep_the_captured_cudnn_flags_without_entering_them(pose_model, monkeypatch):
    """Replays skip `conv_precision` (host time in front of the first kernel), yet an fp32 graph
    stays true fp32 with TF32 allowed globally: its flags were applied when it was captured."""
    from alphapose_trt.engines import eager as eager_module

    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    plain = EagerEngine(pose_model, "cuda", "fp32", max_batch=2, channels_last=False)
    graphed = EagerEngine(pose_model, "cuda", "fp32", max_batch=2, channels_last=False, cuda_graphs=True)
    x = natural_inputs(pose_model, 2, seed=5)
    first = graphed(x)  # captures, under the flags

    def entered(*args, **kwargs):
        raise AssertionError("a graph replay entered conv_precision")

    monkeypatch.setattr(eager_module, "conv_precision", entered)
    again = graphed(x)
    monkeypatch.undo()
    assert torch.equal(first, again)
    assert rel_err(again, plain(x)) < 1e-5  # TF32 would be ~1e-3 off


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
    made = uploader._buffers
    short = batches[0][:2]  # a stream's last, short batch: the first rows of the same buffers
    assert torch.equal(uploader.stage(short).send().permute(0, 2, 3, 1).cpu(), torch.from_numpy(np.stack(short)))
    uploader.stage(batches[1]).send()
    assert uploader._buffers == made
    uploader.stage([batches[0][0][:100]]).send()  # a new frame size starts a new set of buffers
    assert uploader._buffers == 1


@pytest.mark.parametrize("detector_graphs", [False, True])
def test_a_streams_short_last_batch_reuses_the_fused_kernels(gpu_detector, pose_model, monkeypatch, detector_graphs):
    """The fused letterbox (op by op, or inside the detector-stage graph) and crops are built for
    the stream's frame count; a shorter last batch runs them on blank-padded frames instead of
    rebuilding them (seconds at the end of every video), with the persons of the same frames op
    by op (boxes within 1e-2 px, keypoints but for near-tie flips). Unpadded, it does rebuild."""
    torch._dynamo.reset()  # no kernels built by earlier tests for other frame counts
    det = EagerEngine(gpu_detector, "cuda", "fp32", max_batch=4, channels_last=False, cuda_graphs=detector_graphs)
    pose = EagerEngine(pose_model, "cuda", "fp32", channels_last=False)
    frames = [make_frame(360, 640, seed=s) for s in range(6)]
    fused = PosePipeline(det, pose, "cuda", PipelineConfig(max_persons=8, det_batch=4, fuse=True))
    eager = PosePipeline(det, pose, "cuda", PipelineConfig(max_persons=8, det_batch=4, fuse=False))
    assert (fused._detect_graphs is not None) == detector_graphs
    fused.process_batch(frames[:4])  # builds the kernels for 4 frames
    with torch._dynamo.config.patch(error_on_recompile=True):
        got = [r for _, results in fused.process_stream((i, frames[i : i + 4], None) for i in (0, 4)) for r in results]
    want = eager.process_batch(frames[:4]) + eager.process_batch(frames[4:])
    assert sum(len(p) for p in want[4:]) > 0
    assert_same_persons(got, want, box_atol=1e-2, exact=False)
    monkeypatch.setattr(PosePipeline, "_full_batch", lambda self, op, frames: frames)
    with torch._dynamo.config.patch(error_on_recompile=True), pytest.raises(torch._dynamo.exc.RecompileError):
        fused.process_batch(frames[4:])


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


@pytest.mark.parametrize("frames_on", ["host", "device"])
def test_detector_stream_gives_the_persons_of_one_stream(gpu_detector, pose_model, monkeypatch, frames_on):
    """The detector stage on a stream of its own, beside the pose work of earlier batches (and,
    for frames already on the device, waiting only for their stack): every person equal, bit for
    bit, to those of the same pipeline with everything on the compute stream."""
    det = EagerEngine(gpu_detector, "cuda", "fp32", max_batch=4, channels_last=False, cuda_graphs=True)
    pose = EagerEngine(pose_model, "cuda", "fp32", channels_last=False)
    frames = [make_frame(360, 640, seed=s) for s in range(16)]
    if frames_on == "device":
        frames = [torch.from_numpy(f).cuda() for f in frames]
    config = PipelineConfig(max_persons=8, det_batch=4, fuse=True)

    def persons(pipeline: PosePipeline) -> list:
        batches = ((i, frames[i : i + 4], None) for i in range(0, len(frames), 4))
        return [p for _, results in pipeline.process_stream(batches) for people in results for p in people]

    two = PosePipeline(det, pose, "cuda", config)
    monkeypatch.setattr(runner, "DETECTOR_STREAM", False)
    one = PosePipeline(det, pose, "cuda", config)
    assert two._detect_stream is not None and one._detect_stream is None
    want, got = persons(one), persons(two)
    assert len(want) > 0 and len(got) == len(want)
    for a, b in zip(got, want):
        assert a.box_score == b.box_score and a.score == b.score
        for field in ("box", "keypoints", "keypoint_scores"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.fixture(scope="module")
def video_clip(tmp_path_factory):
    """96 frames of 640x360 mp4v (OpenCV's writer puts a key frame every 12): a smooth bench frame
    panning 4 px a frame (as h100.sh's clip)."""
    from alphapose_trt.bench import make_frames

    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
    base = cv2.cvtColor(make_frames(1, (640, 360), 0)[0], cv2.COLOR_RGB2BGR)
    for i in range(NVDEC_CLIP_FRAMES):
        writer.write(np.roll(base, 4 * i, axis=1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def nvdec_clip(video_clip):
    pytest.importorskip("PyNvVideoCodec")
    return video_clip


def test_pyav_frames_on_cuda_are_the_host_conversions_bit_for_bit(video_clip, monkeypatch):
    """The GPU conversion (compiled, batches of 5 here so the last one is short) gives exactly the
    frames the CPU path makes with cv2; a warmed-up source reads the same."""
    from alphapose_trt.io import pyav
    from alphapose_trt.io.sources import open_source
    from alphapose_trt.io.yuv import i420_to_rgb, i420_to_rgb_fused

    monkeypatch.setattr(pyav, "DECODE_BATCH", 5)
    with open_source(video=video_clip, decoder="pyav", device="cpu") as source:
        want = list(source)
    for warm in (False, True):
        with open_source(video=video_clip, decoder="pyav", device="cuda") as source:
            if warm:
                source.warm_up()
            got = list(source)
            assert source.failures == []
        assert [f.image_id for f in got] == list(range(NVDEC_CLIP_FRAMES))
        for g, w in zip(got, want):
            assert g.image.is_cuda and g.image.dtype == torch.uint8 and g.image.shape == (360, 640, 3)
            assert np.array_equal(g.image.cpu().numpy(), w.image), g.image_id
    i420 = torch.randint(0, 256, (3, 540, 640), dtype=torch.uint8)
    assert torch.equal(i420_to_rgb(i420.cuda()).cpu(), i420_to_rgb(i420))
    assert torch.equal(i420_to_rgb_fused(i420.cuda()).cpu(), i420_to_rgb(i420))


@pytest.mark.parametrize("decoder", ["pyav", "nvdec"])
def test_device_decoders_turn_rotated_video_upright(tmp_path, decoder):
    """A phone-style clip (coded 320x192, shown turned 90 degrees): frames on the GPU come upright
    and contiguous, as OpenCV reads them (PyAV: exactly its CPU frames; NVDEC: within a level)."""
    pytest.importorskip("av" if decoder == "pyav" else "PyNvVideoCodec")
    from alphapose_trt.io.sources import open_source
    from test_pyav import write_turned

    path = write_turned(tmp_path / "turned.mp4", 90, (320, 192))
    with open_source(video=path, decoder=decoder, device="cuda") as source:
        assert source.size == (192, 320)
        got = [f.image for f in source]
    with open_source(video=path, decoder="pyav" if decoder == "pyav" else "opencv", device="cpu") as source:
        want = [f.image for f in source]
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert g.is_cuda and g.is_contiguous() and g.shape == (320, 192, 3)
        diff = np.abs(g.cpu().numpy().astype(np.int16) - w)
        assert diff.max() == 0 if decoder == "pyav" else diff.mean() <= 1.5


def test_nvdec_frames_match_opencv_frames_within_a_level(nvdec_clip):
    """NVDEC frames stay on the GPU and equal OpenCV's within chroma-upsampling differences:
    mean <= 1.5 levels, max <= 16 at colour edges (1080p clips: 1.1 and 5, nvdec_probe.txt; this
    clip: 1.14 and 11; NVDEC's own RGB conversion: ~5 and 36); the conversion on
    CUDA is bit-exact to the CPU one (which is bit-exact to cv2, test_nvdec.py)."""
    from alphapose_trt.io.yuv import nv12_to_rgb, nv12_to_rgb_fused
    from alphapose_trt.io.sources import open_source

    with open_source(video=nvdec_clip, decoder="nvdec", device="cuda") as source:
        assert source.size == (640, 360) and source.length == NVDEC_CLIP_FRAMES
        got = list(source)
        assert source.failures == []
    with open_source(video=nvdec_clip) as source:
        want = list(source)
    assert [f.image_id for f in got] == [f.image_id for f in want] == list(range(NVDEC_CLIP_FRAMES))
    for g, w in zip(got, want):
        assert g.image.is_cuda and g.image.dtype == torch.uint8 and g.image.shape == (360, 640, 3)
        diff = np.abs(g.image.cpu().numpy().astype(np.int16) - w.image)
        assert diff.mean() <= 1.5 and diff.max() <= 16, (g.image_id, diff.mean(), diff.max())
    nv12 = torch.randint(0, 256, (2, 540, 640), dtype=torch.uint8)
    assert torch.equal(nv12_to_rgb(nv12.cuda()).cpu(), nv12_to_rgb(nv12))
    assert torch.equal(nv12_to_rgb_fused(nv12.cuda()).cpu(), nv12_to_rgb(nv12))  # the compiled one the source uses


@pytest.mark.parametrize("decoder", ["pyav", "nvdec"])
def test_pipeline_on_device_frames_equals_the_same_frames_from_the_host(gpu_detector, pose_model, video_clip, decoder):
    """Device frames skip the upload; the persons equal those of the same pixels sent from the host."""
    from alphapose_trt.io.sources import open_source
    from alphapose_trt.pipeline.transfer import host_image

    if decoder == "nvdec":
        pytest.importorskip("PyNvVideoCodec")
    with open_source(video=video_clip, decoder=decoder, device="cuda") as source:
        frames = [f.image for f in source]
    det32 = EagerEngine(gpu_detector, "cuda", "fp32", channels_last=False)
    pose32 = EagerEngine(pose_model, "cuda", "fp32", channels_last=False)
    pipeline = PosePipeline(det32, pose32, "cuda", PipelineConfig(max_persons=8, det_batch=8, conf=0.1))

    def persons(images):
        batches = ((i, images[i : i + 8], None) for i in range(0, len(images), 8))
        return [r for _, results in pipeline.process_stream(batches) for r in results]

    want = persons([host_image(f) for f in frames])
    assert sum(len(p) for p in want) > 0
    assert_same_persons(persons(frames), want, box_atol=1e-3)


def test_nvdec_records_the_frames_it_cannot_reach_and_delivers_the_others(tmp_path):
    """An all-intra MPEG-4 clip (OpenCV's writer on flat frames): PyNvVideoCodec cannot reach its
    last two frames. The source delivers frames 0-37 in order, as their grey levels say, and
    records 38-39 as a failure instead of ending the pass with an error."""
    pytest.importorskip("PyNvVideoCodec")
    from alphapose_trt.io.sources import open_source

    path = tmp_path / "intra.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (640, 360))
    for i in range(40):
        writer.write(np.full((360, 640, 3), i * 5, np.uint8))
    writer.release()
    with open_source(video=path, decoder="nvdec", device="cuda") as source:
        frames = list(source)
    assert [f.image_id for f in frames] == list(range(38))
    assert all(abs(float(f.image.float().mean()) - 5 * f.image_id) <= 2 for f in frames)
    assert len(source.failures) == 1
    what, why = source.failures[0]
    assert what.endswith("frames 38-39") and why.startswith("decoding failed at frame 38 (")


def test_nvdec_sessions_on_stretches_give_the_frames_of_one_sequential_pass(nvdec_clip, monkeypatch):
    """Several decoders on key-frame stretches in the decoding process, merged in order: bit-exact
    to one decoder reading the whole file, every frame once; a pass stopped early ends quietly and
    ends its decoding process; a warmed-up source reads the same frames."""
    from alphapose_trt.io import nvdec
    from alphapose_trt.io.sources import open_source

    def frames(sessions):
        monkeypatch.setattr(nvdec, "NVDEC_SESSIONS", sessions)
        with open_source(video=nvdec_clip, decoder="nvdec", device="cuda") as source:
            source.warm_up()
            got = list(source)
            assert source.failures == []
            return [(s.start, s.end, s.read_on) for s in source.stretches], got

    one, want = frames(1)
    three, got = frames(3)
    assert one == [(0, NVDEC_CLIP_FRAMES, True)]  # header count without a scan: read on to the end
    assert three == [(0, 36, False), (36, NVDEC_CLIP_FRAMES, False)]  # key frames every 12
    assert [f.image_id for f in got] == list(range(NVDEC_CLIP_FRAMES))
    assert all(torch.equal(g.image, w.image) for g, w in zip(got, want))
    with open_source(video=nvdec_clip, decoder="nvdec", device="cuda") as source:
        for frame in source:
            if frame.image_id == 40:
                break
    assert source.failures == []
    decode_process.wait_closed()  # closing leaves the child's end to a background thread
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("decode:")]


def test_a_cuda_ring_is_released_by_the_decoding_process_before_the_parent_exits(tmp_path):
    """A decoding process with a ring on the GPU (fake sessions, as NVDEC's): every frame read,
    and a parent that keeps no view of the ring exits without CUDA's "Producer process has been
    terminated before all shared CUDA tensors released" warning, i.e. the child let go of the ring
    before it ended (before the fix, its Process object kept it to the end: the warning came)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    spec = tmp_path / "clip.json"
    spec.write_text(json.dumps({"shape": [3, 4], "batch": 4, "frames": 32}))
    script = f"""
import sys, threading, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from alphapose_trt.io.decode_process import DecodeProcess, Stretch
from decode_fakes import FakeSession
process = DecodeProcess("clip.json", FakeSession, {str(spec)!r}, [Stretch(0, 16), Stretch(16, 32)], 2, (3, 4), 4,
                        torch.device("cuda"))
stop = threading.Event()
process.wait_ready(stop)
numbers = []
for j in range(2):
    for slot, frames in process.batches(j, stop):
        numbers += [int(f[0, 0]) for f in frames]
        process.release(j, slot)
del frames  # the last view of the ring: the parent's own reference would keep the warning
process.close(wait=True)
print(numbers == list(range(32)))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "True"
    assert "Producer process has been terminated" not in done.stderr, done.stderr[-2000:]
