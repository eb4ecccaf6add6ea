"""The pipeline in memory with the detector stage on its own CUDA stream and without it,
alternating in one process on the same engines (runner.DETECTOR_STREAM).

    python3 benchmarks/detector_stream_ab.py [--rounds 3] [--frames 256] [--video FILE [--decoder pyav]]

Timed as the bench times its pipeline row (`probe_setup.alternate`: 1080p frames, 8 per call,
8 persons per frame); with --video, each pipeline also reads the file as the bench does.
"""

from __future__ import annotations

from alphapose_trt.pipeline import runner
from probe_setup import CONFIG, ab_arguments, alternate, compiled_engines  # benchmarks/, the script's folder


def main() -> None:
    args = ab_arguments(__doc__.splitlines()[0])
    det, pose = compiled_engines()
    pipelines = {}
    for flag in (False, True):
        runner.DETECTOR_STREAM = flag
        pipelines[f"detector stream {'on' if flag else 'off'}"] = runner.PosePipeline(det, pose, "cuda", CONFIG)
    alternate(pipelines, args)


if __name__ == "__main__":
    main()
