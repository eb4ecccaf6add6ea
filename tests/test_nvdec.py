"""The NVDEC source's CPU-checkable parts: its stretches, its errors, and device (tensor) frames
through the pipeline (its NV12 conversion: test_yuv.py). Decoding itself needs the GPU: tests/test_gpu.py."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
import torch

from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.errors import AlphaPoseTrtError, MissingDependencyError
from alphapose_trt.io import nvdec
from alphapose_trt.io.sources import open_source
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline, ReferencePipeline
from alphapose_trt.pipeline.transfer import FrameUploader, host_image
from conftest import assert_same_persons, make_frame


@pytest.mark.parametrize("count, keys, sessions, want", [
    (300, range(0, 300, 12), 3, [(0, 36), (36, 72), (72, 108), (108, 144), (144, 180), (180, 216), (216, 252), (252, 300)]),
    (100, [0, 40, 70], 3, [(0, 40), (40, 100)]),  # a tail shorter than STRETCH_FRAMES joins the stretch before
    (300, range(0, 300, 12), 1, [(0, 300)]),  # one session: one pass
    (50, [0, 12, 24], 3, [(0, 50)]),  # too short to split
    (600, [0, 250, 500], 3, [(0, 250), (250, 500), (500, 600)]),  # long stretches: memory stays the ring's
    (300, [], 3, [(0, 300)]),
])
def test_stretches_start_at_key_frames_and_cover_every_frame(count, keys, sessions, want):
    stretches = nvdec.plan_stretches(count, list(keys), sessions)
    assert stretches == want
    assert [s for s, _ in stretches[1:]] == [e for _, e in stretches[:-1]]  # contiguous, no overlap
    assert all(e - s >= nvdec.STRETCH_FRAMES for s, e in stretches) or len(stretches) == 1


def test_nvdec_source_needs_cuda_and_says_which_package_to_install(tmp_path, monkeypatch):
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"\0" * 16)
    with pytest.raises(AlphaPoseTrtError, match="clip.mp4: --decoder nvdec needs a CUDA device") as info:
        open_source(video=video, decoder="nvdec", device="cpu")
    assert "\n" not in str(info.value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "PyNvVideoCodec", None)  # import fails as when not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'alphapose-trt\[nvdec\]'"):
        open_source(video=video, decoder="nvdec", device="cuda")


def test_infer_rejects_nvdec_for_images(tmp_path, capsys):
    from alphapose_trt.cli import main

    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert main(["infer", "--image", str(image), "--decoder", "nvdec", "--outdir", str(tmp_path)]) != 0
    err = capsys.readouterr().err
    assert "--decoder nvdec reads video files (--video), not --image" in err and "Traceback" not in err


def test_tensor_frames_give_the_same_persons_as_arrays(detector_model, pose_model):
    """Frames decoded by NVDEC reach the pipelines as tensors: the fast path stacks them where
    they are, the reference path copies them to the host; results equal those of numpy frames."""
    det = EagerEngine(detector_model, "cpu", "fp32", max_batch=2)
    pose = EagerEngine(pose_model, "cpu", "fp32", max_batch=8)
    config = PipelineConfig(conf=0.1, max_persons=3, det_batch=2, pose_batch=4)
    frames = [make_frame(120, 160, seed=s) for s in (1, 2)]
    tensors = [torch.from_numpy(f.copy()) for f in frames]
    staged = FrameUploader(torch.device("cpu")).stage(tensors).send()
    assert torch.equal(staged, torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
    assert np.array_equal(host_image(tensors[0]), frames[0])
    for pipeline in (PosePipeline(det, pose, "cpu", config), ReferencePipeline(det, pose, config)):
        want = pipeline.process_batch(frames)
        assert sum(map(len, want)) > 0
        assert_same_persons(pipeline.process_batch(tensors), want, box_atol=0)


def test_device_frames_are_rendered_from_a_host_copy(tmp_path):
    """--save-img / --save-video with NVDEC frames: the writer thread copies the tensor to the host
    and draws on that copy; the rendered file equals the one from the same numpy frame."""
    from alphapose_trt.io.sinks import FrameOutputs, ImageWriter
    from alphapose_trt.io.sources import Frame, read_image
    from alphapose_trt.results import FrameResult, Person

    image = make_frame(48, 64, seed=3)
    person = Person(box=np.array([5, 6, 40, 44], np.float32), box_score=0.8,
                    keypoints=np.random.default_rng(0).uniform(8, 40, (17, 2)).astype(np.float32),
                    keypoint_scores=np.full(17, 0.9, np.float32), score=0.9, idx=0)
    for name, pixels in (("array.png", image), ("tensor.png", torch.from_numpy(image.copy()))):
        FrameOutputs(image_writer=ImageWriter(tmp_path)).write(Frame(name, pixels), FrameResult(name, [person], 48, 64))
    rendered = read_image(tmp_path / "vis" / "tensor.png")
    assert not np.array_equal(rendered, image)
    np.testing.assert_array_equal(rendered, read_image(tmp_path / "vis" / "array.png"))
