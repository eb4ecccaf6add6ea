"""Where the fast pipeline's time goes on a GPU: host time per stage and the top CUDA/CPU ops.

    python3 benchmarks/profile_pipeline.py [--backend compiled|eager+graphs] [--frames 64]

Synthetic weights from the bench cache; 1080p frames in memory, 8 persons per frame, 8 frames per
call, `process_stream` as `infer` runs it.
"""

from __future__ import annotations

import argparse
import collections
import time

import torch

from alphapose_trt.bench import BenchOptions, load_models, make_frames
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.engines.eager import EagerEngine
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", default="compiled")
    ap.add_argument("--frames", type=int, default=64)
    args = ap.parse_args()
    from alphapose_trt.cli import build_parser

    bench_args = build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"])
    opts = BenchOptions.from_args(bench_args)
    models, _ = load_models(opts, ("detector", "pose"))
    if args.backend == "compiled":
        det = CompiledEngine(models["detector"], "cuda", "fp16", max_batch=8, mode="reduce-overhead", batch_sizes=(8,))
        pose = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=64, mode="reduce-overhead", batch_sizes=(8, 64))
    else:
        det = EagerEngine(models["detector"], "cuda", "fp16", max_batch=8, cuda_graphs=True)
        pose = EagerEngine(models["pose"], "cuda", "fp16", max_batch=64, cuda_graphs=True)
    pipe = PosePipeline(det, pose, "cuda", PipelineConfig(max_persons=8, det_batch=8, pose_batch=64))
    frames = make_frames(args.frames, (1920, 1080), 0)
    chunks = [frames[i : i + 8] for i in range(0, len(frames), 8)]
    host = collections.Counter()

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                host[name] += time.perf_counter() - t
        return wrapper

    for name in ("upload", "_start_detect", "_boxes", "_estimate", "_finish"):
        setattr(pipe, name, timed(name, getattr(pipe, name)))
    for _ in pipe.process_stream((None, c, None) for c in chunks[:3]):
        pass
    torch.cuda.synchronize()
    host.clear()
    start = time.perf_counter()
    for _ in pipe.process_stream((None, c, None) for c in chunks):
        pass
    total = time.perf_counter() - start
    print(f"{args.backend}: {len(frames) / total:.1f} frames/s; host seconds per stage (of {total:.3f}):")
    for name, sec in host.most_common():
        print(f"  {name:14s} {sec:.3f}  ({sec / len(chunks) * 1e3:.1f} ms per batch of 8)")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in pipe.process_stream((None, c, None) for c in chunks[:3]):
            pass
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=60))
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
