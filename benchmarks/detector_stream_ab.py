"""The pipeline in memory with the detector stage on its own CUDA stream and without it,
alternating in one process on the same engines (runner.DETECTOR_STREAM).

    python3 benchmarks/detector_stream_ab.py [--rounds 3] [--frames 256]

Timed as the bench times its pipeline row (`probe_setup.alternate`: 1080p frames, 8 per call,
8 persons per frame).
"""

from __future__ import annotations

import argparse

from alphapose_trt.pipeline import runner
from probe_setup import CONFIG, alternate, compiled_engines  # benchmarks/, the script's folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    det, pose = compiled_engines()
    pipelines = {}
    for flag in (False, True):
        runner.DETECTOR_STREAM = flag
        pipelines[f"detector stream {'on' if flag else 'off'}"] = runner.PosePipeline(det, pose, "cuda", CONFIG)
    alternate(pipelines, args.rounds, args.frames)


if __name__ == "__main__":
    main()
