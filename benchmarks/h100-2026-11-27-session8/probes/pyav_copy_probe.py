"""PyAV source on CUDA: plane copies on the reader thread (session 8, runs 1-2) or on the conversion
pool (485f2f6), alternating in one process, alone and feeding the compiled pipeline.

    PYTHONPATH=.:benchmarks python3 benchmarks/h100-2026-11-27-session8/probes/pyav_copy_probe.py CLIP [--frames 256] [--rounds 3]

Runs against commit 65de95e (the pool variant was reverted after this probe).

Why: with the copies on the pool the source alone read faster (1,345-1,981 against 1,038-1,396
frames/s) but the pipeline from the file slower (625 against 788-853), on different machines.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from alphapose_trt.bench import source_fps, video_pipeline_fps
from alphapose_trt.io import pyav
from probe_setup import compiled_pipeline  # benchmarks/ (on PYTHONPATH)

ON_POOL = pyav.PyAVVideoSource._on_device


def on_reader(self, frames, pool):
    """The session-8 run 1-2 variant: the reader thread copies each frame's planes itself."""
    width, height = self.size
    pinned = torch.empty((pyav.DECODE_BATCH, height * 3 // 2, width), dtype=torch.uint8, pin_memory=True)
    staging, numbers = pinned.numpy(), []
    for number, frame in frames:
        pyav.copy_i420(self._i420_frame(frame), staging[len(numbers)])
        numbers.append(number)
        if len(numbers) == pyav.DECODE_BATCH:
            yield from self._converted(pinned, numbers, [])
            numbers = []
    if numbers:
        yield from self._converted(pinned, numbers, [])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    pipe = compiled_pipeline()
    video_pipeline_fps(pipe, args.clip, args.frames, 8, "pyav")  # builds everything once
    for r in range(args.rounds):
        for name, variant in (("reader", on_reader), ("pool", ON_POOL)):
            pyav.PyAVVideoSource._on_device = variant
            alone = source_fps(args.clip, args.frames, "pyav", torch.device("cuda"))
            fps = video_pipeline_fps(pipe, args.clip, args.frames, 8, "pyav")
            print(f"round {r} copies on the {name}: source alone {alone:.1f}, pipeline from the file {fps:.1f} frames/s",
                  flush=True)


if __name__ == "__main__":
    main()
