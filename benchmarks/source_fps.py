"""Decoding alone against the project's video source alone (decode thread + RGB conversion pool).

    [CV_THREADS=N] python3 benchmarks/source_fps.py CLIP.mp4 FRAMES

Why: the pipeline from a video can only be as fast as its source; this separates the source's own
cost from the pipeline's (results: benchmarks/h100-2026-11-26-session2/source_fps.txt).
CV_THREADS sets cv2.setNumThreads (OpenCV's own thread pool, also used by cvtColor).
"""

from __future__ import annotations

import os
import sys
import time

import cv2

from alphapose_trt.io.sources import open_source


def bare_read(path: str, limit: int) -> float:
    """Frames/s of a plain cv2.VideoCapture.read() loop."""
    capture = cv2.VideoCapture(path)
    start, count = time.perf_counter(), 0
    while count < limit and capture.read()[0]:
        count += 1
    capture.release()
    return count / (time.perf_counter() - start)


def source_read(path: str, limit: int) -> float:
    """Frames/s of iterating open_source(video=...) (RGB frames, as infer reads them)."""
    start, count = time.perf_counter(), 0
    with open_source(video=path) as source:
        for _ in source:
            count += 1
            if count >= limit:
                break
    return count / (time.perf_counter() - start)


def main() -> None:
    path, limit = sys.argv[1], int(sys.argv[2])
    if os.environ.get("CV_THREADS"):
        cv2.setNumThreads(int(os.environ["CV_THREADS"]))
    for _ in range(2):
        print(f"bare read {bare_read(path, limit):.1f} fps, open_source {source_read(path, limit):.1f} fps, "
              f"cv2 threads {cv2.getNumThreads()}")


if __name__ == "__main__":
    main()
