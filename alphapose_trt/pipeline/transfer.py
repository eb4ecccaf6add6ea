"""Host <-> device copies that never make the host wait for queued GPU work.

Why: a blocking copy (`torch.tensor(..., device="cuda")`, `.cpu()`, `.tolist()`, `bool(t)`) waits
for every kernel queued before it. The fast pipeline keeps the next batches queued while the host
works on earlier ones, so a single such call per batch would drain the GPU and serialise host and
device. Everything here is asynchronous: small host data goes up with `to_device`, results come
back through `HostCopy` (pinned memory, an event to wait on only when the values are needed), and
frames go up through `FrameUploader` on a side stream that overlaps the copy with compute.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

UPLOAD_THREADS = 8  # host threads copying frames into pinned memory (the H100 host has 16 cores)
# Pinned staging buffers per frame size. Pinning a new one stalled a batch (47 MiB in 28 ms, H100
# host, the first batch of a benchmark stream, which queues several batches at once); with this
# many, a stage that finds them all in transfer waits for the oldest (one transfer, ~2.5 ms).
STAGING_BUFFERS = 3
# HostCopy.wait sleeps until the copy is done instead of spinning on a core (CUDA's default):
# the pipeline waits there ~2 ms per batch, a core the video decoder can use meanwhile. Frames/s
# moved within run-to-run noise (H100 host, 1080p mp4: +12 % in one run, -3 % in another) and
# the in-memory rate did not change; kept for the freed core.
BLOCKING_WAIT = True


def to_device(values: np.ndarray | Tensor | Sequence[float], device: torch.device,
              dtype: torch.dtype | None = None) -> Tensor:
    """Small host values on `device` without waiting for queued kernels (no stream sync)."""
    tensor = torch.as_tensor(values, dtype=dtype)
    return tensor.to(device, non_blocking=device.type == "cuda")


@dataclass
class HostCopy:
    """Device tensors on their way into pinned host memory; `wait()` hands them over."""

    tensors: list[Tensor]
    ready: torch.cuda.Event | None

    @classmethod
    def start(cls, tensors: Sequence[Tensor]) -> HostCopy:
        if not tensors or tensors[0].device.type != "cuda":
            return cls(list(tensors), None)
        host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True).copy_(t, non_blocking=True) for t in tensors]
        ready = torch.cuda.Event(blocking=BLOCKING_WAIT)
        ready.record()
        return cls(host, ready)

    def wait(self) -> list[Tensor]:
        """The host tensors, once the copies (and the kernels queued before them) are done."""
        if self.ready is not None:
            self.ready.synchronize()
        return self.tensors


def host_image(image: np.ndarray | Tensor) -> np.ndarray:
    """An (H, W, 3) frame as a host array. Frames from PyAV or NVDEC on CUDA are device tensors;
    this copy waits for the GPU, so only rendering and the reference path use it, never the fast
    path."""
    return image.cpu().numpy() if isinstance(image, Tensor) else image


@dataclass
class StackedFrames:
    """A batch with nothing to transfer: on a CPU device, or made of frames already on the GPU
    (then `stacked` fires when the stack has run, and the stream that `send()` runs on waits for
    that alone, not for everything queued on the stream that stacked them)."""

    batch: Tensor
    stacked: torch.cuda.Event | None = None

    def send(self) -> Tensor:
        if self.stacked is not None:
            stream = torch.cuda.current_stream(self.batch.device)
            stream.wait_event(self.stacked)
            self.batch.record_stream(stream)
        return self.batch


class StagedFrames:
    """Frames being copied into pinned memory by worker threads; `send()` puts them on the GPU."""

    def __init__(self, uploader: FrameUploader, buffer: Tensor, sent: torch.cuda.Event, copies: list[Future]):
        self._uploader, self._buffer, self._sent, self._copies = uploader, buffer, sent, copies

    def send(self) -> Tensor:
        """The (B, 3, H, W) uint8 batch on the device, once the host copies are done; the
        transfer itself runs on the side stream and the compute stream waits for it on the GPU."""
        for copy in self._copies:
            copy.result()
        uploader, stream = self._uploader, self._uploader.stream
        compute = torch.cuda.current_stream(uploader.device)
        with torch.cuda.stream(stream):
            batch = self._buffer[: len(self._copies)].to(uploader.device, non_blocking=True)  # one copy per frame
            self._sent.record(stream)
        compute.wait_event(self._sent)
        batch.record_stream(compute)
        uploader.give_back(self._buffer, self._sent)
        return batch.permute(0, 3, 1, 2)


class FrameUploader:
    """Same-size HxWx3 uint8 frames -> a (B, 3, H, W) uint8 batch on the device.

    On CUDA each frame is copied once, by a pool of threads (np.copyto releases the GIL and a
    1080p frame is 6 MB), into a reused pinned staging buffer; `stage` only starts those copies,
    so the caller can do other host work meanwhile. A batch with fewer frames (a stream's last)
    uses the first rows of the same buffers, so the next stream does not pin new ones. The
    transfer then runs on a side stream, overlapping the kernels of earlier batches.
    `record_stream` tells the caching allocator the batch is read on the compute stream, so its
    memory is not reused before those reads are done.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._free: list[tuple[Tensor, torch.cuda.Event]] = []  # staging buffers of the latest shape
        self._shape: tuple[int, ...] | None = None  # (frames, H, W, 3): the most frames a batch of this size had
        self._buffers = 0  # staging buffers made for that shape
        self._copier = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="upload")

    def __call__(self, frames: Sequence[np.ndarray]) -> Tensor:
        return self.stage(frames).send()

    def stage(self, frames: Sequence[np.ndarray | Tensor]) -> StagedFrames | StackedFrames:
        """Start copying the frames into pinned memory (on a CPU device: just stack them).
        Tensor frames (from PyAV or NVDEC on CUDA) are stacked where they are, on the compute
        stream; `record_stream` keeps their memory (allocated on the decoder's stream) until
        that stack has run."""
        if isinstance(frames[0], Tensor):
            batch = torch.stack([f.to(self.device) for f in frames])
            if self.stream is None:
                return StackedFrames(batch.permute(0, 3, 1, 2))
            compute = torch.cuda.current_stream(self.device)
            for frame in frames:
                frame.record_stream(compute)
            stacked = torch.cuda.Event()
            stacked.record(compute)
            return StackedFrames(batch.permute(0, 3, 1, 2), stacked)
        if self.stream is None:
            return StackedFrames(torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2))
        shape = (len(frames), *frames[0].shape)
        if self._shape is None or shape[1:] != self._shape[1:] or shape[0] > self._shape[0]:
            self._free.clear()  # a new frame size (image folders) or more frames: don't hoard pinned memory
            self._shape, self._buffers = shape, 0
        if self._free and (self._buffers >= STAGING_BUFFERS or self._free[0][1].query()):
            buffer, sent = self._free.pop(0)  # the oldest: its transfer is done, or soon is
            sent.synchronize()
        else:  # all in transfer: one more buffer, up to STAGING_BUFFERS
            buffer, sent = torch.empty(self._shape, dtype=torch.uint8, pin_memory=True), torch.cuda.Event()
            self._buffers += 1
        staging = buffer.numpy()
        copies = [self._copier.submit(np.copyto, staging[i], frame) for i, frame in enumerate(frames)]
        return StagedFrames(self, buffer, sent, copies)

    def give_back(self, buffer: Tensor, sent: torch.cuda.Event) -> None:
        """Return a staging buffer whose transfer is queued (reused once `sent` has fired)."""
        self._free.append((buffer, sent))
