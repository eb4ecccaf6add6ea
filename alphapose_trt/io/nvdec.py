"""Video files decoded on the GPU's own decoder engines (NVDEC), frames kept on the device.

Why: with OpenCV a 1080p frame (6 MB) is decoded on the host, then crosses the interpreter, a
conversion pool, pinned memory and PCIe, and the reader shares the interpreter with the thread
that feeds the GPU. NVDEC decodes beside the GPU's compute units, frames never leave the device,
and the host makes one call per batch of frames, so the host's cores stay free. Measured on the
lent H100 host it is not faster: ~470 frames/s decoded, ~320 fed to the compiled pipeline, against
~530 through OpenCV (benchmarks/README.md, session 5), so OpenCV stays the default. It goes
through NVIDIA's PyNvVideoCodec (`pip install 'alphapose-trt[nvdec]'`), which brings its own
demuxer (FFmpeg's) and needs the driver's NVDEC library (libnvcuvid).

Colours: NVDEC hands out NV12, converted here with OpenCV's own BT.601 formula
(cv2.COLOR_YUV2RGB_NV12), so frames match the OpenCV source within about one level (its decoder
upsamples chroma differently). NVDEC's own RGB output uses another matrix: ~5 levels off on
average, up to 36 (benchmarks/h100-2026-11-27-session5/nvdec_probe.txt).
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import Tensor

from alphapose_trt.errors import AlphaPoseTrtError, one_line, require
from alphapose_trt.io.sources import Source, _PendingFrame
from alphapose_trt.pipeline.fusion import fused

# OpenCV's fixed-point ITU-R BT.601 coefficients for limited-range YUV -> RGB (imgproc
# color_yuv): value = (max(Y - 16, 0) * CY + C(U, V) + 2^19) >> 20, clamped to 0..255.
_SHIFT = 20
_CY, _CVR, _CVG, _CUG, _CUB = 1220542, 1673527, -852492, -409993, 2116026
DECODE_BATCH = 8  # frames per decoder call
# Decoders working at once on different stretches of one file. One decoder session gave 260-710
# 1080p frames/s on the H100, which has 7 NVDEC engines; 2-4 sessions gave 600-1,240 together on
# one machine (benchmarks/h100-2026-11-27-session5/nvdec_probe3.txt), and our source went from
# ~250-320 to ~470 frames/s with 3 (nvdec_study_3_sessions.txt).
NVDEC_SESSIONS = 3
# A stretch runs from a key frame to a later one, at least STRETCH_FRAMES long, so a session's
# seek decodes nothing extra. Files with key frames further apart than MAX_STRETCH_FRAMES decode
# on one session: the frames a stretch holds until its turn (3 MB each at 1080p) stay bounded.
STRETCH_FRAMES = 32
MAX_STRETCH_FRAMES = 128


def nv12_to_rgb(nv12: Tensor) -> Tensor:
    """(..., H * 3 / 2, W) uint8 NV12 -> (..., H, W, 3) uint8 RGB, bit-exact to cv2.cvtColor(
    COLOR_YUV2RGB_NV12) (nearest chroma upsampling, integer arithmetic), on any device.

    Pixels are taken in 2x2 blocks, (..., H/2, 2, W/2, 2), so each block's one chroma sample
    broadcasts instead of being upsampled into a full-size copy."""
    rows, width = nv12.shape[-2:]
    if rows % 3 or width % 2:
        raise ValueError(f"not an NV12 image: {rows} x {width} (need rows = 3/2 x an even height, and an even width)")
    height, lead = rows * 2 // 3, nv12.shape[:-2]
    luma = (nv12[..., :height, :].int() - 16).clamp_(min=0).mul_(_CY).view(*lead, height // 2, 2, width // 2, 2)
    chroma = nv12[..., height:, :].int().view(*lead, height // 2, 1, width // 2, 2) - 128  # [U, V] per block
    u, v = chroma[..., :1], chroma[..., 1:]
    half = 1 << (_SHIFT - 1)
    planes = [((luma + c) >> _SHIFT).clamp_(0, 255) for c in (_CVR * v + half, _CVG * v + _CUG * u + half, _CUB * u + half)]
    return torch.stack(planes, dim=-1).to(torch.uint8).view(*lead, height, width, 3)


# Compiled for the source (eager, a batch of 8 1080p frames took 2.05 ms of GPU time on the H100
# beside the pipeline's ~8 ms), the frame count dynamic so a short last batch does not rebuild it.
_nv12_to_rgb_fused = fused(nv12_to_rgb, row_args=(0,))


def plan_stretches(count: int, key_frames: Sequence[int], sessions: int) -> list[tuple[int, int]]:
    """[start, stop) frame ranges covering 0..count, each starting at a key frame and at least
    STRETCH_FRAMES long (a shorter tail joins the stretch before it); one stretch for a single
    session, a short file, or key frames more than MAX_STRETCH_FRAMES apart."""
    keys = sorted({k for k in key_frames if 0 < k < count})
    gaps = [b - a for a, b in zip([0, *keys], [*keys, count])]
    if sessions <= 1 or count < 2 * STRETCH_FRAMES or max(gaps) > MAX_STRETCH_FRAMES:
        return [(0, count)]
    bounds = [0]
    for key in keys:
        if key - bounds[-1] >= STRETCH_FRAMES:
            bounds.append(key)
    if count - bounds[-1] < STRETCH_FRAMES and len(bounds) > 1:
        bounds.pop()
    return list(zip(bounds, [*bounds[1:], count]))


class NvdecVideoSource(Source):
    """A video file decoded by NVDEC on `device`: `Frame.image` is an (H, W, 3) uint8 RGB CUDA tensor.

    The file is cut into stretches at key frames (`plan_stretches`); up to NVDEC_SESSIONS
    decoders, each on a worker thread and CUDA stream of its own, decode the next stretches at
    once into NV12 copies (the decoder reuses its buffers), and the reader thread converts them
    to RGB batch by batch on its own stream, in frame order, waiting for each conversion, so
    frames are complete when yielded, on any stream. Where the frame count comes from the header
    rather than the scan (one session), the last stretch reads on to the real end.
    Frames a stretch could not deliver, and a file shorter than its header says, are recorded
    in `failures` with their numbers.
    """

    def __init__(self, path: Path, device: torch.device | str, queue_size: int):
        super().__init__(str(path), queue_size)
        self.device = torch.device(device)
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise AlphaPoseTrtError(f"{path}: --decoder nvdec needs a CUDA device "
                                    f"({self.device} asked, CUDA {'' if torch.cuda.is_available() else 'not '}available)")
        self._path = path
        self._nvc = require("PyNvVideoCodec", "nvdec", "--decoder nvdec")
        # high priority: the few conversion kernels go ahead of queued pipeline work
        self._stream = torch.cuda.Stream(self.device, priority=-1)
        scan = NVDEC_SESSIONS > 1  # key frames (and an exact count) from one pass over the packets
        decoder = self._open(scan)  # fails here, naming the file, for what NVDEC cannot read
        meta = decoder.get_stream_metadata()
        self.fps = float(meta.average_fps) if meta.average_fps and meta.average_fps > 0 else None
        self.size = (int(meta.width), int(meta.height))
        self._count = int(meta.num_frames) if meta.num_frames and meta.num_frames > 0 else None
        keys: list[int] = []
        self._exact = False  # a header's count may be off (MPEG-4): the last stretch then reads on
        if scan:
            scanned = decoder.get_scanned_stream_metadata()
            self._exact = scanned.num_frames > 0
            self._count = int(scanned.num_frames) or self._count
            keys = list(scanned.key_frame_indices)
        self.stretches = plan_stretches(self._count, keys, NVDEC_SESSIONS) if self._count else [(0, 0)]

    @property
    def length(self) -> int | None:
        return self._count

    def _open(self, scan: bool = False, stream: torch.cuda.Stream | None = None):
        nvc = self._nvc
        try:
            return nvc.SimpleDecoder(
                str(self._path), gpu_id=self.device.index or 0, use_device_memory=True,
                cuda_stream=stream.cuda_stream if stream is not None else 0,
                need_scanned_stream_metadata=scan, output_color_type=nvc.OutputColorType.NATIVE)
        except Exception as exc:  # the library raises its own types, or RuntimeError
            raise AlphaPoseTrtError(f"{self.name}: NVDEC cannot open this video ({one_line(exc)})") from None

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        count = min(NVDEC_SESSIONS, len(self.stretches))
        streams = [torch.cuda.Stream(self.device, priority=-1) for _ in range(count)]
        sessions = [(self._open(stream=s), s) for s in streams]
        workers = [ThreadPoolExecutor(1, thread_name_prefix=f"nvdec{k}") for k in range(count)]
        planned = iter(enumerate(self.stretches))
        pending: deque = deque()

        def submit() -> None:
            for j, (start, end) in planned:
                k = j % count
                read_on = j == len(self.stretches) - 1 and not self._exact
                pending.append((start, workers[k].submit(self._decode, sessions[k], start, end, read_on)))
                return

        try:
            for _ in range(count + 1):
                submit()
            frame_number = 0
            while pending and not stop.is_set():
                start, batches = pending.popleft()
                batches = batches.result()
                submit()
                if frame_number < start:
                    self._record_failure(f"{self.name} frames {frame_number}-{start - 1}", "NVDEC delivered none of them")
                    frame_number = start
                for nv12 in batches:
                    with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
                        rgb = _nv12_to_rgb_fused(nv12)
                    self._stream.synchronize()
                    for image in rgb:
                        yield _PendingFrame(frame_number, self._path, _done(image))
                        frame_number += 1
        finally:
            for worker in workers:
                worker.shutdown(wait=True, cancel_futures=True)
        if self._count is not None and frame_number < self._count and not stop.is_set():
            self._record_failure(self.name, f"decoding ended at frame {frame_number} of the {self._count} "
                                            "the file reports")

    def _decode(self, session, start: int, end: int, read_on: bool) -> list[Tensor]:
        """Frames start..end (read_on: on to the real end) as NV12 copies, in batches."""
        decoder, stream = session
        batches, position = [], start
        with torch.cuda.device(self.device), torch.cuda.stream(stream):
            try:
                if start:
                    decoder.seek_to_index(start)
                while position < end or read_on:
                    # up to the planned end exactly (asking past the last frame makes the decoder warn)
                    decoded = decoder.get_batch_frames(min(DECODE_BATCH, end - position) if position < end else DECODE_BATCH)
                    if not decoded:
                        break
                    formats = {str(f.format) for f in decoded}
                    if formats != {"Pixel_Format.NV12"}:
                        raise AlphaPoseTrtError(f"{self.name}: NVDEC gave {', '.join(sorted(formats))} frames; "
                                                "only 8-bit 4:2:0 video (NV12) is supported, use --decoder opencv")
                    batches.append(torch.stack([torch.from_dlpack(f) for f in decoded]))
                    stream.synchronize()  # copied before the decoder reuses its buffers
                    position += len(decoded)
            except AlphaPoseTrtError:
                raise
            except Exception as exc:
                raise AlphaPoseTrtError(f"{self.name}: NVDEC failed at frame {position} ({one_line(exc)})") from None
        return batches


def _done(image: Tensor) -> Future:
    future: Future = Future()
    future.set_result(image)
    return future
