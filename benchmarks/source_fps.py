"""Decoding alone against the project's video source alone (decode thread + RGB conversion pool).

    [CV_THREADS=N] python3 benchmarks/source_fps.py CLIP.mp4 FRAMES

Why: the pipeline from a video can only be as fast as its source; this separates the source's own
cost from the pipeline's (results: benchmarks/h100-2026-11-26-session2/source_fps.txt).
CV_THREADS sets cv2.setNumThreads (OpenCV's own thread pool, also used by cvtColor).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2

from alphapose_trt.bench import decode_fps, source_fps


def main() -> None:
    path, limit = sys.argv[1], int(sys.argv[2])
    if os.environ.get("CV_THREADS"):
        cv2.setNumThreads(int(os.environ["CV_THREADS"]))
    for _ in range(2):
        print(f"bare read {decode_fps(Path(path), limit):.1f} fps, open_source {source_fps(Path(path), limit):.1f} fps, "
              f"cv2 threads {cv2.getNumThreads()}")


if __name__ == "__main__":
    main()
