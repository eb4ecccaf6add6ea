"""Would the detector and the pose engine gain from running on two CUDA streams at once?

    python3 benchmarks/two_streams_probe.py [--iters 50]

The pipeline queues both engines on one stream, so per batch of 8 frames the GPU runs the
detector (batch 8, 608x608) and then the pose net (64 crops) back to back. Here the two compiled
engines (CUDA graphs, fp16) are replayed alternately on one stream, and then with the detector on
a second stream (pose k beside detector k+1, as a two-stream pipeline would run them); the rate
is pairs per second, i.e. batches of 8 frames per second without the pre- and post-processing.
"""

from __future__ import annotations

import argparse

import torch

from alphapose_trt.bench import BenchOptions, Stopwatch, load_models, random_inputs
from alphapose_trt.cli import build_parser
from alphapose_trt.engines.compiled import CompiledEngine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50)
    args = ap.parse_args()
    torch.backends.cudnn.benchmark = True
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    models, _ = load_models(opts, ("detector", "pose"))
    det = CompiledEngine(models["detector"], "cuda", "fp16", max_batch=8, mode="reduce-overhead", batch_sizes=(8,))
    pose = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=64, mode="reduce-overhead", batch_sizes=(64,))
    det.warmup()
    pose.warmup()
    x_det, x_pose = random_inputs(det, 8, 1, 0)[0], random_inputs(pose, 64, 1, 1)[0]
    watch = Stopwatch(torch.device("cuda"))
    main_stream, side = torch.cuda.current_stream(), torch.cuda.Stream()

    def one_stream() -> None:
        det(x_det)
        pose(x_pose)

    def two_streams() -> None:
        side.wait_stream(main_stream)
        with torch.cuda.stream(side):
            det(x_det)
        pose(x_pose)
        main_stream.wait_stream(side)

    for name, step in (("detector only", lambda: det(x_det)), ("pose only", lambda: pose(x_pose)),
                       ("one stream", one_stream), ("two streams", two_streams), ("one stream", one_stream),
                       ("two streams", two_streams)):
        for _ in range(5):
            step()
        start = watch.mark()
        for _ in range(args.iters):
            step()
        ms = watch.ms(start, watch.mark()) / args.iters
        print(f"{name:14s} {ms:6.3f} ms per call  {8e3 / ms:7.0f} frames/s (8 frames per call)", flush=True)


if __name__ == "__main__":
    main()
