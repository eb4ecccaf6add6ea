"""Decoding alone against the project's video source alone, per decoder (default: opencv).

    [CV_THREADS=N] python3 benchmarks/source_fps.py CLIP.mp4 FRAMES [opencv,pyav,nvdec]

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
    path, limit = Path(sys.argv[1]), int(sys.argv[2])
    decoders = sys.argv[3].split(",") if len(sys.argv) > 3 else ["opencv"]
    if os.environ.get("CV_THREADS"):
        cv2.setNumThreads(int(os.environ["CV_THREADS"]))
    for _ in range(2):
        for decoder in decoders:
            print(f"{decoder}: bare decode {decode_fps(path, limit, decoder):.1f} fps, "
                  f"open_source {source_fps(path, limit, decoder):.1f} fps, cv2 threads {cv2.getNumThreads()}")


if __name__ == "__main__":
    main()
