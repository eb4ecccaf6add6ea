"""Video files decoded by FFmpeg through PyAV, the colour conversion off the decoding thread.

Why: OpenCV's reader returns BGR, converted from the decoder's YUV 4:2:0 by FFmpeg on the one
thread that also decodes: `retrieve()` took 1.2-1.4 ms of the 1.4-1.7 ms per 1080p frame on the
H100 host, capping that source near 600-800 frames/s however fast the pipeline behind it is
(benchmarks/README.md, session 7). PyAV hands out the decoded planes themselves: FFmpeg decodes on
its own threads (frame threading) without the GIL, the reader thread only copies the planes (half
an RGB frame's bytes), and the conversion runs elsewhere, bit-exact to cv2.cvtColor(
COLOR_YUV2RGB_I420), the BT.601 formula OpenCV's reader uses too:
- on a CUDA device, on the GPU, one fused kernel per batch of frames (`yuv.i420_to_rgb`): frames
  are then (H, W, 3) uint8 CUDA tensors, as from NVDEC, and only YUV crosses PCIe;
- otherwise with cv2 on the conversion pool (numpy frames, as from the OpenCV source).
Video that is not 8-bit 4:2:0 (yuv420p) with even sides is converted to RGB by FFmpeg, on the
pool. Frames are turned upright by the file's display rotation, as OpenCV's reader does.
`pip install 'alphapose-trt[pyav]'` brings PyAV, with its own FFmpeg.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from concurrent.futures import Executor
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import torch

from alphapose_trt.errors import AlphaPoseTrtError, one_line, require
from alphapose_trt.io.sources import Source, _done, _PendingFrame, quarter_turns, turned_size, upright
from alphapose_trt.io.yuv import i420_to_rgb_fused, rgb_on

DECODE_BATCH = 8  # frames per upload and GPU conversion
_I420 = "yuv420p"


def open_container(path: Path) -> Any:
    """The file opened by PyAV, failing with one line that names it."""
    av = require("av", "pyav", "--decoder pyav")
    try:
        container = av.open(str(path))
    except av.error.FFmpegError as exc:
        raise AlphaPoseTrtError(f"{path}: cannot be opened as a video ({exc.strerror or one_line(exc)})") from None
    if not container.streams.video:
        container.close()
        raise AlphaPoseTrtError(f"{path}: has no video stream")
    return container


def copy_i420(frame: Any, out: np.ndarray) -> np.ndarray:
    """A yuv420p frame's Y, U and V planes into `out` ((H * 3 / 2, W) uint8, cv2's I420 layout),
    dropping the padding at the end of each plane's rows; returns `out`."""
    height, width = frame.height, frame.width
    flat, offset = out.reshape(-1), 0
    for plane, (rows, cols) in zip(frame.planes, ((height, width), *[(height // 2, width // 2)] * 2)):
        flat[offset : offset + rows * cols].reshape(rows, cols)[:] = \
            np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)[:rows, :cols]
        offset += rows * cols
    return out


class PyAVVideoSource(Source):
    """A video file decoded by FFmpeg (PyAV) on the host, converted to RGB on `device` (default:
    the CUDA device when present).

    On CUDA `Frame.image` is an (H, W, 3) uint8 RGB CUDA tensor: the reader thread copies
    DECODE_BATCH frames' planes into pinned memory, uploads them and converts them on its own
    stream, waiting for that before yielding them, so frames are complete on any stream. On
    the CPU it is a numpy array. A packet that fails to decode is recorded as that frame and
    skipped; after `max_consecutive_failures` in a row, or a read error, the pass stops
    (recorded too), as does a file that ends before the frame count it reports.
    """

    def __init__(self, path: Path, device: torch.device | str | None, queue_size: int, max_consecutive_failures: int):
        super().__init__(str(path), queue_size)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise AlphaPoseTrtError(f"{path}: --decoder pyav on {self.device} needs CUDA, which is not available")
        self._path = path
        self._max_failures = max_consecutive_failures
        container = open_container(path)
        try:
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            self.fps = float(rate) if rate else None
            width, height = stream.codec_context.width, stream.codec_context.height
            self._coded = (width, height) if width > 0 and height > 0 else None  # the decoder's frames
            self._count = stream.frames or None
            pixels = stream.codec_context.format
            self._i420 = (self._coded is not None and pixels is not None and pixels.name == _I420
                          and width % 2 == 0 and height % 2 == 0)
        finally:
            container.close()
        self._turns = quarter_turns(path)  # turned upright as OpenCV does
        self.size = turned_size(self._coded, self._turns)
        # high priority: the conversion goes ahead of queued pipeline work
        self._stream = torch.cuda.Stream(self.device, priority=-1) if self.device.type == "cuda" else None

    @property
    def length(self) -> int | None:
        return self._count

    def warm_up(self) -> None:
        """Build the GPU conversion now (a torch.compile, seconds, once per process), so that a
        timed pass measures the steady reading rate."""
        if self._stream is not None and self._i420:
            width, height = self._coded
            planes = torch.zeros(DECODE_BATCH, height * 3 // 2, width, dtype=torch.uint8, device=self.device)
            rgb_on(self._stream, i420_to_rgb_fused, planes)

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        container = open_container(self._path)
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # FFmpeg's frame (and slice) threads, outside the GIL
            frames = self._decoded(container, stream, stop)
            if self._stream is not None and self._i420:
                yield from self._on_device(frames)
            else:
                for number, frame in frames:
                    yield _PendingFrame(number, self._path, pool.submit(self._host_rgb, frame))
        finally:
            container.close()

    def _decoded(self, container: Any, stream: Any, stop: threading.Event) -> Iterator[tuple[int, Any]]:
        """(frame number, decoded frame) in order, failures recorded where they happen.

        A packet that fails to decode keeps its frame number (its position among the packets):
        the decoder hands frames out some packets late (its threads, reordering), so frames
        decoded after the failure may still come from packets before it. Exact for video without
        reordered (B) frames; with them, the failure's number is its packet's position. A pass
        that stops on errors still collects the frames inside the decoder."""
        from av.error import FFmpegError

        packets = consecutive = 0
        failed: set[int] = set()  # frame numbers (packet positions) that will never come out
        numbers = (n for n in itertools.count() if n not in failed)  # zipped second: none taken in vain
        flush = False  # an early end: the demuxer's final empty packet will not flush the decoder
        for packet in _packets(container, stream, stop):
            if isinstance(packet, FFmpegError):
                self._record_failure(self.name, f"reading stopped after {packets} frames ({one_line(packet)})")
                flush = True
                break
            position, packets = packets, packets + (packet.size > 0)
            try:
                decoded = packet.decode()
            except FFmpegError as exc:
                failed.add(position)
                self._record_failure(f"{self.name} frame {position}", f"the frame could not be decoded ({one_line(exc)})")
                consecutive += 1
                if consecutive >= self._max_failures:
                    self._record_failure(self.name, f"stopped after {consecutive} unreadable frames in a row")
                    flush = True
                    break
                continue
            consecutive = 0 if decoded else consecutive
            yield from ((n, frame) for frame, n in zip(decoded, numbers))
        if flush:
            with contextlib.suppress(FFmpegError, EOFError):
                yield from ((n, frame) for frame, n in zip(stream.codec_context.decode(None), numbers))
        elif self._count is not None and packets < self._count and not stop.is_set():
            self._record_failure(self.name, f"decoding ended at frame {packets} of the {self._count} the file reports")

    def _i420_frame(self, frame: Any) -> Any:
        """The frame as yuv420p of the stream's size (FFmpeg converts the rare one that is not)."""
        width, height = self._coded
        if frame.format.name == _I420 and (frame.width, frame.height) == (width, height):
            return frame
        return frame.reformat(width=width, height=height, format=_I420)

    def _host_rgb(self, frame: Any) -> np.ndarray:
        """RGB uint8 (H, W, 3) on the host: cv2's I420 conversion, or FFmpeg's for other formats."""
        if not self._i420:
            return upright(frame.to_ndarray(format="rgb24"), self._turns)
        width, height = self._coded
        i420 = copy_i420(self._i420_frame(frame), np.empty((height * 3 // 2, width), np.uint8))
        return upright(cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420), self._turns)

    def _on_device(self, frames: Iterator[tuple[int, Any]]) -> Iterator[_PendingFrame]:
        """Batches of frames converted on the GPU, their planes copied by the reader thread. Why
        not on the pool: the source alone then read faster (1,531-1,783 against 1,109-1,264
        frames/s, H100 host), but the pipeline from the file slower (691-781 against 784-873), the
        pool's threads competing with the pipeline's (benchmarks/h100-2026-11-27-session8)."""
        width, height = self._coded
        pinned = torch.empty((DECODE_BATCH, height * 3 // 2, width), dtype=torch.uint8, pin_memory=True)
        staging, numbers = pinned.numpy(), []
        for number, frame in frames:
            copy_i420(self._i420_frame(frame), staging[len(numbers)])
            numbers.append(number)
            if len(numbers) == DECODE_BATCH:
                yield from self._converted(pinned, numbers)
                numbers = []
        if numbers:
            yield from self._converted(pinned, numbers)

    def _converted(self, pinned: torch.Tensor, numbers: list[int]) -> Iterator[_PendingFrame]:
        rgb = rgb_on(self._stream, i420_to_rgb_fused, pinned[: len(numbers)], self._turns)  # the buffer is free again
        for number, image in zip(numbers, rgb):
            yield _PendingFrame(number, self._path, _done(image))


def _packets(container: Any, stream: Any, stop: threading.Event) -> Iterator[Any]:
    """The stream's packets (the last one empty: it flushes the decoder) until `stop`; a read
    error ends them, as their last item."""
    from av.error import FFmpegError

    demuxed = container.demux(stream)
    while not stop.is_set():
        try:
            yield next(demuxed)
        except StopIteration:
            return
        except FFmpegError as exc:
            yield exc
            return
