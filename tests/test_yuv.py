"""YUV 4:2:0 -> RGB (io/yuv.py), the GPU decoders' colour conversion: bit-exact to OpenCV's on
the CPU (the CUDA runs, plain and compiled, are checked against this one in test_gpu.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from alphapose_trt.io import yuv

LAYOUTS = [(yuv.nv12_to_rgb, cv2.COLOR_YUV2RGB_NV12), (yuv.i420_to_rgb, cv2.COLOR_YUV2RGB_I420)]


@pytest.mark.parametrize("convert, code", LAYOUTS, ids=["nv12", "i420"])
@pytest.mark.parametrize("height, width", [(2, 2), (6, 10), (1080, 1920)])
def test_conversion_is_bit_exact_to_opencv(convert, code, height, width):
    planes = np.random.default_rng(height).integers(0, 256, (height * 3 // 2, width), np.uint8)
    got = convert(torch.from_numpy(planes))
    assert got.dtype == torch.uint8 and got.shape == (height, width, 3)
    np.testing.assert_array_equal(got.numpy(), cv2.cvtColor(planes, code))


@pytest.mark.parametrize("convert, code", LAYOUTS, ids=["nv12", "i420"])
def test_a_batch_converts_frame_by_frame_over_the_full_range(convert, code):
    batch = np.random.default_rng(1).integers(0, 256, (3, 12, 8), np.uint8)
    batch[0, :8] = 0  # Y below 16 is clamped (black), extreme chroma saturates at 0 and 255
    batch[1] = 255
    got = convert(torch.from_numpy(batch)).numpy()
    for frame, out in zip(batch, got):
        np.testing.assert_array_equal(out, cv2.cvtColor(frame, code))
    assert got.min() == 0 and got.max() == 255


def test_i420_and_nv12_differ_only_in_where_the_chroma_lies():
    """The same Y, U and V planes laid out both ways give the same RGB."""
    rng = np.random.default_rng(2)
    luma, u, v = rng.integers(0, 256, (8, 10), np.uint8), rng.integers(0, 256, (4, 5), np.uint8), rng.integers(0, 256, (4, 5), np.uint8)
    i420 = np.concatenate([luma.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(12, 10)
    nv12 = np.concatenate([luma.reshape(-1), np.stack([u, v], -1).reshape(-1)]).reshape(12, 10)
    assert torch.equal(yuv.i420_to_rgb(torch.from_numpy(i420)), yuv.nv12_to_rgb(torch.from_numpy(nv12)))


@pytest.mark.parametrize("convert, name", [(yuv.nv12_to_rgb, "NV12"), (yuv.i420_to_rgb, "I420")])
def test_other_shapes_are_rejected(convert, name):
    with pytest.raises(ValueError, match=f"not an {name} image: 5 x 4"):
        convert(torch.zeros(5, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="even width"):
        convert(torch.zeros(6, 5, dtype=torch.uint8))


def test_rgb_on_uploads_converts_turns_and_waits_for_the_stream(monkeypatch):
    """The GPU sources' one conversion step, run here with a stand-in stream on the CPU (the CUDA
    runs: test_gpu.py): the planes go to the stream's device, are converted and turned, and the
    stream is waited for before the frames are handed out."""
    import contextlib

    from alphapose_trt.io.sources import upright

    class Stream:
        device = torch.device("cpu")
        waited = 0

        def synchronize(self):
            self.waited += 1

    used = []
    monkeypatch.setattr(torch.cuda, "device", lambda device: used.append(device) or contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "stream", lambda stream: used.append(stream) or contextlib.nullcontext())
    stream = Stream()
    i420 = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, 12, 10), np.uint8))  # 2 frames of 10x8
    got = yuv.rgb_on(stream, yuv.i420_to_rgb, i420, turns=1)
    assert torch.equal(got, upright(yuv.i420_to_rgb(i420), 1)) and got.shape == (2, 10, 8, 3)
    assert used == [stream.device, stream] and stream.waited == 1
