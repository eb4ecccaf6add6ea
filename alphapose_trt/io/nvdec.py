"""Video files decoded on the GPU's own decoder engines (NVDEC), frames kept on the device.

Why: with OpenCV a 1080p frame (6 MB) is decoded on the host, then crosses the interpreter, a
conversion pool, pinned memory and PCIe, and the reader shares the interpreter with the thread
that feeds the GPU. NVDEC decodes beside the GPU's compute units, frames never leave the device,
and the host makes one call per batch of frames, so the host's cores stay free. The decoder
sessions run in a child process (`decode_process`): in ours, the decoder library holds the GIL
for part of each call, and three sessions decoded ~470 frames/s and fed the compiled pipeline at
~320; in the child they decode ~1,870 frames/s and feed it at 525-560 on the lent H100 host, as
fast as OpenCV there (560-600), after a start-up of a few seconds per video (benchmarks/README.md,
sessions 5-7). OpenCV stays the default. It goes
through NVIDIA's PyNvVideoCodec (`pip install 'alphapose-trt[nvdec]'`), which brings its own
demuxer (FFmpeg's) and needs the driver's NVDEC library (libnvcuvid).

Colours: NVDEC hands out NV12, converted here with OpenCV's own BT.601 formula
(cv2.COLOR_YUV2RGB_NV12), so frames match the OpenCV source within about one level (its decoder
upsamples chroma differently). NVDEC's own RGB output uses another matrix: ~5 levels off on
average, up to 36 (benchmarks/h100-2026-11-27-session5/nvdec_probe.txt). Frames are turned
upright by the file's display rotation, as OpenCV's reader does.
"""

from __future__ import annotations

import threading
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from alphapose_trt.errors import AlphaPoseTrtError, one_line, require
from alphapose_trt.io.decode_process import DecodeProcess, Stretch, StretchFailed
from alphapose_trt.io.sources import Source, _done, _PendingFrame, quarter_turns, turned_size
from alphapose_trt.io.yuv import nv12_to_rgb_fused, rgb_on

DECODE_BATCH = 8  # frames per decoder call
# Decoders working at once on different stretches of one file. One decoder session gave 260-710
# 1080p frames/s on the H100, which has 7 NVDEC engines; 2-4 sessions gave 600-1,240 together on
# one machine (benchmarks/h100-2026-11-27-session5/nvdec_probe3.txt); 3 in the decoding process
# fed our source ~1,870 frames/s (mp4v; benchmarks/h100-2026-11-27-session7, pipeline-nvdec-process-*).
NVDEC_SESSIONS = 3
# A stretch runs from a key frame to a later one, at least STRETCH_FRAMES long, so a session's
# seek decodes nothing extra, and as long as the batches a session decodes ahead of its turn
# (decode_process.SLOTS_PER_SESSION x DECODE_BATCH), so sessions overlap.
STRETCH_FRAMES = 32


def plan_stretches(count: int, key_frames: Sequence[int], sessions: int) -> list[tuple[int, int]]:
    """[start, stop) frame ranges covering 0..count, each starting at a key frame and at least
    STRETCH_FRAMES long (a shorter tail joins the stretch before it); one stretch for a single
    session or a short file. Memory does not depend on a stretch's length: sessions decode into
    a fixed ring."""
    keys = sorted({k for k in key_frames if 0 < k < count})
    if sessions <= 1 or count < 2 * STRETCH_FRAMES:
        return [(0, count)]
    bounds = [0]
    for key in keys:
        if key - bounds[-1] >= STRETCH_FRAMES:
            bounds.append(key)
    if count - bounds[-1] < STRETCH_FRAMES and len(bounds) > 1:
        bounds.pop()
    return list(zip(bounds, [*bounds[1:], count]))


class NvdecSession:
    """One PyNvVideoCodec decoder on `stream`: a session of the decoding process (`decode_process`)."""

    def __init__(self, path: str, device: torch.device, stream: torch.cuda.Stream | None):
        self._decoder = _open_decoder(path, device, stream)

    def batches(self, start: int, end: int, read_on: bool) -> Iterator[list[Tensor]]:
        """Frames start..end (read_on: on to the real end) as NV12 views of the decoder's buffers."""
        if start:
            self._decoder.seek_to_index(start)
        position, step = start, DECODE_BATCH
        while position < end or read_on:
            # up to the planned end exactly (asking past the last frame makes the decoder warn)
            want = min(step, end - position) if position < end else step
            try:
                decoded = self._decoder.get_batch_frames(want)
            except Exception:
                if want == 1:
                    raise
                # A request that reaches frames the decoder cannot seek to fails whole (the last
                # two frames of an all-intra MPEG-4 file, H100): back to where it was, then one
                # frame at a time.
                self._decoder.seek_to_index(position)
                step = 1
                continue
            if not decoded:
                return
            formats = {str(f.format) for f in decoded}
            if formats != {"Pixel_Format.NV12"}:
                raise AlphaPoseTrtError(f"NVDEC gave {', '.join(sorted(formats))} frames; only 8-bit 4:2:0 "
                                        "video (NV12) is supported, use --decoder opencv")
            yield [torch.from_dlpack(f) for f in decoded]
            position += len(decoded)


def _open_decoder(path: str | Path, device: torch.device, stream: torch.cuda.Stream | None, scan: bool = False):
    nvc = require("PyNvVideoCodec", "nvdec", "--decoder nvdec")
    try:
        return nvc.SimpleDecoder(
            str(path), gpu_id=device.index or 0, use_device_memory=True,
            cuda_stream=stream.cuda_stream if stream is not None else 0,
            need_scanned_stream_metadata=scan, output_color_type=nvc.OutputColorType.NATIVE)
    except Exception as exc:  # the library raises its own types, or RuntimeError
        raise AlphaPoseTrtError(f"{path}: NVDEC cannot open this video ({one_line(exc)})") from None


class NvdecVideoSource(Source):
    """A video file decoded by NVDEC on `device`: `Frame.image` is an (H, W, 3) uint8 RGB CUDA tensor.

    The file is cut into stretches at key frames (`plan_stretches`); up to NVDEC_SESSIONS
    decoder sessions in a child process (`decode_process.DecodeProcess`, started with the
    source so its seconds of start-up overlap the caller's) decode the next stretches at once
    into a ring of NV12 batches shared on the device. The reader thread converts them to RGB
    batch by batch on its own stream, in frame order, waiting for each conversion, so frames
    are complete when yielded, on any stream. Where the frame count comes from the header
    rather than the scan (one session), the last stretch reads on to the real end. Frames a
    stretch could not deliver, and a file shorter than its header says, are recorded in
    `failures` with their numbers.
    """

    def __init__(self, path: Path, device: torch.device | str, queue_size: int):
        super().__init__(str(path), queue_size)
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise AlphaPoseTrtError(f"{path}: --decoder nvdec needs a CUDA device "
                                    f"({self.device} asked, CUDA {'' if torch.cuda.is_available() else 'not '}available)")
        self._path = path
        scan = NVDEC_SESSIONS > 1  # key frames (and an exact count) from one pass over the packets
        decoder = _open_decoder(path, self.device, None, scan)  # fails here, naming the file
        # high priority: the few conversion kernels go ahead of queued pipeline work
        self._stream = torch.cuda.Stream(self.device, priority=-1)
        meta = decoder.get_stream_metadata()
        self.fps = float(meta.average_fps) if meta.average_fps and meta.average_fps > 0 else None
        self._coded = (int(meta.width), int(meta.height))  # the decoder's frames
        self._turns = quarter_turns(path)  # turned upright as OpenCV does
        self.size = turned_size(self._coded, self._turns)
        self._count = int(meta.num_frames) if meta.num_frames and meta.num_frames > 0 else None
        keys: list[int] = []
        exact = False  # a header's count may be off (MPEG-4): the last stretch then reads on
        if scan:
            scanned = decoder.get_scanned_stream_metadata()
            exact = scanned.num_frames > 0
            self._count = int(scanned.num_frames) or self._count
            keys = list(scanned.key_frame_indices)
        planned = plan_stretches(self._count, keys, NVDEC_SESSIONS) if self._count else [(0, 0)]
        self.stretches = [Stretch(start, end, read_on=i == len(planned) - 1 and not exact)
                          for i, (start, end) in enumerate(planned)]
        self._process: DecodeProcess | None = self._start()

    @property
    def length(self) -> int | None:
        return self._count

    def _start(self) -> DecodeProcess:
        width, height = self._coded
        return DecodeProcess(self.name, NvdecSession, str(self._path), self.stretches, NVDEC_SESSIONS,
                             (height * 3 // 2, width), DECODE_BATCH, self.device)

    def warm_up(self) -> None:
        """Wait for the decoding process to open its sessions, and build the conversion, so that
        a timed pass measures the steady reading rate (start-up: seconds, once per source)."""
        if self._process is None:
            self._process = self._start()
        self._process.wait_ready()
        rgb_on(self._stream, nv12_to_rgb_fused, self._process.ring[0, 0])

    def close(self) -> None:
        super().close()
        if self._process is not None:
            self._process.close()
            self._process = None

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        process, self._process = self._process or self._start(), None  # this pass's; the next starts its own
        frame_number = 0
        try:
            process.wait_ready(stop)
            for j, stretch in enumerate(process.stretches):
                if frame_number < stretch.start:
                    self._record_failure(f"{self.name} frames {frame_number}-{stretch.start - 1}",
                                         "NVDEC delivered none of them")
                    frame_number = stretch.start
                try:
                    for slot, nv12 in process.batches(j, stop):
                        rgb = rgb_on(self._stream, nv12_to_rgb_fused, nv12, self._turns)
                        process.release(j, slot)  # converted: the slot can be decoded into again
                        for image in rgb:
                            yield _PendingFrame(frame_number, self._path, _done(image))
                            frame_number += 1
                except StretchFailed as failed:
                    # e.g. PyNvVideoCodec cannot reach the last two frames of an all-intra MPEG-4
                    # file (H100, benchmarks/h100-2026-11-27-session9/nvdec_tail.txt)
                    last = " on" if stretch.read_on else f"-{stretch.end - 1}"
                    self._record_failure(f"{self.name} frames {failed.position}{last}", failed.reason)
                    if stretch.read_on:
                        return
                    frame_number = stretch.end
        finally:
            process.close()
        if self._count is not None and frame_number < self._count and not stop.is_set():
            self._record_failure(self.name, f"decoding ended at frame {frame_number} of the {self._count} "
                                            "the file reports")

