"""The PyAV source on the CPU: frames, numbering, failures and errors. Its GPU conversion (CUDA
frames bit-exact to these) is checked in test_gpu.py, the conversion itself in test_yuv.py."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from alphapose_trt import bench
from alphapose_trt.errors import AlphaPoseTrtError, MissingDependencyError
from alphapose_trt.io import pyav, sources
from alphapose_trt.io.sources import open_source
from conftest import make_frame

CLIP_FRAMES = 20
CLIP_SIZE = (200, 120)  # width, height: PyAV pads each plane's rows (to 256 and 128 bytes here)


def _write(path: Path, fourcc: str, frames: int = CLIP_FRAMES) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, CLIP_SIZE)
    base = make_frame(CLIP_SIZE[1], CLIP_SIZE[0], seed=7)[:, :, ::-1]
    for i in range(frames):
        writer.write(np.ascontiguousarray(np.roll(base, 3 * i, axis=1)))
    writer.release()
    return path


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """mp4v (yuv420p, the common case): the I420 path."""
    return _write(tmp_path_factory.mktemp("pyav") / "clip.mp4", "mp4v")


@pytest.fixture(scope="module")
def h264_clip(tmp_path_factory) -> Path:
    """H.264 with B-frames (packets out of display order), the common camera format, by PyAV."""
    path = tmp_path_factory.mktemp("pyav") / "clip_h264.mp4"
    base = make_frame(CLIP_SIZE[1], CLIP_SIZE[0], seed=7)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = *CLIP_SIZE, "yuv420p"
        stream.options = {"preset": "fast", "bframes": "3"}
        for i in range(CLIP_FRAMES):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.roll(base, 3 * i, axis=1)), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def mjpeg_clip(tmp_path_factory) -> Path:
    """MJPG (full-range 4:2:2 JPEG planes): FFmpeg's own RGB conversion."""
    return _write(tmp_path_factory.mktemp("pyav") / "clip.avi", "MJPG")


def _read(path: Path, **kwargs) -> tuple[list, list]:
    with open_source(video=path, **kwargs) as source:
        return list(source), list(source.failures)


@pytest.mark.parametrize("which", ["clip", "h264_clip", "mjpeg_clip"])
def test_frames_match_the_opencv_sources_within_a_level_or_two(which, request):
    """Same frames, numbers and metadata as the OpenCV source; pixels differ only by the two
    conversions (FFmpeg's, which OpenCV's reader uses, and cv2's own for I420): measured mean
    1.1 and max 3 levels on these clips."""
    path = request.getfixturevalue(which)
    with open_source(video=path, decoder="pyav", device="cpu") as source:
        assert (source.fps, source.size, source.length) == (25.0, CLIP_SIZE, CLIP_FRAMES)
        assert source._i420 == (which != "mjpeg_clip")
        got = list(source)
        assert source.failures == []
    want, _ = _read(path)
    assert [f.image_id for f in got] == [f.image_id for f in want] == list(range(CLIP_FRAMES))
    assert [f.index for f in got] == list(range(CLIP_FRAMES)) and {f.path for f in got} == {path}
    for g, w in zip(got, want):
        assert isinstance(g.image, np.ndarray) and g.image.dtype == np.uint8 and g.image.shape == w.image.shape
        diff = np.abs(g.image.astype(np.int16) - w.image)
        assert diff.mean() <= 1.5 and diff.max() <= 8, (g.image_id, diff.mean(), diff.max())


def test_i420_frames_are_cv2s_conversion_of_the_decoded_planes(clip):
    """copy_i420 drops each plane's row padding: it equals PyAV's own I420 array, and the frame
    is cv2's conversion of it, bit for bit (the GPU conversion is bit-exact to that too)."""
    got, _ = _read(clip, decoder="pyav", device="cpu")
    with av.open(str(clip)) as container:
        for frame, mine in zip(container.decode(video=0), got):
            assert frame.planes[0].line_size > frame.width  # the padding is really there
            i420 = pyav.copy_i420(frame, np.empty((frame.height * 3 // 2, frame.width), np.uint8))
            np.testing.assert_array_equal(i420, frame.to_ndarray())
            np.testing.assert_array_equal(mine.image, cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420))


class _FlakyContainer:
    """A real container whose packets fail to decode at the given positions, or whose reading
    fails at one (read_error_at)."""

    def __init__(self, real, bad: set[int], read_error_at: int | None):
        self._real, self._bad, self._read_error_at = real, bad, read_error_at
        self.streams = real.streams

    def demux(self, stream):
        for position, packet in enumerate(self._real.demux(stream)):
            if position == self._read_error_at:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
            yield _FlakyPacket(packet, position in self._bad)

    def close(self):
        self._real.close()


class _FlakyPacket:
    def __init__(self, packet, bad: bool):
        self._packet, self._bad, self.size = packet, bad, packet.size

    def decode(self):
        if self._bad:
            raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input")
        return self._packet.decode()


@pytest.mark.parametrize("bad, read_error_at, limit, want_ids, want_failures", [
    ({3, 4}, None, 25, [i for i in range(CLIP_FRAMES) if i not in (3, 4)],
     ["frame 3", "frame 4"]),
    (set(range(5, 20)), None, 4, [0, 1, 2, 3, 4],
     ["frame 5", "frame 6", "frame 7", "frame 8", "stopped after 4 unreadable frames in a row"]),
    (set(), 6, 25, [0, 1, 2, 3, 4, 5], ["reading stopped after 6 frames"]),
])
def test_undecodable_packets_are_recorded_and_keep_their_frame_numbers(clip, monkeypatch, bad, read_error_at, limit,
                                                                      want_ids, want_failures):
    """Decoder threads hand frames out packets late; the frames after a failure still get their
    own numbers (ids of the frames that did decode: a video without reordered frames)."""
    real_open = pyav.open_container
    monkeypatch.setattr(pyav, "open_container", lambda path: _FlakyContainer(real_open(path), bad, read_error_at))
    got, failures = _read(clip, decoder="pyav", device="cpu", max_consecutive_failures=limit)
    assert [f.image_id for f in got] == want_ids
    assert [f.index for f in got] == list(range(len(want_ids)))
    assert len(failures) == len(want_failures)
    for (what, why), want in zip(failures, want_failures):
        assert want in f"{what} {why}" and "\n" not in why


def test_a_file_shorter_than_its_header_says_is_recorded(clip, monkeypatch):
    real_init = pyav.PyAVVideoSource.__init__

    def init(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        self._count = CLIP_FRAMES + 5

    monkeypatch.setattr(pyav.PyAVVideoSource, "__init__", init)
    got, failures = _read(clip, decoder="pyav", device="cpu")
    assert len(got) == CLIP_FRAMES
    assert failures == [(str(clip), f"decoding ended at frame {CLIP_FRAMES} of the {CLIP_FRAMES + 5} the file reports")]


def test_stopping_early_ends_the_pass_quietly(clip):
    with open_source(video=clip, decoder="pyav", device="cpu") as source:
        for frame in source:
            if frame.image_id == 5:
                break
        assert source.failures == []
    assert not [t for t in threading.enumerate() if t.name.startswith(f"reader:{clip}") and t.is_alive()]


def test_bad_files_and_missing_pieces_give_one_line_errors(tmp_path, monkeypatch):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(AlphaPoseTrtError, match=r"notes.mp4: cannot be opened as a video \(Invalid data") as info:
        open_source(video=text, decoder="pyav", device="cpu")
    assert "\n" not in str(info.value)
    still = tmp_path / "still.png"
    cv2.imwrite(str(still), np.zeros((8, 8, 3), np.uint8))
    audio = tmp_path / "tone.wav"
    with av.open(str(audio), "w") as container:  # a file with an audio stream only
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    with pytest.raises(AlphaPoseTrtError, match="tone.wav: has no video stream"):
        open_source(video=audio, decoder="pyav", device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(AlphaPoseTrtError, match=r"--decoder pyav on cuda needs CUDA"):
            open_source(video=text, decoder="pyav", device="cuda")
    monkeypatch.setitem(sys.modules, "av", None)  # import fails as when not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'alphapose-trt\[pyav\]'"):
        open_source(video=text, decoder="pyav", device="cpu")


def test_bench_times_pyav_decoding_alone_and_the_source(clip):
    """decode_fps: PyAV's bare decode loop (no copy, no conversion); source_fps: the source."""
    assert bench.decode_fps(clip, 7, "pyav") > 0
    assert bench.source_fps(clip, 7, "pyav", torch.device("cpu")) > 0


def write_turned(path: Path, degrees: int, size: tuple[int, int] = (64, 48)) -> Path:
    """3 frames of mp4v coded at `size` with a display rotation (as phones store portrait video);
    a white block in the coded frame's top-left corner shows which way frames are turned."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.set_display_rotation(degrees)
        image = np.zeros((height, width, 3), np.uint8)
        image[: height // 4, : width // 3] = 255
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("degrees, turns", [(90, 1), (180, 2), (-90, 3), (0, 0)])
def test_rotated_video_is_turned_upright_as_opencv_reads_it(tmp_path, degrees, turns):
    path = write_turned(tmp_path / f"turned{degrees}.mp4", degrees)
    assert sources.quarter_turns(path) == turns
    want, _ = _read(path)
    with open_source(video=path, decoder="pyav", device="cpu") as source:
        assert source.size == ((48, 64) if turns % 2 else (64, 48))
        got = list(source)
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert g.image.shape == w.image.shape == (*source.size[::-1], 3) and g.image.flags.c_contiguous
        assert np.abs(g.image.astype(np.int16) - w.image).mean() <= 1.5


def test_upright_turns_arrays_and_tensors_alike():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    for turns in range(4):
        turned = sources.upright(image, turns)
        np.testing.assert_array_equal(turned, np.rot90(image, turns))
        assert torch.equal(sources.upright(torch.from_numpy(image)[None], turns)[0], torch.from_numpy(turned))
    assert sources.turned_size((64, 48), 1) == (48, 64) and sources.turned_size((64, 48), 2) == (64, 48)
