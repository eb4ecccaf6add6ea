"""Do several OpenCV readers of one file, each converting every N-th frame, lift the source and
the pipeline reading an mp4?

    python3 benchmarks/opencv_lanes_probe.py CLIP [--frames 300] [--rounds 2] [--lanes 1,2,3]

Why: on the H100 host the reader thread spends ~1.2-1.4 ms of each ~1.5 ms frame in `retrieve()`
(FFmpeg's YUV -> BGR conversion and the copy out, on the calling thread) and ~0.2 ms in
`grab()` (the decoding itself runs on FFmpeg's threads), so one reader is capped by a single
thread's conversion (opencv_process_probe_threads.txt). A prototype, not the library's source:
lane k opens its own cv2.VideoCapture, grabs every frame and retrieves frames k, k + N, ... into
reused BGR buffers; the source's pool converts them to RGB, and the reader takes lanes in turn.
Measured back to back in one process with OpenCV on one thread (as a CUDA pipeline sets it):
decoding alone (the bench's bare read loop), the library source alone, the lanes source alone,
and the compiled pipeline from the file through each.
"""

from __future__ import annotations

import argparse
import queue
import threading
import time
from concurrent.futures import Executor
from itertools import islice
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from alphapose_trt.io.sources import Source, _PendingFrame

LANE_AHEAD = 4  # frames a lane retrieves ahead of the reader (and BGR buffers it reuses: + pool's)


class LanesVideoSource(Source):
    def __init__(self, path: Path, lanes: int, queue_size: int = 32):
        super().__init__(str(path), queue_size)
        self.path, self.lanes = path, lanes

    def _produce(self, stop: threading.Event, pool: Executor) -> Iterator[_PendingFrame]:
        outs = [queue.Queue(LANE_AHEAD) for _ in range(self.lanes)]
        threads = [threading.Thread(target=self._lane, args=(k, outs[k], stop), daemon=True) for k in range(self.lanes)]
        for thread in threads:
            thread.start()
        try:
            i = 0
            while not stop.is_set():
                try:
                    item = outs[i % self.lanes].get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                bgr, free = item
                yield _PendingFrame(i, self.path, pool.submit(_convert, bgr, free))
                i += 1
        finally:
            stop.set()
            for out in outs:  # unblock lanes waiting to put
                while not out.empty():
                    out.get_nowait()
            for thread in threads:
                thread.join(5)

    def _lane(self, k: int, out: queue.Queue, stop: threading.Event) -> None:
        capture = cv2.VideoCapture(str(self.path))
        buffers: queue.Queue = queue.Queue()
        for _ in range(LANE_AHEAD + 4):
            buffers.put(np.empty((int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), 3), np.uint8))
        i = 0
        try:
            while not stop.is_set():
                if not capture.grab():
                    break
                if i % self.lanes == k:
                    buffer = None
                    while buffer is None and not stop.is_set():
                        try:
                            buffer = buffers.get(timeout=0.1)
                        except queue.Empty:
                            continue
                    ok, bgr = capture.retrieve(buffer)
                    if not ok:
                        break
                    while not stop.is_set():
                        try:
                            out.put((bgr, buffers), timeout=0.1)
                            break
                        except queue.Full:
                            continue
                i += 1
        finally:
            capture.release()
            while not stop.is_set():
                try:
                    out.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue


def _convert(bgr: np.ndarray, free: queue.Queue) -> np.ndarray:
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    free.put(bgr)  # the lane retrieves into it again
    return rgb


def lanes_source_fps(path: Path, limit: int, lanes: int) -> float:
    start, count = time.perf_counter(), 0
    with LanesVideoSource(path, lanes) as source:
        for _ in zip(range(limit), source):
            count += 1
    return count / (time.perf_counter() - start)


def lanes_pipeline_fps(pipeline, path: Path, limit: int, batch: int, lanes: int) -> float:
    from alphapose_trt.api import batched

    start, count = time.perf_counter(), 0
    with LanesVideoSource(path, lanes) as source:
        chunks = batched((f.image for f in islice(source, limit)), batch)
        for _, results in pipeline.process_stream((None, chunk, None) for chunk in chunks):
            count += len(results)
    return count / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--lanes", default="1,2,3")
    ap.add_argument("--no-pipeline", action="store_true")
    args = ap.parse_args()
    lane_counts = [int(x) for x in args.lanes.split(",")]
    cv2.setNumThreads(1)
    from alphapose_trt.bench import decode_fps, source_fps
    from alphapose_trt.io.sources import open_source

    with open_source(video=args.clip) as source:
        want = [f.image for _, f in zip(range(24), source)]
    for lanes in lane_counts:
        with LanesVideoSource(args.clip, lanes) as source:
            got = [f.image for _, f in zip(range(24), source)]
        print(f"{lanes} lanes: frames equal the library source's: {all(np.array_equal(a, b) for a, b in zip(got, want))}")
    for r in range(args.rounds):
        alone = decode_fps(args.clip, args.frames)
        lib = source_fps(args.clip, args.frames)
        lanes_fps = {n: lanes_source_fps(args.clip, args.frames, n) for n in lane_counts}
        alone2 = decode_fps(args.clip, args.frames)
        print(f"round {r}: decoding alone {alone:.1f} / {alone2:.1f}; source alone: library {lib:.1f}, "
              + ", ".join(f"{n} lanes {fps:.1f}" for n, fps in lanes_fps.items()), flush=True)
    if args.no_pipeline:
        return
    import torch

    from alphapose_trt.bench import make_frames, time_pipeline, video_pipeline_fps
    from probe_setup import compiled_pipeline  # benchmarks/, the script's folder

    pipe = compiled_pipeline()
    row = time_pipeline(pipe, make_frames(256, (1920, 1080), 0), 8, 10, torch.device("cuda"))
    print(f"compiled pipeline in memory: {row.fps:.1f} frames/s, median batch {row.median_fps:.1f}", flush=True)
    video_pipeline_fps(pipe, args.clip, args.frames, 8)  # warm: the first video run of a process
    for r in range(args.rounds):
        alone = decode_fps(args.clip, args.frames)
        lib = video_pipeline_fps(pipe, args.clip, args.frames, 8)
        lanes_fps = {n: lanes_pipeline_fps(pipe, args.clip, args.frames, 8, n) for n in lane_counts}
        alone2 = decode_fps(args.clip, args.frames)
        best = max(alone, alone2)
        print(f"round {r}: decoding alone {alone:.1f} / {alone2:.1f}; pipeline from the file: library source {lib:.1f} "
              f"({lib / best:.3f}), " + ", ".join(f"{n} lanes {fps:.1f} ({fps / best:.3f})" for n, fps in lanes_fps.items()),
              flush=True)


if __name__ == "__main__":
    main()
