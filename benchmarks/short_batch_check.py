"""The compiled pipeline reading a 300-frame mp4 (a short last batch of 4) twice in a fresh process."""
import sys
from pathlib import Path
import torch
from alphapose_trt.bench import make_frames, time_pipeline, video_pipeline_fps, decode_fps
from probe_setup import compiled_pipeline  # benchmarks/, the script's folder
clip = Path(sys.argv[1])
pipe = compiled_pipeline()
row = time_pipeline(pipe, make_frames(256, (1920, 1080), 0), 8, 10, torch.device("cuda"))
print(f"in memory {row.fps:.1f} frames/s", flush=True)
for r in range(3):
    alone = decode_fps(clip, 300)
    fps = video_pipeline_fps(pipe, clip, 300, 8)
    print(f"run {r}: 300 frames from {clip.name} (last batch 4 frames): {fps:.1f} frames/s; decoding alone {alone:.1f}", flush=True)
