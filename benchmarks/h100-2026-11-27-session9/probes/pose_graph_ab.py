"""The pipeline in memory with its pose stage (crops, pose engine, decode) replayed as one CUDA
graph and op by op, alternating in one process on the same engines, with the host CPU time of the
pipeline thread per batch (the video path shares that thread's time with the frame reader).

    PYTHONPATH=.:benchmarks python3 benchmarks/h100-2026-11-27-session9/probes/pose_graph_ab.py (code of 550ceb1: reverted)

Timed as the bench times its pipeline row (`time_pipeline`: 1080p frames, 8 per call, 8 persons
per frame).
"""

from __future__ import annotations

import argparse
import time

import torch

from alphapose_trt.bench import make_frames, time_pipeline
from alphapose_trt.pipeline import runner
from probe_setup import CONFIG, compiled_engines  # benchmarks/ (run with PYTHONPATH=.:benchmarks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    det, pose = compiled_engines()
    frames = make_frames(args.frames, (1920, 1080), 0)
    graphed = runner.PosePipeline(det, pose, "cuda", CONFIG)
    plain = runner.PosePipeline(det, pose, "cuda", CONFIG)
    plain._pose_graphs = None
    assert graphed._pose_graphs is not None
    print(torch.__version__, torch.cuda.get_device_name(), flush=True)
    for round_ in range(args.rounds):
        for name, pipeline in (("op by op", plain), ("one graph", graphed)):
            cpu = time.thread_time()
            row = time_pipeline(pipeline, frames, CONFIG.det_batch, 8, torch.device("cuda"))
            cpu = (time.thread_time() - cpu) / (len(row.batch_ms) + 8) * 1e3
            print(f"round {round_} pose stage {name:9s}: {row.fps:7.1f} frames/s whole run, {row.median_fps:7.1f} median "
                  f"batch, pipeline thread CPU {cpu:.2f} ms per batch, {row.persons_per_frame:.2f} persons per frame, "
                  f"GPU peak {row.gpu_peak_mb:.0f} MiB allocated, {torch.cuda.memory_reserved() / 2**20:.0f} MiB reserved",
                  flush=True)


if __name__ == "__main__":
    main()
