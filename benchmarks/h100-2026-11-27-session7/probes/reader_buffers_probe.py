"""Does retrieving into reused buffers speed up the OpenCV source? Library reader (a few reused
BGR buffers, `sources._BufferRing`) against the reader before it (a fresh array per frame),
alternating in one process: the source alone, then the compiled pipeline reading the file.

    python3 benchmarks/reader_buffers_probe.py CLIP [--frames 256] [--rounds 3]
"""
import argparse
from pathlib import Path

import cv2
import torch

from alphapose_trt.bench import BenchOptions, decode_fps, load_models, make_frames, source_fps, time_pipeline, \
    video_pipeline_fps
from alphapose_trt.cli import build_parser
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.io import sources
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline

REUSED = sources.VideoSource._decode


def fresh_decode(self, capture, stop, pool):
    """The reader as it was before _BufferRing (frame failures aside: the clip has none)."""
    frame_number = 0
    while not stop.is_set():
        decoded = capture.retrieve()[1] if capture.grab() else None
        if decoded is None:
            return
        yield sources._PendingFrame(frame_number, self._path, pool.submit(sources._to_rgb8, decoded, self._path))
        frame_number += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)  # as a CUDA pipeline sets it
    readers = {"fresh": fresh_decode, "reused": REUSED}

    def each(measure):
        out = {}
        for name, decode in readers.items():
            sources.VideoSource._decode = decode
            out[name] = measure()
        return out

    for r in range(args.rounds):
        alone = decode_fps(args.clip, args.frames)
        got = each(lambda: source_fps(args.clip, args.frames))
        print(f"round {r}: decoding alone {alone:.1f}; source alone: " + ", ".join(f"{k} {v:.1f}" for k, v in got.items()), flush=True)
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    models, _ = load_models(opts, ("detector", "pose"))
    det = CompiledEngine(models["detector"], "cuda", "fp16", max_batch=8, mode="reduce-overhead", batch_sizes=(8,))
    pose = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=64, mode="reduce-overhead", batch_sizes=(8, 64))
    pipe = PosePipeline(det, pose, "cuda", PipelineConfig(max_persons=8, det_batch=8, pose_batch=64))
    row = time_pipeline(pipe, make_frames(256, (1920, 1080), 0), 8, 10, torch.device("cuda"))
    print(f"compiled pipeline in memory: {row.fps:.1f} frames/s", flush=True)
    video_pipeline_fps(pipe, args.clip, args.frames, 8)  # warm
    for r in range(args.rounds):
        alone = decode_fps(args.clip, args.frames)
        got = each(lambda: video_pipeline_fps(pipe, args.clip, args.frames, 8))
        alone2 = decode_fps(args.clip, args.frames)
        best = max(alone, alone2)
        print(f"round {r}: decoding alone {alone:.1f} / {alone2:.1f}; pipeline from the file: "
              + ", ".join(f"{k} {v:.1f} ({v / best:.3f})" for k, v in got.items()), flush=True)


if __name__ == "__main__":
    main()
