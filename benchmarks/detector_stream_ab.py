"""The pipeline in memory with the detector stage on its own CUDA stream and without it,
alternating in one process on the same engines (runner.DETECTOR_STREAM).

    python3 benchmarks/detector_stream_ab.py [--rounds 3] [--frames 256]

Timed as the bench times its pipeline row (`time_pipeline`: the host time between consecutive
batches of `process_stream`, 1080p frames, 8 per call, 8 persons per frame).
"""

from __future__ import annotations

import argparse

import torch

from alphapose_trt.bench import make_frames, time_pipeline
from alphapose_trt.pipeline import runner
from probe_setup import CONFIG, compiled_engines  # benchmarks/, the script's folder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    det, pose = compiled_engines()
    frames = make_frames(args.frames, (1920, 1080), 0)
    pipelines = {}
    for flag in (False, True):
        runner.DETECTOR_STREAM = flag
        pipelines[flag] = runner.PosePipeline(det, pose, "cuda", CONFIG)
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for round_ in range(args.rounds):
        for flag, pipeline in pipelines.items():
            row = time_pipeline(pipeline, frames, CONFIG.det_batch, 8, torch.device("cuda"))
            print(f"round {round_} detector stream {'on ' if flag else 'off'}: {row.fps:7.1f} frames/s whole run, "
                  f"{row.median_fps:7.1f} median batch, {row.persons_per_frame:.2f} persons per frame", flush=True)


if __name__ == "__main__":
    main()
