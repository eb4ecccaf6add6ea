"""The compiled pipeline reading a 300-frame mp4 (a short last batch of 4) twice in a fresh process."""
import sys, time
from pathlib import Path
import torch
from alphapose_trt.bench import BenchOptions, load_models, make_frames, time_pipeline, video_pipeline_fps, decode_fps
from alphapose_trt.cli import build_parser
from alphapose_trt.engines.compiled import CompiledEngine
from alphapose_trt.pipeline.runner import PipelineConfig, PosePipeline
clip = Path(sys.argv[1])
opts = BenchOptions.from_args(build_parser("bench").parse_args(["bench", "--model", "pipeline", "--device", "cuda"]))
models, _ = load_models(opts, ("detector", "pose"))
det = CompiledEngine(models["detector"], "cuda", "fp16", max_batch=8, mode="reduce-overhead", batch_sizes=(8,))
pose = CompiledEngine(models["pose"], "cuda", "fp16", max_batch=64, mode="reduce-overhead", batch_sizes=(8, 64))
pipe = PosePipeline(det, pose, "cuda", PipelineConfig(max_persons=8, det_batch=8, pose_batch=64))
row = time_pipeline(pipe, make_frames(256, (1920, 1080), 0), 8, 10, torch.device("cuda"))
print(f"in memory {row.fps:.1f} frames/s", flush=True)
for r in range(3):
    alone = decode_fps(clip, 300)
    fps = video_pipeline_fps(pipe, clip, 300, 8)
    print(f"run {r}: 300 frames from {clip.name} (last batch 4 frames): {fps:.1f} frames/s; decoding alone {alone:.1f}", flush=True)
