"""Session 6: does running the compiled pipeline in a process slow its NVDEC source afterwards?

    PYTHONPATH=.:PYNVVIDEOCODEC python3 nvdec_after_pipeline.py CLIP [--frames 256]

`bench.source_fps` with NVDEC (3 sessions) in a fresh process, then after building the compiled
pipeline, after running it over frames in memory, and after restoring torch's host threads
(the pipeline sets one).
"""
import argparse
from pathlib import Path

import torch

from alphapose_trt.bench import BenchOptions, load_models, make_frames, source_fps, time_pipeline
from alphapose_trt.cli import build_parser
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("clip", type=Path)
    ap.add_argument("--frames", type=int, default=256)
    args = ap.parse_args()
    threads = torch.get_num_threads()

    def alone(when: str) -> None:
        rates = [source_fps(args.clip, args.frames, "nvdec") for _ in range(2)]
        print(f"{when}: source alone {rates[0]:.1f} / {rates[1]:.1f} frames/s", flush=True)

    alone("fresh process")
    opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
    models, _ = load_models(opts, ("detector", "pose"))
    det = CompiledEngine(models["detector"], "cuda", "fp16", max_batch=8, mode="reduce-overhead", batch_sizes=(8,))
    pose = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=64, mode="reduce-overhead", batch_sizes=(8, 64))
    pipe = PosePipeline(det, pose, "cuda", PipelineConfig(max_persons=8, det_batch=8, pose_batch=64))
    alone("pipeline built")
    print(f"in memory: {time_pipeline(pipe, make_frames(args.frames, (1920, 1080), 0), 8, 10, pipe.device).fps:.1f} frames/s")
    alone("pipeline run")
    torch.set_num_threads(threads)
    alone(f"torch host threads back to {threads}")


if __name__ == "__main__":
    main()
