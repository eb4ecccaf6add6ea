"""The pipeline in memory with channel-padded engines (engines/padding.py) and without,
alternating in one process; both pipelines share the pose engine, so only the detector differs
(padding measured no change on the pose net alone: benchmarks/README.md, session 10).

    python3 benchmarks/padding_ab.py [--rounds 3] [--frames 256] [--video FILE [--decoder pyav]]

Timed as the bench times its pipeline row (`probe_setup.alternate`: 1080p frames, 8 per call,
8 persons per frame); with --video, each pipeline also reads the file as the bench does.
"""

from __future__ import annotations

from alphapose_trt.pipeline.runner import PosePipeline
from probe_setup import CONFIG, ab_arguments, alternate, compiled_engines, unpadded  # benchmarks/, the script's folder


def main() -> None:
    args = ab_arguments(__doc__.splitlines()[0])
    det, pose = compiled_engines()
    with unpadded():
        plain_det, _ = compiled_engines()
    pipelines = {
        "unpadded detector": PosePipeline(plain_det, pose, "cuda", CONFIG),
        "padded detector": PosePipeline(det, pose, "cuda", CONFIG),
    }
    alternate(pipelines, args)


if __name__ == "__main__":
    main()
