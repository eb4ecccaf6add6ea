"""The pipeline in memory with channel-padded engines (engines/padding.py) and without,
alternating in one process; both pipelines share the pose engine, so only the detector differs
(padding measured no change on the pose net alone: benchmarks/README.md, session 10).

    python3 benchmarks/padding_ab.py [--rounds 3] [--frames 256]

Timed as the bench times its pipeline row (`probe_setup.alternate`: 1080p frames, 8 per call,
8 persons per frame).
"""

from __future__ import annotations

import argparse

from alphapose_trt.pipeline.runner import PosePipeline
from probe_setup import CONFIG, alternate, compiled_engines, unpadded  # benchmarks/, the script's folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    det, pose = compiled_engines()
    with unpadded():
        plain_det, _ = compiled_engines()
    pipelines = {
        "unpadded detector": PosePipeline(plain_det, pose, "cuda", CONFIG),
        "padded detector": PosePipeline(det, pose, "cuda", CONFIG),
    }
    alternate(pipelines, args.rounds, args.frames)


if __name__ == "__main__":
    main()
