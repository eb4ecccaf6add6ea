"""Does decoding in a child process lift the pipeline's rate from an mp4 (OpenCV decoder)?

    python3 benchmarks/opencv_process_probe.py CLIP [--frames 300] [--rounds 2]

A prototype, not the library's source: a spawned child decodes with cv2.VideoCapture.read
straight into a ring of BGR frame slots in a /dev/shm file both processes map; only slot numbers
cross a pipe. The parent converts each slot to a fresh RGB array on the source's conversion pool
(cvtColor copies and converts in one pass, without the GIL) and gives the slot back. Measured
side by side, back to back in one process: decoding alone (the bench's bare read loop), the
library's source alone, the prototype source alone (clock started once the child has opened the
file), and the compiled pipeline (synthetic weights, 8 persons, 8 frames per call) in memory,
from the file through the library's source, and through the prototype (also with a 0.5 ms GIL
switch interval).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from alphapose_trt.io.sources import Source, _PendingFrame

SLOTS = 12


def child(path: str, ring_path: str, shape: tuple[int, int, int], conn) -> None:
    """Decode into free slots in order; say ("frame", number, slot, seconds reading, seconds
    waiting for slots so far), then ("end", count, copies, reading, waiting)."""
    ring = np.memmap(ring_path, np.uint8, "r+", shape=(SLOTS, *shape))
    capture = cv2.VideoCapture(path)
    free, number, copies = list(range(SLOTS)), 0, 0
    reading = waiting = 0.0  # seconds in read() and waiting for a free slot
    conn.send(("ready",))
    while True:
        if not free:
            t = time.perf_counter()
            slot = conn.recv()
            waiting += time.perf_counter() - t
            if slot is None:
                return
            free.append(slot)
        slot = free.pop(0)
        t = time.perf_counter()
        ok, image = capture.read(ring[slot])
        reading += time.perf_counter() - t
        if not ok:
            break
        if image.ctypes.data != ring[slot].ctypes.data:  # OpenCV reallocated: copy (counted)
            ring[slot] = image
            copies += 1
        conn.send(("frame", number, slot, reading, waiting))
        number += 1
    conn.send(("end", number, copies, reading, waiting))
    while conn.recv() is not None:
        pass


class ProcessVideoSource(Source):
    def __init__(self, path: Path, queue_size: int = 32):
        super().__init__(str(path), queue_size)
        capture = cv2.VideoCapture(str(path))
        width, height = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        capture.release()
        shape = (height, width, 3)
        fd, ring_path = tempfile.mkstemp(dir="/dev/shm", suffix=".ring")
        os.close(fd)
        self._ring = np.memmap(ring_path, np.uint8, "w+", shape=(SLOTS, *shape))
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self._process = ctx.Process(target=child, args=(str(path), ring_path, shape, theirs), daemon=True)
        self._process.start()
        theirs.close()
        self._ring_path = ring_path
        self._ready = False
        self.copies = None

    def warm_up(self) -> None:
        if not self._ready:
            assert self._conn.recv() == ("ready",)
            os.unlink(self._ring_path)  # both have it mapped
            self._ready = True

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        self.warm_up()
        lock = threading.Lock()

        def convert(slot: int) -> np.ndarray:
            rgb = cv2.cvtColor(self._ring[slot], cv2.COLOR_BGR2RGB)
            with lock:
                self._conn.send(slot)
            return rgb

        while not stop.is_set():
            message = self._conn.recv()
            if message[0] == "end":
                self.copies, self.child_reading, self.child_waiting = message[2:]
                return
            self.child_reading, self.child_waiting = message[3:]
            yield _PendingFrame(message[1], None, pool.submit(convert, message[2]))

    def close(self) -> None:
        super().close()
        if self._process.is_alive():
            try:
                self._conn.send(None)
            except OSError:
                pass
            self._process.join(5)
            if self._process.is_alive():
                self._process.kill()


def probe_source_fps(path: Path, limit: int) -> tuple[float, float, str]:
    """(frames/s after the child opened the file, frames/s with its start counted, where the
    time went: the child's seconds in read() and waiting for slots, the parent's CPU by thread)."""
    from profile_pipeline import ThreadCpu

    t0 = time.perf_counter()
    with ProcessVideoSource(path) as source:
        source.warm_up()
        start, count, threads = time.perf_counter(), 0, ThreadCpu()
        for _ in zip(range(limit), source):
            count += 1
        end = time.perf_counter()
        by_thread = threads.report(count)
    where = (f"child ms per frame: read {source.child_reading / count * 1e3:.2f}, waiting for a slot "
             f"{source.child_waiting / count * 1e3:.2f} (of {(end - start) / count * 1e3:.2f} wall); parent {by_thread}")
    return count / (end - start), count / (end - t0), where


def library_source_fps(path: Path, limit: int) -> tuple[float, str]:
    """bench.source_fps with the CPU of each thread, and the reader's time in grab/retrieve."""
    from profile_pipeline import ThreadCpu

    from alphapose_trt.io import sources

    spent = {"grab": 0.0, "retrieve": 0.0}
    real = sources.cv2.VideoCapture

    class Timed:
        def __init__(self, target):
            self._capture = real(target)

        def __getattr__(self, name):
            return getattr(self._capture, name)

        def grab(self):
            t = time.perf_counter()
            try:
                return self._capture.grab()
            finally:
                spent["grab"] += time.perf_counter() - t

        def retrieve(self):
            t = time.perf_counter()
            try:
                return self._capture.retrieve()
            finally:
                spent["retrieve"] += time.perf_counter() - t

    sources.cv2.VideoCapture = Timed
    try:
        start, count = time.perf_counter(), 0
        with sources.open_source(video=path) as source:
            threads = ThreadCpu()
            for _ in zip(range(limit), source):
                count += 1
            end = time.perf_counter()
            by_thread = threads.report(count)
    finally:
        sources.cv2.VideoCapture = real
    return count / (end - start), (f"reader ms per frame: grab {spent['grab'] / count * 1e3:.2f}, retrieve "
                                   f"{spent['retrieve'] / count * 1e3:.2f} (of {(end - start) / count * 1e3:.2f} wall); {by_thread}")


def probe_pipeline_fps(pipeline, path: Path, limit: int, batch: int) -> float:
    from itertools import islice

    from alphapose_trt.api import batched

    with ProcessVideoSource(path) as source:
        source.warm_up()
        start, count = time.perf_counter(), 0
        chunks = batched((f.image for f in islice(source, limit)), batch)
        for _, results in pipeline.process_stream((None, chunk, None) for chunk in chunks):
            count += len(results)
        return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-pipeline", action="store_true")
    ap.add_argument("--cv-threads", type=int, default=None, help="cv2.setNumThreads first (a CUDA pipeline sets 1)")
    args = ap.parse_args()
    if args.cv_threads is not None:
        cv2.setNumThreads(args.cv_threads)
    import torch

    from alphapose_trt.bench import decode_fps, make_frames, time_pipeline, video_pipeline_fps
    from probe_setup import compiled_pipeline  # benchmarks/, the script's folder

    # exactness first: the prototype gives the library source's frames
    with ProcessVideoSource(args.clip) as probe:
        got = [f.image for _, f in zip(range(16), probe)]
    from alphapose_trt.io.sources import open_source

    with open_source(video=args.clip) as source:
        want = [f.image for _, f in zip(range(16), source)]
    print(f"prototype frames equal the library source's: {all(np.array_equal(a, b) for a, b in zip(got, want))} "
          f"({len(got)} frames)", flush=True)
    for r in range(args.rounds):
        alone = decode_fps(args.clip, args.frames)
        lib, lib_where = library_source_fps(args.clip, args.frames)
        proto, proto_start, proto_where = probe_source_fps(args.clip, args.frames)
        alone2 = decode_fps(args.clip, args.frames)
        print(f"round {r} (OpenCV threads {cv2.getNumThreads()}): decoding alone {alone:.1f} / {alone2:.1f}; library "
              f"source alone {lib:.1f}; prototype source alone {proto:.1f} ({proto_start:.1f} with its start)\n"
              f"  library: {lib_where}\n  prototype: {proto_where}", flush=True)
    if args.no_pipeline:
        return
    pipe = compiled_pipeline()
    frames = make_frames(256, (1920, 1080), 0)
    row = time_pipeline(pipe, frames, 8, 10, torch.device("cuda"))
    print(f"compiled pipeline in memory: {row.fps:.1f} frames/s, median batch {row.median_fps:.1f}", flush=True)
    for r in range(args.rounds):
        alone = decode_fps(args.clip, args.frames)
        lib = video_pipeline_fps(pipe, args.clip, args.frames, 8)
        proto = probe_pipeline_fps(pipe, args.clip, args.frames, 8)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(0.0005)
        proto_switch = probe_pipeline_fps(pipe, args.clip, args.frames, 8)
        sys.setswitchinterval(interval)
        alone2 = decode_fps(args.clip, args.frames)
        best = max(alone, alone2)
        print(f"round {r}: decoding alone {alone:.1f} / {alone2:.1f}; pipeline from the file: library source {lib:.1f} "
              f"({lib / best:.3f}), prototype {proto:.1f} ({proto / best:.3f}), prototype with a 0.5 ms switch "
              f"interval {proto_switch:.1f} ({proto_switch / best:.3f})", flush=True)


if __name__ == "__main__":
    main()
