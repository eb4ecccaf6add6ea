"""Video decoding in a child process that writes frames into tensors it shares with us.

Why: PyNvVideoCodec's decoder calls hold our interpreter's GIL for part of their work. In the
pipeline's process, three decoder sessions reached ~470 frames/s together and slowed the
pipeline from ~1,000 to 430-550 frames/s in memory; in a process of their own they decoded
1,250-1,910 frames/s on the same H100 while the pipeline kept 830-1,010 (benchmarks/README.md,
sessions 5-7; beside the running pipeline they deliver ~540: the two processes' CUDA contexts
take turns on the GPU, which still beats ~320 in-process). Here the sessions run in one child process, each on a thread, and copy their
batches of frames into a ring of slots that the parent allocated and shares with the child
(CUDA IPC for device tensors, shared memory for host ones), so frames never leave the device.
Only slot numbers cross the process boundary: the child says which slot holds a batch, the
parent gives the slot back once it has read it.

Each session has its own slots and decodes its stretches of the file in order, so the parent,
which reads stretches in file order, always waits on a session that can make progress (no
deadlock), while the other sessions decode ahead into their free slots.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import types
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Iterator, Protocol, Sequence

import torch
import torch.multiprocessing as mp
from torch import Tensor

from alphapose_trt.errors import AlphaPoseTrtError, one_line

logger = logging.getLogger(__name__)

SLOTS_PER_SESSION = 4  # batches a session decodes ahead of the reader (4 x 8 1080p NV12 frames: 100 MB)
_POLL_S = 0.1  # how often a waiting parent checks its stop flag and the child's health
_START_TIMEOUT_S = 120.0  # a child that has not opened its decoders by then is reported stuck
_JOIN_TIMEOUT_S = 10.0
_REAPER_PREFIX = "reap:"  # names the threads that end closed children (wait_closed)


class BatchDecoder(Protocol):
    """One decoder session in the child, opened once and asked for stretches in order."""

    def batches(self, start: int, end: int, read_on: bool) -> Iterator[Sequence[Tensor]]:
        """Frames start..end (read_on: on past `end` to the real end of the file) as batches of
        at most `ring`'s batch size frames, each frame shaped like a ring frame. A batch may be
        views of the decoder's own buffers: it is copied before the next one is asked for."""


class DecoderFactory(Protocol):
    def __call__(self, path: str, device: torch.device, stream: torch.cuda.Stream | None) -> BatchDecoder: ...


@dataclass(frozen=True)
class Stretch:
    """Frames [start, end) of the file; read_on: the last stretch of a file whose frame count
    came from its header (possibly low), read on to the real end."""

    start: int
    end: int
    read_on: bool = False


class StretchFailed(AlphaPoseTrtError):
    """The decoder failed inside a stretch at frame `position`: the stretch ends there, and its
    session goes on with its next stretch (the caller records the frames it did not get)."""

    def __init__(self, message: str, position: int, reason: str) -> None:
        super().__init__(message)
        self.position, self.reason = position, reason


class DecodeProcess:
    """A child process decoding `stretches` of `path` with `sessions` decoders from `factory`
    (a picklable callable, imported by name in the child) into a shared ring.

    Started at construction, so its start-up (interpreter, torch, device, decoders: seconds)
    overlaps whatever the parent does next; `wait_ready` blocks until it is done. `batches(j)`
    yields stretch j's batches in order as tensor views into the ring, each valid until
    `release`d. One-line `AlphaPoseTrtError`s name `name` for what the child reports or a child
    that dies; a decoder that fails inside a stretch ends that stretch with `StretchFailed`.
    """

    def __init__(self, name: str, factory: DecoderFactory, path: str, stretches: Sequence[Stretch],
                 sessions: int, frame_shape: tuple[int, ...], batch: int, device: torch.device):
        self.name = name
        self.stretches = list(stretches)
        self.sessions = max(1, min(sessions, len(self.stretches)))
        # parent-owned, so the frames stay valid whatever happens to the child
        self.ring: Tensor | None = torch.empty((self.sessions, SLOTS_PER_SESSION, batch, *frame_shape),
                                               dtype=torch.uint8, device=device)
        if device.type == "cpu":
            self.ring.share_memory_()
        ctx = mp.get_context("spawn")  # CUDA cannot be used in a forked child
        self._inbox, child_out = ctx.Pipe(duplex=False)
        pairs = [ctx.Pipe(duplex=False) for _ in range(self.sessions)]
        self._free = [send for _, send in pairs]
        self._pending: list[list[tuple]] = [[] for _ in range(self.sessions)]
        self._ready: set[int] = set()
        self._reaper: threading.Thread | None = None  # ends the child once closed (close)
        # The ring goes over in a list that the child empties and the parent clears once it is
        # pickled, so no Process object's arguments hold it. Why: passed directly, it stayed
        # referenced after the child had ended, even with the DecodeProcess deleted, and every
        # CUDA run ended with "Producer process has been terminated before all shared CUDA tensors
        # released" (H100: gone with this handover, benchmarks/h100-2026-11-27-session9/ipc_probe.txt).
        handover = [self.ring]
        self._process = ctx.Process(
            target=_serve, name=f"decode:{name}", daemon=True,
            args=(factory, path, handover, self.stretches, child_out, [recv for recv, _ in pairs]))
        _start_without_main(self._process)
        handover.clear()
        child_out.close()  # the child holds the only write end: its exit shows up as EOF here
        for recv, _ in pairs:
            recv.close()

    def wait_ready(self, stop: threading.Event | None = None) -> None:
        """Block until every session has opened its decoder (or raise what the child reports)."""
        waited = 0.0
        while len(self._ready) < self.sessions:
            if stop is not None and stop.is_set():
                return
            message = self._receive()
            if message is None:
                waited += _POLL_S
                if waited > _START_TIMEOUT_S:
                    raise AlphaPoseTrtError(f"{self.name}: the decoding process did not start within "
                                            f"{_START_TIMEOUT_S:.0f} s")
                continue
            self._file(message)

    def batches(self, j: int, stop: threading.Event) -> Iterator[tuple[int, Tensor]]:
        """Stretch j's batches in order as (slot, frames), frames a view into the ring; ends at
        the stretch's end, or early when `stop` is set."""
        session = j % self.sessions
        while not stop.is_set():
            message = self._next(session, stop)
            if message is None:
                return
            kind = message[0]
            if kind == "batch":
                _, _, slot, count = message
                yield slot, self.ring[session, slot, :count]
            elif kind == "end":
                return
            elif kind == "failed":
                _, _, position, reason = message
                raise StretchFailed(f"{self.name}: {reason}", position, reason)
            else:  # "error"
                raise AlphaPoseTrtError(f"{self.name}: {message[2]}")

    def release(self, j: int, slot: int) -> None:
        """Give stretch j's slot back to its session once everything reading it has finished."""
        try:
            self._free[j % self.sessions].send(slot)
        except (BrokenPipeError, OSError):
            pass  # the child is gone; the next wait reports it

    def close(self, wait: bool = False) -> None:
        """Tell the sessions to stop, and leave the child's end to a background thread, which
        waits for it (bounded), kills it if it does not end, then frees the ring's device memory.

        Why not wait here: the child's exit (decoders and CUDA context torn down) takes about a
        second, which every pass paid at its end, inside the consumer's time: 256 frames that
        arrived in 0.12-0.31 s took 1.1-1.2 s in all (H100; benchmarks/h100-2026-11-27-session7,
        pace_probe.txt). wait: block until the child is gone and the ring freed (tests)."""
        if self._reaper is None:
            for free in self._free:
                try:
                    free.send(None)
                except (BrokenPipeError, OSError):
                    pass
                free.close()
            self._reaper = threading.Thread(target=self._reap, name=_REAPER_PREFIX + self.name, daemon=True)
            self._reaper.start()
        if wait:
            self._reaper.join()

    def _reap(self) -> None:
        self._process.join(_JOIN_TIMEOUT_S)
        if self._process.is_alive():
            logger.warning("%s: the decoding process did not stop within %.0f s; killing it", self.name, _JOIN_TIMEOUT_S)
            self._process.kill()
            self._process.join()
        self._inbox.close()
        cuda = self.ring.is_cuda
        self.ring = None  # the child has let go of it: its device memory can go (CUDA IPC keeps it until then)
        if cuda:
            torch.cuda.ipc_collect()

    def _next(self, session: int, stop: threading.Event) -> tuple | None:
        while not self._pending[session]:
            if stop.is_set():
                return None
            message = self._receive()
            if message is not None:
                self._file(message)
        return self._pending[session].pop(0)

    def _file(self, message: tuple) -> None:
        if message[0] == "ready":
            self._ready.add(message[1])
        elif message[0] == "error" and message[1] not in self._ready:
            raise AlphaPoseTrtError(f"{self.name}: {message[2]}")  # a session failed to start
        else:
            self._pending[message[1]].append(message)

    def _receive(self) -> tuple | None:
        """The child's next message, or None after _POLL_S without one; raises if the child died."""
        try:
            if self._inbox.poll(_POLL_S):
                return self._inbox.recv()
        except (EOFError, OSError):
            pass
        else:
            if self._process.is_alive():
                return None
        self._process.join(_JOIN_TIMEOUT_S)
        raise AlphaPoseTrtError(f"{self.name}: the decoding process stopped unexpectedly "
                                f"(exit code {self._process.exitcode})")


def wait_closed() -> None:
    """Block until every closed decoding process of this interpreter has ended and freed its ring.

    Why: a child ends in the background after `close` (about a second of teardown on the GPU); a
    benchmark waits for that before timing the next read, so one pass's teardown is not counted
    in the next pass's time."""
    for thread in threading.enumerate():
        if thread.name.startswith(_REAPER_PREFIX):
            thread.join()


def _start_without_main(process: mp.Process) -> None:
    """Start a spawned process without re-running the caller's main script in it.

    Why: spawn imports the parent's `__main__` in the child so that functions defined there can
    be unpickled. Nothing the child runs comes from there (its target and the decoder factory live
    in importable modules), and re-running it cost seconds of imports per source (a benchmark
    script's) and, for a script without an `if __name__ == "__main__"` guard, restarted the
    script's own work in the child. With no main module to name, spawn skips that step."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        process.start()
    finally:
        sys.modules["__main__"] = main


def _serve(factory: DecoderFactory, path: str, handover: list[Tensor], stretches: list[Stretch], outbox: Connection,
           free: list[Connection]) -> None:
    """The child: one thread per session, each decoding stretches k, k + sessions, ... into its
    slots of the ring (taken out of `handover`), then telling the parent which slot holds which
    batch."""
    ring = handover.pop()
    lock = threading.Lock()

    def send(*message: object) -> None:
        with lock:
            outbox.send(message)

    threads = [threading.Thread(target=_session, args=(k, factory, path, ring, stretches, send, free[k]), daemon=True)
               for k in range(len(free))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


class _Stop(BaseException):
    """The parent asked the session to stop, or went away (not an `Exception`, so the decoding
    errors reported to the parent never include it)."""


def _session(k: int, factory: DecoderFactory, path: str, ring: Tensor, stretches: list[Stretch], send,
             free: Connection) -> None:
    stream = None
    if ring.is_cuda:
        torch.cuda.set_device(ring.device)  # per thread
        stream = torch.cuda.Stream(ring.device)
    slots = list(range(ring.shape[1]))  # free slots: all at first, then the ones the parent gives back

    def take_slot() -> int:
        if not slots:
            try:
                slots.append(free.recv())
            except (EOFError, OSError):
                raise _Stop from None
            if slots[-1] is None:
                raise _Stop
        return slots.pop(0)

    try:
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            try:
                decoder = factory(path, ring.device, stream)
            except Exception as exc:
                send("error", k, one_line(exc) if isinstance(exc, AlphaPoseTrtError)
                     else f"cannot open the decoder ({one_line(exc)})")
                return
            send("ready", k)
            for j in range(k, len(stretches), ring.shape[0]):
                stretch = stretches[j]
                position = stretch.start
                try:
                    for batch in decoder.batches(stretch.start, stretch.end, stretch.read_on):
                        slot = take_slot()
                        frames = ring[k, slot]
                        if len(batch) > len(frames) or any(f.shape != frames.shape[1:] for f in batch):
                            raise AlphaPoseTrtError(f"frame {position}: the decoder gave {len(batch)} frames of "
                                                    f"{tuple(batch[0].shape)}, expected at most {len(frames)} of "
                                                    f"{tuple(frames.shape[1:])}")
                        torch.stack(list(batch), out=frames[:len(batch)])
                        if stream is not None:
                            stream.synchronize()  # in the ring before the decoder reuses its buffers
                        send("batch", k, slot, len(batch))
                        position += len(batch)
                except AlphaPoseTrtError as exc:  # frames this source cannot take at all (format, size)
                    send("error", k, one_line(exc))
                    return
                except Exception as exc:  # the decoder library raises its own types
                    # this stretch ends here; the next one seeks to its own key frame
                    send("failed", k, position, f"decoding failed at frame {position} ({one_line(exc)})")
                    continue
                send("end", k, position)
            while True:  # keep the pipe open until the parent says stop
                take_slot()
    except (_Stop, OSError):  # OSError: a pipe to a parent that went away
        return
