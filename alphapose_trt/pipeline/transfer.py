"""Host <-> device copies that never make the host wait for queued GPU work.

Why: a blocking copy (`torch.tensor(..., device="cuda")`, `.cpu()`, `.tolist()`, `bool(t)`) waits
for every kernel queued before it. The fast pipeline keeps the next batches queued while the host
works on earlier ones, so a single such call per batch would drain the GPU and serialise host and
device. Everything here is asynchronous: small host data goes up with `to_device`, results come
back through `HostCopy` (pinned memory, an event to wait on only when the values are needed), and
frames go up through `FrameUploader` on a side stream that overlaps the copy with compute.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

UPLOAD_THREADS = 8  # host threads copying frames into pinned memory (the H100 host has 16 cores)
STAGING_SLOTS = 2  # pinned buffers per frame shape: one filling while the other is in transfer


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
        ready = torch.cuda.Event()
        ready.record()
        return cls(host, ready)

    def wait(self) -> list[Tensor]:
        """The host tensors, once the copies (and the kernels queued before them) are done."""
        if self.ready is not None:
            self.ready.synchronize()
        return self.tensors


class FrameUploader:
    """Same-size HxWx3 uint8 frames -> a (B, 3, H, W) uint8 batch on the device.

    On CUDA each frame is copied once, by a pool of threads (np.copyto releases the GIL and a
    1080p frame is 6 MB), into a reused pinned staging buffer; the transfer then runs on a side
    stream so it overlaps the kernels of earlier batches, and the compute stream waits for it
    only on the GPU. `record_stream` tells the caching allocator the batch is read on the compute
    stream, so its memory is not reused before those reads are done.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._staging: dict[tuple, list[tuple[Tensor, torch.cuda.Event]]] = {}
        self._stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._copier = ThreadPoolExecutor(max_workers=UPLOAD_THREADS, thread_name_prefix="upload")

    def __call__(self, frames: Sequence[np.ndarray]) -> Tensor:
        if self._stream is None:
            return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
        shape = (len(frames), *frames[0].shape)
        slots = self._staging.setdefault(shape, [])
        if len(slots) < STAGING_SLOTS:
            slots.append((torch.empty(shape, dtype=torch.uint8, pin_memory=True), torch.cuda.Event()))
        buffer, sent = slots.pop(0)
        sent.synchronize()  # its previous transfer is done (the side stream runs only copies)
        staging = buffer.numpy()
        list(self._copier.map(lambda i: np.copyto(staging[i], frames[i]), range(len(frames))))
        compute = torch.cuda.current_stream(self.device)
        with torch.cuda.stream(self._stream):
            batch = buffer.to(self.device, non_blocking=True)
            sent.record(self._stream)
        compute.wait_event(sent)
        batch.record_stream(compute)
        slots.append((buffer, sent))
        return batch.permute(0, 3, 1, 2)

    def close(self) -> None:
        self._copier.shutdown(wait=False)
